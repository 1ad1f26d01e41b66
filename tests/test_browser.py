"""The landing page and a probe's log page in real headless Chromium, against a real exporter.

Needs Debian's ``chromium`` and ``chromium-driver`` (tests/debian-packages.txt). Screenshots go
to test-artifacts/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

from tests.conftest import PKI
from tests.pki import DAY, NOW
from tests.servers import pytls
from tests.test_server import ExporterProcess

ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Would rename the page if the landing page let a certificate's text run as script.
HOSTILE_CN = '<script>document.title="pwned"</script>'


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _cell(row: WebElement, name: str) -> str:
    return row.find_element(By.CSS_SELECTOR, f'td[data-label="{name}"]').text


def test_landing_page_and_probe_log_in_chromium(browser: WebDriver, pki: PKI, config_file: Path) -> None:
    good = pki.inter.issue("good.example.test", dns=("good.example.test",), not_after=NOW + 60 * DAY)
    expired = pki.inter.issue(HOSTILE_CN, dns=("expired.example.test",),
                              not_before=NOW - 40 * DAY, not_after=NOW - 3 * DAY)
    good_files = pki.chain_files("browser-good", good, pki.inter)
    expired_files = pki.chain_files("browser-expired", expired, pki.inter)
    exporter = ExporterProcess(f"--config.file={config_file}", "--history.limit=10")
    try:
        with pytls.tls_server(*good_files) as (good_port, _), pytls.tls_server(*expired_files) as (bad_port, _), \
                pytls.refused_port() as refused:
            for target, name in ((f"127.0.0.1:{good_port}", "good.example.test"),
                                 (f"127.0.0.1:{bad_port}", "expired.example.test"),
                                 (f"127.0.0.1:{refused}", "localhost")):
                assert exporter.get(f"/probe?target={target}&hostname={name}")[0] == 200
        base = f"http://127.0.0.1:{exporter.port}"

        browser.set_window_size(1280, 900)
        browser.get(base + "/")
        assert browser.title == "SSL Exporter"  # the certificate's <script> did not run
        rows = browser.find_elements(By.CSS_SELECTOR, "table.probes tbody tr")
        assert [row.get_attribute("class") for row in rows] == ["failed", "failed", "ok"]  # newest first
        refused_row, expired_row, good_row = rows
        assert _cell(good_row, "target") == f"127.0.0.1:{good_port}\nname good.example.test"
        assert (_cell(good_row, "result"), _cell(good_row, "reason")) == ("OK", "")
        assert _cell(good_row, "leaf") in ("expires in 59d 23h\ngood.example.test",
                                           "expires in 60d 0h\ngood.example.test")
        assert _cell(good_row, "module") == "test"
        assert (_cell(expired_row, "result"), _cell(expired_row, "reason")) == ("FAILED", "verify/expired")
        assert _cell(expired_row, "leaf").startswith("expired 3d 0h ago\n") or \
            _cell(expired_row, "leaf").startswith("expired 2d 23h ago\n")
        assert _cell(expired_row, "leaf").endswith(HOSTILE_CN)  # shown as text, not run
        assert _cell(refused_row, "reason") == "connect/refused"
        assert _cell(refused_row, "leaf") == ""
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "landing.png"))

        # On a phone the table becomes one card per probe, each value with its label.
        browser.set_window_size(390, 844)
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        header = browser.find_element(By.CSS_SELECTOR, "table.probes thead")
        assert header.value_of_css_property("display") == "none"
        label = browser.execute_script(
            "return getComputedStyle(arguments[0], '::before').content", rows[0].find_element(By.TAG_NAME, "td"))
        assert label == '"time: "'
        browser.save_screenshot(str(ARTIFACTS / "landing-phone.png"))

        browser.set_window_size(1280, 900)
        expired_row.find_element(By.LINK_TEXT, "log").click()
        assert browser.current_url == f"{base}/probe/log?id=2"
        assert browser.title == f"Probe 2: 127.0.0.1:{bad_port}"
        log = browser.find_element(By.TAG_NAME, "pre").text
        assert log.startswith("Logs for the probe:\n")
        assert f"connected to 127.0.0.1:{bad_port}" in log
        assert "FAILED stage=verify reason=expired: OpenSSL: certificate has expired (code 10)" in log
        assert f"[0] {HOSTILE_CN}\n" in log
        assert log.count("-----BEGIN CERTIFICATE-----") == 2
        assert "ssl_probe_success 0.0" in log
        browser.save_screenshot(str(ARTIFACTS / "probe-log.png"))
        browser.find_element(By.PARTIAL_LINK_TEXT, "SSL Exporter").click()
        assert browser.current_url == base + "/"
    finally:
        assert exporter.stop() == 0
    assert (ARTIFACTS / "landing.png").read_bytes().startswith(b"\x89PNG")
