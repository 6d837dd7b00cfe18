"""Visibility-based removal of interior faces and small-hole filling (TRELLIS ``to_glb``).

This is a from-scratch implementation of the clean-up that the official
``trellis/utils/postprocessing_utils.py`` (``_fill_holes``, called by ``postprocess_mesh`` when
``to_glb`` runs with ``fill_holes=True``) applies to decoded meshes. The algorithm follows the
official one step by step:

1. **Views** (:func:`sphere_cameras`): cameras on a sphere of radius 2 around the origin,
   placed at the points of a Hammersley sequence mapped to (yaw, pitch) as the official
   ``sphere_hammersley_sequence`` does, all looking at the origin (40 degree field of view).
2. **Visibility** (:func:`face_visibility`): each view is rasterised; a face is seen in a view
   when it owns at least one pixel. The visibility of a face is the fraction of views in which
   it is seen.
3. **Interior faces** (:func:`remove_interior_faces`): per connected component (faces joined
   by shared edges), faces with visibility above ``min(max(q75, 0.25), 0.5)`` (``q75`` being the
   component's 75th percentile of visibility) are "outer"; faces never seen are "inner". On the
   dual graph (a node per face, an edge between faces sharing a mesh edge with the edge's length
   as capacity) plus a source joined to the inner faces and a sink joined to the outer faces
   (capacity 1 each), a minimum s-t cut separates what should be removed (the source side)
   from the rest. The candidate faces are split into edge-connected components; a component is
   removed only when its median visibility is <= 0.25 and every loop of new boundary edges the
   removal would open encloses an area (fan around the loop's mean edge midpoint) of at most
   ``max_hole_size``. Unreferenced vertices are dropped afterwards.
4. **Small holes** (:func:`fill_small_holes`): boundary loops with at most ``max_hole_edges``
   edges are closed.

Differences from the official code (documented choices, not bugs):

* The official solves the cut with igraph (float capacities scaled by 1000);
  :func:`scipy.sparse.csgraph.maximum_flow` needs integer capacities, so capacities are scaled
  (by up to 1e5, less on huge meshes to keep the flow within int32) and rounded, with a minimum
  of 1. Up to that rounding the cut is the same minimum cut (ties may be broken differently).
  The source side is the set of nodes reachable from the source in the residual graph.
* Non-manifold edges (3 or more faces) make every pair of faces around them adjacent.
* The component "median" is the lower median (as ``torch.median``, which the official uses).
* Holes are filled with a triangle fan around the loop's centroid (one new vertex per hole),
  oriented like the neighbouring faces; the official uses pymeshfix
  ``fill_small_boundaries(nbe, refine=True)``, which triangulates and refines the patch.
  Loops that are not simple (a boundary vertex with several boundary edges in or out) are
  left open.
* The official puts its first Hammersley camera exactly below the object, where a Z-up look-at
  is degenerate; such a camera gets +Y as its up vector here (visibility does not depend on
  the camera's roll).

Inputs may be numpy arrays or torch tensors. :func:`face_visibility` works in torch on the
device of ``vertices`` (rasterisation goes through :func:`trellis_impl.render.mesh_raster.rasterize_views`,
which picks accelerated backends on GPU); the graph steps are numpy/scipy and return numpy
arrays (float32 vertices, int64 faces).
"""

import math
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components, maximum_flow

from ..render.cameras import Camera
from ..render.mesh_raster import rasterize_views
from ..sequences import hammersley_yaw_pitch
from .mesh_cleanup import _check_mesh, _to_numpy

__all__ = ["sphere_cameras", "face_visibility", "remove_interior_faces", "fill_small_holes",
           "remove_invisible_and_fill_holes"]

_INT32_MAX = 2 ** 31 - 1


# ----------------------------------------------------------------------------------------------
# cameras
# ----------------------------------------------------------------------------------------------

def sphere_cameras(num_views: int, resolution: int, radius: float = 2.0,
                   fov_degrees: float = 40.0) -> List[Camera]:
    """``num_views`` cameras at Hammersley points of a sphere, all looking at the origin.

    Args:
        num_views: number of cameras (> 0). The official uses 1000.
        resolution: square image size in pixels (> 0). The official uses 1024.
        radius: camera distance from the origin in world units (TRELLIS assets live in the
            unit cube centred at the origin).
        fov_degrees: field of view in degrees.

    Returns:
        list of :class:`~trellis_impl.render.cameras.Camera` (Z-up world; a camera straight
        above or below uses +Y as its up vector).
    """
    if isinstance(num_views, bool) or not isinstance(num_views, (int, np.integer)) or num_views <= 0:
        raise ValueError(f"num_views must be a positive integer, got {num_views!r}")
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution <= 0:
        raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
    if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius > 0):
        raise ValueError(f"radius must be a positive finite number, got {radius!r}")
    cams = []
    for k in range(int(num_views)):
        yaw, pitch = hammersley_yaw_pitch(k, int(num_views))
        up = (0.0, 0.0, 1.0) if abs(math.cos(pitch)) > 1e-6 else (0.0, 1.0, 0.0)
        cams.append(Camera.orbit(yaw, pitch, float(radius), fov_degrees, int(resolution), int(resolution), up=up))
    return cams


# ----------------------------------------------------------------------------------------------
# visibility
# ----------------------------------------------------------------------------------------------

def face_visibility(vertices, faces, cameras, backend: Optional[str] = None,
                    progress: Optional[Callable[[int, int], None]] = None) -> torch.Tensor:
    """Fraction of ``cameras`` in which each face owns at least one pixel.

    Args:
        vertices: [V, 3] float world positions (numpy or torch; torch tensors are processed on
            their device).
        faces: [F, 3] integer vertex indices.
        cameras: non-empty sequence of :class:`~trellis_impl.render.cameras.Camera`.
        backend: rasteriser backend (see :func:`trellis_impl.render.mesh_raster.rasterize`).
        progress: optional ``callable(done, total)`` called after each batch of views (one
            rasteriser call: about 8M pixels on a GPU, 1M on a CPU); it may raise to interrupt.

    Returns:
        [F] float32 tensor in [0, 1] on the device of ``vertices`` (CPU for numpy input).
    """
    _check_mesh(vertices, faces)  # validation with named inputs (numpy copy, cheap next to rendering)
    device = vertices.device if isinstance(vertices, torch.Tensor) else torch.device("cpu")
    v = torch.as_tensor(vertices) if isinstance(vertices, torch.Tensor) else torch.as_tensor(np.asarray(vertices))
    v = v.detach().to(device)
    if not v.is_floating_point():
        v = v.float()
    f = torch.as_tensor(faces) if isinstance(faces, torch.Tensor) else torch.as_tensor(np.asarray(faces))
    f = f.detach().to(device=device, dtype=torch.int64)
    cameras = list(cameras) if cameras is not None else []
    if len(cameras) == 0:
        raise ValueError("cameras is empty: need at least one view")
    for i, cam in enumerate(cameras):
        if not isinstance(cam, Camera):
            raise ValueError(f"cameras[{i}] must be a Camera, got {type(cam).__name__}")
    n_faces = f.shape[0]
    counts = torch.zeros(n_faces, dtype=torch.int64, device=device)
    # views in batches, one rasteriser call each: about 8M pixels on a GPU (nvdiffrast draws a batch
    # at once); about 1M on a CPU, where that takes well under a second, so a Cancel is honoured soon
    budget = (8 << 20) if device.type == "cuda" else (1 << 20)
    per_batch = max(1, budget // (cameras[0].width * cameras[0].height))
    for start in range(0, len(cameras), per_batch):
        batch = cameras[start:start + per_batch]
        tid = rasterize_views(v, f, batch, backend=backend)["triangle_id"].reshape(len(batch), -1)
        seen = torch.zeros(len(batch), n_faces + 1, dtype=torch.bool, device=device)
        seen.scatter_(1, tid.clamp(min=-1) + 1, True)  # slot 0 collects the background
        counts += seen[:, 1:].sum(0)
        if progress is not None:
            progress(start + len(batch), len(cameras))
    return (counts.to(torch.float32) / float(len(cameras)))


# ----------------------------------------------------------------------------------------------
# mesh graph helpers
# ----------------------------------------------------------------------------------------------

def _edges(f: np.ndarray):
    """Undirected edges of the faces: (edges [E, 2] sorted pairs, face2edge [F, 3], degree [E])."""
    he = np.stack([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], axis=1).reshape(-1, 2)
    key = np.sort(he, axis=1)
    edges, inv, deg = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    return edges, inv.reshape(-1, 3), deg


def _dual_pairs(face2edge: np.ndarray, n_edges: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pairs of distinct faces sharing an edge: (pairs [P, 2], shared edge id [P]).

    Around a non-manifold edge every pair of its faces is a pair.
    """
    eid = face2edge.reshape(-1)
    fid = np.repeat(np.arange(face2edge.shape[0]), 3)
    order = np.argsort(eid, kind="stable")
    eid, fid = eid[order], fid[order]
    n = eid.shape[0]
    pairs, shared = [], []
    d = 1
    while d < n:
        same = eid[d:] == eid[:-d]
        if not same.any():
            break
        idx = np.nonzero(same)[0]
        pairs.append(np.stack([fid[idx], fid[idx + d]], axis=1))
        shared.append(eid[idx])
        d += 1
    if not pairs:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    pairs = np.concatenate(pairs)
    shared = np.concatenate(shared)
    keep = pairs[:, 0] != pairs[:, 1]  # a degenerate face may use one edge twice
    return pairs[keep], shared[keep]


def _face_components(n_faces: int, pairs: np.ndarray) -> np.ndarray:
    g = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n_faces, n_faces))
    return connected_components(g, directed=False)[1]


def _check_visibility(visibility, n_faces: int) -> np.ndarray:
    if visibility is None:
        raise ValueError("visibility is None")
    vis = _to_numpy(visibility)
    if vis.ndim != 1 or vis.shape[0] != n_faces:
        raise ValueError(f"visibility must have shape [F] = [{n_faces}] (one value per face), "
                         f"got {tuple(vis.shape)}")
    if not np.issubdtype(vis.dtype, np.number) or np.issubdtype(vis.dtype, np.complexfloating):
        raise ValueError(f"visibility must be real numbers, got dtype {vis.dtype}")
    vis = vis.astype(np.float64)
    if not np.isfinite(vis).all():
        raise ValueError("visibility contains non-finite values (NaN/inf)")
    return vis


def _remove_unreferenced(v: np.ndarray, f: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    used = np.zeros(v.shape[0], bool)
    used[f.reshape(-1)] = True
    remap = np.cumsum(used) - 1
    return v[used], remap[f].reshape(-1, 3).astype(np.int64)


def _group_quantile(values: np.ndarray, labels: np.ndarray, q: float, lower: bool = False) -> np.ndarray:
    """Per-label quantile (linear interpolation as torch.quantile, or the lower median style)."""
    order = np.lexsort((values, labels))
    sv, sl = values[order], labels[order]
    n_lab = int(labels.max()) + 1
    counts = np.bincount(sl, minlength=n_lab)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = q * np.maximum(counts - 1, 0)
    if lower:
        return sv[starts + np.floor(pos).astype(np.int64)]
    lo = np.floor(pos).astype(np.int64)
    hi = np.ceil(pos).astype(np.int64)
    return sv[starts + lo] + (pos - lo) * (sv[starts + hi] - sv[starts + lo])


# ----------------------------------------------------------------------------------------------
# interior faces
# ----------------------------------------------------------------------------------------------

def remove_interior_faces(vertices, faces, visibility,
                          max_hole_size: float = 0.04) -> Tuple[np.ndarray, np.ndarray, int]:
    """Remove never-seen interior faces through a minimum cut on the dual graph (official algorithm).

    Args:
        vertices: [V, 3] float world positions.
        faces: [F, 3] integer vertex indices.
        visibility: [F] per-face visibility in [0, 1] (:func:`face_visibility`).
        max_hole_size: largest area (world units squared) of a loop of new boundary edges that
            a removal may open; components whose removal would open a larger hole are kept.

    Returns:
        (vertices float32 [V', 3], faces int64 [F', 3], number of faces removed). Unreferenced
        vertices are dropped when faces are removed; otherwise the mesh comes back unchanged.
    """
    v, f = _check_mesh(vertices, faces)
    vis = _check_visibility(visibility, f.shape[0])
    if not (isinstance(max_hole_size, (int, float)) and math.isfinite(max_hole_size) and max_hole_size >= 0):
        raise ValueError(f"max_hole_size must be a finite number >= 0, got {max_hole_size!r}")
    n_faces = f.shape[0]
    unchanged = (v.astype(np.float32), f.copy(), 0)

    inner = np.nonzero(vis == 0)[0]
    if inner.size == 0:
        return unchanged
    edges, face2edge, edge_deg = _edges(f)
    pairs, shared = _dual_pairs(face2edge, edges.shape[0])
    comp = _face_components(n_faces, pairs)
    thresh = np.minimum(np.maximum(_group_quantile(vis, comp, 0.75), 0.25), 0.5)
    outer = np.nonzero(vis > thresh[comp])[0]

    # flow network: faces 0..F-1, source F, sink F+1 (undirected dual edges in both directions)
    s, t = n_faces, n_faces + 1
    lengths = np.linalg.norm(v[edges[shared, 0]] - v[edges[shared, 1]], axis=1)
    scale = float(min(1e5, max(1.0, (_INT32_MAX // 4) / max(len(inner), len(outer), 1))))
    cap = np.maximum(np.rint(lengths * scale), 1).astype(np.int64)
    unit = max(int(round(scale)), 1)
    rows = np.concatenate([pairs[:, 0], pairs[:, 1], np.full(len(inner), s), outer])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0], inner, np.full(len(outer), t)])
    caps = np.concatenate([cap, cap, np.full(len(inner) + len(outer), unit, np.int64)])
    caps = np.minimum(caps, _INT32_MAX // 4)
    graph = csr_matrix((caps.astype(np.int32), (rows, cols)), shape=(n_faces + 2, n_faces + 2))
    graph.sum_duplicates()
    graph.data = np.minimum(graph.data.astype(np.int64), _INT32_MAX // 4).astype(np.int32)
    flow = maximum_flow(graph, s, t).flow
    # residual capacity c - f over the union of both patterns (flow is antisymmetric)
    residual = (graph.astype(np.int64) - flow.astype(np.int64)).tocsr()
    residual.data = (residual.data > 0).astype(np.int8)
    residual.eliminate_zeros()
    reach = breadth_first_order(residual, s, directed=True, return_predecessors=False)
    cand = np.sort(reach[reach < n_faces])
    if cand.size == 0:
        return unchanged

    # split candidates into edge-connected components
    in_cand = np.zeros(n_faces, bool)
    in_cand[cand] = True
    local = np.full(n_faces, -1, np.int64)
    local[cand] = np.arange(cand.size)
    cp = pairs[in_cand[pairs[:, 0]] & in_cand[pairs[:, 1]]]
    cc = _face_components(cand.size, local[cp]) if cp.size else np.arange(cand.size)
    n_cc = int(cc.max()) + 1
    ok = _group_quantile(vis[cand], cc, 0.5, lower=True) <= 0.25

    # new boundary edges of each component: used once inside it, not a boundary of the mesh
    lab = np.repeat(cc, 3)
    eid = face2edge[cand].reshape(-1)
    key = lab * edges.shape[0] + eid
    ukey, kcount = np.unique(key, return_counts=True)
    ulab, ueid = ukey // edges.shape[0], ukey % edges.shape[0]
    nb = (kcount == 1) & (edge_deg[ueid] != 1)
    nb_lab, nb_edge = ulab[nb], edges[ueid[nb]]
    if nb_lab.size:
        # loops: new boundary edges of one component connected through shared vertices
        node_key = np.stack([nb_lab * v.shape[0] + nb_edge[:, 0], nb_lab * v.shape[0] + nb_edge[:, 1]], 1)
        unodes, ninv = np.unique(node_key, return_inverse=True)
        ninv = ninv.reshape(-1, 2)
        g = coo_matrix((np.ones(len(ninv), np.int8), (ninv[:, 0], ninv[:, 1])), shape=(unodes.size,) * 2)
        loop = connected_components(g, directed=False)[1][ninv[:, 0]]
        n_loops = int(loop.max()) + 1
        a, b = v[nb_edge[:, 0]], v[nb_edge[:, 1]]
        mid = 0.5 * (a + b)
        cnt = np.bincount(loop, minlength=n_loops).astype(np.float64)
        centre = np.stack([np.bincount(loop, mid[:, k], n_loops) for k in range(3)], 1) / cnt[:, None]
        c = centre[loop]
        area = 0.5 * np.bincount(loop, np.linalg.norm(np.cross(a - c, b - c), axis=1), n_loops)
        loop_lab = np.zeros(n_loops, np.int64)
        loop_lab[loop] = nb_lab
        too_big = np.zeros(n_cc, bool)
        too_big[loop_lab[area > max_hole_size]] = True
        ok &= ~too_big
    remove = cand[ok[cc]]
    if remove.size == 0:
        return unchanged
    keep = np.ones(n_faces, bool)
    keep[remove] = False
    if not keep.any():  # never hand back an empty mesh
        return unchanged
    nv, nf = _remove_unreferenced(v, f[keep])
    return nv.astype(np.float32), nf, int(remove.size)


# ----------------------------------------------------------------------------------------------
# hole filling
# ----------------------------------------------------------------------------------------------

def fill_small_holes(vertices, faces, max_hole_edges: int) -> Tuple[np.ndarray, np.ndarray, int]:
    """Close boundary loops of at most ``max_hole_edges`` edges with a centroid triangle fan.

    Boundary edges are edges used by exactly one face (edges joining a vertex to itself are
    ignored). The loops they form are walked against the winding of their faces, so the fan
    triangles (boundary edge reversed + the new centroid vertex) continue the orientation of
    the neighbouring faces. Loops that are not simple (a vertex with several boundary edges
    leaving or entering it, as at non-manifold vertices) are skipped.

    Args:
        vertices: [V, 3] float world positions.
        faces: [F, 3] integer vertex indices.
        max_hole_edges: largest loop (number of edges) to fill; >= 0 (0 fills nothing).

    Returns:
        (vertices float32 [V + holes, 3], faces int64 [F + filled edges, 3], holes filled).
    """
    v, f = _check_mesh(vertices, faces)
    if isinstance(max_hole_edges, bool) or not isinstance(max_hole_edges, (int, np.integer)) or max_hole_edges < 0:
        raise ValueError(f"max_hole_edges must be an integer >= 0, got {max_hole_edges!r}")
    he = np.stack([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], axis=1).reshape(-1, 2)
    key = np.sort(he, axis=1)
    _, inv, deg = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    bmask = (deg[inv.reshape(-1)] == 1) & (he[:, 0] != he[:, 1])
    if not bmask.any() or max_hole_edges < 3:
        return v.astype(np.float32), f.copy(), 0
    hole = he[bmask][:, ::-1]  # hole edges a -> b run against the faces' winding
    n_v = v.shape[0]
    out_deg = np.bincount(hole[:, 0], minlength=n_v)
    in_deg = np.bincount(hole[:, 1], minlength=n_v)
    g = coo_matrix((np.ones(len(hole), np.int8), (hole[:, 0], hole[:, 1])), shape=(n_v, n_v))
    _, lab = connected_components(g, directed=False)
    elab = lab[hole[:, 0]]
    n_lab = int(lab.max()) + 1
    bad_vertex = (out_deg != in_deg) | (out_deg > 1)
    touched = (out_deg + in_deg) > 0
    bad_lab = np.zeros(n_lab, bool)
    bad_lab[lab[bad_vertex & touched]] = True
    loop_len = np.bincount(elab, minlength=n_lab)
    fill = (~bad_lab) & (loop_len >= 3) & (loop_len <= max_hole_edges)
    sel = fill[elab]
    if not sel.any():
        return v.astype(np.float32), f.copy(), 0
    loops = np.nonzero(fill)[0]
    new_id = np.full(n_lab, -1, np.int64)
    new_id[loops] = n_v + np.arange(loops.size)
    # centroid of each loop's vertices (each loop vertex starts exactly one hole edge)
    e = hole[sel]
    el = elab[sel]
    cnt = np.bincount(el, minlength=n_lab).astype(np.float64)
    cent = np.stack([np.bincount(el, v[e[:, 0], k], n_lab) for k in range(3)], 1)[loops] / cnt[loops, None]
    new_faces = np.stack([e[:, 0], e[:, 1], new_id[el]], axis=1)
    nv = np.concatenate([v, cent]).astype(np.float32)
    nf = np.concatenate([f, new_faces]).astype(np.int64)
    return nv, nf, int(loops.size)


# ----------------------------------------------------------------------------------------------
# all together
# ----------------------------------------------------------------------------------------------

def remove_invisible_and_fill_holes(vertices, faces, num_views: int = 100, resolution: int = 512,
                                    max_hole_size: float = 0.04, max_hole_edges: int = 32,
                                    backend: Optional[str] = None,
                                    progress: Optional[Callable[[int, int], None]] = None
                                    ) -> Tuple[np.ndarray, np.ndarray, Dict[str, float]]:
    """Official ``_fill_holes``: visibility, interior-face removal, small-hole filling.

    Args:
        vertices: [V, 3] float world positions (numpy or torch; rendering runs on the tensor's
            device).
        faces: [F, 3] integer vertex indices.
        num_views, resolution: number and size (pixels) of the :func:`sphere_cameras` views
            (official: 1000 views at 1024 px).
        max_hole_size: see :func:`remove_interior_faces` (world units squared).
        max_hole_edges: see :func:`fill_small_holes` (official: ``int(250 * sqrt(1 - simplify))``).
        backend: rasteriser backend.
        progress: optional ``callable(done, total)`` called after each batch of views; it may raise to
            interrupt.

    Returns:
        (vertices float32 [V', 3], faces int64 [F', 3], stats) with stats keys ``views``,
        ``interior_faces_removed``, ``holes_filled``, ``seconds`` and the seconds of each step
        (``visibility_seconds``, ``interior_seconds``, ``holes_seconds``).
    """
    t0 = time.perf_counter()
    _check_mesh(vertices, faces)
    cams = sphere_cameras(num_views, resolution)
    vis = face_visibility(vertices, faces, cams, backend=backend, progress=progress)
    t1 = time.perf_counter()
    v, f, removed = remove_interior_faces(vertices, faces, vis, max_hole_size=max_hole_size)
    t2 = time.perf_counter()
    v, f, filled = fill_small_holes(v, f, max_hole_edges)
    t3 = time.perf_counter()
    stats = {"views": len(cams), "interior_faces_removed": removed, "holes_filled": filled,
             "seconds": t3 - t0, "visibility_seconds": t1 - t0, "interior_seconds": t2 - t1,
             "holes_seconds": t3 - t2}
    return v, f, stats
