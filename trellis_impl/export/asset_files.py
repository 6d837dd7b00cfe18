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

The files of one run share one name: ``STEM_N`` for all of them when any name is taken. A kind
needs its decoder output (``check_file_kinds``: ``glb`` needs ``mesh``...); asking for one that
the decoded formats cannot give is an error.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from ..files import write_new_file

__all__ = ["save_generation", "check_file_kinds", "NEEDED_FORMATS", "load_slat_file", "SlatFile", "FILE_KINDS", "DEFAULT_FILE_KINDS"]

FILE_KINDS = ("glb", "obj", "mesh_ply", "ply", "spz", "splat", "radiance_field", "slat")
DEFAULT_FILE_KINDS = ("glb", "ply", "spz", "slat")


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


# kind -> the file-name endings it writes after ``STEM[_N]``
_ENDINGS = {"slat": ("_slat.safetensors",), "ply": ("_gaussians.ply",), "spz": (".spz",), "splat": (".splat",),
            "glb": (".glb",), "obj": (".obj", ".mtl", ".png"), "mesh_ply": ("_mesh.ply",),
            "radiance_field": ("_radiance_field.safetensors",)}
# decoder output -> the kinds that need it (``slat`` needs none)
NEEDED_FORMATS = {"ply": "gaussian", "spz": "gaussian", "splat": "gaussian", "glb": "mesh", "obj": "mesh",
                  "mesh_ply": "mesh", "radiance_field": "radiance_field"}


def check_file_kinds(files: Sequence[str], formats: Sequence[str]) -> None:
    """ValueError unless every kind of ``files`` is known and can be made from the decoded ``formats``."""
    unknown = [k for k in files if k not in FILE_KINDS]
    if unknown:
        raise ValueError(f"files: unknown kind(s) {unknown}; allowed: {', '.join(FILE_KINDS)}")
    impossible = [f"{k} (needs {NEEDED_FORMATS[k]})" for k in files if k in NEEDED_FORMATS
                  and NEEDED_FORMATS[k] not in formats]
    if impossible:
        raise ValueError(f"files {', '.join(impossible)} cannot be made from formats {', '.join(formats) or 'none'}; "
                         f"add the format or drop the file kind")


def _set_suffix(out_dir: Path, bases: Sequence[str], endings: Sequence[str]) -> str:
    """'' or the first '_N' for which no file ``base + suffix + ending`` exists, so that the files
    of one run share one name (``chair_1.glb`` beside ``chair_1.spz``) and no other run's."""
    for n in itertools.count():
        suffix = "" if n == 0 else f"_{n}"
        if not any((out_dir / f"{base}{suffix}{ending}").exists() for base in bases for ending in endings):
            return suffix
    raise AssertionError("unreachable")


def save_generation(result, out_dir: Union[str, os.PathLike], stem: str,
                    files: Sequence[str] = DEFAULT_FILE_KINDS, glb_options: Optional[Dict] = None,
                    timings: Optional[Dict[str, float]] = None) -> List[str]:
    """Write every sample of a ``GenerationResult`` as the ``files`` kinds; returns the paths.

    The files of one call are one set: ``STEM[_i]`` per sample, then one suffix ``_N`` for all of
    them when a file of any kind is already there under the name (existing files are never
    overwritten). A kind whose
    decoder output is missing (a sample whose mesh came out empty) is skipped for that sample;
    ``glb_options`` go to :func:`~trellis_impl.export.glb_export.prepare_glb` (simplify,
    texture_size, bake, ...); ``timings``, when given, receives the GLB phase times.
    """
    from .glb_export import prepare_glb
    from .mesh_files import save_glb, save_mesh_ply, save_obj
    from .splat_files import save_splat, save_spz

    check_file_kinds(files, list(result.decoded))
    out_dir = Path(out_dir)
    layout = result.slat.layout
    decoded = result.decoded
    bases = [stem if len(layout) == 1 else f"{stem}_{i}" for i in range(len(layout))]
    # every kind's names count, so a set never mixes with another run's files of other kinds
    suffix = _set_suffix(out_dir, bases, [e for endings in _ENDINGS.values() for e in endings])
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, rows in enumerate(layout):
        name = bases[i] + suffix
        path = lambda ending: str(out_dir / f"{name}{ending}")  # noqa: E731
        gaussians = decoded["gaussian"][i] if "gaussian" in decoded else None
        mesh = decoded["mesh"][i] if "mesh" in decoded and decoded["mesh"][i].success else None
        if "slat" in files:
            slat = {"coords": result.slat.coords[rows, 1:].contiguous().cpu(),
                    "feats": result.slat.feats[rows].float().contiguous().cpu()}
            if result.structure_latent is not None:
                slat["structure_latent"] = result.structure_latent[i].float().contiguous().cpu()
            write_new_file(path("_slat.safetensors"), safetensors_bytes(slat))
            written.append(path("_slat.safetensors"))
        if gaussians is not None:
            for kind, ending, save in (("ply", "_gaussians.ply", gaussians.save_ply),
                                       ("spz", ".spz", lambda p: save_spz(gaussians, p)),
                                       ("splat", ".splat", lambda p: save_splat(gaussians, p))):
                if kind in files:
                    save(path(ending))
                    written.append(path(ending))
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
                save_glb(path(".glb"), textured.vertices, textured.faces, **arrays)
                written.append(path(".glb"))
            if "obj" in files:
                save_obj(path(".obj"), textured.vertices, textured.faces, **arrays)
                written.append(path(".obj"))
            if "mesh_ply" in files:
                save_mesh_ply(path("_mesh.ply"), textured.vertices, textured.faces,
                              vertex_colors=textured.vertex_colors)
                written.append(path("_mesh.ply"))
        if "radiance_field" in files and "radiance_field" in decoded:
            rf = decoded["radiance_field"][i]
            fields = {k: getattr(rf, k).contiguous().cpu() for k in ("position", "depth", "trivec", "density",
                                                                     "features_dc")}
            write_new_file(path("_radiance_field.safetensors"), safetensors_bytes(fields))
            written.append(path("_radiance_field.safetensors"))
    return written
