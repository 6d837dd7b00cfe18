"""Checks of user input made before any model runs (CLI, nodes, library entry points): each
failure is a ValueError of one line naming the input and what is allowed, and nothing is written.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

__all__ = ["MAX_IMAGE_PIXELS", "MAX_SEED", "read_image", "check_output_folder", "check_seed", "check_count",
           "check_device", "check_sampler_options"]

MAX_IMAGE_PIXELS = 100_000_000  # larger pictures are refused (the condition is 518 px anyway)
MAX_SEED = 2 ** 64 - 1          # torch generators take seeds in [0, 2^64)


def read_image(path: Union[str, os.PathLike], what: str = "image"):
    """The image file at ``path``, decoded (a PIL image), or ValueError naming ``what`` and why:
    missing, a folder, empty, not an image, truncated or over ``MAX_IMAGE_PIXELS``."""
    from PIL import Image
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{what} {path}: no such file")
    if not path.is_file():
        raise ValueError(f"{what} {path}: is a folder, not an image file")
    if path.stat().st_size == 0:
        raise ValueError(f"{what} {path}: the file is empty")
    try:
        image = Image.open(path)  # reads the header only
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise ValueError(f"{what} {path}: {width} x {height} px is over the {MAX_IMAGE_PIXELS // 1_000_000} "
                             f"megapixels allowed; downscale it")
        image.load()  # decodes now: a truncated file fails here, not in the middle of a run
        return image
    except ValueError:
        raise
    except Image.DecompressionBombError:
        raise ValueError(f"{what} {path}: too many pixels; downscale it") from None
    except (OSError, SyntaxError) as error:
        raise ValueError(f"{what} {path}: not a readable image (PNG, JPEG, WebP, ...): {error}") from None


def check_output_folder(path: Union[str, os.PathLike], what: str = "--out") -> Path:
    """A folder that exists and is writable, or can be created (its nearest existing parent is
    a writable folder); nothing is created here."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{what} {path}: is a file; give a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"{what} {path}: the folder is not writable")
        return path
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path}: cannot be created ({parent} is not a writable folder)")
    return path


def check_seed(seed, what: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{what} must be an integer in [0, 2^64 - 1], got {seed!r}")
    return seed


def check_count(value, what: str, low: int = 1, high: Optional[int] = None) -> int:
    """An integer in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{what} must be an integer {allowed}, got {value!r}")
    return value


def check_device(device: Union[str, torch.device], what: str = "device") -> torch.device:
    """A device this torch can use: 'cpu', or 'cuda[:N]' with a GPU visible."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{what} {device!r}: not a device name (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            reason = "this torch is a CPU build" if torch.version.cuda is None else "no GPU is visible"
            raise ValueError(f"{what} {device}: {reason}; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{what} {device}: only {torch.cuda.device_count()} GPU(s) are visible")
    elif device.type not in ("cpu", "mps", "xpu"):
        raise ValueError(f"{what} {device}: allowed: cpu, cuda[:N]")
    return device


def check_sampler_options(stage: str, steps=None, cfg_strength=None, cfg_interval: Optional[Sequence[float]] = None,
                          rescale_t=None) -> None:
    """The sampler overrides of one stage (None: the model folder's value)."""
    if steps is not None:
        check_count(steps, f"{stage} steps", 1, 1000)
    if cfg_strength is not None and not (isinstance(cfg_strength, (int, float)) and 0.0 <= cfg_strength <= 100.0):
        raise ValueError(f"{stage} CFG strength must be in [0, 100], got {cfg_strength!r}")
    if cfg_interval is not None:
        low, high = cfg_interval
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"{stage} CFG interval must be LOW HIGH with 0 <= LOW <= HIGH <= 1, got {low} {high}")
    if rescale_t is not None and not (isinstance(rescale_t, (int, float)) and rescale_t > 0.0):
        raise ValueError(f"{stage} rescale_t must be > 0, got {rescale_t!r}")
