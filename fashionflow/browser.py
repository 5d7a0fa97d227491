"""The web page seen through a real browser: `app.py` on a free port, Debian's chromium driven
headless by selenium (tests/test_web.py, scripts/web_screenshot.py).

Nothing is downloaded at run time: the browser and its driver are the distribution's packages
(`apt-get install -y chromium chromium-driver`), selenium talks to /usr/bin/chromedriver. The
server runs with every non-local connection refused and reported on its log, so a page that
reaches for the network shows up as a "network call" line (`AppServer.network_calls`).

    with AppServer(["--checkpoint", "checkpoint/demo"]) as server, chromium() as browser:
        browser.get(server.url)
        upload_photo(browser, "fashion_dataset/demo/synthetic_00200.png")
        click(browser, "generate")
        video_url = wait_for_video(browser)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# headless, no first-run work, no background traffic (updates, sync, QUIC probes)
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--mute-audio", "--hide-scrollbars")
LOCAL_HOSTS = ("127.0.0.1", "::1", "localhost")
NETWORK_CALL = "network call refused:"

# Runs app.py with socket connections and name lookups outside this machine refused and logged.
_GUARDED_APP = f"""
import runpy, socket, sys
LOCAL = {LOCAL_HOSTS!r}
def refuse(what):
    print({NETWORK_CALL!r}, what, file=sys.stderr, flush=True)
    raise OSError("network access is off in this test server: " + str(what))
connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo
def guarded_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOCAL:
        refuse(address)
    return connect(self, address)
def guarded_getaddrinfo(host, *args, **kwargs):
    if host not in LOCAL + (None, "", "0.0.0.0", "::"):
        refuse(host)
    return getaddrinfo(host, *args, **kwargs)
socket.socket.connect, socket.getaddrinfo = guarded_connect, guarded_getaddrinfo
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def browser_missing() -> Optional[str]:
    """Why no browser can run here (None when chromium and its driver are installed)."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        return (f"{' and '.join(missing)} not installed (Debian: apt-get install -y chromium chromium-driver; "
                ".ci/run installs them)")
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class AppServer:
    """`python app.py ARGS --port <free>` in a subprocess with the network refused; a context manager."""

    def __init__(self, args: Sequence[str] = (), timeout: float = 180.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.args = [*args, "--host", "127.0.0.1", "--port", str(self.port)]
        self.timeout = timeout
        self.log_file = tempfile.NamedTemporaryFile(prefix="fashionflow-app-", suffix=".log", delete=False)
        self.process: Optional[subprocess.Popen] = None

    def __enter__(self) -> "AppServer":
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen([sys.executable, "-c", _GUARDED_APP, str(ROOT / "app.py"), *self.args],
                                        cwd=ROOT, env=env, stdout=self.log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    if response.status == 200:
                        return self
            time.sleep(0.5)
        self.__exit__(None, None, None)
        raise TimeoutError(f"app.py did not answer at {self.url} within {self.timeout:.0f} s:\n{self.log()}")

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()

    def log(self) -> str:
        self.log_file.flush()
        return Path(self.log_file.name).read_text(errors="replace")

    def network_calls(self) -> list[str]:
        return [line for line in self.log().splitlines() if NETWORK_CALL in line]


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 1300):
    """A headless Debian chromium under selenium, with a fresh profile and its network log kept."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="fashionflow-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def requested_urls(driver) -> list[str]:
    """Every http(s)/ws(s) URL the page asked for since the last call (chromium's network log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if urlparse(url).scheme in ("http", "https", "ws", "wss"):
                urls.append(url)
    return urls


def external(urls: Sequence[str]) -> list[str]:
    return [url for url in urls if urlparse(url).hostname not in LOCAL_HOSTS]


# --- what a user does on the page (elements by the elem_id fashionflow/web.py gives them) --------

def wait(driver, condition, timeout: float = 120.0, message: str = ""):
    """Poll `condition(driver)` until it is truthy; an element the page re-rendered meanwhile
    (stale) counts as not yet."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2,
                         ignored_exceptions=(StaleElementReferenceException,)).until(condition, message)


def open_page(driver, url: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#generate"), 60, "the page did not render")


def set_number(driver, elem_id: str, value) -> None:
    """Type a value into a slider's or number field's box, as a user would, and leave the box."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=number]")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value), Keys.TAB)


def photo_shown(driver) -> str:
    """The file name of the photo the page shows ("" when none)."""
    from selenium.webdriver.common.by import By

    images = driver.find_elements(By.CSS_SELECTOR, "#photo img")
    return Path(urlparse(unquote(images[0].get_attribute("src") or "")).path).name if images else ""


def upload_photo(driver, path: str | os.PathLike) -> None:
    """Choose a file in the photo's upload box; returns once the server has it and the page shows it."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, "#photo input[type=file]").send_keys(str(Path(path).resolve()))
    wait(driver, lambda d: photo_shown(d) == Path(path).name, 30, f"the upload of {path} did not show")


def click_example(driver, index: int, name: str) -> None:
    """Click the index-th example photo; returns once the photo box shows `name`."""
    from selenium.webdriver.common.by import By

    driver.find_elements(By.CSS_SELECTOR, "button.gallery-item")[index].click()
    wait(driver, lambda d: photo_shown(d) == name, 30, f"example {name} did not show")


def click(driver, elem_id: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f"#{elem_id}").click()


def video_source(driver) -> Optional[str]:
    from selenium.webdriver.common.by import By

    videos = driver.find_elements(By.CSS_SELECTOR, "#video video")
    return videos[0].get_attribute("src") if videos else None


def wait_for_video(driver, previous: Optional[str] = None, timeout: float = 180.0) -> str:
    """The URL of the <video> the page shows once a new result is in (not `previous`)."""
    return wait(driver, lambda d: (video_source(d) or previous) != previous and video_source(d), timeout,
                "no new video on the page")


def play_video(driver, timeout: float = 30.0) -> dict:
    """Play the result's <video> from the start; its state once it has played past the start."""
    driver.execute_script("const v = document.querySelector('#video video'); v.muted = true; v.currentTime = 0; "
                          "v.play();")
    state = "const v = document.querySelector('#video video'); return {readyState: v.readyState, " \
            "currentTime: v.currentTime, duration: v.duration, error: v.error && v.error.code, " \
            "width: v.videoWidth, height: v.videoHeight};"
    wait(driver, lambda d: d.execute_script(state)["currentTime"] > 0 or d.execute_script(state)["error"],
         timeout, "the video did not play")
    return driver.execute_script(state)


def page_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def download(url: str, folder: str | os.PathLike) -> Path:
    """Fetch a file the page links to (the video, the strip) into `folder`."""
    path = Path(folder) / Path(urlparse(url).path).name
    with urllib.request.urlopen(url, timeout=30) as response:
        path.write_bytes(response.read())
    return path
