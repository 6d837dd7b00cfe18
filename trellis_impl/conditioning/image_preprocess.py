"""Image preparation of the official TRELLIS image-to-3D pipeline (tests/fixtures/conformance/dinov2.md):
object crop (``preprocess_image``) and the pixel tensor fed to DINOv2 (``images_to_tensor``,
``normalize_imagenet``).

Inputs other than 8-bit RGB/RGBA (grayscale, 16-bit, float, palette...) are first brought to
8-bit RGB or RGBA (see ``to_rgb_or_rgba``); from there every step is the official one.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

__all__ = ["TRELLIS_IMAGE_SIZE", "MIN_OBJECT_SPAN", "IMAGENET_MEAN", "IMAGENET_STD", "to_rgb_or_rgba",
           "object_crop_box", "BackgroundRemover", "key_plain_background", "preprocess_image", "images_to_tensor",
           "normalize_imagenet"]

TRELLIS_IMAGE_SIZE = 518  # px; DINOv2 ViT-L/14 at its native 37 x 37 patch grid
ALPHA_THRESHOLD = 0.8 * 255  # object pixels: alpha strictly above this (204)
CROP_SCALE = 1.2  # crop side / longer side of the object's bounding box
# Smallest longer side of the object's bounding box, in px. For a side of n px the official
# half crop side is int((n - 1) * 1.2) // 2, 0 when n < 3: the crop is empty and the official code
# returns an all-black image; we raise instead.
MIN_OBJECT_SPAN = 3
REMBG_MAX_SIDE = 1024  # px; images are shrunk to this before background removal
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ImageLike = Union[Image.Image, np.ndarray]
MaskLike = Union[Image.Image, np.ndarray]

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_DTYPES_ALLOWED = "uint8, uint16 (scaled to 8 bit), bool, other integers within 0..255, float within [0, 1]"


def _to_uint8(values: np.ndarray, what: str) -> np.ndarray:
    """Pixel values -> uint8: uint16 scaled by 255/65535 (rounded), float in [0, 1] times 255
    (rounded), bool to 0/255, other integer types kept when within 0..255."""
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * 255
    if values.dtype == np.uint16:
        return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(values.dtype, np.floating):
        if values.size and not (np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1):
            raise ValueError(f"{what}: float values must lie in [0, 1] "
                             f"(got {np.nanmin(values):g} .. {np.nanmax(values):g})")
        return np.round(values.astype(np.float64) * 255).astype(np.uint8)
    if np.issubdtype(values.dtype, np.integer):
        if values.size and (values.min() < 0 or values.max() > 255):
            raise ValueError(f"{what}: {values.dtype} values {values.min()} .. {values.max()} are outside 0..255; "
                             f"pass 16-bit data as uint16. Allowed dtypes: {_DTYPES_ALLOWED}")
        return values.astype(np.uint8)
    raise ValueError(f"{what}: dtype {values.dtype} not supported; allowed: {_DTYPES_ALLOWED}")


def _array_to_image(array: np.ndarray, what: str) -> Image.Image:
    """[H, W], [H, W, 1] (gray), [H, W, 2] (gray + alpha), [H, W, 3] (RGB), [H, W, 4] (RGBA)."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        gray = _to_uint8(array, what)
        return Image.fromarray(np.stack([gray] * 3, axis=-1), "RGB")
    if array.ndim != 3 or array.shape[2] not in (2, 3, 4):
        raise ValueError(f"{what}: array shape {array.shape} not supported; allowed: [H, W], [H, W, 1], "
                         f"[H, W, 2] (gray + alpha), [H, W, 3] (RGB), [H, W, 4] (RGBA)")
    pixels = _to_uint8(array, what)
    if pixels.shape[2] == 2:
        pixels = pixels[:, :, [0, 0, 0, 1]]
    return Image.fromarray(np.ascontiguousarray(pixels), "RGB" if pixels.shape[2] == 3 else "RGBA")


def to_rgb_or_rgba(image: ImageLike, what: str = "image") -> Image.Image:
    """Bring an image to 8-bit PIL 'RGB', or 'RGBA' when it has an alpha channel.

    'RGB' and 'RGBA' images are returned unchanged. Conversions (all documented fallbacks):

    * grayscale 'L' / '1' -> RGB (gray replicated); 'LA' / 'La' -> RGBA.
    * palette 'P' -> RGBA when it has a transparent colour, else RGB; 'PA' -> RGBA.
    * 16-bit ('I;16*' modes, uint16 arrays) -> 8 bit as ``round(v * 255 / 65535)``; 32-bit 'I'
      images are taken as 16-bit data and must lie within 0..65535.
    * float ('F' mode, float arrays) must lie in [0, 1] -> ``round(v * 255)``.
    * other PIL modes (CMYK, YCbCr, ...) -> PIL's RGB conversion.
    * numpy arrays: [H, W] or [H, W, 1] gray, [H, W, 2] gray + alpha, [H, W, 3] RGB, [H, W, 4] RGBA.

    Raises ValueError naming ``what`` for other types, shapes, dtypes, out-of-range values and
    empty (0-pixel) images.
    """
    if isinstance(image, np.ndarray):
        converted = _array_to_image(image, what)
    elif isinstance(image, Image.Image):
        mode = image.mode
        if mode in ("RGB", "RGBA"):
            converted = image
        elif mode.startswith("I;16") or mode in ("I", "F"):
            converted = _array_to_image(_high_depth_values(image, what), what)
        else:
            if mode == "La":
                image = image.convert("LA")  # PIL converts premultiplied 'La' only to 'LA'
            has_alpha = mode in _ALPHA_MODES or (mode in ("P", "L") and "transparency" in image.info)
            try:
                converted = image.convert("RGBA" if has_alpha else "RGB")
            except ValueError as e:
                raise ValueError(f"{what}: PIL mode {mode!r} cannot be converted to RGB ({e})") from None
    else:
        raise ValueError(f"{what}: expected a PIL image or a numpy array, got {type(image).__name__}")
    if converted.width == 0 or converted.height == 0:
        raise ValueError(f"{what}: empty image ({converted.width}x{converted.height})")
    return converted


def _high_depth_values(image: Image.Image, what: str) -> np.ndarray:
    """Pixels of a 16-bit ('I;16*'), 32-bit integer ('I', taken as 16-bit data) or float ('F')
    PIL image as a uint16 / float32 array."""
    values = np.asarray(image)
    if image.mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
        raise ValueError(f"{what}: 32-bit 'I' image with values {values.min()} .. {values.max()}; "
                         "only 16-bit data (0..65535) is supported")
    return values if image.mode == "F" else values.astype(np.uint16)  # also 'I;16B' to native order


_MASK_MODES = ("L", "1", "I", "F", "I;16", "I;16L", "I;16B", "I;16N")


def _mask_to_alpha(mask: MaskLike, size: Tuple[int, int]) -> Image.Image:
    """mask (object = 1 / 255) -> PIL 'L' alpha of ``size`` (W, H). Float masks in [0, 1] are
    scaled by 255 and rounded; uint16 masks scaled to 8 bit; bool / '1' masks become 0 / 255."""
    if isinstance(mask, Image.Image):
        if mask.mode not in _MASK_MODES:
            raise ValueError(f"mask: PIL mode {mask.mode!r} not supported; allowed: {', '.join(_MASK_MODES)}")
        mask = np.asarray(mask) if mask.mode in ("L", "1") else _high_depth_values(mask, "mask")
    if not isinstance(mask, np.ndarray):
        raise ValueError(f"mask: expected a PIL image or a numpy array [H, W], got {type(mask).__name__}")
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.ndim != 2:
        raise ValueError(f"mask: expected shape [H, W], got {mask.shape}")
    if (mask.shape[1], mask.shape[0]) != tuple(size):
        raise ValueError(f"mask: size {mask.shape[1]}x{mask.shape[0]} (W x H) does not match the image size "
                         f"{size[0]}x{size[1]}")
    return Image.fromarray(_to_uint8(mask, "mask"), "L")


def object_crop_box(alpha: np.ndarray) -> Tuple[float, float, float, float]:
    """Official crop box ``(left, top, right, bottom)`` in px (floats; PIL's ``crop`` rounds each
    with Python ``round``) around the pixels with ``alpha > 0.8 * 255``.

    alpha: [H, W] uint8. The box is a square of side ``s = int(max(x1 - x0, y1 - y0) * 1.2)``
    (inclusive pixel indices of the object's bounding box) centred on
    ``((x0 + x1) / 2, (y0 + y1) / 2)``: ``(cx - s//2, cy - s//2, cx + s//2, cy + s//2)``.

    Raises ValueError when no pixel is above the threshold, or when the object spans fewer than
    ``MIN_OBJECT_SPAN`` (3) px along its longer side (the crop would be empty; the official code
    then silently yields an all-black image).
    """
    cols = np.flatnonzero((alpha > ALPHA_THRESHOLD).any(axis=0))
    rows = np.flatnonzero((alpha > ALPHA_THRESHOLD).any(axis=1))
    if cols.size == 0:
        raise ValueError(f"no object: no pixel has alpha > {ALPHA_THRESHOLD:g} (0.8 * 255); "
                         f"the largest alpha is {int(alpha.max()) if alpha.size else 0}")
    x0, x1, y0, y1 = int(cols[0]), int(cols[-1]), int(rows[0]), int(rows[-1])
    extent = max(x1 - x0, y1 - y0)  # inclusive indices: the longer side is extent + 1 px
    if extent + 1 < MIN_OBJECT_SPAN:
        raise ValueError(f"object too small: its opaque pixels (alpha > {ALPHA_THRESHOLD:g}) cover "
                         f"{x1 - x0 + 1}x{y1 - y0 + 1} px; at least {MIN_OBJECT_SPAN} px along the longer side "
                         "are needed")
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = int(extent * CROP_SCALE)
    return (cx - side // 2, cy - side // 2, cx + side // 2, cy + side // 2)


# Plain-background keying (no rembg): the border must be this uniform, and pixels this far from
# its colour (Euclidean, RGB in [0, 1]) are object; in between, alpha ramps.
PLAIN_BORDER_SHARE = 0.95
KEY_LOW, KEY_HIGH = 0.06, 0.14


def key_plain_background(image: Image.Image) -> Optional[Image.Image]:
    """RGBA of an RGB picture of an object on a plain background (studio white, a flat colour),
    or None when the background is not plain.

    The background colour is the median of the image border (a frame of 1% of the side, at least
    2 px); the background is plain when at least 95% of the border lies within ``KEY_HIGH`` of it.
    Background pixels are those close to that colour *and* connected to the border, so object
    parts of the background's colour enclosed by the object stay opaque; alpha ramps from 0 at
    ``KEY_LOW`` to 1 at ``KEY_HIGH`` along the background's edge (soft, JPEG-tolerant edges).
    """
    from scipy import ndimage
    rgb = np.asarray(image.convert("RGB")).astype(np.float32) / 255.0
    h, w = rgb.shape[:2]
    frame = max(2, round(0.01 * max(h, w)))
    border = np.concatenate([rgb[:frame].reshape(-1, 3), rgb[-frame:].reshape(-1, 3),
                             rgb[:, :frame].reshape(-1, 3), rgb[:, -frame:].reshape(-1, 3)])
    colour = np.median(border, axis=0)
    if (np.linalg.norm(border - colour, axis=1) <= KEY_HIGH).mean() < PLAIN_BORDER_SHARE:
        return None
    distance = np.linalg.norm(rgb - colour, axis=2)
    near = distance < KEY_HIGH
    labels, _ = ndimage.label(near)
    edge_labels = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    background = np.isin(labels, edge_labels[edge_labels > 0])
    alpha = np.where(background, np.clip((distance - KEY_LOW) / (KEY_HIGH - KEY_LOW), 0.0, 1.0), 1.0)
    rgba = image.convert("RGB")
    rgba.putalpha(Image.fromarray((alpha * 255 + 0.5).astype(np.uint8), "L"))
    return rgba


class BackgroundRemover:
    """Official background removal: RGB image -> RGBA with the object's alpha.

    Shrinks the image (LANCZOS) so that its longer side is at most 1024 px (new size
    ``int(w * s), int(h * s)``), then ``rembg.remove`` with a ``u2net`` session, created on the
    first call and kept by this object (a pipeline holds one). Without the ``rembg`` package (or
    its model, offline), a picture on a plain background is keyed instead
    (``key_plain_background``); any other raises ImportError saying what to do.
    """

    def __init__(self):
        self._session = None

    def __call__(self, image: Image.Image) -> Image.Image:
        try:
            import rembg
        except ImportError:
            keyed = key_plain_background(image)
            if keyed is None:
                raise ImportError("the image has no transparency and its background is not plain, so it needs "
                                  "background removal: give an RGBA image with transparency or a mask, or "
                                  "`pip install rembg`") from None
            return keyed
        image = image.convert("RGB")
        scale = min(1, REMBG_MAX_SIDE / max(image.size))
        if scale < 1:
            image = image.resize((int(image.width * scale), int(image.height * scale)), Image.Resampling.LANCZOS)
        if self._session is None:
            self._session = rembg.new_session("u2net")
        return rembg.remove(image, session=self._session).convert("RGBA")


def preprocess_image(image: ImageLike, mask: Optional[MaskLike] = None,
                     remover: Optional[BackgroundRemover] = None) -> Image.Image:
    """Official TRELLIS ``preprocess_image``: the object cropped, on black, as a 518 x 518 RGB image.

    Args:
        image: PIL image or numpy array (any of the forms ``to_rgb_or_rgba`` accepts).
        mask: optional object mask [H, W] of the image's size (PIL single-channel image, or
            array: float in [0, 1], uint8, uint16 or bool), used as alpha (1 / 255 = object).

    Where the alpha comes from, in order:
        1. ``mask`` when given (the image's own alpha is then ignored; the image is not shrunk).
        2. the image's alpha when it has one with some value below 255 (the official rule).
        3. otherwise background removal with ``rembg`` (``remover``, a ``BackgroundRemover``;
           a new one per call when None); without rembg, a plain background is keyed
           (``key_plain_background``), any other raises ImportError.

    Then (official): bounding box of the pixels with alpha > 0.8 * 255, square crop 1.2 x its
    longer side (``object_crop_box``; parts outside the image transparent black), LANCZOS
    resize to 518 x 518 (PIL premultiplies alpha), ``rgb * alpha`` truncated to uint8.

    Raises:
        ValueError: unsupported input (see ``to_rgb_or_rgba``), a mask of another size, an image
            smaller than 3 px on its longer side, a fully transparent alpha, no pixel above the
            alpha threshold, or an object under 3 px (``object_crop_box``).
        ImportError: background removal needed, ``rembg`` not installed and the background not plain.
    """
    rgb_or_rgba = to_rgb_or_rgba(image, "image")
    width, height = rgb_or_rgba.size
    if max(width, height) < MIN_OBJECT_SPAN:
        raise ValueError(f"image: {width}x{height} px is too small; the object must span at least "
                         f"{MIN_OBJECT_SPAN} px along its longer side")
    if mask is not None:
        alpha_source = "mask"
        rgba = rgb_or_rgba.convert("RGB")
        rgba.putalpha(_mask_to_alpha(mask, rgb_or_rgba.size))
    elif rgb_or_rgba.mode == "RGBA" and rgb_or_rgba.getextrema()[3][0] < 255:
        alpha_source = "image alpha"
        rgba = rgb_or_rgba
    else:
        alpha_source = "background removal (rembg)"
        rgba = (remover or BackgroundRemover())(rgb_or_rgba)
    alpha = np.asarray(rgba.getchannel("A"))
    if not alpha.any():
        raise ValueError(f"image: fully transparent, the {alpha_source} is 0 everywhere; "
                         "an object with alpha > 0.8 * 255 is needed")
    try:
        box = object_crop_box(alpha)
    except ValueError as e:
        raise ValueError(f"image ({alpha_source}): {e}") from None
    cropped = rgba.crop(box).resize((TRELLIS_IMAGE_SIZE, TRELLIS_IMAGE_SIZE), Image.Resampling.LANCZOS)
    # Official arithmetic, float32 in this order, truncating on the way back to uint8.
    rgba_float = np.asarray(cropped).astype(np.float32) / 255
    rgb = rgba_float[:, :, :3] * rgba_float[:, :, 3:4]
    return Image.fromarray((rgb * 255).astype(np.uint8), "RGB")


def images_to_tensor(images: Union[torch.Tensor, ImageLike, Sequence[ImageLike]]) -> torch.Tensor:
    """Official ``encode_image`` step 1: images -> float32 [B, 3, 518, 518] in [0, 1] (R, G, B; rows = y).

    Each image is brought to RGB/RGBA (``to_rgb_or_rgba``), resized to 518 x 518 LANCZOS (a copy
    when already that size; RGBA premultiplied by PIL), then its alpha is dropped (as the official
    ``convert('RGB')`` after the resize). A float tensor [B, 3, H, W] is returned as given
    (float32, no resize), as the official code takes tensor input.
    """
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"images: a tensor must be float [B, 3, H, W] in [0, 1]; got {images.dtype} "
                             f"{tuple(images.shape)}")
        return images.float()
    if isinstance(images, (Image.Image, np.ndarray)):
        images = [images]
    if len(images) == 0:
        raise ValueError("images: empty list")
    size = (TRELLIS_IMAGE_SIZE, TRELLIS_IMAGE_SIZE)
    tensors = []
    for i, image in enumerate(images):
        resized = to_rgb_or_rgba(image, f"images[{i}]").resize(size, Image.Resampling.LANCZOS).convert("RGB")
        tensors.append(torch.from_numpy(np.asarray(resized).astype(np.float32) / 255).permute(2, 0, 1))
    return torch.stack(tensors)


def normalize_imagenet(pixels: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` per channel with ImageNet statistics; pixels [..., 3, H, W] in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=pixels.dtype, device=pixels.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=pixels.dtype, device=pixels.device).view(3, 1, 1)
    return (pixels - mean) / std
