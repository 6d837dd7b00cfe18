"""Official TRELLIS image preprocessing: object crop, alpha sources, input conversions, bad inputs."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from trellis_impl.conditioning import (IMAGENET_MEAN, IMAGENET_STD, BackgroundRemover, images_to_tensor,
                                       normalize_imagenet, object_crop_box, preprocess_image, to_rgb_or_rgba)

COLOR = (200, 120, 40)


def disc_alpha(width=64, height=48, center=(30.0, 20.0), radius=10.0) -> np.ndarray:
    """uint8 [H, W]: 255 inside the disc, 0 outside."""
    y, x = np.mgrid[:height, :width]
    return np.where((x - center[0]) ** 2 + (y - center[1]) ** 2 <= radius ** 2, 255, 0).astype(np.uint8)


def rgba_disc(**kwargs) -> Image.Image:
    alpha = disc_alpha(**kwargs)
    rgb = np.broadcast_to(np.array(COLOR, np.uint8), alpha.shape + (3,))
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")


def official_steps(rgba: np.ndarray, box_pixels) -> np.ndarray:
    """Steps 3-5 done by hand: crop with numpy (zero padding outside), PIL LANCZOS, float32 math."""
    left, top, right, bottom = box_pixels
    h, w = rgba.shape[:2]
    canvas = np.zeros((bottom - top, right - left, 4), np.uint8)
    ys, xs = slice(max(top, 0), min(bottom, h)), slice(max(left, 0), min(right, w))
    canvas[ys.start - top:ys.stop - top, xs.start - left:xs.stop - left] = rgba[ys, xs]
    resized = np.asarray(Image.fromarray(canvas, "RGBA").resize((518, 518), Image.Resampling.LANCZOS))
    resized = resized.astype(np.float32) / 255
    return ((resized[:, :, :3] * resized[:, :, 3:4]) * 255).astype(np.uint8)


def test_crop_box_math():
    alpha = np.zeros((30, 40), np.uint8)
    alpha[5:15, 10:30] = 205  # x 10..29, y 5..14
    alpha[0, 0] = 204  # not above 0.8 * 255
    # centre (19.5, 9.5); side int(19 * 1.2) = 22
    assert object_crop_box(alpha) == (8.5, -1.5, 30.5, 20.5)
    alpha[5, 35] = 255  # x 10..35: centre 22.5, side int(25 * 1.2) = 30
    assert object_crop_box(alpha) == (7.5, -5.5, 37.5, 24.5)


def test_disc_matches_official_steps():
    image = rgba_disc()
    out = preprocess_image(image)
    assert out.mode == "RGB" and out.size == (518, 518)
    # disc: x 20..40, y 10..30 -> centre (30, 20), side int(20 * 1.2) = 24 -> box (18, 8, 42, 32)
    expected = official_steps(np.asarray(image), (18, 8, 42, 32))
    np.testing.assert_array_equal(np.asarray(out), expected)
    pixels = np.asarray(out)
    assert (pixels[:5, :5] == 0).all()  # transparent surroundings come out black
    centre = pixels[259, 259]
    # rgb * 1.0 * 255 in float32, truncated: the official output may lose one unit
    assert all(c - 1 <= v <= c for v, c in zip(centre, COLOR))


def test_crop_outside_image_and_half_pixel_rounding():
    alpha = np.zeros((30, 40), np.uint8)
    alpha[5:15, 10:30] = 255
    rgba = np.dstack([np.full((30, 40, 3), 90, np.uint8), alpha])
    out = preprocess_image(Image.fromarray(rgba, "RGBA"))
    # box (8.5, -1.5, 30.5, 20.5) rounded half to even by PIL: (8, -2, 30, 20)
    np.testing.assert_array_equal(np.asarray(out), official_steps(rgba, (8, -2, 30, 20)))


def test_mask_is_used_as_alpha():
    reference = preprocess_image(rgba_disc())
    rgb = np.asarray(rgba_disc())[:, :, :3].copy()
    alpha = disc_alpha()
    for mask in (alpha, alpha.astype(np.float32) / 255, alpha > 0, Image.fromarray(alpha, "L"),
                 alpha.astype(np.uint16) * 257):
        np.testing.assert_array_equal(np.asarray(preprocess_image(rgb, mask=mask)), np.asarray(reference))
    # The mask wins over the image's own alpha: a square mask fills the corners the disc leaves black.
    square = np.zeros((48, 64), np.uint8)
    square[10:30, 20:40] = 255
    assert np.asarray(reference)[60, 60].max() == 0
    assert np.asarray(preprocess_image(rgba_disc(), mask=square))[60, 60, 0] >= COLOR[0] - 1


def test_mask_of_wrong_size():
    with pytest.raises(ValueError, match=r"mask: size 10x12 \(W x H\) does not match the image size 64x48"):
        preprocess_image(rgba_disc(), mask=np.ones((12, 10), np.float32))
    with pytest.raises(ValueError, match="mask: float values must lie in"):
        preprocess_image(rgba_disc(), mask=disc_alpha().astype(np.float32))
    with pytest.raises(ValueError, match="mask: PIL mode 'RGB' not supported"):
        preprocess_image(rgba_disc(), mask=Image.new("RGB", (64, 48)))


def test_grayscale_and_16bit_inputs():
    alpha = disc_alpha()
    gray = np.full(alpha.shape, 150, np.uint8)
    reference = np.asarray(preprocess_image(np.dstack([gray, gray, gray]), mask=alpha))
    assert (reference[..., 0] == reference[..., 1]).all() and (reference[..., 1] == reference[..., 2]).all()
    inputs = {
        "L": Image.fromarray(gray, "L"),
        "I;16": Image.fromarray(gray.astype(np.uint16) * 257),  # 150 * 257 -> 150 in 8 bit
        "uint16 array": gray.astype(np.uint16) * 257,
        "float array": gray.astype(np.float32) / 255,
        "I": Image.fromarray(gray.astype(np.int32) * 257, "I"),
    }
    assert inputs["I;16"].mode == "I;16"
    for name, image in inputs.items():
        np.testing.assert_array_equal(np.asarray(preprocess_image(image, mask=alpha)), reference, err_msg=name)
    # Gray + alpha: its alpha is used, no mask needed.
    la = Image.fromarray(np.dstack([gray, alpha]), "LA")
    np.testing.assert_array_equal(np.asarray(preprocess_image(la)), reference)
    np.testing.assert_array_equal(np.asarray(preprocess_image(np.dstack([gray, alpha]))), reference)


def test_16bit_scaling():
    values = np.array([[0, 128, 257, 65535]], np.uint16)
    assert np.asarray(to_rgb_or_rgba(values))[0, :, 0].tolist() == [0, 0, 1, 255]


def test_bad_images():
    transparent = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    with pytest.raises(ValueError, match="fully transparent"):
        preprocess_image(transparent)
    faint = np.dstack([np.zeros((32, 32, 3), np.uint8), np.full((32, 32), 150, np.uint8)])
    with pytest.raises(ValueError, match=r"no object: no pixel has alpha > 204"):
        preprocess_image(faint)
    with pytest.raises(ValueError, match="fully transparent, the mask is 0"):
        preprocess_image(np.zeros((32, 32, 3), np.uint8), mask=np.zeros((32, 32)))
    with pytest.raises(ValueError, match=r"1x1 px is too small.*at least 3 px"):
        preprocess_image(Image.new("RGBA", (1, 1), (255, 255, 255, 255)))
    two_px = np.zeros((32, 32), np.uint8)
    two_px[10, 10:12] = 255
    with pytest.raises(ValueError, match=r"object too small: .* cover 2x1 px; at least 3 px"):
        preprocess_image(np.zeros((32, 32, 3), np.uint8), mask=two_px)
    two_px[10, 12] = 255  # 3 px: the smallest object that crops
    assert preprocess_image(np.full((32, 32, 3), 255, np.uint8), mask=two_px).size == (518, 518)
    with pytest.raises(ValueError, match="float values must lie in"):
        preprocess_image(np.full((8, 8, 3), 2.0))
    with pytest.raises(ValueError, match=r"array shape \(8, 8, 5\) not supported"):
        preprocess_image(np.zeros((8, 8, 5), np.uint8))
    with pytest.raises(ValueError, match="dtype complex128 not supported"):
        preprocess_image(np.zeros((8, 8, 3), complex))
    with pytest.raises(ValueError, match="expected a PIL image or a numpy array, got list"):
        preprocess_image([[0, 1]])


def test_background_removal_fallback(monkeypatch):
    noise = np.random.default_rng(0).integers(0, 256, (20, 1100, 3), dtype=np.uint8)
    opaque = Image.fromarray(noise).convert("RGBA")  # all alpha 255: not a usable alpha; a busy background
    monkeypatch.setitem(sys.modules, "rembg", None)  # rembg not installed
    with pytest.raises(ImportError, match="background is not plain.*give an RGBA image with transparency or a mask, "
                                          "or `pip install rembg`"):
        preprocess_image(opaque)

    calls = []

    def remove(image, session):
        calls.append((image.mode, image.size, session))
        rgba = image.convert("RGBA")
        rgba.putalpha(Image.fromarray(disc_alpha(image.width, image.height, (500.0, 9.0), 8.0)))
        return rgba

    fake = types.SimpleNamespace(new_session=lambda name: f"session:{name}", remove=remove)
    monkeypatch.setitem(sys.modules, "rembg", fake)
    remover = BackgroundRemover()
    out = preprocess_image(opaque, remover=remover)
    preprocess_image(opaque.convert("RGB"), remover=remover)
    # Shrunk to a longer side of 1024 (int(20 * 1024 / 1100) = 18), RGB, one u2net session.
    assert calls == [("RGB", (1024, 18), "session:u2net")] * 2
    assert out.size == (518, 518)


def test_images_to_tensor_and_normalisation():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (518, 518, 3), dtype=np.uint8)
    pixels = images_to_tensor([Image.fromarray(rgb), Image.fromarray(np.dstack([rgb, rgb[..., 0]]), "RGBA")])
    assert pixels.shape == (2, 3, 518, 518) and pixels.dtype == torch.float32
    expected = torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)
    assert torch.equal(pixels[0], expected) and torch.equal(pixels[1], expected)  # alpha dropped at 518
    small = Image.fromarray(rgb[:100, :60])
    resized = np.asarray(small.resize((518, 518), Image.Resampling.LANCZOS)).astype(np.float32) / 255
    assert torch.equal(images_to_tensor(small)[0], torch.from_numpy(resized).permute(2, 0, 1))
    given = torch.rand(1, 3, 28, 42)
    assert torch.equal(images_to_tensor(given), given)
    with pytest.raises(ValueError, match=r"float \[B, 3, H, W\]"):
        images_to_tensor(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="empty list"):
        images_to_tensor([])

    normalized = normalize_imagenet(pixels)
    for c in range(3):
        torch.testing.assert_close(normalized[:, c], (pixels[:, c] - IMAGENET_MEAN[c]) / IMAGENET_STD[c])


def _disc_on(background, size=(160, 120), colour=(200, 40, 30), hole=None):
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    draw.ellipse((50, 30, 110, 90), fill=colour)
    if hole is not None:  # a patch of the background's colour inside the object
        draw.rectangle((74, 54, 86, 66), fill=hole)
    return image


@pytest.mark.parametrize("file_format", ["PNG", "JPEG"])
def test_plain_background_is_keyed_without_rembg(monkeypatch, tmp_path, file_format):
    from trellis_impl.conditioning.image_preprocess import key_plain_background
    monkeypatch.setitem(sys.modules, "rembg", None)
    path = tmp_path / f"disc.{file_format.lower()}"
    _disc_on((255, 255, 255), hole=(255, 255, 255)).save(path, format=file_format, quality=90)
    keyed = key_plain_background(Image.open(path))
    alpha = np.asarray(keyed.getchannel("A")) / 255.0
    yy, xx = np.mgrid[:120, :160] + 0.5
    radius = np.sqrt((xx - 80) ** 2 + (yy - 60) ** 2)  # the disc's radius is 30 px
    assert alpha[radius < 27].min() > 0.95  # the enclosed white patch stays opaque
    assert alpha[radius > 36].max() == 0.0 and alpha[(radius > 32) & (radius <= 36)].mean() < 0.02  # JPEG halo
    out = np.asarray(preprocess_image(Image.open(path))).astype(float)
    assert out[259, 151, 0] > 150 and out[259, 151, 1] < 90  # the red object, cropped and centred
    assert out[5, 5].max() < 10  # on black


def test_keying_refuses_a_busy_background_and_keys_a_flat_colour():
    from trellis_impl.conditioning.image_preprocess import key_plain_background
    busy = Image.fromarray(np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8))
    assert key_plain_background(busy) is None
    green = key_plain_background(_disc_on((40, 160, 60)))
    alpha = np.asarray(green.getchannel("A"))
    assert alpha[60, 80] == 255 and alpha[5, 5] == 0
