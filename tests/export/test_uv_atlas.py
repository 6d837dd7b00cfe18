"""UV atlas for TRELLIS meshes (trellis_impl.export.uv_atlas)."""

import numpy as np
import pytest
import torch
import trimesh

from trellis_impl.export.uv_atlas import _components, unwrap

T = 1024
PAD = 2


def sphere():
    m = trimesh.creation.icosphere(subdivisions=5)  # 20480 faces
    return np.asarray(m.vertices), np.asarray(m.faces)


def cube():
    m = trimesh.creation.box()
    return np.asarray(m.vertices), np.asarray(m.faces)


def charts_of(faces2, nverts):
    """Chart id per face = connected component of the output (UV) mesh through shared vertices."""
    f = np.asarray(faces2)
    a = np.concatenate([f[:, 0], f[:, 1]])
    b = np.concatenate([f[:, 1], f[:, 2]])
    _, vlab = _components(nverts, a, b)
    return vlab[f[:, 0]]


def rasterise(uv, faces2, size=T):
    """Pixel-centre coverage of every UV triangle. Returns (pixel index, face index, strictly inside)
    for every (pixel, triangle) pair whose pixel centre lies inside (edges inclusive) the triangle."""
    p = uv[faces2].astype(np.float64) * size                    # [F,3,2] in texels
    lo = np.floor(p.min(1) - 0.5).astype(np.int64) + 1           # first centre index >= min
    hi = np.floor(p.max(1) - 0.5).astype(np.int64)               # last centre index <= max
    lo = np.clip(lo, 0, size - 1)
    hi = np.clip(hi, 0, size - 1)
    nx = np.maximum(hi[:, 0] - lo[:, 0] + 1, 0)
    ny = np.maximum(hi[:, 1] - lo[:, 1] + 1, 0)
    cnt = nx * ny
    fid = np.repeat(np.arange(len(faces2)), cnt)
    start = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    local = np.arange(int(cnt.sum())) - np.repeat(start, cnt)
    px = lo[fid, 0] + local % nx[fid]
    py = lo[fid, 1] + local // nx[fid]
    cx, cy = px + 0.5, py + 0.5
    a, b, c = p[fid, 0], p[fid, 1], p[fid, 2]

    def edge(p0, p1):
        return (p1[:, 0] - p0[:, 0]) * (cy - p0[:, 1]) - (p1[:, 1] - p0[:, 1]) * (cx - p0[:, 0])

    e0, e1, e2 = edge(a, b), edge(b, c), edge(c, a)
    eps = 1e-9
    inside = ((e0 >= -eps) & (e1 >= -eps) & (e2 >= -eps)) | ((e0 <= eps) & (e1 <= eps) & (e2 <= eps))
    strict = ((e0 > 1e-6) & (e1 > 1e-6) & (e2 > 1e-6)) | ((e0 < -1e-6) & (e1 < -1e-6) & (e2 < -1e-6))
    return (py * size + px)[inside], fid[inside], strict[inside]


def check_atlas(v, f, vmap, f2, uv, fast=True, size=T, pad=PAD):
    assert vmap.dtype == np.int64 and f2.dtype == np.int64 and uv.dtype == np.float32
    assert f2.shape == f.shape and uv.shape == (len(vmap), 2)
    assert np.isfinite(uv).all() and uv.min() >= 0.0 and uv.max() <= 1.0
    # vertex map reproduces the 3D triangles
    np.testing.assert_allclose(v[vmap][f2], v[f], atol=0)
    chart = charts_of(f2, len(vmap))
    nch = chart.max() + 1

    # no pixel covered by two charts; no pixel strictly inside two triangles of one chart
    pix, fid, strict = rasterise(uv, f2, size)
    pc = np.unique(pix * nch + chart[fid])
    per_pix = np.bincount(pc // nch, minlength=size * size)
    assert per_pix.max() <= 1, f"{(per_pix > 1).sum()} pixels covered by two charts"
    sp = np.bincount(pix[strict], minlength=size * size)
    assert sp.max() <= 1, f"{(sp > 1).sum()} pixels inside two triangles (chart fold)"
    assert len(np.unique(pix)) > 0.3 * size * size if fast else True  # not wasting the texture

    if fast:
        # padding: axis-aligned chart boxes are >= pad texels apart and from the border
        q = uv[f2].reshape(-1, 2).astype(np.float64) * size
        cc = np.repeat(chart, 3)
        lo = np.full((nch, 2), np.inf)
        hi = np.full((nch, 2), -np.inf)
        np.minimum.at(lo, cc, q)
        np.maximum.at(hi, cc, q)
        tol = 1e-3
        assert lo.min() >= pad - tol and hi.max() <= size - pad + tol
        gapx = np.maximum(lo[:, None, 0] - hi[None, :, 0], lo[None, :, 0] - hi[:, None, 0])
        gapy = np.maximum(lo[:, None, 1] - hi[None, :, 1], lo[None, :, 1] - hi[:, None, 1])
        gap = np.maximum(gapx, gapy)
        np.fill_diagonal(gap, np.inf)
        assert gap.min() >= pad - tol, f"charts {gap.min():.3f} texels apart"
        # raster check: no covered pixel has a different chart within Chebyshev distance pad-1
        img = np.full(size * size, -1, np.int64)
        img[pc // nch] = pc % nch
        img = img.reshape(size, size)
        r = pad - 1
        padded = np.pad(img, r, constant_values=-1)
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                nb = padded[r + dy:r + dy + size, r + dx:r + dx + size]
                bad = (img >= 0) & (nb >= 0) & (nb != img)
                assert not bad.any(), "charts closer than the padding"

        # even texel density: UV area / 3D area per chart within 2x of the median
        p3 = v[f]
        a3 = 0.5 * np.linalg.norm(np.cross(p3[:, 1] - p3[:, 0], p3[:, 2] - p3[:, 0]), axis=1)
        p2 = uv[f2].astype(np.float64)
        d1, d2 = p2[:, 1] - p2[:, 0], p2[:, 2] - p2[:, 0]
        a2 = 0.5 * np.abs(d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0])
        A3 = np.bincount(chart, a3, nch)
        A2 = np.bincount(chart, a2, nch)
        assert (A2 > 0).all(), "zero-area UV chart"
        ok = A3 > 1e-12 * A3.max()
        ratio = A2[ok] / A3[ok]
        med = np.median(ratio)
        assert ratio.max() <= 2 * med and ratio.min() >= med / 2, (ratio.min() / med, ratio.max() / med)
    return nch


@pytest.mark.parametrize("mesh", [sphere, cube])
def test_fast_atlas_valid(mesh):
    v, f = mesh()
    vmap, f2, uv, info = unwrap(v, f, texture_size=T, padding_px=PAD, return_info=True)
    n = check_atlas(v, f, vmap, f2, uv)
    assert n == info["charts"]
    assert info["seconds"] < 5


def test_cube_gets_six_square_charts():
    v, f = cube()
    vmap, f2, uv, info = unwrap(v, f, return_info=True)
    assert info["charts"] == 6


def test_torch_inputs_and_three_outputs():
    v, f = cube()
    out = unwrap(torch.tensor(v, dtype=torch.float32), torch.tensor(f), texture_size=512, padding_px=4)
    assert len(out) == 3
    check_atlas(v.astype(np.float32), f, *out, size=512, pad=4)


def test_zero_area_faces_get_a_valid_chart():
    v, f = cube()
    nv = len(v)
    # an isolated collinear triangle, a repeated-index face, and a sliver on a cube edge
    extra_v = np.array([[2.0, 2.0, 2.0], [3.0, 3.0, 3.0], [4.0, 4.0, 4.0],
                        0.5 * (v[f[0, 0]] + v[f[0, 1]])])
    v2 = np.concatenate([v, extra_v])
    f2in = np.concatenate([f, [[nv, nv + 1, nv + 2], [0, 0, 1], [f[0, 0], f[0, 1], nv + 3]]])
    vmap, f2, uv, info = unwrap(v2, f2in, return_info=True)
    check_atlas(v2, f2in, vmap, f2, uv)


@pytest.mark.parametrize("bad,name", [
    ((np.zeros((0, 3)), np.zeros((0, 3), np.int64)), "vertices"),
    ((np.eye(3), np.zeros((0, 3), np.int64)), "faces"),
    ((np.array([[0, 0, 0], [1, 0, np.nan], [0, 1, 0]]), np.array([[0, 1, 2]])), "vertices"),
    ((np.array([[0, 0, 0], [1, 0, np.inf], [0, 1, 0]]), np.array([[0, 1, 2]])), "vertices"),
    ((np.eye(3), np.array([[0, 1, 3]])), "faces"),
])
def test_bad_inputs(bad, name):
    with pytest.raises(ValueError, match=name):
        unwrap(*bad)


def test_bad_method():
    v, f = cube()
    with pytest.raises(ValueError, match="method"):
        unwrap(v, f, method="nope")


def test_50k_faces():
    m = trimesh.creation.torus(0.4, 0.15, major_sections=256, minor_sections=96)  # 49152 faces
    v, f = np.asarray(m.vertices), np.asarray(m.faces)
    vmap, f2, uv, info = unwrap(v, f, return_info=True)
    assert info["charts"] >= 1
    check_atlas(v, f, vmap, f2, uv)


def test_xatlas_method():
    pytest.importorskip("xatlas")
    m = trimesh.creation.icosphere(subdivisions=3)  # 1280 faces, xatlas is slow on big meshes
    v, f = np.asarray(m.vertices), np.asarray(m.faces)
    vmap, f2, uv, info = unwrap(v, f, method="xatlas", return_info=True)
    check_atlas(v, f, vmap, f2, uv, fast=False)


def noisy_blob(subdiv=6, noise_voxels=0.5, target=20000, seed=0):
    """A TRELLIS-like surface: a blobby sphere with voxel-scale noise, quadric-decimated
    (decimation of noisy surfaces leaves folds and inconsistently wound faces)."""
    fs = pytest.importorskip("fast_simplification")
    rng = np.random.default_rng(seed)
    m = trimesh.creation.icosphere(subdivisions=subdiv)
    v = np.asarray(m.vertices).copy()
    d = np.zeros(len(v))
    for _ in range(8):
        c = rng.normal(size=3)
        c /= np.linalg.norm(c)
        d += 0.15 * np.exp(-8 * np.sum((v - c) ** 2, 1)) * rng.choice([-1, 1])
    v = v * (1 + d)[:, None] * 0.45 + rng.normal(size=v.shape) * noise_voxels / 256
    vs, fsimp = fs.simplify(v.astype(np.float32), np.asarray(m.faces, np.int32), target_count=target)
    return vs.astype(np.float64), fsimp.astype(np.int64)


def test_noisy_decimated_mesh_has_no_overlaps():
    v, f = noisy_blob()
    vmap, f2, uv, info = unwrap(v, f, return_info=True)
    assert info["split_faces"] > 0  # the repair path ran
    n = check_atlas(v, f, vmap, f2, uv)
    assert n == info["charts"]


def test_xatlas_missing_raises_import_error(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "xatlas", None)
    v, f = cube()
    with pytest.raises(ImportError, match="pip install xatlas"):
        unwrap(v, f, method="xatlas")
