"""The map page's words, in the same headless chromium as test_browser: the prompt above the map says what
the next click does, given what is chosen, and the range under the answer says what it is."""
from test_browser import _wait, browser, server  # noqa: F401  (fixtures: the app on loopback, headless chromium)


def _ready(d, url):
    from selenium.webdriver.common.by import By
    d.get(url + '/')
    _wait(d, lambda d: d.find_element(By.TAG_NAME, 'body').get_attribute('data-ready') == 'true')


def _hint(d):
    from selenium.webdriver.common.by import By
    return d.find_element(By.ID, 'map-hint').text


def test_the_prompt_names_the_chosen_zones_and_what_a_click_does(server, browser):
    _ready(browser, server['url'])
    assert _hint(browser) == 'Central Park to Manhattan Valley. Click a zone to choose a new pick-up.'


def test_after_a_pick_up_click_the_prompt_asks_for_the_drop_off(server, browser):
    from selenium.webdriver.common.by import By
    _ready(browser, server['url'])
    browser.find_element(By.ID, 'zone-132').click()
    assert _hint(browser) == 'From JFK Airport: now click the drop-off zone.'


def test_after_the_drop_off_click_the_prompt_names_the_ride(server, browser):
    from selenium.webdriver.common.by import By
    _ready(browser, server['url'])
    for zone in (132, 230):
        browser.find_element(By.ID, f'zone-{zone}').click()
    _wait(browser, lambda d: 'min' in d.find_element(By.ID, 'result').text)
    assert _hint(browser) == 'JFK Airport to Times Sq/Theatre District. Click a zone to choose a new pick-up.'


def test_the_range_is_labelled(server, browser):
    from selenium.webdriver.common.by import By
    _ready(browser, server['url'])
    browser.execute_script("document.getElementById('pickup').value = '2021-03-05T08:30'")
    browser.find_element(By.ID, 'predict').click()
    _wait(browser, lambda d: 'min' in d.find_element(By.ID, 'result').text)
    api = server['app'].test_client().post('/predict', json={
        'PULocationID': 43, 'DOLocationID': 151, 'pickup_datetime': '2021-03-05T08:30'}).json
    lo, hi = api['interval']
    assert browser.find_element(By.ID, 'result').text.splitlines()[1] == f'80 % of rides: {round(lo)}–{round(hi)} min'
