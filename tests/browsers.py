"""Headless chromium for the tests that look at a page as a person would: the library's browser (`docs.chromium`:
Debian's chromium and chromium-driver, driven by Selenium, offline), skipped where it is missing."""
import contextlib, os

import pytest

from taxi_duration.docs import chromium as library_chromium, chromium_binaries


def need_chromium():
    "Skip the test, saying why, where chromium is missing; under CI=true fail instead."
    if all(chromium_binaries()): return
    msg = 'needs Debian packages chromium and chromium-driver (apt-get install -y chromium chromium-driver)'
    if os.environ.get('CI'): pytest.fail(f'CI is set and the browser is missing: {msg}')
    pytest.skip(msg)


@contextlib.contextmanager
def chromium(width: int=1000, height: int=900):
    "`docs.chromium`: a headless chromium WebDriver with a throw-away profile and no background traffic."
    need_chromium()
    with library_chromium(width, height) as driver: yield driver
