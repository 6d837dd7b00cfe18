"""Asset files of a generation run: Gaussians as 3DGS PLY, meshes as PLY with vertex colours,
radiance fields and the structure/SLat as safetensors. Never overwrites: a taken name gets a
numeric suffix."""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Callable, List, Union

from safetensors.torch import save as safetensors_bytes

from ..files import write_new_file

__all__ = ["save_generation", "save_unique"]


def save_unique(directory: Union[str, os.PathLike], stem: str, suffix: str, save: Callable[[str], object]) -> str:
    """Call ``save(path)`` on the first free ``directory/stem[_N]suffix`` and return that path.
    ``save`` must raise FileExistsError when the path exists (as ``write_new_file`` does)."""
    for n in itertools.count():
        path = os.path.join(os.fspath(directory), f"{stem}{'' if n == 0 else f'_{n}'}{suffix}")
        try:
            save(path)
            return path
        except FileExistsError:
            continue


def save_generation(result, out_dir: Union[str, os.PathLike], stem: str) -> List[str]:
    """Write every sample of a ``GenerationResult``; returns the paths written.

    Per sample ``i`` (suffix ``_i`` when several): ``STEM_gaussians.ply`` (official 3DGS layout),
    ``STEM_mesh.ply`` (TRELLIS frame, Z up, vertex colours), ``STEM_radiance_field.safetensors``
    (Strivec fields), and ``STEM_slat.safetensors`` (coords int32 [N, 3] and feats [N, 8]).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    layout = result.slat.layout
    for i, rows in enumerate(layout):
        name = stem if len(layout) == 1 else f"{stem}_{i}"
        slat = {"coords": result.slat.coords[rows, 1:].contiguous().cpu(),
                "feats": result.slat.feats[rows].float().contiguous().cpu()}
        written.append(save_unique(out_dir, f"{name}_slat", ".safetensors",
                                   lambda p: write_new_file(p, safetensors_bytes(slat))))
        if "gaussian" in result.decoded:
            written.append(save_unique(out_dir, f"{name}_gaussians", ".ply", result.decoded["gaussian"][i].save_ply))
        if "mesh" in result.decoded and result.decoded["mesh"][i].success:
            written.append(save_unique(out_dir, f"{name}_mesh", ".ply", result.decoded["mesh"][i].save_ply))
        if "radiance_field" in result.decoded:
            rf = result.decoded["radiance_field"][i]
            fields = {k: getattr(rf, k).contiguous().cpu() for k in ("position", "depth", "trivec", "density",
                                                                     "features_dc")}
            written.append(save_unique(out_dir, f"{name}_radiance_field", ".safetensors",
                                       lambda p: write_new_file(p, safetensors_bytes(fields))))
    return written
