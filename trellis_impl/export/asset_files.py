"""Asset files of a generation run, never overwriting: a taken name gets a numeric suffix.

File kinds (``FILE_KINDS``), per sample ``STEM[_i]``:

* ``glb``: ``STEM.glb``, textured mesh (clean-up, simplify, UV atlas, texture baked from the
  Gaussians; :func:`~trellis_impl.export.glb_export.to_glb`), glTF frame (Y up, front +Z, metres);
* ``obj``: ``STEM.obj`` + ``.mtl`` + ``.png``, the same textured mesh;
* ``mesh_ply``: ``STEM_mesh.ply``, the same cleaned mesh with vertex colours, glTF frame;
* ``ply``: ``STEM_gaussians.ply``, the official 3DGS PLY layout (3DGS frame);
* ``spz`` / ``splat``: ``STEM.spz`` / ``STEM.splat`` compressed splats (same Gaussians);
* ``radiance_field``: ``STEM_radiance_field.safetensors`` (Strivec fields, TRELLIS frame);
* ``slat``: ``STEM_slat.safetensors``: coords int32 [N, 3], feats [N, 8] (denormalised) and, when
  the structure came from stage 1, structure_latent [C, r, r, r] (the dense latent it was decoded
  from, which edits start from); ``load_slat_file`` reads it back.

A kind whose decoder output is missing (e.g. ``glb`` without ``mesh``) is skipped.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from ..files import write_new_file

__all__ = ["save_generation", "save_unique", "load_slat_file", "SlatFile", "FILE_KINDS", "DEFAULT_FILE_KINDS"]

FILE_KINDS = ("glb", "obj", "mesh_ply", "ply", "spz", "splat", "radiance_field", "slat")
DEFAULT_FILE_KINDS = ("glb", "ply", "spz", "slat")


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


class SlatFile(NamedTuple):
    """An asset read from ``STEM_slat.safetensors``: coords int32 [N, 3], feats float32 [N, C],
    structure_latent float32 [1, C', r, r, r] or None (files of variants, edits on meshes, or
    written before it was stored)."""
    coords: torch.Tensor
    feats: torch.Tensor
    structure_latent: Optional[torch.Tensor]


def load_slat_file(path: Union[str, os.PathLike]) -> SlatFile:
    """Read a ``slat`` file back (ValueError naming the file when it is not one)."""
    try:
        tensors = load_file(os.fspath(path))
    except SafetensorError as e:
        raise ValueError(f"{path}: not a safetensors file ({e})") from None
    coords, feats = tensors.get("coords"), tensors.get("feats")
    if coords is None or feats is None or coords.dim() != 2 or coords.shape[1] != 3 or feats.dim() != 2 \
            or feats.shape[0] != coords.shape[0] or coords.shape[0] == 0:
        raise ValueError(f"{path}: not a TRELLIS slat file (needs coords [N, 3] and feats [N, C] with N > 0; "
                         f"has {', '.join(f'{k} {list(v.shape)}' for k, v in tensors.items()) or 'nothing'})")
    latent = tensors.get("structure_latent")
    return SlatFile(coords.int(), feats.float(), None if latent is None else latent.float()[None])


def save_generation(result, out_dir: Union[str, os.PathLike], stem: str,
                    files: Sequence[str] = DEFAULT_FILE_KINDS, glb_options: Optional[Dict] = None,
                    timings: Optional[Dict[str, float]] = None) -> List[str]:
    """Write every sample of a ``GenerationResult`` as the ``files`` kinds; returns the paths.

    ``glb_options`` go to :func:`~trellis_impl.export.glb_export.prepare_glb` (simplify,
    texture_size, bake, ...); ``timings``, when given, receives the GLB phase times.
    """
    from .glb_export import prepare_glb
    from .mesh_files import save_glb, save_mesh_ply, save_obj
    from .splat_files import save_splat, save_spz

    unknown = [k for k in files if k not in FILE_KINDS]
    if unknown:
        raise ValueError(f"files: unknown kind(s) {unknown}; allowed: {', '.join(FILE_KINDS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    layout = result.slat.layout
    decoded = result.decoded
    for i, rows in enumerate(layout):
        name = stem if len(layout) == 1 else f"{stem}_{i}"
        gaussians = decoded["gaussian"][i] if "gaussian" in decoded else None
        mesh = decoded["mesh"][i] if "mesh" in decoded and decoded["mesh"][i].success else None
        if "slat" in files:
            slat = {"coords": result.slat.coords[rows, 1:].contiguous().cpu(),
                    "feats": result.slat.feats[rows].float().contiguous().cpu()}
            if result.structure_latent is not None:
                slat["structure_latent"] = result.structure_latent[i].float().contiguous().cpu()
            written.append(save_unique(out_dir, f"{name}_slat", ".safetensors",
                                       lambda p: write_new_file(p, safetensors_bytes(slat))))
        if gaussians is not None:
            if "ply" in files:
                written.append(save_unique(out_dir, f"{name}_gaussians", ".ply", gaussians.save_ply))
            if "spz" in files:
                written.append(save_unique(out_dir, name, ".spz", lambda p: save_spz(gaussians, p)))
            if "splat" in files:
                written.append(save_unique(out_dir, name, ".splat", lambda p: save_splat(gaussians, p)))
        if mesh is not None and {"glb", "obj", "mesh_ply"} & set(files):
            options = dict(glb_options or {})
            options.setdefault("keep_vertex_colors", "mesh_ply" in files)
            if gaussians is None and options.get("bake", "fast") in ("fast", "opt"):
                options["bake"] = "vertex_colors"
            textured = prepare_glb(mesh, gaussians, **options)
            if timings is not None:
                for phase, seconds in textured.timings.items():
                    timings[f"glb_{phase}"] = timings.get(f"glb_{phase}", 0.0) + seconds
            arrays = textured.material()
            if "glb" in files:
                written.append(save_unique(out_dir, name, ".glb",
                                           lambda p: save_glb(p, textured.vertices, textured.faces, **arrays)))
            if "obj" in files:
                written.append(save_unique(out_dir, name, ".obj",
                                           lambda p: save_obj(p, textured.vertices, textured.faces, **arrays)))
            if "mesh_ply" in files:
                written.append(save_unique(out_dir, f"{name}_mesh", ".ply", lambda p: save_mesh_ply(
                    p, textured.vertices, textured.faces, vertex_colors=textured.vertex_colors)))
        if "radiance_field" in files and "radiance_field" in decoded:
            rf = decoded["radiance_field"][i]
            fields = {k: getattr(rf, k).contiguous().cpu() for k in ("position", "depth", "trivec", "density",
                                                                     "features_dc")}
            written.append(save_unique(out_dir, f"{name}_radiance_field", ".safetensors",
                                       lambda p: write_new_file(p, safetensors_bytes(fields))))
    return written

