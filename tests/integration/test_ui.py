"""The deliveries page (``/ui/`` of callbacks_api) in a real headless Chromium.

A real master, two minions, salt-api serving callbacks_api, a receiver on
127.0.0.1 that fails one callback; Debian's ``chromium`` driven by Selenium
through Debian's ``chromedriver`` (tools/system-deps.sh installs both):
sign in with Salt eauth, find the failed callback, press Redeliver, see the
new attempt; a viewer restricted to one minion sees only its callbacks. A
screenshot of each step is saved in the test's directory (path printed).
"""

import pathlib
import shutil
import time
import uuid

import pytest
import requests

from tests.integration.helpers import run_ok, start_master, wait_for_engine
from tests.support.ports import free_ports

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
MINION = "cb-ui-minion"
OTHER = "cb-ui-other"
WAIT = 30

selenium = pytest.importorskip("selenium", reason="selenium is in requirements-test.txt")
if not (pathlib.Path(CHROMIUM).exists() and pathlib.Path(CHROMEDRIVER).exists()):
    pytest.skip(f"Debian's chromium and chromium-driver are not installed ({CHROMIUM}, {CHROMEDRIVER}): "
                "run tools/system-deps.sh", allow_module_level=True)

from selenium import webdriver  # noqa: E402 (after the skip)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def ui_master(salt_factories, event_listener):
    cherrypy_port, api_port = free_ports(2)
    factory = start_master(
        salt_factories, event_listener, "cb-ui-master", max_retries=0,
        salt_overrides={
            "external_auth": {"auto": {"alice": ["test.*"], "bob": [{MINION: ["test.*"]}]}},
            "rest_cherrypy": {"host": "127.0.0.1", "port": cherrypy_port, "disable_ssl": True},
            "callbacks_api": {"host": "127.0.0.1", "port": api_port, "disable_ssl": True},
        },
    )
    with factory.started():
        wait_for_engine(factory)
        yield factory


@pytest.fixture(scope="module")
def ui_minions(ui_master):
    first, other = ui_master.salt_minion_daemon(MINION), ui_master.salt_minion_daemon(OTHER)
    with first.started(), other.started():
        yield first, other


@pytest.fixture(scope="module")
def ui_api(ui_master, ui_minions):
    daemon = ui_master.salt_api_daemon()
    port = ui_master.config["callbacks_api"]["port"]
    daemon.check_ports.append(port)
    with daemon.started():
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + WAIT
        while True:
            try:
                requests.get(f"{base}/ui/", timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "callbacks_api did not answer"
                time.sleep(0.2)
        yield base


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 "--window-size=1280,1400"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, timeout=WAIT):
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)


def sign_in(driver, base, user):
    driver.get(f"{base}/ui/")
    wait(driver, ec.visibility_of_element_located((By.ID, "signin")))
    driver.find_element(By.NAME, "username").send_keys(user)
    driver.find_element(By.NAME, "password").send_keys("any-password")  # the 'auto' backend takes any
    eauth = driver.find_element(By.NAME, "eauth")
    eauth.clear()
    eauth.send_keys("auto")
    driver.find_element(By.ID, "signin-button").click()
    wait(driver, ec.visibility_of_element_located((By.ID, "main-view")))


def list_jids(driver):
    return {(row.get_attribute("data-device"), row.get_attribute("data-jid"))
            for row in driver.find_elements(By.CSS_SELECTOR, "#callbacks tbody tr")}


#: Where the screenshots are kept too: pytest deletes all but its last 3 temporary directories.
KEPT = pathlib.Path(__file__).resolve().parents[2] / ".test-output" / "ui"


def screenshot(driver, directory, name):
    path = directory / name
    assert driver.save_screenshot(str(path)), f"no screenshot saved at {path}"
    KEPT.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, KEPT / name)
    print(f"screenshot: {path} (kept as {KEPT / name})")
    return path


def test_sign_in_find_a_failed_callback_redeliver_it_and_see_the_new_attempt(ui_api, ui_master, ui_minions,
                                                                             receiver, browser, tmp_path):
    salt_run = ui_master.salt_run_cli(timeout=60)
    failing = "/ui-hook/" + uuid.uuid4().hex
    receiver.script(failing, [500])
    failed = run_ok(salt_run, "callbacks.execute", MINION, "test.ping", f"callback_url={receiver.url(failing)}")
    other = run_ok(salt_run, "callbacks.execute", OTHER, "test.ping",
                   f"callback_url={receiver.url('/ui-ok/' + uuid.uuid4().hex)}")
    receiver.wait_for(failing, 1)

    sign_in(browser, ui_api, "alice")
    cookie = browser.get_cookie("salt_callbacks_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    Select(browser.find_element(By.ID, "filter-outcome")).select_by_value("failed")
    row = f'#callbacks tbody tr[data-jid="{failed["jid"]}"]'
    deadline = time.monotonic() + WAIT
    while True:  # the engine writes the outcome within ~0.1 s of the attempt
        browser.find_element(By.ID, "apply-filters").click()
        time.sleep(0.5)
        if browser.find_elements(By.CSS_SELECTOR, row):
            break
        assert time.monotonic() < deadline, f"no failed row for {failed['jid']}: {list_jids(browser)}"
    assert browser.find_element(By.CSS_SELECTOR, f"{row} td.outcome").text == "failed"
    assert all(r.find_element(By.CSS_SELECTOR, "td.outcome").text == "failed"
               for r in browser.find_elements(By.CSS_SELECTOR, "#callbacks tbody tr"))
    wait(browser, ec.presence_of_element_located((By.CSS_SELECTOR, "#chart svg rect.bar.fail")))
    screenshot(browser, tmp_path, "1-list.png")

    browser.find_element(By.CSS_SELECTOR, f"{row} a.jid").click()
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#timeline li.attempt")) == 1)
    first = browser.find_element(By.CSS_SELECTOR, "#timeline li.attempt")
    assert "HTTP 500" in first.text and "fail" in first.get_attribute("class")
    first.find_element(By.TAG_NAME, "summary").click()  # open "Headers sent"
    headers = first.find_element(By.CSS_SELECTOR, "details pre").text
    assert "X-Request-Signature:" in headers and "webhook-signature: v1," in headers

    receiver.script(failing, [200])
    button = browser.find_element(By.ID, "redeliver")
    assert button.text == "Redeliver"
    button.click()
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#timeline li.attempt")) == 2)
    latest = browser.find_elements(By.CSS_SELECTOR, "#timeline li.attempt")[-1]
    assert "HTTP 200" in latest.text and "ok" in latest.get_attribute("class")
    assert "Redelivered" in browser.find_element(By.ID, "redeliver-status").text
    shot = screenshot(browser, tmp_path, "2-redelivered.png")
    assert shot.stat().st_size > 10_000
    assert len(receiver.wait_for(failing, 2)) == 2  # the receiver really got the redelivery

    # A viewer who may run commands on MINION only sees MINION's callbacks.
    browser.find_element(By.ID, "signout").click()
    sign_in(browser, ui_api, "bob")
    wait(browser, lambda d: (MINION, failed["jid"]) in list_jids(d))
    assert (OTHER, other["jid"]) not in list_jids(browser)
    assert {device for device, _ in list_jids(browser)} == {MINION}
    screenshot(browser, tmp_path, "3-restricted-viewer.png")

    # The page ran under its Content-Security-Policy without a single violation or script error.
    problems = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not problems, problems
