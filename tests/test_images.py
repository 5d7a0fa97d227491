"""User images: every kind of bad or unusual input gives the right tensor or one clear error line."""

import os
import random

import numpy as np
import pytest
import torch
from PIL import Image

from fashionflow.images import (ImageLoadError, frame_to_tensor, list_images, load_image, random_video_frame,
                                resize_image)

H, W = 80, 64


def check(tensor, height=H, width=W):
    assert tensor.shape == (3, height, width) and tensor.dtype == torch.float32
    assert 0.0 <= tensor.min() and tensor.max() <= 1.0


def error_line(path, **kwargs):
    with pytest.raises(ImageLoadError) as error:
        load_image(path, H, W, **kwargs)
    message = str(error.value)
    assert message.startswith(str(path)) and "\n" not in message
    return message


def gradient(height=120, width=90):
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 128)], -1).astype(np.uint8)


def test_released_resize_is_pil_bilinear_stretch_and_to_tensor(tmp_path):
    Image.fromarray(gradient()).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png", H, W)
    check(image)
    expected = np.asarray(Image.fromarray(gradient()).resize((W, H), Image.BILINEAR)) / 255.0
    torch.testing.assert_close(image, torch.tensor(expected, dtype=torch.float32).permute(2, 0, 1))


def test_real_ubc_frame_keeps_its_pixels_at_the_released_size(fixtures_dir):
    path = fixtures_dir / "ubc_frame_green.jpg"
    image = load_image(path, 640, 512)
    check(image, 640, 512)
    raw = torch.tensor(np.asarray(Image.open(path).convert("RGB")), dtype=torch.float32).permute(2, 0, 1) / 255
    torch.testing.assert_close(image, raw)


def test_missing_folder_text_truncated_and_tiny_inputs_fail_with_one_line(tmp_path):
    assert "file not found" in error_line(tmp_path / "missing.jpg")
    assert "folder" in error_line(tmp_path)
    (tmp_path / "notes.jpg").write_text("not a picture")
    assert "not an image" in error_line(tmp_path / "notes.jpg")
    Image.fromarray(gradient(400, 300)).save(tmp_path / "full.jpg", quality=95)
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:600])
    assert "cannot decode" in error_line(tmp_path / "cut.jpg")
    Image.fromarray(gradient(10, 12)).save(tmp_path / "tiny.png")
    assert "too small (12x10" in error_line(tmp_path / "tiny.png")


def test_huge_images_fail_cleanly(tmp_path, monkeypatch):
    Image.fromarray(gradient(200, 200)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40,000 px is then a decompression bomb
    assert "too large" in error_line(tmp_path / "big.png")


def test_grey_palette_and_sixteen_bit_become_the_right_rgb(tmp_path):
    grey = gradient()[..., 0]
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    image = load_image(tmp_path / "grey.png", H, W)
    check(image)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])

    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")  # 16-bit grey PNG
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    torch.testing.assert_close(load_image(tmp_path / "grey16.png", H, W), image, atol=1 / 255, rtol=0)

    Image.fromarray(gradient()).convert("P", palette=Image.ADAPTIVE, colors=16).save(tmp_path / "palette.png")
    check(load_image(tmp_path / "palette.png", H, W))
    Image.fromarray(gradient()).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    cmyk = load_image(tmp_path / "cmyk.jpg", H, W)
    reference = load_image(tmp_path / "palette.png", H, W)
    assert (cmyk - reference).abs().mean() < 0.05  # same picture, RGB again
    la = np.stack([grey, np.full_like(grey, 255)], -1)
    Image.fromarray(la, "LA").save(tmp_path / "grey_alpha.png")
    torch.testing.assert_close(load_image(tmp_path / "grey_alpha.png", H, W), image)


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((100, 100, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, 50:, 3] = 255  # left half transparent, right half opaque red
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    image = load_image(tmp_path / "rgba.png", 100, 100, resize="stretch")
    assert torch.allclose(image[:, :, :40], torch.ones(3, 100, 40))
    assert torch.allclose(image[:, :, 60:], torch.tensor([1.0, 0, 0]).view(3, 1, 1).expand(3, 100, 40))

    palette = Image.fromarray(rgba[..., :3]).convert("P")
    palette.info["transparency"] = 0  # palette index 0 (black) is transparent
    palette.save(tmp_path / "palette_t.png", transparency=0)
    check(load_image(tmp_path / "palette_t.png", H, W))


def test_exif_rotation_is_applied(tmp_path):
    pixels = np.zeros((60, 90, 3), np.uint8)  # landscape, red block top-left
    pixels[:20, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    image = load_image(tmp_path / "rotated.jpg", 90, 60)  # displayed portrait: 60 wide, 90 high
    assert image[0, :15, -15:].mean() > 0.8  # the red block is now top-right
    assert image[0, :15, :15].mean() < 0.2


@pytest.mark.parametrize("policy", ["stretch", "crop", "pad"])
def test_aspect_ratio_policies_give_the_target_size(policy, tmp_path):
    wide = np.zeros((50, 200, 3), np.uint8)
    wide[:, 90:110] = 255  # a white centre band
    Image.fromarray(wide).save(tmp_path / "wide.png")
    image = load_image(tmp_path / "wide.png", H, W, resize=policy)
    check(image)
    if policy == "crop":  # the centre 40 x 50 window (80..120) keeps the band in its middle
        assert image[:, :, W // 2].min() > 0.9 and image[:, :, 0].max() < 0.1
    if policy == "pad":  # 64 x 16 content, white bars above and below
        assert image[:, :10].min() > 0.99 and image[:, H // 2, 2].max() < 0.1
    with pytest.raises(ValueError, match="unknown resize"):
        resize_image(Image.fromarray(wide), H, W, "zoom")


def test_listing_keeps_broken_links_and_leaves_out_folders_and_hidden_files(tmp_path):
    for name in ("b.png", "a.JPG", "c.txt", ".b.x1y2.tmp.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "album.png").mkdir()
    os.symlink(tmp_path / "a.JPG", tmp_path / "link.png")
    os.symlink(tmp_path / "deleted.png", tmp_path / "dangling.png")
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png", "dangling.png", "link.png"]


def test_broken_links_and_empty_files_get_their_own_reasons(tmp_path):
    os.symlink(tmp_path / "deleted.png", tmp_path / "dangling.png")
    assert error_line(tmp_path / "dangling.png") == (
        f"{tmp_path / 'dangling.png'}: broken symbolic link (its target {tmp_path / 'deleted.png'} does not exist)")
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert error_line(tmp_path / "empty.jpg") == f"{tmp_path / 'empty.jpg'}: empty file (0 bytes)"
    os.symlink(tmp_path / "empty.jpg", tmp_path / "link_to_empty.jpg")
    assert error_line(tmp_path / "link_to_empty.jpg").endswith(": empty file (0 bytes)")


def test_frame_of_a_real_video(fixtures_dir):
    frame, index = random_video_frame(fixtures_dir / "ubc_test_91BjuE6irxS.mp4", random.Random(0))
    assert 0 <= index <= 171 and frame.shape == (540, 414, 3) and frame.dtype == np.uint8
    check(frame_to_tensor(frame, H, W))
