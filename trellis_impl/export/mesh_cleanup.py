"""Geometry clean-up of decoded TRELLIS meshes before GLB export.

The official ``postprocessing_utils.postprocess_mesh`` (used by ``to_glb``) decimates the mesh
with quadric edge collapse (``simplify=0.95``: 95% of the faces removed), removes faces that
are invisible from many rendered views, fills small holes and drops isolated pieces. This module
covers the renderer-free part of that, on numpy arrays:

* :func:`weld` merges coincident vertices (decoded meshes repeat vertices along voxel borders)
  and drops degenerate (repeated index / zero area) and duplicate faces;
* :func:`remove_small_components` drops floating specks (connected components with few faces);
* :func:`drop_hidden_components` drops the components no view sees (the caller says which faces
  are seen: rendering is not this module's);
* :func:`simplify` decimates to a target face count: quadric edge collapse through the
  ``fast_simplification`` package when it is importable, else a numpy vertex-clustering
  fallback (see its docstring for the quality difference);
* :func:`cleanup_mesh` chains them and reports counts and seconds per phase.

The official visibility-based removal of interior faces and its small-hole filling need a
rasteriser over many views: they are in :mod:`~trellis_impl.export.mesh_visibility`.

Inputs may be numpy arrays or torch tensors; outputs are numpy arrays (float32 vertices,
int64 faces, attributes in their input dtype where averaging allows, else float).
"""

import math
import time
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..child_call import call_in_child

try:  # optional, much better decimation (quadric edge collapse); pip install fast-simplification
    import fast_simplification as _fast_simplification
except ImportError:  # pragma: no cover - depends on the environment
    _fast_simplification = None

__all__ = ["weld", "remove_small_components", "drop_hidden_components", "simplify", "cleanup_mesh",
           "remap_attributes", "HAS_FAST_SIMPLIFICATION"]

HAS_FAST_SIMPLIFICATION = _fast_simplification is not None


# ----------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------

def _to_numpy(x):
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_mesh(vertices, faces) -> Tuple[np.ndarray, np.ndarray]:
    if vertices is None:
        raise ValueError("vertices is None")
    if faces is None:
        raise ValueError("faces is None")
    v = _to_numpy(vertices)
    f = _to_numpy(faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must have shape [V, 3], got {tuple(v.shape)}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must have shape [F, 3], got {tuple(f.shape)}")
    if v.shape[0] == 0:
        raise ValueError("vertices is empty: the mesh has no vertices")
    if f.shape[0] == 0:
        raise ValueError("faces is empty: the mesh has no faces")
    if not np.issubdtype(v.dtype, np.number) or np.issubdtype(v.dtype, np.complexfloating):
        raise ValueError(f"vertices must be real numbers, got dtype {v.dtype}")
    v = v.astype(np.float64, copy=False)
    if not np.isfinite(v).all():
        bad = int((~np.isfinite(v)).any(axis=1).sum())
        raise ValueError(f"vertices contain non-finite values (NaN/inf) in {bad} rows")
    if not np.issubdtype(f.dtype, np.integer):
        if np.issubdtype(f.dtype, np.floating) and np.isfinite(f).all() and (f == np.round(f)).all():
            f = f.astype(np.int64)
        else:
            raise ValueError(f"faces must hold integer vertex indices, got dtype {f.dtype}")
    f = f.astype(np.int64, copy=False)
    if f.min() < 0 or f.max() >= v.shape[0]:
        raise ValueError(f"faces index vertices out of range [0, {v.shape[0]}): "
                         f"min {int(f.min())}, max {int(f.max())}")
    return v, f


def _check_attributes(attributes, num_vertices: int) -> Optional[np.ndarray]:
    if attributes is None:
        return None
    a = _to_numpy(attributes)
    if a.ndim == 0 or a.shape[0] != num_vertices:
        raise ValueError(f"attributes must have one row per vertex ({num_vertices}), "
                         f"got shape {tuple(a.shape)}")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise ValueError("attributes contain non-finite values (NaN/inf)")
    return a


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

def remap_attributes(attributes, vertex_map, num_vertices: int) -> np.ndarray:
    """Carry per-vertex ``attributes`` [V_old, ...] through ``vertex_map`` (old index -> new
    index, -1 for a dropped vertex): each new vertex gets the mean of the old vertices mapped to
    it. Integer attributes are averaged and rounded back to their dtype."""
    a = _to_numpy(attributes)
    vm = np.asarray(vertex_map, dtype=np.int64)
    if a.shape[0] != vm.shape[0]:
        raise ValueError(f"attributes has {a.shape[0]} rows but vertex_map has {vm.shape[0]}")
    keep = vm >= 0
    vm = vm[keep]
    flat = a.reshape(a.shape[0], -1)[keep].astype(np.float64)
    counts = np.bincount(vm, minlength=num_vertices).astype(np.float64)
    out = np.zeros((num_vertices, flat.shape[1]), dtype=np.float64)
    if flat.shape[1] > 16:
        np.add.at(out, vm, flat)
    else:
        for c in range(flat.shape[1]):
            out[:, c] = np.bincount(vm, weights=flat[:, c], minlength=num_vertices)
    out /= np.maximum(counts, 1.0)[:, None]
    out = out.reshape((num_vertices,) + a.shape[1:])
    if np.issubdtype(a.dtype, np.integer):
        return np.round(out).astype(a.dtype)
    if np.issubdtype(a.dtype, np.floating):
        return out.astype(a.dtype)
    return out


def _clean_faces(v, f, area_eps: float):
    """Drop faces with a repeated index, with (near) zero area, and duplicates (same vertex set,
    either orientation; the first one is kept). Order of the kept faces is preserved.
    numpy in, numpy out; torch in, torch out (on the tensors' device)."""
    as_numpy = isinstance(f, np.ndarray)
    vt = torch.as_tensor(v)
    ft = torch.as_tensor(f).long()
    ok = (ft[:, 0] != ft[:, 1]) & (ft[:, 1] != ft[:, 2]) & (ft[:, 0] != ft[:, 2])
    p0, p1, p2 = vt[ft[:, 0]], vt[ft[:, 1]], vt[ft[:, 2]]
    ok &= torch.linalg.cross(p1 - p0, p2 - p0).norm(dim=1) > 2.0 * area_eps
    kept = torch.nonzero(ok).squeeze(1)
    if kept.numel():
        _, _, first = _group_rows(ft[kept].sort(dim=1).values)
        kept = kept[first.sort().values]
    out = ft[kept]
    return out.cpu().numpy() if as_numpy else out


def _group_rows(rows: torch.Tensor):
    """Group equal integer rows [N, 3] (torch, any device): (inverse [N] group id per row,
    counts [G], first [G] index of each group's first row). Groups are numbered in sorted row
    order. Rows whose columns each span < 2^21 values are packed into one int64 key (one sort);
    others fall back to ``torch.unique(dim=0)``."""
    lo = rows.min(dim=0).values
    span = rows.max(dim=0).values - lo
    if bool((span < (1 << 21)).all()):
        shifted = rows - lo
        keys = (shifted[:, 0] << 42) | (shifted[:, 1] << 21) | shifted[:, 2]
        _, inverse, counts = torch.unique(keys, return_inverse=True, return_counts=True)
    else:
        _, inverse, counts = torch.unique(rows, dim=0, return_inverse=True, return_counts=True)
    n = counts.shape[0]
    index = torch.arange(rows.shape[0], device=rows.device)
    first = torch.full((n,), rows.shape[0], dtype=torch.int64, device=rows.device)
    first = first.scatter_reduce(0, inverse, index, "amin", include_self=True)
    return inverse, counts, first


def _compact(v: np.ndarray, f: np.ndarray):
    """Drop unreferenced vertices; returns (vertices, faces, vertex_map old->new or -1)."""
    used = np.zeros(v.shape[0], dtype=bool)
    used[f.ravel()] = True
    vmap = np.full(v.shape[0], -1, dtype=np.int64)
    vmap[used] = np.arange(int(used.sum()), dtype=np.int64)
    return v[used], vmap[f], vmap


def _compose(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    out = np.full(first.shape[0], -1, dtype=np.int64)
    ok = first >= 0
    out[ok] = second[first[ok]]
    return out


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------

def weld(vertices, faces, tolerance: float = 1e-6, device=None):
    """Merge coincident vertices and drop degenerate and duplicate faces.

    Vertices are snapped to a grid of cell ``tolerance``, then to the same grid shifted by half a
    cell; vertices sharing a cell in either pass become one, placed at the mean of the originals.
    So exact duplicates always merge, vertices much closer than ``tolerance`` almost always do
    (unless near a corner of both grids), and nothing farther than about ``2 * tolerance`` per
    axis from its cluster-mates merges (chains can reach a little further). The welded vertices
    come out in grid order, not input order. Faces with a repeated index or an area at most
    ``tolerance**2`` are dropped, as are duplicate faces (same three vertices in any order or
    orientation; the first is kept). Vertices no face uses afterwards are dropped.

    Returns ``(vertices [V', 3] float32, faces [F', 3] int64, vertex_map [V] int64)``, where
    ``vertex_map[i]`` is the new index of old vertex ``i`` (-1 if dropped); carry per-vertex
    attributes with ``remap_attributes(attrs, vertex_map, len(vertices))``.
    The grouping runs in torch on ``device`` (default CPU; a GPU makes it ~free on decoded meshes).
    Raises ValueError on bad input or when no face survives.
    """
    v, f = _check_mesh(vertices, faces)
    if not (tolerance > 0 and math.isfinite(tolerance)):
        raise ValueError(f"tolerance must be a positive finite number, got {tolerance}")
    if np.abs(v).max() / tolerance >= 2.0 ** 60:
        raise ValueError(f"tolerance {tolerance} is too small for coordinates of this size")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    vt = torch.as_tensor(v, device=dev)
    inverse = torch.arange(v.shape[0], device=dev)
    merged = vt
    for shift in (0.0, 0.5):  # second, half-cell-shifted grid merges pairs split by a cell border
        step, _, _ = _group_rows(torch.floor(merged / tolerance + shift).long())
        inverse = step[inverse]
        n = int(inverse.max()) + 1
        counts = torch.bincount(inverse, minlength=n).to(vt.dtype)
        merged = torch.zeros(n, 3, dtype=vt.dtype, device=dev).index_add_(0, inverse, vt) / counts[:, None]
    f2 = _clean_faces(merged, inverse[torch.as_tensor(f, device=dev)], area_eps=tolerance ** 2)
    if f2.shape[0] == 0:
        raise ValueError("nothing is left after welding: every face is degenerate or duplicate")
    v3, f3, vmap2 = _compact(merged.cpu().numpy(), f2.cpu().numpy())
    return v3.astype(np.float32), f3, vmap2[inverse.cpu().numpy()]


def _vertex_components(num_vertices: int, faces: np.ndarray) -> np.ndarray:
    """Connected-component label per vertex (vertices sharing a face are connected)."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])),
                       shape=(num_vertices, num_vertices))
    return connected_components(graph, directed=False)[1]


def remove_small_components(vertices, faces, min_faces: Optional[int] = None,
                            min_fraction: float = 0.01):
    """Keep connected components (faces connected through shared vertices) with at least
    ``min_faces`` faces, or, when ``min_faces`` is None, at least ``min_fraction`` of all faces.
    The largest component is always kept, so the result is never empty.

    Returns ``(vertices float32, faces int64, vertex_map old->new or -1)``.
    """
    v, f = _check_mesh(vertices, faces)
    if min_faces is None:
        if not (0.0 <= min_fraction <= 1.0):
            raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction}")
        threshold = min_fraction * f.shape[0]
    else:
        if min_faces < 0:
            raise ValueError(f"min_faces must be >= 0, got {min_faces}")
        threshold = float(min_faces)
    labels = _vertex_components(v.shape[0], f)
    face_label = labels[f[:, 0]]
    sizes = np.bincount(face_label, minlength=v.shape[0])
    keep_comp = sizes >= threshold
    keep_comp[int(np.argmax(sizes))] = True
    f2 = f[keep_comp[face_label]]
    v2, f2, vmap = _compact(v, f2)
    return v2.astype(np.float32), f2, vmap


def drop_hidden_components(vertices, faces, seen_faces: Callable[[np.ndarray, np.ndarray], np.ndarray]):
    """Drop the connected components (faces connected through shared vertices) of which
    ``seen_faces(vertices, faces)`` ([F] bool) marks no face; not called on a single component.
    Returns ``(vertices float32, faces int64, vertex_map old->new or -1)``."""
    v, f = _check_mesh(vertices, faces)
    labels = _vertex_components(v.shape[0], f)
    face_label = labels[f[:, 0]]
    if f.shape[0] == 0 or face_label.max() == face_label.min():
        return v.astype(np.float32), f, np.arange(v.shape[0])
    seen = np.asarray(seen_faces(v.astype(np.float32), f), dtype=bool)
    if seen.shape != (f.shape[0],):
        raise ValueError(f"seen_faces returned shape {seen.shape}, expected ({f.shape[0]},)")
    keep_label = np.zeros(labels.max() + 1, dtype=bool)
    keep_label[face_label[seen]] = True
    if not keep_label.any():  # nothing seen at all (e.g. cameras that miss the mesh): keep it whole
        return v.astype(np.float32), f, np.arange(v.shape[0])
    v2, f2, vmap = _compact(v, f[keep_label[face_label]])
    return v2.astype(np.float32), f2, vmap


def _cluster(v: np.ndarray, f: np.ndarray, cell: float, origin: np.ndarray):
    q = np.floor((v - origin) / cell).astype(np.int64)
    dims = q.max(axis=0) + 1
    key = (q[:, 0] * dims[1] + q[:, 1]) * dims[2] + q[:, 2]
    _, inverse = np.unique(key, return_inverse=True)
    inverse = inverse.reshape(-1)
    n = int(inverse.max()) + 1
    counts = np.bincount(inverse, minlength=n).astype(np.float64)
    pos = np.stack([np.bincount(inverse, weights=v[:, c], minlength=n) for c in range(3)], 1)
    pos /= counts[:, None]
    f2 = _clean_faces(pos, inverse[f], area_eps=0.0)
    return pos, f2, inverse


def _simplify_clustering(v: np.ndarray, f: np.ndarray, target: int):
    """Vertex-clustering decimation: search the grid cell size whose clustering gives a face
    count within 5% of ``target`` (bisection on log cell size, at most 20 tries)."""
    origin = v.min(axis=0)
    extent = float((v.max(axis=0) - origin).max())
    p0, p1, p2 = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    area = 0.5 * float(np.linalg.norm(np.cross(p1 - p0, p2 - p0), axis=1).sum())
    # a surface of area A meshed at spacing h has about 2 A / h^2 triangles
    cell = math.sqrt(2.0 * max(area, 1e-30) / max(target, 1))
    lo, hi = None, None  # cell sizes giving too many / too few faces
    best = None
    for _ in range(20):
        res = _cluster(v, f, cell, origin)
        n = res[1].shape[0]
        if best is None or abs(n - target) < abs(best[1].shape[0] - target):
            best = res
        if abs(n - target) <= 0.05 * target:
            break
        if n > target:
            lo = cell
            cell = cell * 2.0 if hi is None else math.sqrt(cell * hi)
        else:
            hi = cell
            cell = cell * 0.5 if lo is None else math.sqrt(cell * lo)
        if cell > 4 * extent or cell < 1e-12 * max(extent, 1e-30):
            break
    return best


def simplify(vertices, faces, target_ratio: Optional[float] = None,
             target_faces: Optional[int] = None, attributes=None):
    """Decimate to about ``target_faces`` faces, or remove the fraction ``target_ratio`` of the
    faces (like the official ``simplify=0.95`` and ``fast_simplification``'s
    ``target_reduction``: 0.95 keeps 5%). Give exactly one of the two.

    Method:
      * ``fast_simplification`` importable (``HAS_FAST_SIMPLIFICATION``): quadric edge collapse
        (the same algorithm family as the official pyvista ``decimate``); keeps closed meshes
        closed and preserves the shape well; lands on or just under the target count. Vertex
        positions are re-optimised, so each output vertex takes the attributes of the input
        vertices collapsed into it (mean), from the collapse history.
      * otherwise: vertex clustering on a uniform grid, cell size searched so the face count
        lands within about 5% of the target; each cluster becomes one vertex at the mean
        position (attributes averaged). Much faster to write but lower quality: it does not
        follow curvature (uniform detail), may merge close but separate sheets, and may create
        non-manifold edges or small holes, so closedness is not guaranteed.

    Returns ``(vertices float32, faces int64, attributes or None)``; attributes have one row
    per output vertex. A target at or above the current count returns the input unchanged, as
    does a mesh so small or odd that decimation would leave no face (if quadric collapse leaves
    nothing, vertex clustering is tried first).
    """
    return _simplify(vertices, faces, target_ratio, target_faces, attributes)[:3]


def _simplify(vertices, faces, target_ratio, target_faces, attributes, poll=None):
    """simplify(), plus the method used ('fast_simplification', 'vertex_clustering' or None).
    ``poll``: called every 0.2 s while the quadric decimation runs (it holds the GIL, so it runs
    in a child process then: ``child_call``); an exception from it stops the decimation."""
    v, f = _check_mesh(vertices, faces)
    attrs = _check_attributes(attributes, v.shape[0])
    if (target_ratio is None) == (target_faces is None):
        raise ValueError("give exactly one of target_ratio and target_faces")
    if target_ratio is not None:
        if not (0.0 <= target_ratio < 1.0):
            raise ValueError(f"target_ratio (fraction of faces removed) must be in [0, 1), "
                             f"got {target_ratio}")
        target = int(round((1.0 - target_ratio) * f.shape[0]))
    else:
        target = int(target_faces)
    if target < 1:
        raise ValueError(f"target face count must be >= 1, got {target}")
    if target >= f.shape[0]:
        return v.astype(np.float32), f, attrs, None
    if _fast_simplification is not None:
        out_v, out_f, collapses = call_in_child(_fast_simplification.simplify, (v, f.astype(np.int32)),
                                                {"target_count": target, "return_collapses": True}, poll=poll)
        out_v = np.asarray(out_v, dtype=np.float64).reshape(-1, 3)
        out_f = _clean_faces(out_v, np.asarray(out_f, dtype=np.int64).reshape(-1, 3), 0.0)
        if out_f.shape[0] > 0:
            out_attrs = None
            if attrs is not None:
                vmap = _collapse_map(v, f, collapses, out_v.shape[0])
                out_attrs = remap_attributes(attrs, vmap, out_v.shape[0])
            return _finish(out_v, out_f, out_attrs) + ("fast_simplification",)
        # quadric collapse removed everything (tiny or degenerate-ish input): try clustering
    out_v, out_f, inverse = _simplify_clustering(v, f, target)
    if out_f.shape[0] == 0:  # nothing survives any decimation: keep the input as it is
        return v.astype(np.float32), f, attrs, None
    out_attrs = None if attrs is None else remap_attributes(attrs, inverse, out_v.shape[0])
    return _finish(out_v, out_f, out_attrs) + ("vertex_clustering",)


def _finish(out_v, out_f, out_attrs):
    """Drop the vertices no face uses (faces already cleaned)."""
    out_v, out_f, vmap = _compact(out_v, out_f)
    if out_attrs is not None:
        out_attrs = out_attrs[vmap >= 0]
    return out_v.astype(np.float32), out_f, out_attrs


def _collapse_map(v: np.ndarray, f: np.ndarray, collapses, num_out: int) -> np.ndarray:
    """Old vertex -> output vertex of fast_simplification, from its collapse history."""
    from fast_simplification import replay_simplification
    _, _, mapping = replay_simplification(v.astype(np.float32), f.astype(np.int32),
                                          np.asarray(collapses))
    mapping = np.asarray(mapping, dtype=np.int64)
    mapping[(mapping < 0) | (mapping >= num_out)] = -1
    return mapping


def cleanup_mesh(vertices, faces, attributes=None, simplify_ratio: float = 0.95,
                 min_component_fraction: float = 0.01, weld_tolerance: float = 1e-6, device=None,
                 poll: Optional[Callable[[], object]] = None,
                 seen_faces: Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]] = None):
    """Weld, [drop hidden components,] simplify (``simplify_ratio``: fraction of faces removed, as
    the official ``to_glb(simplify=0.95)``; 0 or None skips it), then drop small components (after
    decimation: the same specks, found on a 20x smaller graph).

    ``attributes`` (one row per vertex, e.g. the decoder's rgb+normal ``vertex_attrs``) are
    carried through every phase. ``device``: where :func:`weld` groups vertices. ``poll``: a
    Cancel check called at least every 0.2 s during decimation (see ``_simplify``).
    ``seen_faces``: given, and the welded mesh has several connected components, it is called
    with the welded mesh (vertices float32 [V, 3], faces int64 [F, 3]) and returns [F] bool, True
    for the faces some view sees; components with no seen face (the interior shells a decoded
    mesh carries) are dropped before the decimation, which would otherwise spend most of its
    time on them. Returns ``(vertices float32 [V, 3], faces int64 [F, 3], attributes or None,
    report)``; ``report`` has the vertex/face counts after each phase (``input``, ``weld``,
    ``hidden``, ``simplify``, ``components``), ``seconds`` per phase and in total, and the
    simplification ``method`` ('fast_simplification', 'vertex_clustering' or None).
    """
    t_start = time.perf_counter()
    v, f = _check_mesh(vertices, faces)
    attrs = _check_attributes(attributes, v.shape[0])
    report: Dict = {"input": {"vertices": int(v.shape[0]), "faces": int(f.shape[0])},
                    "seconds": {}}

    t = time.perf_counter()
    v, f, vmap = weld(v, f, tolerance=weld_tolerance, device=device)
    if attrs is not None:
        attrs = remap_attributes(attrs, vmap, v.shape[0])
    report["seconds"]["weld"] = time.perf_counter() - t
    report["weld"] = {"vertices": int(v.shape[0]), "faces": int(f.shape[0])}

    t = time.perf_counter()
    if seen_faces is not None and simplify_ratio:
        v, f, vmap = drop_hidden_components(v, f, seen_faces)
        if attrs is not None:
            attrs = attrs[vmap >= 0]  # kept vertices stay in order
    report["seconds"]["hidden"] = time.perf_counter() - t
    report["hidden"] = {"vertices": int(v.shape[0]), "faces": int(f.shape[0])}

    t = time.perf_counter()
    method = None
    if simplify_ratio:
        v, f, attrs, method = _simplify(v, f, simplify_ratio, None, attrs, poll)
    report["seconds"]["simplify"] = time.perf_counter() - t
    report["simplify"] = {"vertices": int(v.shape[0]), "faces": int(f.shape[0])}
    t = time.perf_counter()
    if min_component_fraction:
        v, f, vmap = remove_small_components(v, f, min_fraction=min_component_fraction)
        if attrs is not None:
            attrs = attrs[vmap >= 0]  # kept vertices stay in order
    report["seconds"]["components"] = time.perf_counter() - t
    report["components"] = {"vertices": int(v.shape[0]), "faces": int(f.shape[0])}

    report["method"] = method
    report["seconds"]["total"] = time.perf_counter() - t_start
    return v.astype(np.float32), f.astype(np.int64), attrs, report
