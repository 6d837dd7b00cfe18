"""Per-voxel DINOv2 features from multi-view renders, step for step as the official
``dataset_toolkits/extract_feature.py``:

1. each RGBA render (8-bit, straight alpha) is resized to 518 x 518 with PIL's LANCZOS (which
   premultiplies RGBA internally), divided by 255, its RGB multiplied by its alpha (black
   background) and ImageNet-normalised (``view_pixels`` + ``normalize_imagenet``);
2. DINOv2 ViT-L/14 with registers runs on each view; its last block's patch tokens before the
   final norm (``x_prenorm`` after CLS and the registers) form a [C, 37, 37] map (``patch_token_maps``);
3. every voxel centre (``(index + 0.5) / resolution - 0.5``) is projected into every view (OpenCV
   camera, image coordinates in [0, 1] mapped to [-1, 1]; no visibility test: occluded voxels
   take the occluder's feature) and the map is sampled there bilinearly
   (``grid_sample``, ``align_corners=False``, zeros outside) (``sample_token_maps``);
4. the samples are averaged over the views and stored as float16 (``FeatureAccumulator``).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..backends.precision import tf32_products
from ..conditioning.image_preprocess import TRELLIS_IMAGE_SIZE, normalize_imagenet
from ..render.cameras import Camera

__all__ = ["view_pixels", "views_to_pixels", "patch_token_maps", "voxel_centers", "project_to_grid", "sample_token_maps",
           "FeatureAccumulator"]


def view_pixels(rgba: np.ndarray) -> torch.Tensor:
    """An 8-bit RGBA render uint8 [H, W, 4] -> float32 [3, 518, 518]: LANCZOS-resized RGB in
    [0, 1] times alpha (official ``get_data``)."""
    if not (isinstance(rgba, np.ndarray) and rgba.dtype == np.uint8 and rgba.ndim == 3 and rgba.shape[2] == 4):
        raise ValueError(f"rgba must be a uint8 array [H, W, 4], got {getattr(rgba, 'dtype', type(rgba).__name__)} "
                         f"{list(getattr(rgba, 'shape', []))}")
    size = (TRELLIS_IMAGE_SIZE, TRELLIS_IMAGE_SIZE)
    image = np.asarray(Image.fromarray(rgba, "RGBA").resize(size, Image.Resampling.LANCZOS)).astype(np.float32) / 255
    return torch.from_numpy(image[:, :, :3] * image[:, :, 3:]).permute(2, 0, 1).contiguous()


def views_to_pixels(rgba: Sequence[np.ndarray]) -> torch.Tensor:
    """``view_pixels`` of several renders -> float32 [B, 3, 518, 518], on a thread pool (PIL
    resizes without holding the GIL; the official loader uses threads the same way)."""
    with ThreadPoolExecutor(max_workers=min(len(rgba), os.cpu_count() or 1, 16)) as pool:
        return torch.stack(list(pool.map(view_pixels, rgba)))


@torch.no_grad()
def patch_token_maps(dinov2: torch.nn.Module, pixels: torch.Tensor, tf32: bool = False) -> torch.Tensor:
    """pixels float [B, 3, 518, 518] in [0, 1] (``view_pixels``) -> DINOv2 patch tokens before the
    final norm as maps float32 [B, C, 37, 37] (row-major patches: rows = image y). Runs in float32
    with autocast off, as the official script; ``tf32`` lets CUDA's matrix products use TF32
    (several times faster on Ampere and later, features within about 1e-3 relative)."""
    param = next(dinov2.parameters())
    config = dinov2.config
    grid = pixels.shape[-1] // config.patch_size
    with torch.autocast(param.device.type, enabled=False), tf32_products(matmul=tf32):
        tokens = dinov2(normalize_imagenet(pixels.to(device=param.device, dtype=torch.float32)))
    patches = tokens[:, 1 + config.num_register_tokens:].float()
    return patches.permute(0, 2, 1).reshape(pixels.shape[0], patches.shape[-1], grid, grid)


def voxel_centers(coords: torch.Tensor, resolution: int) -> torch.Tensor:
    """int [N, 3] grid indices -> float32 [N, 3] voxel centres ``(index + 0.5) / resolution - 0.5``
    in the unit cube (exact in float32 for the released 64^3 grid)."""
    return ((coords.double() + 0.5) / resolution - 0.5).float()


def project_to_grid(points: torch.Tensor, cameras: Sequence[Camera]) -> torch.Tensor:
    """World points float [N, 3] -> ``grid_sample`` coordinates float32 [B, N, 2] in each camera:
    image position / image size * 2 - 1, x then y (official ``project_cv(...)[0] * 2 - 1``).
    Computed in float64."""
    extrinsics = torch.stack([c.extrinsics for c in cameras]).to(device=points.device, dtype=torch.float64)
    scale = torch.tensor([[c.fx / c.width, c.fy / c.height] for c in cameras], dtype=torch.float64,
                         device=points.device)
    centre = torch.tensor([[c.cx / c.width, c.cy / c.height] for c in cameras], dtype=torch.float64,
                          device=points.device)
    camera_points = points.double() @ extrinsics[:, :3, :3].transpose(1, 2) + extrinsics[:, None, :3, 3]
    image = camera_points[..., :2] / camera_points[..., 2:] * scale[:, None] + centre[:, None]
    return (image * 2 - 1).float()


def sample_token_maps(maps: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """maps float [B, C, h, w], grid float [B, N, 2] (``project_to_grid``) -> float32 [B, N, C]:
    bilinear, ``align_corners=False``, zero padding."""
    sampled = F.grid_sample(maps.float(), grid.to(maps.device)[:, None].float(), mode="bilinear",
                            align_corners=False)
    return sampled[:, :, 0].permute(0, 2, 1)


class FeatureAccumulator:
    """The running sum over views of per-voxel features (float32 [N, C]); ``mean()`` gives the
    official stored features: the float32 mean over all views rounded to float16 (returned as
    float32, the value the SLat encoder reads)."""

    def __init__(self):
        self.total, self.views = None, 0

    def add_views(self, dinov2: torch.nn.Module, rgba: Sequence[np.ndarray], cameras: Sequence[Camera],
                  points: torch.Tensor) -> None:
        """Steps 1-3 for B more views: 8-bit RGBA renders [H, W, 4] seen by ``cameras``, voxel
        centres ``points`` float [N, 3] (on DINOv2's device)."""
        maps = patch_token_maps(dinov2, views_to_pixels(rgba))
        self.add(sample_token_maps(maps, project_to_grid(points, cameras)))

    def add(self, samples: torch.Tensor) -> None:
        """samples float32 [B, N, C] of B more views."""
        batch_sum = samples.sum(0)
        self.total = batch_sum if self.total is None else self.total + batch_sum
        self.views += samples.shape[0]

    def mean(self, rounded: bool = True) -> torch.Tensor:
        if self.total is None:
            raise ValueError("no views were added")
        mean = self.total / self.views
        return mean.half().float() if rounded else mean
