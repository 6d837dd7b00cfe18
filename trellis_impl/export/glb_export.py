"""Decoded mesh + Gaussians -> textured GLB: TRELLIS's ``to_glb``, phase by phase and faster.

Phases (each timed in ``TexturedMesh.timings``, each reported to ``progress``):

1. ``cleanup``: weld duplicated vertices, drop degenerate faces, decimate (``simplify`` =
   fraction of faces removed, official default 0.95), drop floating specks
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
one) so that the decimator works on a manifold-as-possible mesh.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import numpy as np
import torch

from .mesh_cleanup import cleanup_mesh
from .mesh_files import place, save_glb, to_gltf_frame
from .mesh_visibility import remove_invisible_and_fill_holes
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
    if bake in ("fast", "opt") and gaussians is None:
        raise ValueError(f"bake={bake!r} bakes the texture from the Gaussians: pass gaussians, "
                         "or use bake='vertex_colors' or 'none'")
    gaussian_device = None
    if gaussians is not None:  # fail before any work on NaN/inf parameters
        from ..render.gaussian_raster import gaussian_tensors
        gaussian_device = gaussian_tensors(gaussians)["xyz"].device
    if device is None:
        mesh_vertices = mesh.vertices if hasattr(mesh, "vertices") else (mesh[0] if isinstance(mesh, (tuple, list))
                                                                          else None)
        device = gaussian_device or (mesh_vertices.device if isinstance(mesh_vertices, torch.Tensor)
                                     else torch.device("cpu"))
    device = torch.device(device)
    if visibility_views is None:
        visibility_views = 100 if device.type == "cuda" else 24
    if visibility_resolution is None:
        visibility_resolution = 512 if device.type == "cuda" else 256
    report = progress or (lambda phase, done, total: None)
    timings: Dict[str, float] = {}
    vertices, faces, colors = _mesh_arrays(mesh)
    if bake in ("fast", "opt") and not keep_vertex_colors or bake == "none":
        colors = None  # carrying them through decimation costs a replay of its collapses
    info: Dict = {"input": {"vertices": int(len(vertices)), "faces": int(len(faces))}}

    t = time.perf_counter()
    report("cleanup", 0, 1)
    v, f, colors, cleanup_report = cleanup_mesh(vertices, faces, colors, simplify_ratio=simplify or 0.0,
                                                 device=device)
    info["cleanup"] = cleanup_report
    timings["cleanup"] = time.perf_counter() - t
    report("cleanup", 1, 1)

    t = time.perf_counter()
    if fill_holes:
        v_in = v
        v, f, vis = remove_invisible_and_fill_holes(
            torch.as_tensor(v, device=device), f, num_views=visibility_views, resolution=visibility_resolution,
            max_hole_edges=int(250 * np.sqrt(1.0 - (simplify or 0.0))),
            progress=lambda done, total: report("visibility", done, total))
        v = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v, dtype=np.float32)
        f = f.detach().cpu().numpy() if isinstance(f, torch.Tensor) else np.asarray(f, dtype=np.int64)
        info["visibility"] = vis
        if colors is not None:  # vertices moved: re-sample the colours at the nearest old vertex
            from scipy.spatial import cKDTree
            colors = colors[cKDTree(v_in).query(v, k=1)[1]]
    timings["visibility"] = time.perf_counter() - t

    uv = texture = None
    t = time.perf_counter()
    if bake in ("fast", "opt"):
        report("unwrap", 0, 1)
        vmap, f, uv, unwrap_info = unwrap(v, f, texture_size=int(texture_size), method=unwrap_method,
                                          return_info=True)
        v = v[vmap]
        colors = None if colors is None else colors[vmap]
        info["unwrap"] = {k: unwrap_info[k] for k in ("method", "charts", "faces", "vertices_out")}
        report("unwrap", 1, 1)
    timings["unwrap"] = time.perf_counter() - t

    t = time.perf_counter()
    if colors is None and gaussians is not None and bake == "vertex_colors":
        colors = _nearest_gaussian_colors(v, gaussians)
    if bake == "vertex_colors" and colors is None:
        raise ValueError("bake='vertex_colors' needs a mesh with vertex colours or the Gaussians")
    if bake in ("fast", "opt"):
        texture, info["bake"] = bake_from_gaussians(
            torch.as_tensor(v, device=device), torch.as_tensor(f, device=device), torch.as_tensor(uv, device=device),
            gaussians, texture_size=int(texture_size), views=bake_views, resolution=bake_resolution, mode=bake,
            steps=int(bake_steps), progress=lambda done, total: report("bake", done, total))
    timings["bake"] = time.perf_counter() - t

    out_v = place(to_gltf_frame(np.asarray(v, dtype=np.float64)), origin).astype(np.float32)
    info["output"] = {"vertices": int(len(out_v)), "faces": int(len(f))}
    timings["total"] = time.perf_counter() - t_start
    return TexturedMesh(out_v, np.asarray(f, dtype=np.int64), None if uv is None else np.asarray(uv, np.float32),
                        texture, None if colors is None else np.clip(colors, 0, 1).astype(np.float32),
                        timings, info)


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
