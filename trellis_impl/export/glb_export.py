"""Decoded mesh + Gaussians -> textured GLB: TRELLIS's ``to_glb``, phase by phase and faster.

Phases (each timed in ``TexturedMesh.timings``, each reported to ``progress``):

1. ``cleanup``: weld duplicated vertices, drop degenerate faces, on a GPU drop the connected
   components none of the visibility views sees, decimate (``simplify`` = fraction of faces
   removed, official default 0.95), drop floating specks
   (:func:`~trellis_impl.export.mesh_cleanup.cleanup_mesh`);
2. ``visibility``: remove interior faces no camera sees and fill small holes, as the official
   ``postprocess_mesh(fill_holes=True)`` (:mod:`~trellis_impl.export.mesh_visibility`);
3. ``unwrap``: UV atlas, ``'fast'`` (default) or ``'xatlas'`` (the official's choice, 20-30 s);
4. ``bake``: base-colour texture from renders of the Gaussians, ``'fast'`` (project and blend)
   or ``'opt'`` (the official TV-regularised optimisation, ``bake_steps`` steps); or
   ``'vertex_colors'`` (no texture: the decoder's vertex colours, else the colour of the nearest
   Gaussian) or ``'none'`` (geometry only);
5. ``write``: TRELLIS frame (Z up) -> glTF frame (Y up, front +Z, metres), origin at the
   bounding-box centre or the base, GLB with a PBR material (metallic 0, roughness 1).

The official order is simplify -> visibility clean-up; we weld first (on the GPU when there is
one) so that the decimator works on a manifold-as-possible mesh, and on a GPU drop wholly hidden
components before the decimation: a decoded mesh's interior shells are about half its faces,
which the clean-up would remove after the decimation had spent most of its time on them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch

from .mesh_cleanup import cleanup_mesh
from .mesh_files import place, save_glb, to_gltf_frame
from .mesh_visibility import face_visibility, remove_invisible_and_fill_holes, sphere_cameras
from .texture_bake import bake_from_gaussians, MAX_TEXTURE_SIZE, MIN_TEXTURE_SIZE
from .uv_atlas import unwrap

__all__ = ["TexturedMesh", "prepare_glb", "to_glb", "check_glb_options", "BAKE_MODES", "UNWRAP_METHODS", "PHASES"]

BAKE_MODES = ("fast", "opt", "vertex_colors", "none")
UNWRAP_METHODS = ("fast", "xatlas")
PHASES = ("cleanup", "visibility", "unwrap", "bake", "write")

#: ``progress(phase, done, total)``: called within every phase (``done`` counts that phase's
#: steps); it may raise to abort (e.g. a UI interrupt), which leaves no file behind.
Progress = Callable[[str, int, int], None]


@dataclass
class TexturedMesh:
    """A mesh ready for a GLB file.

    Attributes:
        vertices: [V, 3] float32, glTF frame (Y up, front +Z), metres, placed per ``origin``.
        faces: [F, 3] int64.
        uv: [V, 2] float32 in [0, 1], glTF convention (v down), or None.
        texture: [S, S, 3] uint8 base colour, or None.
        vertex_colors: [V, 3] float32 in 0..1 (the decoder's vertex colours; with
            ``bake='vertex_colors'`` and none decoded, the nearest Gaussian's colour), or None; writers use them only when there is no texture (glTF
            multiplies COLOR_0 into the base-colour texture).
        timings: seconds per phase (``cleanup``, ``visibility``, ``unwrap``, ``bake``, ``write``)
            and ``total``.
        report: counts after each phase and the methods used.
    """
    vertices: np.ndarray
    faces: np.ndarray
    uv: Optional[np.ndarray] = None
    texture: Optional[np.ndarray] = None
    vertex_colors: Optional[np.ndarray] = None
    timings: Dict[str, float] = field(default_factory=dict)
    report: Dict = field(default_factory=dict)

    def material(self) -> Dict[str, Optional[np.ndarray]]:
        """Keyword arguments ``uv``, ``texture``, ``vertex_colors`` for the mesh writers: the
        texture when there is one, else the vertex colours."""
        if self.texture is not None:
            return {"uv": self.uv, "texture": self.texture, "vertex_colors": None}
        return {"uv": None, "texture": None, "vertex_colors": self.vertex_colors}


def _mesh_arrays(mesh):
    if hasattr(mesh, "vertices") and hasattr(mesh, "faces"):
        vertices, faces, attrs = mesh.vertices, mesh.faces, getattr(mesh, "vertex_attrs", None)
    elif isinstance(mesh, (tuple, list)) and len(mesh) in (2, 3):
        vertices, faces, attrs = (tuple(mesh) + (None,))[:3]
    else:
        raise ValueError("mesh must be a Mesh (vertices, faces, vertex_attrs) or a (vertices, faces[, colors]) "
                         f"tuple, got {type(mesh).__name__}")
    vertices = vertices.detach().cpu().numpy() if isinstance(vertices, torch.Tensor) else np.asarray(vertices)
    faces = faces.detach().cpu().numpy() if isinstance(faces, torch.Tensor) else np.asarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or vertices.shape[0] == 0 or faces.size == 0:
        raise ValueError(f"mesh is empty or malformed (vertices {vertices.shape}, faces {faces.shape}): "
                         "nothing to export (the decoder found no surface?)")
    colors = None
    if attrs is not None:
        attrs = attrs.detach().float().cpu().numpy() if isinstance(attrs, torch.Tensor) else np.asarray(attrs)
        if attrs.ndim == 2 and attrs.shape[0] == vertices.shape[0] and attrs.shape[1] >= 3:
            colors = attrs[:, :3].astype(np.float32)
    return vertices, faces, colors


def check_glb_options(simplify, texture_size, bake, bake_steps, unwrap_method, origin) -> None:
    """ValueError naming the first GLB option out of its allowed range (checked before any work)."""
    if simplify is not None and not (isinstance(simplify, (int, float)) and 0.0 <= simplify < 1.0):
        raise ValueError(f"simplify (fraction of faces removed) must be in [0, 1), got {simplify!r}")
    if bake not in BAKE_MODES:
        raise ValueError(f"bake must be one of {', '.join(map(repr, BAKE_MODES))}, got {bake!r}")
    if unwrap_method not in UNWRAP_METHODS:
        raise ValueError(f"unwrap_method must be one of {', '.join(map(repr, UNWRAP_METHODS))}, got {unwrap_method!r}")
    if origin not in ("center", "base", "none"):
        raise ValueError(f"origin must be 'center', 'base' or 'none', got {origin!r}")
    if bake in ("fast", "opt"):
        if isinstance(texture_size, bool) or int(texture_size) != texture_size or \
                not MIN_TEXTURE_SIZE <= int(texture_size) <= MAX_TEXTURE_SIZE:
            raise ValueError(f"texture_size must be an integer in [{MIN_TEXTURE_SIZE}, {MAX_TEXTURE_SIZE}], "
                             f"got {texture_size!r}")
    if isinstance(bake_steps, bool) or int(bake_steps) != bake_steps or int(bake_steps) < 1:
        raise ValueError(f"bake_steps must be an integer >= 1, got {bake_steps!r}")


def _nearest_gaussian_colors(points: np.ndarray, gaussians) -> np.ndarray:
    """Colour [P, 3] of the Gaussian whose centre is nearest to each point."""
    from scipy.spatial import cKDTree

    from ..render.gaussian_raster import gaussian_tensors
    g = gaussian_tensors(gaussians)
    centres = g["xyz"].detach().float().cpu().numpy()
    colors = g["colors"].detach().float().clamp(0.0, 1.0).cpu().numpy()
    _, idx = cKDTree(centres).query(points, k=1)
    return colors[idx].astype(np.float32)


def prepare_glb(mesh, gaussians=None, *, simplify: Optional[float] = 0.95, fill_holes: bool = True,
                texture_size: int = 1024, bake: str = "fast", bake_steps: int = 2500,
                unwrap_method: str = "fast", origin: str = "center", bake_views: int = 16,
                bake_resolution: int = 512, visibility_views: Optional[int] = None,
                visibility_resolution: Optional[int] = None,
                keep_vertex_colors: bool = False, device: Optional[torch.device] = None,
                progress: Optional[Progress] = None) -> TexturedMesh:
    """Run phases 1-4 and the frame change of ``to_glb``; nothing is written.

    Args:
        mesh: a decoded ``Mesh`` (TRELLIS frame, Z up, unit cube) or (vertices [V, 3], faces [F, 3]
            [, colors [V, 3] in 0..1]).
        gaussians: the same asset's ``Gaussians`` (needed for ``bake='fast'|'opt'``; used for
            vertex colours when the mesh has none).
        simplify: fraction of faces removed (0.95 keeps 5%); 0/None keeps all.
        fill_holes: run the visibility clean-up (interior faces, small holes).
        texture_size: texture side in texels, 512-4096.
        bake: one of :data:`BAKE_MODES`.
        bake_steps: optimisation steps of ``bake='opt'`` (official: 2500).
        unwrap_method: 'fast' or 'xatlas'.
        origin: 'center' (bounding-box centre at 0), 'base' (lowest point at y = 0) or 'none'
            (TRELLIS's unit-cube position, in glTF axes).
        bake_views, bake_resolution: orbit renders used for baking.
        visibility_views, visibility_resolution: views of the visibility clean-up (default 100
            views at 512 px on a GPU; 24 at 256 px on CPU, where rasterising is ~1000x slower;
            the official uses 1000 at 1024).
        keep_vertex_colors: also carry the decoder's vertex colours through the clean-up when
            baking a texture (for a coloured PLY beside the GLB; ~1 s more on a decoded mesh).
        device: where welding, visibility rendering and baking run (default: the Gaussians'
            device, else the mesh's, else CPU).
        progress: see :data:`Progress`.

    Raises:
        ValueError: empty mesh, bad option (named with the allowed values), non-finite vertices
            or Gaussian parameters, ``bake`` needing Gaussians without them.
    """
    t_start = time.perf_counter()
    check_glb_options(simplify, texture_size, bake, bake_steps, unwrap_method, origin)
    device = _work_device(mesh, gaussians, bake, device)
    report = progress or (lambda phase, done, total: None)
    vertices, faces, colors = _mesh_arrays(mesh)
    if bake in ("fast", "opt") and not keep_vertex_colors or bake == "none":
        colors = None  # carrying them through decimation costs a replay of its collapses
    work = _GlbWork(vertices, faces, colors, info={"input": {"vertices": int(len(vertices)), "faces": int(len(faces))}})

    views = _visibility_views(device, visibility_views, visibility_resolution) if fill_holes else None
    work.run("cleanup", lambda: _clean_up(work, simplify, device, views, report, cancellable=progress is not None))
    work.run("visibility", lambda: fill_holes and _remove_invisible(work, simplify, device, views, report))
    work.run("unwrap", lambda: bake in ("fast", "opt") and _unwrap(work, texture_size, unwrap_method, report))
    work.run("bake", lambda: _colour(work, gaussians, bake, bake_steps, texture_size, bake_views, bake_resolution,
                                     device, report))

    out_v = place(to_gltf_frame(np.asarray(work.v, dtype=np.float64)), origin).astype(np.float32)
    work.info["output"] = {"vertices": int(len(out_v)), "faces": int(len(work.f))}
    work.timings["total"] = time.perf_counter() - t_start
    return TexturedMesh(out_v, np.asarray(work.f, dtype=np.int64),
                        None if work.uv is None else np.asarray(work.uv, np.float32), work.texture,
                        None if work.colors is None else np.clip(work.colors, 0, 1).astype(np.float32),
                        work.timings, work.info)


@dataclass
class _GlbWork:
    """The mesh between the phases of ``prepare_glb`` (TRELLIS frame), with each phase's report and
    seconds."""
    v: np.ndarray
    f: np.ndarray
    colors: Optional[np.ndarray]
    uv: Optional[np.ndarray] = None
    texture: Optional[np.ndarray] = None
    info: Dict = field(default_factory=dict)
    timings: Dict[str, float] = field(default_factory=dict)

    def run(self, phase: str, step: Callable[[], object]) -> None:
        start = time.perf_counter()
        step()
        self.timings[phase] = time.perf_counter() - start


def _work_device(mesh, gaussians, bake: str, device) -> torch.device:
    """Where the phases run: ``device``, else the Gaussians', else the mesh's, else CPU. Refuses
    a texture bake without Gaussians and NaN/inf Gaussian parameters before any work."""
    if bake in ("fast", "opt") and gaussians is None:
        raise ValueError(f"bake={bake!r} bakes the texture from the Gaussians: pass gaussians, "
                         "or use bake='vertex_colors' or 'none'")
    gaussian_device = None
    if gaussians is not None:
        from ..render.gaussian_raster import gaussian_tensors
        gaussian_device = gaussian_tensors(gaussians)["xyz"].device
    if device is None:
        vertices = mesh.vertices if hasattr(mesh, "vertices") else (mesh[0] if isinstance(mesh, (tuple, list))
                                                                    else None)
        device = gaussian_device or (vertices.device if isinstance(vertices, torch.Tensor) else torch.device("cpu"))
    return torch.device(device)


def _visibility_views(device: torch.device, views: Optional[int], resolution: Optional[int]) -> Tuple[int, int]:
    """(views, px) of the visibility clean-up: 100 at 512 px on a GPU, 24 at 256 px on CPU unless given."""
    return (views if views is not None else (100 if device.type == "cuda" else 24),
            resolution if resolution is not None else (512 if device.type == "cuda" else 256))


def _clean_up(work: _GlbWork, simplify, device: torch.device, views: Optional[Tuple[int, int]], report: Progress,
              cancellable: bool) -> None:
    """Phase 1: weld, drop degenerate faces, [drop hidden components,] decimate, drop specks.
    ``views``: the visibility clean-up's (views, px) (None: no clean-up); on a GPU, components of the
    welded mesh that none of them sees are dropped before the decimation (a decoded mesh's
    interior shells: half its faces and of the decimation's time, and the clean-up would remove
    them after it anyway); on CPU rasterising the undecimated mesh would cost more than it saves.
    ``cancellable``: the progress callback is polled while the decimation runs (it may raise,
    e.g. a host's Cancel)."""
    report("cleanup", 0, 1)
    cameras = sphere_cameras(*views) if views is not None and device.type == "cuda" else None

    def seen_faces(v: np.ndarray, f: np.ndarray) -> np.ndarray:
        return (face_visibility(torch.as_tensor(v, device=device), f, cameras,
                                progress=lambda done, total: report("cleanup", 0, 1)) > 0).cpu().numpy()

    work.v, work.f, work.colors, work.info["cleanup"] = cleanup_mesh(
        work.v, work.f, work.colors, simplify_ratio=simplify or 0.0, device=device,
        poll=(lambda: report("cleanup", 0, 1)) if cancellable else None,
        seen_faces=seen_faces if cameras is not None else None)
    report("cleanup", 1, 1)


def _remove_invisible(work: _GlbWork, simplify, device: torch.device, views: Tuple[int, int], report: Progress) -> None:
    """Phase 2: interior faces no camera sees removed, small holes filled."""
    v_in = work.v
    v, f, work.info["visibility"] = remove_invisible_and_fill_holes(
        torch.as_tensor(work.v, device=device), work.f, num_views=views[0], resolution=views[1],
        max_hole_edges=int(250 * np.sqrt(1.0 - (simplify or 0.0))),
        progress=lambda done, total: report("visibility", done, total))
    work.v = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v, dtype=np.float32)
    work.f = f.detach().cpu().numpy() if isinstance(f, torch.Tensor) else np.asarray(f, dtype=np.int64)
    if work.colors is not None:  # vertices moved: re-sample the colours at the nearest old vertex
        from scipy.spatial import cKDTree
        work.colors = work.colors[cKDTree(v_in).query(work.v, k=1)[1]]


def _unwrap(work: _GlbWork, texture_size: int, method: str, report: Progress) -> None:
    """Phase 3: the UV atlas (vertices split along seams)."""
    report("unwrap", 0, 1)
    vmap, work.f, work.uv, info = unwrap(work.v, work.f, texture_size=int(texture_size), method=method,
                                         return_info=True)
    work.v = work.v[vmap]
    work.colors = None if work.colors is None else work.colors[vmap]
    work.info["unwrap"] = {k: info[k] for k in ("method", "charts", "faces", "vertices_out")}
    report("unwrap", 1, 1)


def _colour(work: _GlbWork, gaussians, bake: str, bake_steps: int, texture_size: int, views: int,
            resolution: int, device: torch.device, report: Progress) -> None:
    """Phase 4: the base-colour texture baked from the Gaussians, or vertex colours."""
    if bake == "vertex_colors":
        if work.colors is None and gaussians is not None:
            work.colors = _nearest_gaussian_colors(work.v, gaussians)
        if work.colors is None:
            raise ValueError("bake='vertex_colors' needs a mesh with vertex colours or the Gaussians")
    elif bake in ("fast", "opt"):
        work.texture, work.info["bake"] = bake_from_gaussians(
            torch.as_tensor(work.v, device=device), torch.as_tensor(work.f, device=device),
            torch.as_tensor(work.uv, device=device), gaussians, texture_size=int(texture_size), views=views,
            resolution=resolution, mode=bake, steps=int(bake_steps),
            progress=lambda done, total: report("bake", done, total))


def to_glb(path, mesh, gaussians=None, *, overwrite: bool = False, progress: Optional[Progress] = None,
           **options) -> TexturedMesh:
    """Export ``mesh`` (+ ``gaussians``) as a GLB file at ``path``; returns the :class:`TexturedMesh`
    with ``timings['write']`` and ``report['path']``. Options: see :func:`prepare_glb`.

    The file is written atomically and never over an existing one unless ``overwrite``
    (FileExistsError before any work is done); nothing is left behind on failure.
    """
    import os
    if not overwrite and os.path.lexists(os.fspath(path)):
        raise FileExistsError(f"refusing to overwrite existing file {os.fspath(path)!r}")
    directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"output directory {directory!r} does not exist")
    if not os.access(directory, os.W_OK):
        raise PermissionError(f"output directory {directory!r} is not writable")
    result = prepare_glb(mesh, gaussians, progress=progress, **options)
    t = time.perf_counter()
    if progress:
        progress("write", 0, 1)
    save_glb(path, result.vertices, result.faces, **result.material(), overwrite=overwrite)
    if progress:
        progress("write", 1, 1)
    result.timings["write"] = time.perf_counter() - t
    result.timings["total"] += result.timings["write"]
    result.report["path"] = os.fspath(path)
    return result
