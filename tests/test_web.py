"""The web page (fashionflow/web.py, app.py): its checks in-process, the /generate API through
gradio_client against a live `python app.py`, and the page in headless Debian chromium.

The live server runs the demo model from a copy whose config.yaml asks for 4 frames and 2
steps by default, so every generation takes about a second on the CPU and the defaults are
seen to come from the folder's config."""

import shutil
import threading
from pathlib import Path
from urllib.parse import unquote

import gradio as gr
import numpy as np
import pytest
from PIL import Image
from selenium.webdriver.common.by import By

from fashionflow import browser
from fashionflow.config import load_config, save_config
from fashionflow.video_io import read_video
from fashionflow.web import Defaults, Model, Runner, build_page, check_photo, load_model, model_status, request_settings

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "checkpoint" / "demo"
PHOTO = ROOT / "fashion_dataset" / "demo" / "synthetic_00200.png"
DEFAULT_FRAMES, DEFAULT_STEPS = 4, 2
UPLOAD_LIMIT_KB = 300


def write_corrupt_jpeg(path: Path) -> Path:
    """A JPEG cut off halfway (an interrupted copy): it opens, it does not decode."""
    noise = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, format="JPEG")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


# --- in-process: the checks behind the page's messages ------------------------------------------

def write_text(path: Path) -> Path:
    path.write_text("not a photo")
    return path


def write_png(size):
    def write(path: Path) -> Path:
        Image.new("RGB", size, (200, 30, 30)).save(path, format="PNG")
        return path
    return write


@pytest.mark.parametrize("make, message", [
    (write_text, "notes.jpg: not an image file"),
    (write_corrupt_jpeg, "notes.jpg: cannot decode the image"),
    (write_png((20, 40)), "notes.jpg: image is too small (20x40"),
    (write_png((200, 300)), "notes.jpg: the photo has too many pixels (200x300"),
])
def test_bad_photos_get_one_line_naming_the_upload(tmp_path, make, message):
    path = make(tmp_path / "gradio-cache-name.bin")
    with pytest.raises(gr.Error) as caught:
        check_photo(path, "notes.jpg", max_pixels=50_000)
    assert caught.value.message.startswith(message)
    assert str(tmp_path) not in caught.value.message  # the server's file names stay on the server
    check_photo(PHOTO, PHOTO.name)  # a good photo passes


@pytest.mark.parametrize("values, message", [
    (dict(frames=5), "frames must be a whole number from 2 to 140, a multiple of 2; got 5"),
    (dict(steps=0), "steps must be a whole number from 1 to 1000"),
    (dict(steps="many"), "steps must be a number, got 'many'"),
    (dict(sampler="euler"), "sampler must be one of ddpm, ddim, dpm; got 'euler'"),
    (dict(init_strength=0), "init strength must be in (0.0, 1.0]"),
    (dict(resize="zoom"), "resize must be one of stretch, crop, pad"),
])
def test_settings_out_of_range_are_named(values, message):
    good = dict(sampler="ddim", steps=3, guidance=1.0, init_strength=0.5, frames=8, seed=1, resize="crop")
    sampler, settings = request_settings(Defaults(), **good)
    assert (sampler, settings.steps, settings.num_frames, settings.seed, settings.resize) == ("ddim", 3, 8, 1, "crop")
    with pytest.raises(gr.Error) as caught:
        request_settings(Defaults(), **{**good, **values})
    assert caught.value.message.startswith(message)


def test_a_model_folder_that_does_not_load_is_a_message_on_the_page(tmp_path):
    (tmp_path / "broken" / "unet").mkdir(parents=True)
    (tmp_path / "broken" / "model_index.json").write_text("{not json")
    for folder in (tmp_path / "missing", tmp_path / "broken"):
        model = load_model(folder)
        assert model.pipe is None and model.error.startswith(f"The model in {folder} did not load: ")
        assert model.error in model_status(model, is_demo=False)
        build_page(model, tmp_path / "work")  # the page still builds, with the message on it
        with pytest.raises(gr.Error) as caught:
            Runner(model, Defaults(), tmp_path / "work")({"path": str(PHOTO), "orig_name": PHOTO.name})
        assert caught.value.message == model.error


def test_no_photo_is_a_message():
    with pytest.raises(gr.Error, match="Upload a photo first"):
        Runner(Model(DEMO, pipe=object()), Defaults(), Path("unused"))(None)


# --- a live server ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """app.py on the demo model, defaults 4 frames / 2 steps, a 300 KB upload limit, no network."""
    checkpoint = tmp_path_factory.mktemp("web") / "demo"
    shutil.copytree(DEMO, checkpoint)
    cfg = load_config(checkpoint / "config.yaml")
    cfg.sample.num_frames, cfg.sample.num_inference_steps = DEFAULT_FRAMES, DEFAULT_STEPS
    save_config(cfg, checkpoint / "config.yaml")
    with browser.AppServer(["--checkpoint", str(checkpoint), "--max-file-size", f"{UPLOAD_LIMIT_KB}kb"]) as app:
        yield app
        assert not app.network_calls(), app.network_calls()
        assert "Traceback" not in app.log(), app.log()  # bad inputs are messages, not crashes


def frame_count(path) -> int:
    frames, _ = read_video(path)
    return len(frames)


def test_api_generate_takes_the_photo_and_defaults_the_rest(server, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server.url, verbose=False)
    video = client.predict(handle_file(str(PHOTO)), api_name="/generate")
    frames, _ = read_video(video)
    assert frames.shape == (DEFAULT_FRAMES, 128, 128, 3)  # the folder's config.yaml gave the defaults
    video = client.predict(handle_file(str(PHOTO)), frames=6, steps=1, sampler="dpm", seed=3, api_name="/generate")
    assert frame_count(video) == 6

    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(Exception, match="notes.txt: not an image file"):
        client.predict(handle_file(str(notes)), api_name="/generate")
    with pytest.raises(Exception, match="frames must be a whole number"):
        client.predict(handle_file(str(PHOTO)), frames=3, api_name="/generate")
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > UPLOAD_LIMIT_KB * 1024
    with pytest.raises(Exception, match="(?i)file size|too large|exceeds"):
        client.predict(handle_file(str(big)), api_name="/generate")
    assert frame_count(client.predict(handle_file(str(PHOTO)), api_name="/generate")) == DEFAULT_FRAMES  # still usable


def test_two_requests_at_once_are_queued_not_mixed(server):
    from gradio_client import Client, handle_file

    results, errors = {}, []

    def request(frames):
        try:
            client = Client(server.url, verbose=False)
            results[frames] = client.predict(handle_file(str(PHOTO)), frames=frames, api_name="/generate")
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=request, args=(frames,)) for frames in (2, 8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert {frames: frame_count(path) for frames, path in results.items()} == {2: 2, 8: 8}


# --- a real browser ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def page(server):
    reason = browser.browser_missing()
    if reason:
        pytest.skip(reason)
    with browser.chromium() as driver:
        browser.open_page(driver, server.url)
        yield driver


def test_page_loads_everything_from_the_server(page, server):
    urls = browser.requested_urls(page)
    assert any(url.startswith(server.url) for url in urls)
    assert browser.external(urls) == []
    assert page.title == "FashionFlow"
    assert "Model:" in browser.page_text(page)


def test_upload_generate_and_play_in_the_browser(page, tmp_path):
    browser.set_number(page, "frames", 6)
    browser.upload_photo(page, PHOTO)
    browser.click(page, "generate")
    url = browser.wait_for_video(page)
    assert frame_count(browser.download(url, tmp_path)) == 6  # the page's value reached the pipeline
    state = browser.play_video(page)
    assert state["error"] is None and state["currentTime"] > 0 and (state["width"], state["height"]) == (128, 128)
    browser.wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, "#strip img"), 30, "no frame strip")
    links = [unquote(a.get_attribute("href")) for a in page.find_elements(By.CSS_SELECTOR, "#download a")]
    assert any(link.endswith("/synthetic_00200_0.mp4") for link in links), links
    assert browser.external(browser.requested_urls(page)) == []


def test_corrupt_upload_shows_its_message_and_the_page_stays_usable(page, tmp_path):
    previous = browser.video_source(page)
    browser.upload_photo(page, write_corrupt_jpeg(tmp_path / "broken.jpg"))
    browser.click(page, "generate")
    browser.wait(page, lambda d: "broken.jpg: cannot decode the image" in browser.page_text(d), 60,
                 "no error message on the page")
    assert "Traceback" not in browser.page_text(page)
    browser.click_example(page, 0, PHOTO.name)
    browser.set_number(page, "frames", 8)
    browser.click(page, "generate")
    url = browser.wait_for_video(page, previous)
    assert frame_count(browser.download(url, tmp_path)) == 8
