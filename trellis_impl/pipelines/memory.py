"""Working memory of each stage on a GPU: what a stage allocates beyond the resident weights.

Hosts that share the GPU free (offload) other models before a stage runs when told how much it
needs: ComfyUI's ``load_models_gpu(..., memory_required=...)``. The figures are linear in what
drives them (images, forward rows, voxels), at the released model sizes (smaller models get an
overestimate: the host frees more than needed, never less), float16 torso. Each stage's
(fixed, per-unit) bytes are fitted to peaks measured on an H100 (docs/gpu.md, "Speed and memory")
and carry a 25 % margin on top.
"""
from __future__ import annotations

from typing import Dict, Tuple

__all__ = ["STAGES", "working_memory"]

_MIB, _KIB = 1 << 20, 1 << 10
_MARGIN = 1.25
# stage: (fixed bytes, bytes per unit, the unit). Fitted to the H100 run of 2026-12-07 (structure,
# latent, Gaussian and mesh decoders at 5k-20k voxels); the others are bounds, not measured.
STAGES: Dict[str, Tuple[int, int, str]] = {
    "condition": (64 * _MIB, 320 * _MIB, "image (518 px DINOv2 or 77-token CLIP)"),
    "structure": (96 * _MIB, 72 * _MIB, "flow row (a sample; two with batched CFG)"),
    "structure_encoder": (384 * _MIB, 384 * _MIB, "structure (64^3 occupancy) encoded"),
    "latent": (520 * _MIB, 30 * _KIB, "voxel row (voxels x 2 with batched CFG)"),
    "gaussian": (8 * _MIB, 25 * _KIB, "voxel"),
    "radiance_field": (8 * _MIB, 25 * _KIB, "voxel (the Gaussian decoder's figures: same backbone)"),
    "mesh": (48 * _MIB, 168 * _KIB, "voxel (256^3 subdivision and FlexiCubes)"),
    # GLB export: 0.91 GiB peak for the 972k-face bench asset at texture 1024 (H100, 2026-11-25); the
    # per-texel part (the bake's float32 accumulators) is a bound for larger textures, not measured.
    "glb_export": (850 * _MIB, 64, "texel of the baked texture (texture_size^2)"),
}


def working_memory(stage: str, units: int) -> int:
    """Bytes ``stage`` (a key of ``STAGES``) needs beyond its weights for ``units`` of its unit
    (``STAGES[stage][2]``), margin included."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
    fixed, per_unit, _ = STAGES[stage]
    return int(_MARGIN * (fixed + per_unit * max(int(units), 0)))
