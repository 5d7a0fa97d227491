"""The web page (fashionflow/web.py, app.py): its checks in-process, the /generate API through
gradio_client against a live `python app.py`, and the page in headless Debian chromium.

The live server runs the demo model from a copy whose config.yaml asks for 4 frames and 2
steps by default, so every generation takes about a second on the CPU and the defaults are
seen to come from the folder's config."""

import json
import shutil
import time
import urllib.request
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
from fashionflow.generate import Settings
from fashionflow.web import (Defaults, Model, OptionalInput, Runner, build_page, check_photo, load_model, model_status,
                             request_settings, with_optional)

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


def test_optional_inputs_appear_only_when_the_model_supports_them(tmp_path):
    """The extension point for reference views / poses: shown and in /generate's arguments only when
    supported, after every defaulted setting; its value lands in generate.Settings."""
    rate = OptionalInput("fps", supported=lambda model: model.checkpoint.name == "takes-fps",
                         component=lambda model: gr.Number(label="Frame rate", elem_id="fps"),
                         convert=lambda value, runner: {"fps": float(value)})
    for name, shown in (("takes-fps", True), ("plain", False)):
        page = build_page(Model(tmp_path / name), tmp_path / "work", optional=[rate])
        assert ("fps" in element_ids(page)) == shown
        assert generate_parameters(page) == [*SETTINGS, *["fps"] * shown]
    runner = Runner(Model(tmp_path), Defaults(), tmp_path / "work", optional=[rate])
    assert with_optional(Settings(), runner, {"fps": "12"}).fps == 12.0
    assert with_optional(Settings(), runner, {"fps": None}).fps == with_optional(Settings(), runner, {}).fps == 25


SETTINGS = ["photo", "sampler", "steps", "guidance", "init_strength", "frames", "seed", "resize"]


def element_ids(page: gr.Blocks) -> list:
    return [component.get("props", {}).get("elem_id") for component in page.config["components"]]


def generate_parameters(page: gr.Blocks) -> list[str]:
    """/generate's argument names, after checking that only the photo lacks a default."""
    parameters = page.get_api_info()["named_endpoints"]["/generate"]["parameters"]
    assert [p["parameter_has_default"] for p in parameters] == [False] + [True] * (len(parameters) - 1)
    return [p["parameter_name"] for p in parameters]


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
    """Two requests at once (the same multistep sampler, different lengths and seeds) give what each gives alone."""
    from gradio_client import Client, handle_file

    requests = {2: dict(frames=2, seed=5), 8: dict(frames=8, seed=6)}
    shared = dict(sampler="dpm", steps=12, init_strength=1.0, api_name="/generate")
    clients = {frames: Client(server.url, verbose=False) for frames in requests}
    alone = read_video(clients[2].predict(handle_file(str(PHOTO)), **requests[2], **shared))[0]
    jobs = {frames: clients[frames].submit(handle_file(str(PHOTO)), **requests[frames], **shared)
            for frames in requests}
    results = {frames: job.result(timeout=120) for frames, job in jobs.items()}
    assert {frames: frame_count(path) for frames, path in results.items()} == {2: 2, 8: 8}
    np.testing.assert_array_equal(read_video(results[2])[0], alone)


def test_generate_reports_progress_per_denoising_step(server):
    from gradio_client import Client, handle_file

    job = Client(server.url, verbose=False).submit(handle_file(str(PHOTO)), frames=8, steps=40, init_strength=1.0,
                                                   api_name="/generate")
    seen = set()
    while not job.done():
        for unit in job.status().progress_data or []:
            seen.add((unit.index, unit.length))
        time.sleep(0.05)
    assert frame_count(job.result()) == 8
    steps_seen = {index for index, length in seen if length == 40}
    assert len(steps_seen) >= 2 and max(steps_seen) > min(steps_seen), seen  # the bar moved through the 40 steps


def generate_arguments(client) -> list[str]:
    api = client.view_api(print_info=False, return_format="dict")
    return [p["parameter_name"] for p in api["named_endpoints"]["/generate"]["parameters"]]


def served_element_ids(server) -> list:
    with urllib.request.urlopen(server.url + "config", timeout=30) as response:
        return [c.get("props", {}).get("elem_id") for c in json.load(response)["components"]]


def test_the_demo_model_offers_reference_views_and_driving_poses(server):
    from gradio_client import Client

    # checkpoint/demo does every mode: model.max_references 2 and a pose guider
    assert generate_arguments(Client(server.url, verbose=False)) == [*SETTINGS, "references", "motion", "pose_video",
                                                                     "reference_guidance", "pose_guidance",
                                                                     "routed_init_strength"]
    ids = served_element_ids(server)
    assert {"photo", "references", "motion", "pose-video", "reference-guidance", "pose-guidance",
            "routed-init-strength"} <= set(ids)


def test_a_model_without_references_or_poses_has_neither_input(tmp_path):
    """The released preset's shape (tiny widths): no reference upload, no motion, no pose video."""
    from fashionflow.testing import build_tiny_pipeline

    pipe, cfg = build_tiny_pipeline(tmp_path, load_config(ROOT / "configs" / "tiny.yaml"))
    page = build_page(Model(tmp_path, pipe=pipe, cfg=cfg), tmp_path / "work")
    assert generate_parameters(page) == SETTINGS
    assert "photo" in element_ids(page) and not {"references", "motion", "pose-video"} & set(element_ids(page))


# --- reference views (models trained with model.max_references; fashionflow/models/references.py) ---

VIEWS = sorted(PHOTO.parent.glob("*.png"))[1:]  # two other demo photos as the back and side views


@pytest.fixture(scope="module")
def reference_model(tmp_path_factory):
    """A tiny pipeline folder taking up to 2 reference views (fresh), defaults 2 frames / 1 step; (folder, Model)."""
    from fashionflow.pipeline import save_pipeline
    from fashionflow.testing import build_tiny_pipeline

    root = tmp_path_factory.mktemp("refs")
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["model.max_references=2", "sample.num_frames=2",
                                                       "sample.num_inference_steps=1", "sample.sampler=ddim"])
    pipe, cfg = build_tiny_pipeline(root, cfg)
    folder = save_pipeline(pipe, root / "pipeline", cfg)
    return folder, Model(folder, pipe=pipe, cfg=cfg)


def upload(path: Path) -> dict:
    return {"path": str(path), "orig_name": path.name}


def test_reference_views_reach_the_pipeline_and_bad_ones_are_named(reference_model, tmp_path):
    folder, model = reference_model
    page = build_page(model, tmp_path / "work")
    assert "references" in element_ids(page)
    assert generate_parameters(page) == [*SETTINGS, "references", "reference_guidance"]
    assert "up to 2 reference views" in model_status(model, is_demo=False)
    runner = Runner(model, Defaults.of(model), tmp_path / "work", optional=page_optional(model))
    video, extras = runner(upload(PHOTO), references=[upload(view) for view in VIEWS])
    assert frame_count(video) == 2
    sheet = next(name for name in extras["files"] if name.endswith("_input.png"))
    assert Image.open(sheet).size == (3 * 128, 128)  # the photo, then its two reference views
    notes = write_text(tmp_path / "notes.txt")
    for views, message in (([upload(VIEWS[0]), upload(notes)], "notes.txt: not an image file"),
                           ([upload(write_corrupt_jpeg(tmp_path / "back.jpg"))], "back.jpg: cannot decode the image"),
                           ([upload(PHOTO)] * 3, "3 reference views given; this model takes at most 2 "
                                                 "(model.max_references)")):
        with pytest.raises(gr.Error) as caught:
            runner(upload(PHOTO), references=views)
        assert caught.value.message.startswith(message) and str(tmp_path) not in caught.value.message


def page_optional(model):
    from fashionflow.web import OPTIONAL_INPUTS

    return [option for option in OPTIONAL_INPUTS if option.supported(model)]


def test_reference_views_through_the_api_and_the_page(reference_model, tmp_path):
    from gradio_client import Client, handle_file

    folder, _ = reference_model
    with browser.AppServer(["--checkpoint", str(folder)]) as app:
        assert "references" in served_element_ids(app)
        client = Client(app.url, verbose=False)
        assert generate_arguments(client) == [*SETTINGS, "references", "reference_guidance"]
        assert frame_count(client.predict(handle_file(str(PHOTO)), api_name="/generate")) == 2  # no views: still fine
        views = [handle_file(str(view)) for view in VIEWS]
        assert frame_count(client.predict(handle_file(str(PHOTO)), references=views, api_name="/generate")) == 2
        assert frame_count(client.predict(handle_file(str(PHOTO)), references=views, reference_guidance=3,
                                          api_name="/generate")) == 2
        with pytest.raises(Exception, match=r"3 reference views given; this model takes at most 2"):
            client.predict(handle_file(str(PHOTO)), references=views + views[:1], api_name="/generate")
        with pytest.raises(Exception, match="notes.txt: not an image file"):
            client.predict(handle_file(str(PHOTO)), references=[handle_file(str(write_text(tmp_path / "notes.txt")))],
                           api_name="/generate")
        if not browser.browser_missing():  # the page's upload box reaches the pipeline too
            with browser.chromium() as driver:
                browser.open_page(driver, app.url)
                browser.upload_photo(driver, PHOTO)
                browser.upload_files(driver, "references", VIEWS)
                browser.click(driver, "generate")
                assert frame_count(browser.download(browser.wait_for_video(driver), tmp_path)) == 2
                browser.wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#download a"), 30, "no downloads")
                links = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "#download a")]
                sheet = browser.download(next(link for link in links if link.endswith("_input.png")), tmp_path)
                assert Image.open(sheet).size == (3 * 128, 128)  # the photo and the two views
        assert not app.network_calls(), app.network_calls()
        assert "Traceback" not in app.log(), app.log()


# --- pose-driven mode (models trained with model.pose_guider; fashionflow/models/pose_guider.py) ---

@pytest.fixture(scope="module")
def pose_model(tmp_path_factory):
    """A tiny pose-guided pipeline (fresh guider), defaults 4 frames / 1 step, as a Model."""
    from fashionflow.testing import build_tiny_pipeline

    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["model.pose_guider=true", "sample.num_frames=4",
                                                       "sample.num_inference_steps=1", "sample.sampler=ddim"])
    root = tmp_path_factory.mktemp("pose")
    pipe, cfg = build_tiny_pipeline(root, cfg)
    return Model(root, pipe=pipe, cfg=cfg)


def write_video(path: Path, frames) -> Path:
    from fashionflow.video_io import write_mp4

    return write_mp4(path, frames, fps=8)


def test_driving_motion_and_pose_video_inputs(pose_model, tmp_path):
    page = build_page(pose_model, tmp_path / "work")
    assert {"motion", "pose-video"} <= set(element_ids(page)) and "references" not in element_ids(page)
    assert generate_parameters(page) == [*SETTINGS, "motion", "pose_video", "pose_guidance"]
    runner = Runner(pose_model, Defaults.of(pose_model), tmp_path / "work", optional=page_optional(pose_model))
    video, extras = runner(upload(PHOTO), frames=6, motion="turn")
    assert frame_count(video) == 6  # the motion is resampled to the page's frame count
    assert any(name.endswith("_0_poses.png") for name in extras["files"])  # the skeletons that drove it
    assert frame_count(runner(upload(PHOTO), motion="none")[0]) == 4  # "none": as without poses
    assert frame_count(runner(upload(PHOTO), frames=2, motion="sway", pose_guidance=2.0)[0]) == 2
    assert frame_count(runner(upload(PHOTO), frames=2, pose_guidance=2.0)[0]) == 2  # no motion: nothing to guide

    blank = write_video(tmp_path / "empty-room.mp4", np.full((3, 64, 64, 3), 90, np.uint8))
    broken = tmp_path / "walk.mp4"
    broken.write_bytes(b"not a video")
    for values, message in ((dict(pose_video=upload(broken)), "walk.mp4: cannot open as a video"),
                            (dict(pose_video=upload(blank)), "empty-room.mp4: no person found in any of its 3 frame"),
                            (dict(motion="moonwalk"), "motion must be one of none, turn, sway, catwalk"),
                            (dict(motion="turn", pose_video=upload(blank)), "empty-room.mp4: no person found"),
                            (dict(motion="turn", pose_guidance=0.5), "pose guidance must be in [1.0, 10.0]")):
        with pytest.raises(gr.Error) as caught:
            runner(upload(PHOTO), **values)
        assert caught.value.message.startswith(message) and str(tmp_path) not in caught.value.message


def test_a_routing_model_offers_the_routed_init_strength(tmp_path, monkeypatch):
    """With pose routing (poses + references), the page's routed init strength starts at the folder's
    sample.routed_init_strength and reaches the pipeline; other models do not show it."""
    from fashionflow.testing import build_tiny_pipeline

    cfg = load_config(ROOT / "configs" / "tiny.yaml", [
        "model.pose_guider=true", "model.max_references=2", "model.reference_pose_routing=30", "sample.num_frames=2",
        "sample.num_inference_steps=2", "sample.sampler=ddim", "sample.init_strength=0.9",
        "sample.routed_init_strength=0.4"])
    pipe, cfg = build_tiny_pipeline(tmp_path / "model", cfg)
    model = Model(tmp_path / "model", pipe=pipe, cfg=cfg)
    page = build_page(model, tmp_path / "work")
    assert "routed-init-strength" in element_ids(page)
    assert generate_parameters(page)[-1] == "routed_init_strength"
    seen, original = [], type(pipe).__call__

    def spy(self, *args, **kwargs):
        seen.append(kwargs["routed_init_strength"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(pipe), "__call__", spy)
    runner = Runner(model, Defaults.of(model), tmp_path / "work", optional=page_optional(model))
    runner(upload(PHOTO), motion="turn", references=[upload(VIEWS[0])])
    runner(upload(PHOTO), motion="turn", references=[upload(VIEWS[0])], routed_init_strength=0.25)
    assert seen == [0.4, 0.25]
    with pytest.raises(gr.Error) as caught:
        runner(upload(PHOTO), routed_init_strength=0)
    assert caught.value.message.startswith("routed init strength must be in (0.0, 1.0]")


def test_pose_video_of_a_real_person_drives_the_video(pose_model, fixtures_dir, tmp_path):
    runner = Runner(pose_model, Defaults.of(pose_model), tmp_path / "work", optional=page_optional(pose_model))
    walk = write_video(tmp_path / "walk.mp4", read_video(fixtures_dir / "ubc_test_91BjuE6irxS.mp4", 0, 6)[0])
    video, extras = runner(upload(PHOTO), frames=4, pose_video=upload(walk))
    assert frame_count(video) == 4 and any(name.endswith("_0_poses.png") for name in extras["files"])
    with pytest.raises(gr.Error, match="give motion or pose_video, not both"):
        runner(upload(PHOTO), motion="sway", pose_video=upload(walk))


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
