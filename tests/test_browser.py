"""The page in a real headless browser (Debian's chromium + chromium-driver, driven by selenium):
pick zones by borough and name, type a distance and a time, see the minutes without a reload.

Skips when chromium is missing on a developer machine; under CI (CI set) that is a failure,
since .ci/run installs it."""
import threading

import pytest

from browsers import chromium
from taxi_duration.rides import check_pickup, now_nyc


@pytest.fixture(scope='module')
def server(champion_app):
    "The app on a free loopback port, in a thread; its URL."
    from werkzeug.serving import make_server
    srv = make_server('127.0.0.1', 0, champion_app, threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield dict(url=f'http://127.0.0.1:{srv.port}', app=champion_app)
    srv.shutdown()


@pytest.fixture(scope='module')
def browser():
    with chromium(1000, 900) as driver: yield driver


def _wait(driver, cond, timeout=20):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout).until(cond)


def test_pick_zones_and_get_minutes(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    d = browser
    d.get(server['url'] + '/')
    _wait(d, lambda d: d.find_element(By.TAG_NAME, 'body').get_attribute('data-ready') == 'true')
    d.execute_script('window.__same_page = 42')  # survives only if the page is never reloaded
    pu_b, pu_z = Select(d.find_element(By.ID, 'pu-borough')), Select(d.find_element(By.ID, 'pu-zone'))
    do_b, do_z = Select(d.find_element(By.ID, 'do-borough')), Select(d.find_element(By.ID, 'do-zone'))
    assert 'Manhattan' in [o.text for o in pu_b.options]
    assert 'EWR' in [o.text for o in pu_b.options]
    pu_b.select_by_visible_text('Manhattan'); pu_z.select_by_visible_text('Central Park')
    do_b.select_by_visible_text('Brooklyn')
    brooklyn = [o.text for o in do_z.options]
    assert 'Park Slope' in brooklyn
    assert 'Central Park' not in brooklyn  # the zone list follows the borough
    do_z.select_by_visible_text('Park Slope')
    dist = d.find_element(By.ID, 'distance'); dist.clear(); dist.send_keys('6.2')
    d.execute_script("document.getElementById('pickup').value = '2021-03-05T08:30'")
    d.find_element(By.ID, 'predict').click()
    _wait(d, lambda d: 'min' in d.find_element(By.ID, 'result').text)
    shown = float(d.find_element(By.ID, 'result').get_attribute('data-minutes'))
    api = server['app'].test_client().post('/predict', json={
        'PULocationID': 43, 'DOLocationID': 181, 'trip_distance': 6.2, 'pickup_datetime': '2021-03-05T08:30'}).json
    assert shown == pytest.approx(api['duration'], abs=1e-9)  # Central Park = 43, Park Slope = 181
    lo, hi = api['interval']
    assert d.find_element(By.ID, 'result').text == f"≈ {round(api['duration'])} min\n80 % of rides: {round(lo)}–{round(hi)} min"
    assert f"version {api['model_version']}" in d.find_element(By.ID, 'model').text
    assert d.execute_script('return window.__same_page') == 42


def test_bad_input_shows_the_error(server, browser):
    from selenium.webdriver.common.by import By
    d = browser
    d.get(server['url'] + '/')
    _wait(d, lambda d: d.find_element(By.TAG_NAME, 'body').get_attribute('data-ready') == 'true')
    dist = d.find_element(By.ID, 'distance'); dist.clear(); dist.send_keys('500')
    d.find_element(By.ID, 'predict').click()
    _wait(d, lambda d: d.find_element(By.ID, 'error').is_displayed())
    assert 'trip_distance must be between 0 and 100' in d.find_element(By.ID, 'error').text
    assert d.find_element(By.ID, 'result').text == ''


def test_click_two_zones_on_the_map(server, browser):
    "The rider's way: click the pick-up zone, then the drop-off zone, on the map; the answer appears."
    from selenium.webdriver.common.by import By
    d = browser
    d.get(server['url'] + '/')
    _wait(d, lambda d: d.find_element(By.TAG_NAME, 'body').get_attribute('data-ready') == 'true')
    assert len(d.find_elements(By.CSS_SELECTOR, '#map path')) == 260
    d.execute_script("document.getElementById('pickup').value = '2021-03-05T08:30'")
    for zone in (132, 230):  # JFK Airport, then Times Sq/Theatre District: two big zones
        d.find_element(By.ID, f'zone-{zone}').click()
    _wait(d, lambda d: 'min' in d.find_element(By.ID, 'result').text)
    assert d.find_element(By.ID, 'pu-zone').get_attribute('value') == '132'
    assert d.find_element(By.ID, 'do-zone').get_attribute('value') == '230'
    assert 'pu' in d.find_element(By.ID, 'zone-132').get_attribute('class')
    api = server['app'].test_client().post('/predict', json={
        'PULocationID': 132, 'DOLocationID': 230, 'pickup_datetime': '2021-03-05T08:30'}).json
    lo, hi = api['interval']
    assert api['used_distance'] is False
    assert d.find_element(By.ID, 'result').text == f"≈ {round(api['duration'])} min\n80 % of rides: {round(lo)}–{round(hi)} min"
    assert f"version {api['model_version']}" in d.find_element(By.ID, 'model').text


def test_default_time_is_now(server, browser):
    "Without touching the time field, the page sends the current New York time."
    from selenium.webdriver.common.by import By
    d = browser
    d.get(server['url'] + '/')
    _wait(d, lambda d: d.find_element(By.TAG_NAME, 'body').get_attribute('data-ready') == 'true')
    shown = d.find_element(By.ID, 'pickup').get_attribute('value')
    now = now_nyc()
    assert abs((check_pickup(shown) - now).total_seconds()) < 180, (shown, now)
    d.find_element(By.ID, 'predict').click()
    _wait(d, lambda d: 'min' in d.find_element(By.ID, 'result').text)
