"""Fast UV parametrisation (texture atlas) of decoded TRELLIS meshes.

The official pipeline unwraps the simplified mesh with ``xatlas.parametrize`` (default options),
which takes 20-30 s on a ~50k-face mesh. TRELLIS meshes are smooth, unit-cube sized surfaces
extracted from a voxel grid, so a much simpler scheme works well and runs in well under a second:

1. **Segmentation.** Every face is labelled with its dominant normal direction (one of the six
   axes +-X, +-Y, +-Z). Faces of one label are split into edge-connected components (charts).
   Small charts (fewer than ``min_chart_faces`` faces) are then merged into the neighbouring
   chart they share most edges with, provided every face of the small chart still makes an
   angle below ~70 deg with the neighbour's axis (a few passes). Zero-area faces take the label
   of a neighbour; zero-area faces without any non-degenerate neighbour get their own tiny
   chart (a 1-texel right triangle), so no zero-area *chart* is ever produced.
2. **Projection.** Each chart is projected orthographically onto the plane of its axis. A face
   whose normal is within 54.7 deg of the axis keeps an area scale >= cos 54.7 deg = 0.577
   (>= 0.34 for merged faces), and since every face normal has a positive component along the
   axis the projection is locally injective (no flipped triangles). Each chart is then rotated
   to its principal axes so its bounding rectangle is tight.
3. **Packing.** Bounding rectangles (rounded up to whole texels, plus ``padding_px`` texels) are
   shelf-packed, sorted by height, into the ``texture_size`` square; one scale for all charts
   (even texel density), found by bisection as the largest scale that fits. Charts are at least
   ``padding_px`` texels apart and from the texture border.

Vertices on chart borders are duplicated; :func:`unwrap` returns the vertex map.

Projection direction: a chart's area-weighted mean normal when all its faces are within ~78 deg
of it, else its axis. Overlap repair: the projected triangles of each chart are tested exactly
(separating axes on grid-hashed candidate pairs); overlapping faces (decimation folds,
inconsistent winding) are split off into their own charts, up to ``max_repairs`` rounds, then
as single triangles. Charts that lose much area in projection (ratio < ``min_area_ratio``) have
their steep faces split off as single triangles, so texel density stays within ~1/0.6 across
charts. Seams are more numerous than with xatlas. Faces much smaller than a texel get
sub-texel UV triangles (uniform density, no minimum size).

UV convention (both methods): glTF, u to the right, v downwards, origin at the top-left of the
texture image, so texel ``(row, col)`` covers ``v in [row, row+1)/T``, ``u in [col, col+1)/T``.
"""

import math
import time
from typing import Dict, Tuple

import numpy as np

from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["unwrap", "unwrap_fast", "unwrap_xatlas"]

_AXES = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float64)


def _to_numpy(x, dtype):
    try:
        import torch
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except Exception:  # pragma: no cover
        pass
    return np.asarray(x, dtype=dtype)


def _validate(vertices, faces):
    v = _to_numpy(vertices, np.float64)
    f = _to_numpy(faces, np.int64) if np.asarray(faces).size else np.zeros((0, 3), np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
        raise ValueError(f"vertices must be a non-empty [V,3] array, got shape {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise ValueError(f"faces must be a non-empty [F,3] array, got shape {f.shape}")
    if not np.isfinite(v).all():
        raise ValueError("vertices contain non-finite values (NaN/inf)")
    if f.min() < 0 or f.max() >= len(v):
        raise ValueError(f"faces index out of range [0, {len(v)})")
    return v, f


def _components(n: int, a: np.ndarray, b: np.ndarray) -> Tuple[int, np.ndarray]:
    """Connected components of a graph with ``n`` nodes and undirected edges ``(a, b)``."""
    g = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
    return connected_components(g, directed=False)


def _face_adjacency(f: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Pairs of faces sharing an edge (consecutive faces in sorted order for non-manifold edges)."""
    nf = len(f)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e.sort(axis=1)
    fid = np.tile(np.arange(nf), 3)
    key = e[:, 0] * (int(e.max()) + 1) + e[:, 1]
    order = np.argsort(key, kind="stable")
    ks, fs = key[order], fid[order]
    same = ks[1:] == ks[:-1]
    a, b = fs[:-1][same], fs[1:][same]
    keep = a != b
    return a[keep], b[keep]


def _segment(v, f, min_chart_faces: int, merge_cos: float, passes: int = 4):
    """Chart id per face, axis label per face, and a per-face 'degenerate' mask."""
    nf = len(f)
    p = v[f]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    area2 = np.linalg.norm(n, axis=1)
    scale = max(float(np.median(area2)) if nf else 0.0, 1e-300)
    degen = area2 <= 1e-10 * scale
    nn = np.zeros_like(n)
    nn[~degen] = n[~degen] / area2[~degen, None]
    dots = nn @ _AXES.T                      # [F, 6]
    dots[degen] = 1.0                         # degenerate faces fit any axis
    label = np.argmax(nn @ _AXES.T, axis=1)
    a, b = _face_adjacency(f)

    # degenerate faces take a neighbour's label (propagate a few rings)
    if degen.any():
        known = ~degen
        for _ in range(8):
            todo = ~known
            if not todo.any():
                break
            m1 = todo[a] & known[b]
            m2 = todo[b] & known[a]
            dst = np.concatenate([a[m1], b[m2]])
            src = np.concatenate([b[m1], a[m2]])
            if len(dst) == 0:
                break
            label[dst] = label[src]
            known[dst] = True

    for _ in range(passes):
        same = label[a] == label[b]
        nc, comp = _components(nf, a[same], b[same])
        size = np.bincount(comp, minlength=nc)
        small = size < min_chart_faces
        if not small.any():
            break
        # per component and axis: min over faces of cos(normal, axis)
        order = np.argsort(comp, kind="stable")
        starts = np.concatenate([[0], np.cumsum(size)[:-1]])
        cmin = np.minimum.reduceat(dots[order], starts, axis=0)        # [C, 6]
        # edges from a small component to a different component
        diff = ~same
        ca, cb = comp[a[diff]], comp[b[diff]]
        la, lb = label[a[diff]], label[b[diff]]
        src_c = np.concatenate([ca, cb])
        tgt_l = np.concatenate([lb, la])
        tgt_c = np.concatenate([cb, ca])
        ok = small[src_c] & (cmin[src_c, tgt_l] > merge_cos)
        if not ok.any():
            break
        src_c, tgt_l, tgt_c = src_c[ok], tgt_l[ok], tgt_c[ok]
        # prefer merging into larger neighbours: count shared edges weighted by target size
        key = src_c * 6 + tgt_l
        score = np.bincount(key, weights=np.log1p(size[tgt_c]) + 1.0, minlength=nc * 6).reshape(nc, 6)
        best = np.argmax(score, axis=1)
        has = score[np.arange(nc), best] > 0
        new_label_c = np.where(has, best, -1)
        fl = new_label_c[comp]
        changed = fl >= 0
        if not changed.any():
            break
        label = np.where(changed, fl, label)

    same = label[a] == label[b]
    nc, comp = _components(nf, a[same], b[same])
    return comp, label, degen, nc


def _shelf_pack(wb: np.ndarray, hb: np.ndarray, width: float):
    """Shelf packing of boxes (already sorted by decreasing height). Returns x, y, total height."""
    nb = len(wb)
    x = np.zeros(nb)
    y = np.zeros(nb)
    cw = np.concatenate([[0.0], np.cumsum(wb)])
    i, top = 0, 0.0
    while i < nb:
        j = int(np.searchsorted(cw, cw[i] + width, side="right")) - 1
        j = max(j, i + 1)  # at least one box per shelf
        x[i:j] = cw[i:j] - cw[i]
        y[i:j] = top
        top += hb[i]
        i = j
    return x, y, top


def _project(v, f, comp, chart_label, fixed_chart, nc, face_dir=None):
    """Duplicate vertices per chart and project each chart orthographically onto a plane.

    Returns ``vmap, faces2, vchart, P [V2, 2], d [nc, 3]`` (``d``: projection direction per chart;
    ``face_dir`` [F, 3] forces the direction of each face's chart)."""
    nf, nv = len(f), len(v)
    # duplicate vertices per chart (corners of fixed faces all get their own vertex)
    corner_chart = np.repeat(comp, 3)
    corner_vert = f.reshape(-1)
    corner_fixed = np.repeat(fixed_chart[comp], 3)
    key = corner_chart * nv + corner_vert
    key[corner_fixed] = nc * nv + np.nonzero(corner_fixed)[0]
    ukey, first, inv = np.unique(key, return_index=True, return_inverse=True)
    vmap = corner_vert[first].astype(np.int64)
    vchart = corner_chart[first]
    faces2 = inv.reshape(nf, 3).astype(np.int64)

    # projection direction per chart: the area-weighted mean normal when every face of the chart
    # is within ~66 deg of it (less distortion than the axis), else the chart's axis
    pf = v[f]
    fn = np.cross(pf[:, 1] - pf[:, 0], pf[:, 2] - pf[:, 0])           # area-weighted normals
    d = np.zeros((nc, 3))
    np.add.at(d, comp, fn)
    dl = np.linalg.norm(d, axis=1)
    d = d / np.maximum(dl, 1e-300)[:, None]
    fl = np.linalg.norm(fn, axis=1)
    cosf = np.where(fl > 0, np.einsum("ij,ij->i", fn, d[comp]) / np.maximum(fl, 1e-300), 1.0)
    cmin = np.ones(nc)
    np.minimum.at(cmin, comp, cosf)
    use_axis = (cmin < 0.2) | (dl <= 0)
    d[use_axis] = _AXES[chart_label[use_axis]]
    if face_dir is not None:
        keep = np.isfinite(face_dir[:, 0])
        d[comp[keep]] = face_dir[keep]
    # right-handed tangent frame (t1, t2, d): UV triangles keep the 3D winding
    e = np.eye(3)[np.argmin(np.abs(d), axis=1)]
    t1 = np.cross(d, e)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    t2 = np.cross(d, t1)
    pv = v[vmap]
    P = np.stack([np.einsum("ij,ij->i", pv, t1[vchart]), np.einsum("ij,ij->i", pv, t2[vchart])], axis=1)
    fixed_v = fixed_chart[vchart]
    if fixed_v.any():
        tri = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        P[fixed_v] = tri[(ukey[fixed_v] - nc * nv) % 3]
    return vmap, faces2, vchart, P, d


def _pack(P, vchart, fixed_chart, nc, T, pad):
    """Rotate charts to their principal axes and shelf-pack them with one scale.

    Returns ``uv [V2, 2]`` (float32, in [0, 1]), texels per unit, packed height, texel coords."""
    # rotate each chart to its principal axes (tighter bounding rectangles)
    cnt = np.maximum(np.bincount(vchart, minlength=nc), 1).astype(np.float64)
    mx = np.bincount(vchart, P[:, 0], nc) / cnt
    my = np.bincount(vchart, P[:, 1], nc) / cnt
    dx, dy = P[:, 0] - mx[vchart], P[:, 1] - my[vchart]
    sxx = np.bincount(vchart, dx * dx, nc)
    syy = np.bincount(vchart, dy * dy, nc)
    sxy = np.bincount(vchart, dx * dy, nc)
    ang = 0.5 * np.arctan2(2 * sxy, sxx - syy)
    ang[fixed_chart] = 0.0
    c, s = np.cos(ang)[vchart], np.sin(ang)[vchart]
    Q = np.stack([c * dx + s * dy, -s * dx + c * dy], axis=1)
    lo = np.full((nc, 2), np.inf)
    hi = np.full((nc, 2), -np.inf)
    np.minimum.at(lo, vchart, Q)
    np.maximum.at(hi, vchart, Q)
    used = np.isfinite(lo[:, 0])
    lo[~used] = 0.0
    hi[~used] = 0.0
    Q = Q - lo[vchart]
    ext = hi - lo                                   # [nc, 2] in 3D units (texels for fixed)
    # lay charts wider than tall (better for shelves)
    rot = (ext[:, 1] > ext[:, 0]) & ~fixed_chart
    rv = rot[vchart]
    Q[rv] = np.stack([Q[rv, 1], ext[vchart[rv], 0] - Q[rv, 0]], axis=1)
    ext[rot] = ext[rot][:, ::-1]

    # uniform scale by bisection: largest texels-per-unit that shelf-packs into the square
    avail = T - pad  # boxes (chart + pad) packed into [0, T-pad]^2, charts start at +pad
    order = np.argsort(-ext[:, 1], kind="stable")
    ext_o, fixed_o, used_o = ext[order], fixed_chart[order], used[order]

    def boxes(kpu):
        e = np.where(fixed_o[:, None], ext_o, ext_o * kpu)
        e = np.maximum(np.ceil(e - 1e-9), 1.0)
        e[~used_o] = 0.0
        return e[:, 0] + pad * used_o, e[:, 1] + pad * used_o, e

    def fits(kpu):
        wb, hb, _ = boxes(kpu)
        if wb.max() > avail or hb.max() > avail:
            return False
        return _shelf_pack(wb, hb, avail)[2] <= avail

    # area of the 3D surface per chart (in projection) bounds the scale from above
    tot = float((ext[~fixed_chart, 0] * ext[~fixed_chart, 1]).sum())
    hi_k = T / math.sqrt(max(tot, 1e-30)) * 1.01
    lo_k = 0.0
    if not fits(1e-12):
        raise ValueError(f"{nc} charts with padding {pad:g}px do not fit a {T}^2 texture; "
                         "raise texture_size or lower padding_px")
    for _ in range(200):  # (all-fixed atlases fit at any scale)
        if not fits(hi_k):
            break
        lo_k, hi_k = hi_k, hi_k * 2
    for _ in range(30):
        mid = 0.5 * (lo_k + hi_k)
        if fits(mid):
            lo_k = mid
        else:
            hi_k = mid
        if hi_k - lo_k < 1e-4 * hi_k:
            break
    kpu = lo_k
    wb, hb, e = boxes(kpu)
    bx, by, height = _shelf_pack(wb, hb, avail)
    pos = np.zeros((nc, 2))
    pos[order, 0] = bx + pad
    pos[order, 1] = by + pad
    boxsize = np.zeros((nc, 2))
    boxsize[order] = e
    # center the chart inside its (texel-rounded) box
    scale_v = np.where(fixed_chart[vchart], 1.0, kpu)
    sz = ext[vchart] * scale_v[:, None]
    off = 0.5 * (boxsize[vchart] - sz)
    pix = pos[vchart] + off + Q * scale_v[:, None]
    uv = (pix / T).clip(0.0, 1.0).astype(np.float32)

    return uv, kpu, height, pix


def _overlapping_faces(P, faces2, fchart, nc):
    """Faces whose projected triangle overlaps (with positive area) another of the same chart.

    Exact 2D test (separating axes) on candidate pairs from a uniform grid of each chart's
    projected coordinates, so the result does not depend on the final texture resolution.
    Triangles that merely touch (shared edge or vertex) do not count."""
    nf = len(faces2)
    bad = np.zeros(nf, bool)
    t = P[faces2]                                             # [F, 3, 2]
    lo, hi = t.min(1), t.max(1)
    ext = hi - lo
    live = ext.max(1) > 0
    if not live.any():
        return bad
    cell = max(float(np.median(ext[live].max(1))), 1e-12)
    while True:  # bound the number of (triangle, cell) incidences
        c0 = np.floor(lo / cell).astype(np.int64)
        c1 = np.floor(hi / cell).astype(np.int64)
        if float(np.prod((c1 - c0 + 1).astype(np.float64), axis=1).sum()) <= 16 * nf + 1024:
            break
        cell *= 2.0
    nx, ny = c1[:, 0] - c0[:, 0] + 1, c1[:, 1] - c0[:, 1] + 1
    cnt = nx * ny
    fid = np.repeat(np.arange(nf), cnt)
    start = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    local = np.arange(int(cnt.sum())) - np.repeat(start, cnt)
    cx = c0[fid, 0] + local % nx[fid]
    cy = c0[fid, 1] + local // nx[fid]
    # hash (chart, cx, cy) into one int64 key
    ox, oy = cx.min(), cy.min()
    cx -= ox
    cy -= oy
    W = int(cx.max()) + 1
    H = int(cy.max()) + 1
    key = (fchart[fid] * H + cy) * W + cx
    order = np.argsort(key, kind="stable")
    key, fid, cx, cy = key[order], fid[order], cx[order], cy[order]
    brk = np.concatenate([[True], key[1:] != key[:-1]])
    gid = np.cumsum(brk) - 1
    gstart = np.nonzero(brk)[0]
    gend = np.concatenate([gstart[1:], [len(key)]])
    npair = gend[gid] - np.arange(len(key)) - 1
    if npair.sum() == 0:
        return bad
    I = np.repeat(np.arange(len(key)), npair)
    pstart = np.concatenate([[0], np.cumsum(npair)[:-1]])
    J = I + 1 + (np.arange(int(npair.sum())) - np.repeat(pstart, npair))
    fa, fb = fid[I], fid[J]
    # bounding boxes must overlap with positive area; each pair is kept only in the cell holding
    # the low corner of the boxes' intersection (no duplicates)
    eps = 1e-9 * cell
    ilo = np.maximum(lo[fa], lo[fb])
    ov = ((np.minimum(hi[fa], hi[fb]) - ilo) > eps).all(1)
    cc = np.floor(ilo / cell).astype(np.int64)
    ov &= (cc[:, 0] - ox == cx[I]) & (cc[:, 1] - oy == cy[I])
    # (faces sharing an edge are tested too: with inconsistent winding they can fold over)
    fa, fb = fa[ov], fb[ov]
    if len(fa) == 0:
        return bad
    # corner coordinates as contiguous [P] columns: the projections' max/min over three corners
    # are then elementwise maxima, not numpy reductions along an axis of 3 (4x slower); pairs
    # leave as soon as one axis separates them, so later axes test only the survivors
    tol = 1e-7 * cell
    left = np.arange(len(fa))
    for side in range(6):
        a_tri, b_tri = t[fa[left]], t[fb[left]]
        tri = a_tri if side < 3 else b_tri
        k = side % 3
        nx = tri[:, k, 1] - tri[:, (k + 1) % 3, 1]  # the edge's normal
        ny = tri[:, (k + 1) % 3, 0] - tri[:, k, 0]
        length = np.maximum(np.sqrt(nx * nx + ny * ny), 1e-300)
        nx, ny = nx / length, ny / length
        pa = [a_tri[:, j, 0] * nx + a_tri[:, j, 1] * ny for j in range(3)]
        pb = [b_tri[:, j, 0] * nx + b_tri[:, j, 1] * ny for j in range(3)]
        pa_lo, pa_hi = np.minimum(np.minimum(pa[0], pa[1]), pa[2]), np.maximum(np.maximum(pa[0], pa[1]), pa[2])
        pb_lo, pb_hi = np.minimum(np.minimum(pb[0], pb[1]), pb[2]), np.maximum(np.maximum(pb[0], pb[1]), pb[2])
        left = left[~((pa_hi <= pb_lo + tol) | (pb_hi <= pa_lo + tol))]
        if len(left) == 0:
            break
    bad[fa[left]] = True  # the pairs no axis separates overlap
    bad[fb[left]] = True
    return bad


def unwrap_fast(vertices, faces, texture_size: int = 1024, padding_px: int = 2,
                min_chart_faces: int = 64, merge_angle_deg: float = 70.0, max_repairs: int = 3,
                min_area_ratio: float = 0.6):
    """Axis-projection atlas. See the module docstring. Returns ``(vmap, faces2, uv, info)``."""
    t0 = time.perf_counter()
    v, f = _validate(vertices, faces)
    T = int(texture_size)
    pad = float(padding_px)
    if T < 4 or pad < 0:
        raise ValueError(f"texture_size must be >= 4 and padding_px >= 0, got {texture_size}, {padding_px}")
    nf, nv = len(f), len(v)

    comp, label, degen, nc = _segment(v, f, int(min_chart_faces), math.cos(math.radians(merge_angle_deg)))
    t_seg = time.perf_counter()

    # one label per chart; charts made only of degenerate faces with no neighbour are 'fixed'
    chart_label = np.zeros(nc, np.int64)
    chart_label[comp] = label
    ndeg = np.bincount(comp, weights=(~degen).astype(np.float64), minlength=nc)
    fixed_chart = ndeg == 0

    # degenerate-only charts: one chart per face, a 1x1-texel right triangle each
    fixed_face = fixed_chart[comp]
    if fixed_face.any():
        keep = np.unique(comp[~fixed_face])
        remap = np.full(nc, -1, np.int64)
        remap[keep] = np.arange(len(keep))
        nfx = int(fixed_face.sum())
        comp = remap[comp]
        comp[fixed_face] = len(keep) + np.arange(nfx)
        chart_label = np.concatenate([chart_label[keep], np.zeros(nfx, np.int64)])
        fixed_chart = np.concatenate([np.zeros(len(keep), bool), np.ones(nfx, bool)])
        nc = len(keep) + nfx

    a_adj, b_adj = _face_adjacency(f)
    splits = 0
    for it in range(max_repairs + 1):
        vmap, faces2, vchart, P, d = _project(v, f, comp, chart_label, fixed_chart, nc)
        bad = np.zeros(nf, bool)
        if max_repairs > 0:
            chk = ~fixed_chart[comp]  # fixed charts are single triangles
            bad[chk] = _overlapping_faces(P, faces2[chk], comp[chk], nc)
        if not bad.any():
            break
        splits += int(bad.sum())
        last = it == max_repairs
        face_dir = d[comp]
        # split the overlapping faces off their charts: edge-connected pieces in the first round,
        # single triangles afterwards (a triangle cannot overlap itself)
        m = bad[a_adj] & bad[b_adj] & (comp[a_adj] == comp[b_adj])
        if it > 0:
            m[:] = False
        _, sub = _components(nf, a_adj[m], b_adj[m])
        newc = np.where(bad, nc + sub, comp)
        m = newc[a_adj] == newc[b_adj]  # charts stay edge-connected
        _, comp = _components(nf, a_adj[m], b_adj[m])
        ncn = int(comp.max()) + 1
        lab_new = np.zeros(ncn, np.int64)
        fix_new = np.zeros(ncn, bool)
        lab_new[comp] = np.where(bad, label, chart_label[np.minimum(newc, nc - 1)])
        fix_new[comp] = np.where(bad, False, fixed_chart[np.minimum(newc, nc - 1)])
        chart_label, fixed_chart, nc = lab_new, fix_new, ncn
        if last:
            # out of rounds: keep the previous projection of what is left of each chart (a
            # subset of an overlap-free projection is overlap-free) and make bad faces single
            face_dir = np.where(bad[:, None], np.nan, face_dir)
            vmap, faces2, vchart, P, d = _project(v, f, comp, chart_label, fixed_chart, nc,
                                                  face_dir=face_dir)
            break
    # even texel density: in charts that lose much area in projection, steep faces (cos < 0.6)
    # become single-triangle charts (projected along their own normal); the rest keeps its
    # projection (so stays overlap-free) and has an area ratio >= 0.6
    pf = v[f]
    fn = np.cross(pf[:, 1] - pf[:, 0], pf[:, 2] - pf[:, 0])
    fl = np.linalg.norm(fn, axis=1)
    cosf = np.where(fl > 0, np.einsum("ij,ij->i", fn, d[comp]) / np.maximum(fl, 1e-300), 1.0)
    a3 = np.bincount(comp, fl, nc)
    a2 = np.bincount(comp, fl * cosf, nc)
    low = (a2 < min_area_ratio * a3) & ~fixed_chart
    steep = low[comp] & (cosf < min_area_ratio) & (fl > 0)
    if steep.any():
        face_dir = np.where(steep[:, None], np.nan, d[comp])
        m = ~steep[a_adj] & ~steep[b_adj] & (comp[a_adj] == comp[b_adj])
        _, newc = _components(nf, a_adj[m], b_adj[m])
        ncn = int(newc.max()) + 1
        lab_new = np.zeros(ncn, np.int64)
        fix_new = np.zeros(ncn, bool)
        lab_new[newc] = chart_label[comp]
        fix_new[newc] = fixed_chart[comp]
        comp, chart_label, fixed_chart, nc = newc, lab_new, fix_new, ncn
        vmap, faces2, vchart, P, d = _project(v, f, comp, chart_label, fixed_chart, nc,
                                              face_dir=face_dir)
        splits += int(steep.sum())
    uv, kpu, height, pix = _pack(P, vchart, fixed_chart, nc, T, pad)
    ncv = len(vmap)
    t1 = time.perf_counter()
    info: Dict = dict(method="fast", charts=int(nc), faces=int(nf), vertices_in=int(nv),
                      vertices_out=int(ncv), texels_per_unit=float(kpu),
                      packed_height_px=float(height + pad), seconds=t1 - t0, split_faces=splits,
                      seconds_segment=t_seg - t0, chart_per_face=comp)
    return vmap.astype(np.int64), faces2, uv, info


def unwrap_xatlas(vertices, faces):
    """``xatlas.parametrize`` with default options (as the official TRELLIS pipeline)."""
    try:
        import xatlas
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("method='xatlas' needs the xatlas package: pip install xatlas") from e
    t0 = time.perf_counter()
    v, f = _validate(vertices, faces)
    vmap, idx, uv = xatlas.parametrize(v.astype(np.float32), f.astype(np.uint32))
    info = dict(method="xatlas", charts=None, faces=int(len(f)), vertices_in=int(len(v)),
                vertices_out=int(len(vmap)), seconds=time.perf_counter() - t0)
    return (np.asarray(vmap, np.int64), np.asarray(idx, np.int64),
            np.asarray(uv, np.float32), info)


def unwrap(vertices, faces, texture_size: int = 1024, padding_px: int = 2, method: str = "fast",
           return_info: bool = False):
    """UV-unwrap a triangle mesh into a texture atlas.

    Args:
        vertices: ``[V, 3]`` float positions (numpy or torch).
        faces: ``[F, 3]`` integer vertex indices.
        texture_size: side of the square texture in texels (sets the padding in UV units).
        padding_px: minimum gap between charts, and to the texture border, in texels.
        method: ``'fast'`` (axis-projection charts + shelf packing, ~0.1-0.5 s for 50k faces)
            or ``'xatlas'`` (``xatlas.parametrize`` defaults, 20-30 s for 50k faces; needs
            ``pip install xatlas``; ``texture_size``/``padding_px`` are not passed to it).
        return_info: also return a report dict: ``charts`` (chart count; None for xatlas),
            ``seconds``, vertex counts, and for 'fast' ``texels_per_unit`` and
            ``chart_per_face`` (chart id of every output face).

    Returns:
        ``(vertex_map [V2] int64, faces2 [F, 3] int64, uv [V2, 2] float32)`` (+ ``info``):
        output vertex ``i`` sits at ``vertices[vertex_map[i]]``; ``uv`` is in ``[0, 1]`` with
        the glTF convention (origin top-left, v down).

    Raises:
        ValueError: empty ``vertices``/``faces``, non-finite ``vertices``, out-of-range ``faces``,
            unknown ``method``. ImportError: ``method='xatlas'`` without the package.
    """
    if method == "fast":
        out = unwrap_fast(vertices, faces, texture_size=texture_size, padding_px=padding_px)
    elif method == "xatlas":
        out = unwrap_xatlas(vertices, faces)
    else:
        raise ValueError(f"method must be 'fast' or 'xatlas', got {method!r}")
    return out if return_info else out[:3]
