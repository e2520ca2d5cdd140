"""samplecnn serve in a real browser: Debian's chromium and chromedriver, headless, driven by selenium."""
import json
import shutil
import time
import urllib.parse

import numpy as np
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

import rawdata
from samplecnn.inference import Tagger
from servers import Server

TOKEN = "browser-token"


def chromium(*arguments, downloads=None):
    """Headless chromium with its performance log (every network request) kept; files it
    downloads go to ``downloads``."""
    options = webdriver.ChromeOptions()
    if downloads:
        options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                                  "download.prompt_for_download": False})
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
def server(trained, data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-browser")
    running = Server(trained[0], "--log-dir", root / "log", "--data-dir", data_dir, "--token", TOKEN,
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
        driver.save_screenshot(str(tmp_path / "page.png"))
        assert (tmp_path / "page.png").stat().st_size > 10_000
        hosts = {urllib.parse.urlsplit(url).hostname for url in requested_urls(driver) if url.startswith("http")}
        assert hosts == {"127.0.0.1"}
    finally:
        driver.quit()


def open_page(server, *arguments, downloads=None):
    """Chromium on the page, with the token already stored."""
    driver = chromium(*arguments, downloads=downloads)
    driver.get(server.url + "/")
    driver.execute_script(f"localStorage.setItem('samplecnn-token', '{TOKEN}')")
    driver.refresh()
    return driver


def test_page_draws_a_timeline_for_windows(server, tmp_path):
    long = rawdata.write_wav(tmp_path / "long.wav", rawdata.tone(3.0, 16000, rawdata.class_frequency(0)), 16000)
    driver = open_page(server, downloads=tmp_path / "downloads")
    try:
        driver.find_element(By.ID, "window").send_keys("1")
        driver.find_element(By.ID, "files").send_keys(str(long))
        timeline = WebDriverWait(driver, 60).until(
            expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, ".timeline")))
        assert "3 windows, 0.00-3.00 s" in timeline.text
        assert len(timeline.find_elements(By.CSS_SELECTOR, "tr")[0].find_elements(By.TAG_NAME, "td")) == 3
        driver.find_element(By.ID, "embed").click()
        saved = tmp_path / "downloads" / "embeddings.npy"
        WebDriverWait(driver, 60).until(lambda d: saved.is_file() and saved.stat().st_size > 0)
        table = np.load(saved)
        assert list(table["name"]) == ["long.wav"] * 3 and list(table["timeStamp"]) == [0.0, 1.0, 2.0]
    finally:
        driver.quit()


def test_recording_from_the_microphone_is_tagged(server):
    driver = open_page(server, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")
    try:
        driver.find_element(By.ID, "record").click()
        WebDriverWait(driver, 30).until(expected_conditions.text_to_be_present_in_element((By.ID, "record"), "stop"))
        time.sleep(1.5)
        driver.find_element(By.ID, "record").click()
        result = WebDriverWait(driver, 60).until(
            expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, ".file-result")))
        assert result.find_element(By.TAG_NAME, "h4").text.startswith("recording.")
        assert len(result.find_elements(By.CSS_SELECTOR, ".bar")) == 3, result.text
    finally:
        driver.quit()


def test_training_form_starts_a_job_that_the_list_follows(server):
    driver = open_page(server)
    try:
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "select[name=dataset] option")) == 2)
        Select(driver.find_element(By.CSS_SELECTOR, "select[name=dataset]")).select_by_visible_text("broken")
        for name, value in (("max_epochs", "1"), ("init_features", "8"), ("batch_size", "8")):
            field = driver.find_element(By.CSS_SELECTOR, f"#job-form input[name={name}]")
            field.clear()
            field.send_keys(value)
        driver.find_element(By.CSS_SELECTOR, "#job-form button[type=submit]").click()
        wait.until(expected_conditions.text_to_be_present_in_element((By.CSS_SELECTOR, "#jobs tbody"), "broken / se"))
        WebDriverWait(driver, 180).until(expected_conditions.text_to_be_present_in_element(
            (By.CSS_SELECTOR, "#jobs tbody tr .status-failed"), "is missing; repair the data set"))
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
