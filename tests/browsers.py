"""Headless chromium for the tests that look at a page as a person would: Debian's chromium and chromium-driver,
driven by Selenium, offline (Selenium Manager never looks for downloads)."""
import contextlib, os, shutil, tempfile

import pytest

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
DRIVER = shutil.which('chromedriver')


def need_chromium():
    "Skip the test, saying why, where chromium is missing; under CI=true fail instead."
    if CHROMIUM and DRIVER: return
    msg = 'needs Debian packages chromium and chromium-driver (apt-get install -y chromium chromium-driver)'
    if os.environ.get('CI'): pytest.fail(f'CI is set and the browser is missing: {msg}')
    pytest.skip(msg)


@contextlib.contextmanager
def chromium(width: int=1000, height: int=900):
    "A headless chromium WebDriver with a throw-away profile and no background traffic."
    need_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    os.environ.setdefault('SE_OFFLINE', 'true')
    profile = tempfile.mkdtemp(prefix='chromium-profile-')
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
              '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-default-apps',
              '--disable-extensions', f'--user-data-dir={profile}', f'--window-size={width},{height}'):
        opts.add_argument(a)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=DRIVER))
    driver.set_page_load_timeout(30)
    try: yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
