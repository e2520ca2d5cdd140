"""samplecnn serve in a real browser: Debian's chromium and chromedriver, headless, driven by selenium."""
import json
import shutil
import urllib.parse

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

import rawdata
from samplecnn.inference import Tagger
from servers import Server

TOKEN = "browser-token"


def chromium(*arguments):
    """Headless chromium with its performance log (every network request) kept."""
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                     *arguments):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


def requested_urls(driver):
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-browser")
    running = Server(trained[0], "--log-dir", root / "log", "--data-dir", root / "data", "--token", TOKEN,
                     tmp_dir=root / "tmp", token=TOKEN)
    yield running
    running.stop()


def test_page_tags_an_uploaded_clip(server, trained, tones, tmp_path):
    clip = tones / "raw" / "class2" / "3.wav"
    expected = Tagger.from_run(trained[0]).top(Tagger.from_run(trained[0]).predict_file(clip).scores, 1)[0][0]
    driver = chromium()
    try:
        driver.get(server.url + "/")
        wait = WebDriverWait(driver, 60)
        token = wait.until(expected_conditions.visibility_of_element_located((By.ID, "token")))  # the API said 401
        token.send_keys(TOKEN)
        driver.find_element(By.ID, "token-save").click()
        wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "model-info"), "3 classes"))
        driver.find_element(By.ID, "files").send_keys(str(clip))
        result = wait.until(expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, ".file-result")))
        labels = [e.text for e in result.find_elements(By.CSS_SELECTOR, ".bar .label")]
        assert result.find_element(By.TAG_NAME, "h4").text == "3.wav"
        assert labels[0] == expected and len(labels) == 3
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#job-form select[name=dataset] option") == [] and
                   d.find_element(By.CSS_SELECTOR, "#job-form select[name=block]").get_attribute("value") == "se")
        driver.save_screenshot(str(tmp_path / "page.png"))
        assert (tmp_path / "page.png").stat().st_size > 10_000
        hosts = {urllib.parse.urlsplit(url).hostname for url in requested_urls(driver) if url.startswith("http")}
        assert hosts == {"127.0.0.1"}
    finally:
        driver.quit()


def test_page_draws_a_timeline_for_windows(server, tmp_path):
    long = rawdata.write_wav(tmp_path / "long.wav", rawdata.tone(3.0, 16000, rawdata.class_frequency(0)), 16000)
    driver = chromium()
    try:
        driver.get(server.url + "/")
        driver.execute_script(f"localStorage.setItem('samplecnn-token', '{TOKEN}')")
        driver.refresh()
        driver.find_element(By.ID, "window").send_keys("1")
        driver.find_element(By.ID, "files").send_keys(str(long))
        timeline = WebDriverWait(driver, 60).until(
            expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, ".timeline")))
        assert "3 windows, 0.00-3.00 s" in timeline.text
        assert len(timeline.find_elements(By.CSS_SELECTOR, "tr")[0].find_elements(By.TAG_NAME, "td")) == 3
    finally:
        driver.quit()


def test_docs_page_works_with_the_network_unreachable(server):
    # Every name but the loopback address resolves to nothing and every other address goes to a dead proxy.
    driver = chromium("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--proxy-server=127.0.0.1:9")
    try:
        driver.get(server.url + "/docs")
        WebDriverWait(driver, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 10)
        titles = driver.find_element(By.CSS_SELECTOR, ".swagger-ui").text
        assert "/v1/predict" in titles and "/v1/jobs/{job_id}/resume" in titles
        hosts = {urllib.parse.urlsplit(url).hostname for url in requested_urls(driver) if url.startswith("http")}
        assert hosts == {"127.0.0.1"}
    finally:
        driver.quit()
