"""Fitting-free encoding of a textured mesh into TRELLIS latents (the paper's "Design 1", as the
official dataset toolkit makes the training latents):

1. voxelise: the surface voxels of the normalised mesh on the SLat grid, exactly as
   ``structure_from_mesh`` / ``voxelize_mesh`` (64^3 for the released models);
2. render the normalised mesh from the official Hammersley cameras (``views``), unlit base
   colour (``albedo``; the official renders are lit Blender images);
3. average each voxel's DINOv2 patch features over the views as ``extract_feature.py`` (``features``);
4. the SLat encoder on the features and the structure encoder on the occupancy grid, both
   posterior means (``encode_latent.py`` / ``encode_ss_latent.py``, ``sample_posterior=False``).

The result holds the voxels, their SLat features in the de-normalised space the decoders read
(the ``*_slat.safetensors`` values) and the dense structure latent.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch

from ..pipelines.model_folder import ENCODER_KEY, SLAT_ENCODER_KEY, ModelFolder, ModelFolderError
from ..pipelines.generation import stage_timer
from ..pipelines.voxelize import voxelize_mesh
from ..sparse import SparseTensor
from .albedo import render_albedo, to_rgba8
from .assets import TexturedMesh, load_textured_mesh
from .features import FeatureAccumulator, patch_token_maps, project_to_grid, sample_token_maps, views_to_pixels, \
    voxel_centers
from .views import RENDER_RESOLUTION, hammersley_cameras

__all__ = ["encode_asset", "EncodedAsset", "save_encoded", "EncodeProgress", "ENCODE_PHASES", "VIEWS_PER_BATCH"]

# Called with (phase, done, total): ('views', views done, views) after each batch of views, then
# ('encoders', 1, 1); raise to interrupt.
EncodeProgress = Callable[[str, int, int], None]
ENCODE_PHASES = ("voxelize", "render", "dinov2", "projection", "slat_encoder", "structure_encoder")
# Views rendered and encoded by DINOv2 together: bounds the working memory.
VIEWS_PER_BATCH = 16


@dataclass
class EncodedAsset:
    """coords int32 [N, 3] (x, y, z) on the SLat grid, sorted ascending; feats float32 [N, C] the
    SLat (de-normalised, as decoded and stored); structure_latent float32 [1, C', r, r, r];
    voxel_features float32 [N, D] the view-averaged DINOv2 features (float16 values);
    timings: seconds per phase (``ENCODE_PHASES``)."""
    coords: torch.Tensor
    feats: torch.Tensor
    structure_latent: torch.Tensor
    voxel_features: torch.Tensor
    timings: Dict[str, float] = field(default_factory=dict)

    def slat(self, device=None) -> SparseTensor:
        """The SLat as a batch-1 SparseTensor (coords [N, 4] with batch 0), as the samplers give it."""
        coords = torch.cat([torch.zeros_like(self.coords[:, :1]), self.coords], 1).int()
        return SparseTensor(self.feats.to(device), coords.to(device), batch_size=1)


def _check_positive(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def _slat_resolution(folder: ModelFolder, slat_encoder) -> int:
    """The SLat grid (64 released): the SLat flow's resolution, from its config (no weights loaded).
    A folder without a SLat flow (a training state, before the flow is trained) encodes on its
    SLat encoder's own grid."""
    if "slat_flow_model" not in folder.args["models"]:
        return int(slat_encoder.resolution)
    loaded = folder.loaded().get("slat_flow_model")
    if loaded is not None:
        return int(loaded.resolution)
    config = json.loads(Path(f"{folder.checkpoint_path('slat_flow_model')}.json").read_text(encoding="utf-8"))
    return int(config["args"]["resolution"])


def _load_dinov2(folder: ModelFolder, download: bool, device: torch.device):
    from ..conditioning import load_dinov2
    from ..pipelines.encoders import image_encoder_path
    return load_dinov2(str(image_encoder_path(folder, download)), device=device)


@torch.no_grad()
def encode_asset(mesh_or_path: Union[TexturedMesh, str, os.PathLike], model_folder: Union[ModelFolder, str, os.PathLike],
                 num_views: int = 150, *, offset: Optional[Sequence[float]] = None, seed: int = 0,
                 resolution: int = RENDER_RESOLUTION, supersample: int = 2, batch_size: int = VIEWS_PER_BATCH,
                 dinov2: Optional[torch.nn.Module] = None, download: bool = False, device=None,
                 tf32: bool = False, progress: Optional[EncodeProgress] = None) -> EncodedAsset:
    """Encode a textured mesh with a model folder's encoders (no optimisation).

    Args:
        mesh_or_path: a :class:`TexturedMesh` (any frame: it is normalised into the unit cube
            like ``normalize_vertices``; no axis change) or a mesh file (``load_textured_mesh``).
        model_folder: a ``ModelFolder`` (its device and dtype are used) or its path (CPU).
            It needs a SLat encoder (``SLAT_ENCODER_KEY``), the structure encoder and DINOv2.
        num_views: views rendered (official: 150); cameras ``hammersley_cameras(num_views, offset, seed)``.
        offset: the Hammersley offset, two numbers in [0, 1) (default from ``seed``).
        resolution: render size in px (official 512; DINOv2 always sees 518 x 518).
        supersample: samples per pixel side (box filter, like the official 1-px box filter).
        batch_size: views rendered and encoded together (bounds the memory).
        dinov2: the DINOv2 model to use (default: the folder's, loaded on ``device``).
        download: fetch DINOv2 when missing (online).
        device: where to compute (default: the folder's device; the models must be there).
        tf32: let DINOv2's float32 matrix products use TF32 on CUDA (faster; the official
            features are float32, these differ by about 1e-3 relative).
        progress: ``(phase, done, total)`` callback (``EncodeProgress``); may raise to interrupt.
    """
    for value, name in ((num_views, "num_views"), (resolution, "resolution"), (supersample, "supersample"),
                        (batch_size, "batch_size")):
        _check_positive(value, name)
    folder = model_folder if isinstance(model_folder, ModelFolder) else ModelFolder(model_folder)
    needed = [key for key in (SLAT_ENCODER_KEY, ENCODER_KEY) if key not in folder.loaded()]
    missing = folder.missing_files(needed) if needed else []
    if "slat_flow_model" in folder.args["models"] and "slat_flow_model" not in folder.loaded():
        missing += [p for p in folder.missing_files(["slat_flow_model"]) if p.suffix == ".json"]
    if missing:
        raise ModelFolderError(f"model folder {folder.path} cannot encode: missing {', '.join(map(str, missing))}")
    cameras = hammersley_cameras(num_views, offset, seed, resolution=resolution)
    mesh = load_textured_mesh(mesh_or_path) if isinstance(mesh_or_path, (str, os.PathLike)) else mesh_or_path
    if not isinstance(mesh, TexturedMesh):
        raise ValueError(f"mesh_or_path must be a TexturedMesh or a mesh file path, got {type(mesh).__name__}")
    device, timings = torch.device(device) if device is not None else folder.device, {}
    slat_encoder = folder.model(SLAT_ENCODER_KEY)
    grid = _slat_resolution(folder, slat_encoder)
    if slat_encoder.resolution != grid:
        raise ModelFolderError(f"model folder {folder.path}: the SLat encoder works on a {slat_encoder.resolution}^3 "
                               f"grid but the SLat flow on {grid}^3")
    dinov2 = _load_dinov2(folder, download, device) if dinov2 is None else dinov2
    if dinov2.config.embed_dim != slat_encoder.in_channels:
        raise ModelFolderError(f"model folder {folder.path}: the SLat encoder takes {slat_encoder.in_channels} "
                               f"feature channels but DINOv2 gives {dinov2.config.embed_dim}")

    with stage_timer(timings, "voxelize", device):
        coords = voxelize_mesh(mesh.vertices, mesh.faces, resolution=grid)
        mesh = mesh.normalized()
        points = voxel_centers(coords, grid).to(device)
    features = FeatureAccumulator()
    for start in range(0, num_views, batch_size):
        batch = cameras[start:start + batch_size]
        with stage_timer(timings, "render", device):
            renders = to_rgba8(render_albedo(mesh, batch, supersample, device))
            pixels = views_to_pixels(renders).to(device)
        with stage_timer(timings, "dinov2", device):
            maps = patch_token_maps(dinov2, pixels, tf32)
        with stage_timer(timings, "projection", device):
            features.add(sample_token_maps(maps, project_to_grid(points, batch)))
        if progress is not None:
            progress("views", start + len(batch), num_views)
    voxel_features = features.mean()
    full = torch.cat([torch.zeros_like(coords[:, :1]), coords], 1).int().to(device)
    with stage_timer(timings, "slat_encoder", device):
        slat = slat_encoder(SparseTensor(voxel_features, full, batch_size=1), sample_posterior=False)
    with stage_timer(timings, "structure_encoder", device):  # as editing.encode_structure, on the SLat grid
        occupancy = torch.zeros((1, 1, grid, grid, grid), device=device)
        occupancy[0, 0, full[:, 1].long(), full[:, 2].long(), full[:, 3].long()] = 1.0
        structure_latent = folder.model(ENCODER_KEY)(occupancy, sample_posterior=False)
    if progress is not None:
        progress("encoders", 1, 1)
    return EncodedAsset(coords.cpu(), slat.feats.float().cpu(), structure_latent.float().cpu(),
                        voxel_features.cpu(), timings)


def save_encoded(asset: EncodedAsset, out_dir: Union[str, os.PathLike], stem: str) -> List[str]:
    """Write ``out_dir/STEM_slat.safetensors`` (a taken name gets ``_1``, ``_2``...; never
    overwritten) as generation writes it (``export.save_generation``, kind 'slat'); returns the path list."""
    from ..export import save_generation
    from ..pipelines import GenerationResult
    slat = asset.slat()
    return save_generation(GenerationResult(coords=slat.coords, slat=slat, structure_latent=asset.structure_latent),
                           Path(out_dir), stem, files=["slat"])
