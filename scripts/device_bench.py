"""Helpers shared by the device scripts: CUDA-event timing, the sphere-shell test structure and
the released architectures with random weights."""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Callable

import torch

RELEASED = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "conformance" / "released" / \
    "TRELLIS-image-large"


def median_ms(fn: Callable[[], object], warmup: int = 3, reps: int = 25) -> float:
    """Median over ``reps`` calls of CUDA-event time (host work between the events included)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def sphere_shell(resolution: int = 64, inner: float = 27.5, outer: float = 29.5, device="cuda") -> torch.Tensor:
    """[N, 4] int32 coords of a one-item sphere shell, in argwhere order: voxel centres at distance
    [inner, outer) from the grid centre (about 20k voxels at 64^3 with the defaults)."""
    axis = torch.arange(resolution, device=device, dtype=torch.float32) - (resolution - 1) / 2
    dist = (axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2).sqrt()
    xyz = torch.argwhere((dist >= inner) & (dist < outer))
    return torch.cat([torch.zeros_like(xyz[:, :1]), xyz], dim=1).int()


def _bench_sdf(p: torch.Tensor) -> torch.Tensor:
    """Signed distance-like field of the bench asset (unit cube, TRELLIS frame, negative inside):
    a bumpy ball (radius 0.39, bumps 0.025) enclosing a hidden ball (radius 0.19), i.e. a closed
    outer surface plus interior faces that the visibility clean-up must remove."""
    r = p.norm(dim=-1)
    bumps = 0.025 * torch.sin(9 * torch.pi * p[..., 0]) * torch.sin(9 * torch.pi * p[..., 1]) \
        * torch.sin(9 * torch.pi * p[..., 2])
    outer = r - (0.39 + bumps)
    inner = 0.19 - r                    # the shell between the balls is "inside"
    return torch.maximum(outer, inner)


def _bench_color(p: torch.Tensor) -> torch.Tensor:
    """RGB in 0..1 of the bench asset at positions p [..., 3]: smooth bands plus a checker."""
    checker = ((torch.floor(p * 12).sum(-1) % 2) * 0.25)[..., None]
    return (0.5 + 0.35 * torch.sin(torch.pi * 3 * p + torch.tensor([0.0, 2.1, 4.2], device=p.device)) - checker
            ).clamp(0, 1)


def bench_asset(res: int = 256, device="cuda"):
    """A decoder-like asset: (Mesh extracted by FlexiCubes at ``res`` from the analytic field,
    Gaussians mapping on its vertices, number of 64^3 voxels touching the surface).

    The mesh decoder's output format is reproduced (8 SDF corners per fine voxel, zero
    deformation and weights, colours per corner), so ``features_to_mesh`` extracts it exactly as
    it would a real decode. At res 256: ~21k voxels at 64^3 and ~0.9M faces (a TRELLIS asset of
    that voxel count decodes to about 880k faces)."""
    from trellis_impl.representations.flexicubes import CUBE_CORNER_OFFSETS
    from trellis_impl.representations.mesh import features_to_mesh, mesh_feature_layout
    axis = (torch.arange(res, device=device, dtype=torch.float32) + 0.5) / res - 0.5
    cell = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)
    near = _bench_sdf(cell).abs() < 1.5 / res
    coords = torch.argwhere(near)
    corners = torch.tensor(CUBE_CORNER_OFFSETS, device=device)
    corner_pos = (coords[:, None, :] + corners).float() / res - 0.5          # [N, 8, 3]
    layout = mesh_feature_layout(True)
    feats = torch.zeros(coords.shape[0], layout["color"]["range"][1], device=device)
    s0, s1 = layout["sdf"]["range"]
    feats[:, s0:s1] = _bench_sdf(corner_pos) + 1.0 / res                     # the decoder adds -1/res
    c0, c1 = layout["color"]["range"]
    color = torch.cat([_bench_color(corner_pos), torch.full_like(corner_pos, 0.5)], dim=-1)
    feats[:, c0:c1] = color.reshape(coords.shape[0], -1)
    mesh = features_to_mesh(coords, feats, res)
    voxels64 = torch.unique(coords // (res // 64), dim=0).shape[0]
    v = mesh.vertices
    gaussians = {"xyz": v, "scaling": torch.full_like(v, 0.7 / res),
                 "rotation": torch.tensor([1.0, 0, 0, 0], device=device).expand(v.shape[0], 4).contiguous(),
                 "opacity": torch.ones(v.shape[0], 1, device=device), "colors": _bench_color(v)}
    return mesh, gaussians, voxels64


def random_released_model(rel: str, generator: torch.Generator):
    """TRELLIS-image-large's checkpoint ``rel`` ('ckpts/NAME': its config in ``RELEASED``) with
    random weights (``randomise_weights``), built on the generator's device (float16 torso), eval
    mode, no gradients."""
    import json

    from trellis_impl.models import build_model
    from trellis_impl.pipelines.random_folder import randomise_weights
    config = json.loads((RELEASED / f"{rel}.json").read_text())
    with torch.device(generator.device):
        model = build_model(config["name"], **config["args"])
    randomise_weights(model, generator)
    return model.eval().requires_grad_(False)


def random_dinov2(generator: torch.Generator):
    """DINOv2 ViT-L/14 reg4 with random weights, on the generator's device, eval mode."""
    from trellis_impl.conditioning import DINOV2_VITL14_REG4, DinoV2
    from trellis_impl.pipelines.random_folder import randomise_weights
    with torch.device(generator.device):
        encoder = DinoV2(DINOV2_VITL14_REG4)
    randomise_weights(encoder, generator)
    return encoder.eval().requires_grad_(False)


def random_image_folder(device, generator, encoders: bool = False):
    """The released TRELLIS-image-large architectures (its pipeline.json and ckpt configs, float16
    torso) and DINOv2 ViT-L/14 reg4 with random weights, built on ``device`` (no checkpoint files).
    ``generator`` lives on ``device``. ``encoders`` also builds the sparse-structure encoder (``ss_enc``,
    for edits).

    Returns (ModelFolder with the models in place, DINOv2 encoder, parameter counts per model)."""
    import shutil
    import tempfile

    from trellis_impl.pipelines import ModelFolder

    folder_path = Path(tempfile.mkdtemp()) / "TRELLIS-image-large"
    folder_path.mkdir()
    shutil.copy(RELEASED / "pipeline.json", folder_path / "pipeline.json")
    folder = ModelFolder(folder_path, device=device)
    configs = dict(folder.args["models"])
    if encoders:
        configs["sparse_structure_encoder"] = "ckpts/ss_enc_conv3d_16l8_fp16"
    counts = {}
    for key, rel in configs.items():
        folder._models[key] = model = random_released_model(rel, generator)
        counts[key] = sum(p.numel() for p in model.parameters())
    return folder, random_dinov2(generator), counts
