"""Visibility-based interior-face removal and hole filling (trellis_impl.export.mesh_visibility)."""

import numpy as np
import pytest
import torch
import trimesh

from trellis_impl.export.mesh_visibility import (
    face_visibility, fill_small_holes, remove_interior_faces, remove_invisible_and_fill_holes,
    sphere_cameras)

VIEWS, RES = 24, 96


def cube(half, centre=(0.0, 0.0, 0.0)):
    """Welded, closed, outward-oriented cube: 8 vertices, 12 faces."""
    box = trimesh.creation.box(extents=(2 * half,) * 3)
    return np.asarray(box.vertices, np.float64) + np.asarray(centre), np.asarray(box.faces, np.int64)


def nested_cubes():
    vo, fo = cube(0.4)
    vi, fi = cube(0.15)
    return np.concatenate([vo, vi]), np.concatenate([fo, fi + len(vo)])


def grid(n, size=1.0):
    """Flat n x n grid of 2 n^2 triangles in the z = 0 plane, side ``size``."""
    xs = np.linspace(-size / 2, size / 2, n + 1)
    X, Y = np.meshgrid(xs, xs, indexing="ij")
    v = np.stack([X.ravel(), Y.ravel(), np.zeros(X.size)], 1)
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    f = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    cells = np.concatenate([np.stack(np.unravel_index(np.arange(n * n), (n, n)), 1)] * 2)
    return v, f, cells


def edge_counts(f):
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    return np.unique(e, axis=0, return_counts=True)[1]


def directed_unique(f):
    d = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    return len(np.unique(d, axis=0)) == len(d)


# ----------------------------------------------------------------------------------------------

def test_sphere_cameras_cover_sphere_and_look_at_origin():
    cams = sphere_cameras(VIEWS, RES)
    assert len(cams) == VIEWS
    pos = torch.stack([c.position for c in cams]).numpy()
    np.testing.assert_allclose(np.linalg.norm(pos, axis=1), 2.0, atol=1e-9)
    for c, p in zip(cams, pos):
        assert c.width == RES and c.height == RES
        # camera forward axis (third row of R) points from the camera to the origin
        np.testing.assert_allclose(c.extrinsics[2, :3].numpy(), -p / np.linalg.norm(p), atol=1e-9)
        # the origin projects to the image centre
        np.testing.assert_allclose(c.project(torch.zeros(1, 3))[0, :2].numpy(), [RES / 2, RES / 2], atol=1e-6)
    d = np.linalg.norm(pos[:, None] - pos[None], axis=2) + np.eye(VIEWS) * 10
    assert d.min() > 0.1  # distinct positions
    dirs = pos / 2.0
    assert (dirs[:, 2] > 0.5).any() and (dirs[:, 2] < -0.5).any()
    rng = np.random.default_rng(0)
    probe = rng.normal(size=(500, 3))
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    assert (probe @ dirs.T).max(axis=1).min() > 0.5  # no direction farther than 60 deg from a camera


def test_face_visibility_cube_and_hidden_cube():
    cams = sphere_cameras(VIEWS, RES)
    v, f = cube(0.4)
    vis = face_visibility(v, f, cams)
    assert vis.dtype == torch.float32 and vis.shape == (12,)
    assert (vis > 0).all() and (vis <= 1).all()
    v2, f2 = nested_cubes()
    calls = []
    vis2 = face_visibility(torch.as_tensor(v2, dtype=torch.float32), torch.as_tensor(f2), cams,
                           progress=lambda d, t: calls.append((d, t)))
    assert (vis2[:12] > 0).all() and (vis2[12:] == 0).all()
    assert calls[-1] == (VIEWS, VIEWS) and all(t == VIEWS for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_remove_interior_faces_removes_hidden_cube_keeps_outer():
    v, f = nested_cubes()
    vis = face_visibility(v, f, sphere_cameras(VIEWS, RES))
    nv, nf, removed = remove_interior_faces(v, f, vis)
    assert removed == 12 and nf.shape == (12, 3) and nv.shape == (8, 3)
    assert nv.dtype == np.float32 and nf.dtype == np.int64
    np.testing.assert_allclose(np.sort(nv, axis=0), np.sort(v[:8], axis=0), atol=1e-6)
    assert (edge_counts(nf) == 2).all()


def test_remove_interior_faces_within_one_component():
    """Invisible patch inside a visible sheet: removed when the hole it opens is small enough."""
    v, f, cells = grid(20)  # spacing 0.05
    inner = ((cells >= 7) & (cells <= 12)).all(1)  # 6x6 cells: a 0.3 x 0.3 square, 72 faces
    vis = np.where(inner, 0.0, 1.0)
    # the hole would be 0.09 > 0.04: kept
    nv, nf, removed = remove_interior_faces(v, f, vis, max_hole_size=0.04)
    assert removed == 0 and nf.shape == f.shape
    np.testing.assert_array_equal(nf, f)
    # a larger allowance: exactly the invisible faces go
    nv, nf, removed = remove_interior_faces(v, f, vis, max_hole_size=0.1)
    assert removed == 72 and len(nf) == len(f) - 72
    assert len(nv) == len(v) - 25  # the patch's 5x5 interior vertices are dropped
    kept = np.sort(nv[nf].mean(1).round(4), axis=0)
    np.testing.assert_allclose(kept, np.sort(v[f[~inner]].mean(1).round(4), axis=0), atol=1e-4)


def test_remove_interior_faces_keeps_visible_component_and_no_inner():
    v, f = cube(0.4)
    vis = np.full(12, 0.3)
    nv, nf, removed = remove_interior_faces(v, f, vis)
    assert removed == 0 and np.array_equal(nf, f)
    # a component with median visibility > 0.25 is kept even though some faces are unseen
    vis = np.array([0.0] * 2 + [0.3] * 10)
    nv, nf, removed = remove_interior_faces(v, f, vis)
    assert removed == 0 and np.array_equal(nf, f)


def test_fill_small_holes_closes_cube():
    v, f = cube(0.5)
    # the two triangles of the +x side
    centres = v[f].mean(1)
    side = np.isclose(centres[:, 0], 0.5)
    assert side.sum() == 2
    open_f = f[~side]
    assert (edge_counts(open_f) == 1).sum() == 4
    nv, nf, filled = fill_small_holes(v, open_f, max_hole_edges=4)
    assert filled == 1 and len(nv) == 9 and len(nf) == 14
    assert (edge_counts(nf) == 2).all() and directed_unique(nf)
    np.testing.assert_allclose(nv[8], [0.5, 0.0, 0.0], atol=1e-6)
    new = nf[10:]
    n = np.cross(nv[new[:, 1]] - nv[new[:, 0]], nv[new[:, 2]] - nv[new[:, 0]])
    assert (n[:, 0] > 0).all()  # outward like the rest of the cube
    # a 4-edge loop is not filled when only 3 edges are allowed
    nv, nf, filled = fill_small_holes(v, open_f, max_hole_edges=3)
    assert filled == 0 and np.array_equal(nf, open_f) and len(nv) == 8


def test_fill_small_holes_skips_large_loop_fills_small_one():
    v, f, cells = grid(4)  # open sheet: boundary loop of 16 edges
    nv, nf, filled = fill_small_holes(v, f, max_hole_edges=8)
    assert filled == 0 and len(nf) == len(f)
    nv, nf, filled = fill_small_holes(v, f, max_hole_edges=16)
    assert filled == 1 and len(nf) == len(f) + 16 and directed_unique(nf)


def test_non_manifold_and_degenerate_faces_do_not_crash():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [2, 0, 0], [0.5, 0, 0]], float) * 0.3
    f = np.array([[0, 1, 2], [1, 0, 3], [0, 1, 4],  # edge (0, 1) has 3 faces
                  [0, 0, 1], [1, 5, 6], [2, 2, 2]])  # repeated index, zero area (collinear)
    vis = face_visibility(v, f, sphere_cameras(8, 32))
    assert vis.shape == (6,) and torch.isfinite(vis).all()
    for vv in (vis, np.array([0, 0.5, 0, 0, 0, 0.0]), np.zeros(6)):
        nv, nf, removed = remove_interior_faces(v, f, vv, max_hole_size=10.0)
        assert nf.ndim == 2 and nf.shape[1] == 3 and removed >= 0
        assert len(nf) > 0 and (nf < len(nv)).all()
    nv, nf, filled = fill_small_holes(v, f, max_hole_edges=32)
    assert (nf < len(nv)).all() and filled >= 0
    nv, nf, stats = remove_invisible_and_fill_holes(v, f, num_views=8, resolution=32)
    assert stats["views"] == 8 and (nf < len(nv)).all()


def test_pipeline_nested_cubes():
    v, f = nested_cubes()
    calls = []
    nv, nf, stats = remove_invisible_and_fill_holes(v, f, num_views=VIEWS, resolution=RES,
                                                    progress=lambda d, t: calls.append(d))
    assert stats["interior_faces_removed"] == 12 and stats["holes_filled"] == 0
    assert stats["views"] == VIEWS and stats["seconds"] >= 0 and calls[-1] == VIEWS
    assert nf.shape == (12, 3) and (edge_counts(nf) == 2).all()


def test_progress_can_interrupt():
    v, f = cube(0.4)

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        remove_invisible_and_fill_holes(v, f, num_views=VIEWS, resolution=RES, progress=stop)
    # the first report comes after the first batch of views (about 1M pixels on a CPU), not at the end:
    # stopped there, the other views are never rendered
    calls = []

    def stop_after_first(done, total):
        calls.append((done, total))
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        face_visibility(v, f, sphere_cameras(200, 256), progress=stop_after_first)
    assert len(calls) == 1 and 0 < calls[0][0] < 200 and calls[0][1] == 200


@pytest.mark.parametrize("call, name", [
    (lambda: remove_interior_faces(np.zeros((0, 3)), np.zeros((0, 3), int), np.zeros(0)), "vertices"),
    (lambda: remove_interior_faces(np.zeros((3, 2)), [[0, 1, 2]], [0.0]), "vertices"),
    (lambda: remove_interior_faces([[np.nan, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]], [0.0]), "vertices"),
    (lambda: remove_interior_faces(np.eye(3), [[0, 1, 3]], [0.0]), "faces"),
    (lambda: remove_interior_faces(np.eye(3), np.zeros((0, 3), int), np.zeros(0)), "faces"),
    (lambda: remove_interior_faces(np.eye(3), [[0, 1, 2]], [0.0, 1.0]), "visibility"),
    (lambda: remove_interior_faces(np.eye(3), [[0, 1, 2]], [np.nan]), "visibility"),
    (lambda: remove_interior_faces(np.eye(3), [[0, 1, 2]], [0.0], max_hole_size=-1), "max_hole_size"),
    (lambda: fill_small_holes(np.eye(3), [[0, 1, 2]], max_hole_edges=-1), "max_hole_edges"),
    (lambda: fill_small_holes(np.eye(3), [[0, 1, -1]], 8), "faces"),
    (lambda: face_visibility(np.eye(3), [[0, 1, 2]], []), "cameras"),
    (lambda: face_visibility(np.eye(3), [[0, 1, 2]], [None]), "cameras"),
    (lambda: sphere_cameras(0, 32), "num_views"),
    (lambda: sphere_cameras(4, 0), "resolution"),
])
def test_bad_inputs_raise(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_50k_faces_graph_steps():
    v, f, cells = grid(160)  # 51200 faces
    inner = ((cells >= 70) & (cells < 80)).all(1)
    vis = np.where(inner, 0.0, 0.8)
    nv, nf, removed = remove_interior_faces(v, f, vis, max_hole_size=1.0)
    nv, nf, filled = fill_small_holes(nv, nf, max_hole_edges=64)
    assert removed == 200 and filled == 1
