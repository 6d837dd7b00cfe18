"""Mesh clean-up before GLB export (trellis_impl.export.mesh_cleanup)."""

import numpy as np
import pytest
import torch
import trimesh

from trellis_impl.export import mesh_cleanup as mc
from trellis_impl.export.mesh_cleanup import (
    cleanup_mesh, drop_hidden_components, remap_attributes, remove_small_components, simplify, weld)


def unwelded_cube():
    """A unit cube whose 12 triangles each own their 3 vertices (36 vertices, 8 positions)."""
    box = trimesh.creation.box()
    v = box.vertices[box.faces].reshape(-1, 3)
    f = np.arange(len(v)).reshape(-1, 3)
    return v, f


def is_closed(v, f):
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return bool((counts == 2).all())


def test_weld_cube_to_8_vertices_12_faces():
    v, f = unwelded_cube()
    wv, wf, vmap = weld(v, f)
    assert wv.shape == (8, 3) and wf.shape == (12, 3)
    assert vmap.shape == (36,) and (vmap >= 0).all()
    np.testing.assert_allclose(wv[vmap], v, atol=1e-6)
    assert is_closed(wv, wf)
    # attributes carried through the map: every copy of a corner had the same value
    attrs = v * 2.0 + 1.0
    np.testing.assert_allclose(remap_attributes(attrs, vmap, len(wv)), wv * 2.0 + 1.0, atol=1e-6)


def test_weld_accepts_torch_and_near_duplicates():
    v, f = unwelded_cube()
    v = v + np.random.default_rng(0).uniform(0, 1e-9, v.shape)
    wv, wf, _ = weld(torch.from_numpy(v), torch.from_numpy(f), tolerance=1e-6)
    assert wv.shape == (8, 3) and wf.shape == (12, 3)
    # copies 1e-8 apart straddling a cell border (x = 5e-6) still merge: shifted second grid
    v2, f2 = unwelded_cube()
    v2 = v2 * 1e-5  # cube corners at +-5e-6, exactly on cell borders of a 1e-6 grid
    v2 += np.where(np.arange(len(v2)) % 2 == 0, 1e-8, -1e-8)[:, None]
    wv2, wf2, _ = weld(v2, f2, tolerance=1e-6)
    assert wv2.shape == (8, 3) and wf2.shape == (12, 3)
    # far apart points stay apart
    wv3, _, _ = weld(v2, f2, tolerance=1e-9)
    assert len(wv3) > 8


def test_weld_drops_degenerate_and_duplicate_faces():
    box = trimesh.creation.box()
    v, f = box.vertices, box.faces
    extra = np.array([
        [0, 0, 1],             # repeated index
        f[0], f[0][::-1],      # duplicate, and duplicate with flipped orientation
        f[3][[1, 2, 0]],       # duplicate, rotated
    ])
    # zero-area face on three collinear points
    v2 = np.concatenate([v, [[0.0, 0, 0], [0.1, 0, 0], [0.2, 0, 0]]])
    extra = np.concatenate([extra, [[8, 9, 10]]])
    wv, wf, vmap = weld(v2, np.concatenate([f, extra]))
    assert wf.shape == (12, 3) and wv.shape == (8, 3)
    assert (vmap[8:] == -1).all()  # vertices only the degenerate face used are dropped
    np.testing.assert_array_equal(np.sort(wf, 1), np.sort(vmap[f], 1))


def test_remove_small_components_keeps_the_sphere():
    sphere = trimesh.creation.icosphere(subdivisions=3)  # 1280 faces
    speck = trimesh.creation.box(extents=(0.01, 0.01, 0.01)).vertices + 3.0
    speck_faces = np.array([[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5]]) + len(sphere.vertices)
    v = np.concatenate([sphere.vertices, speck])
    f = np.concatenate([sphere.faces, speck_faces])
    rv, rf, vmap = remove_small_components(v, f)
    assert rf.shape == sphere.faces.shape and rv.shape == sphere.vertices.shape
    assert (vmap[len(sphere.vertices):] == -1).all()
    assert np.abs(rv).max() < 1.01
    # min_faces overrides the fraction; a tiny threshold keeps both
    _, rf2, _ = remove_small_components(v, f, min_faces=4)
    assert len(rf2) == len(f)
    # the largest component is always kept
    _, rf3, _ = remove_small_components(v, f, min_fraction=1.0)
    assert len(rf3) == len(sphere.faces)


def test_component_labels_on_many_pieces():
    pieces = [trimesh.creation.icosphere(subdivisions=1).apply_translation([3 * i, 0, 0])
              for i in range(5)]
    m = trimesh.util.concatenate(pieces)
    labels = mc._vertex_components(len(m.vertices), np.asarray(m.faces))
    assert len(np.unique(labels)) == 5


@pytest.mark.parametrize("use_fast", [True, False])
def test_simplify_reaches_target_and_carries_attributes(use_fast, monkeypatch):
    if use_fast and not mc.HAS_FAST_SIMPLIFICATION:
        pytest.skip("fast_simplification is not installed")
    if not use_fast:
        monkeypatch.setattr(mc, "_fast_simplification", None)
    sphere = trimesh.creation.icosphere(subdivisions=5)  # 20480 faces
    v, f = sphere.vertices, sphere.faces
    attrs = np.concatenate([v * 0.5 + 0.5, np.ones((len(v), 3))], axis=1).astype(np.float32)
    target = 2000
    sv, sf, sa = simplify(v, f, target_faces=target, attributes=attrs)
    assert abs(len(sf) - target) <= 0.1 * target
    assert sa.shape == (len(sv), 6) and sa.dtype == np.float32
    assert sf.min() >= 0 and sf.max() < len(sv)
    radii = np.linalg.norm(sv, axis=1)
    assert radii.max() <= 1.02 and radii.min() > 0.8  # bounded, still a sphere
    # attributes follow positions: rgb part ~ v * 0.5 + 0.5 of the merged vertices
    np.testing.assert_allclose(sa[:, :3], sv * 0.5 + 0.5, atol=0.1)
    np.testing.assert_allclose(sa[:, 3:], 1.0, atol=1e-6)
    if use_fast:
        assert is_closed(sv, sf)
    # target_ratio is the fraction removed
    _, sf2, none_attrs = simplify(v, f, target_ratio=0.9)
    assert abs(len(sf2) - 2048) <= 0.1 * 2048 and none_attrs is None


def test_non_manifold_input_does_not_crash():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]], dtype=np.float64)
    f = np.array([[0, 1, 2], [1, 0, 3], [0, 1, 4]])  # three faces on edge (0, 1)
    wv, wf, _ = weld(v, f)
    assert wf.shape == (3, 3)
    out_v, out_f, out_a, report = cleanup_mesh(v, f, attributes=np.arange(5.0), simplify_ratio=0.5)
    assert len(out_f) >= 1 and out_a.shape == (len(out_v),)
    for use_fast in ([True, False] if mc.HAS_FAST_SIMPLIFICATION else [False]):
        saved = mc._fast_simplification
        try:
            if not use_fast:
                mc._fast_simplification = None
            sv, sf, _ = simplify(v, f, target_faces=2)
            assert sf.shape[1] == 3 and len(sf) >= 1
        finally:
            mc._fast_simplification = saved


def test_bad_inputs_raise():
    v, f = unwelded_cube()
    with pytest.raises(ValueError, match="vertices"):
        weld(np.zeros((0, 3)), f)
    with pytest.raises(ValueError, match="faces"):
        weld(v, np.zeros((0, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="vertices"):
        weld(v[:, :2], f)
    with pytest.raises(ValueError, match="faces"):
        weld(v, f[:, :2])
    bad = v.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        cleanup_mesh(bad, f)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="vertices"):
        remove_small_components(bad, f)
    with pytest.raises(ValueError, match="out of range"):
        weld(v, f + 100)
    with pytest.raises(ValueError, match="faces"):
        weld(v, f.astype(np.float64) + 0.5)
    with pytest.raises(ValueError, match="attributes"):
        cleanup_mesh(v, f, attributes=np.zeros(3))
    with pytest.raises(ValueError, match="exactly one"):
        simplify(v, f)
    with pytest.raises(ValueError, match="tolerance"):
        weld(v, f, tolerance=0)
    # all-degenerate: nothing left after cleaning
    flat = np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="nothing is left"):
        cleanup_mesh(flat, np.array([[0, 1, 2], [0, 3, 1], [1, 1, 2]]))


def test_cleanup_mesh_report():
    sphere = trimesh.creation.icosphere(subdivisions=7)  # 327,680 faces
    # keep ~200k faces, unweld them (each face owns its vertices, like voxel-border repeats)
    faces = sphere.faces[:200_000]
    v = sphere.vertices[faces].reshape(-1, 3).astype(np.float32)
    f = np.arange(len(v)).reshape(-1, 3)
    attrs = (v * 0.5 + 0.5).astype(np.float32)
    out_v, out_f, out_a, report = cleanup_mesh(v, f, attributes=attrs, simplify_ratio=0.95)
    assert report["input"] == {"vertices": len(v), "faces": len(f)}
    assert report["weld"]["faces"] == 200_000
    assert report["weld"]["vertices"] < len(v) // 4
    assert abs(report["simplify"]["faces"] - 10_000) <= 1_000
    assert out_a.shape == (len(out_v), 3)
    assert set(report["seconds"]) == {"weld", "hidden", "components", "simplify", "total"}


def _shell_in_shell():
    """An outer sphere (1280 faces) around a hidden inner one (320 faces), one vertex list."""
    outer = trimesh.creation.icosphere(subdivisions=3)
    inner = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    v = np.concatenate([outer.vertices, inner.vertices]).astype(np.float32)
    f = np.concatenate([outer.faces, inner.faces + len(outer.vertices)])
    return v, f, len(outer.vertices), len(outer.faces)


def test_drop_hidden_components_keeps_components_with_a_seen_face():
    v, f, n_outer_v, n_outer_f = _shell_in_shell()
    seen = np.zeros(len(f), dtype=bool)
    seen[5] = True  # one face of the outer sphere is enough to keep it whole
    rv, rf, vmap = drop_hidden_components(v, f, lambda vv, ff: seen)
    assert rf.shape == (n_outer_f, 3) and np.array_equal(rv, v[:n_outer_v])
    assert (vmap[:n_outer_v] >= 0).all() and (vmap[n_outer_v:] == -1).all()
    # nothing seen (cameras that miss the mesh): everything stays
    _, rf_all, _ = drop_hidden_components(v, f, lambda vv, ff: np.zeros(len(ff), dtype=bool))
    assert len(rf_all) == len(f)
    with pytest.raises(ValueError, match="seen_faces returned shape"):
        drop_hidden_components(v, f, lambda vv, ff: seen[:10])


def test_drop_hidden_components_does_not_render_a_single_component():
    sphere = trimesh.creation.icosphere(subdivisions=2)
    calls = []
    _, rf, _ = drop_hidden_components(sphere.vertices, sphere.faces, lambda vv, ff: calls.append(1))
    assert calls == [] and len(rf) == len(sphere.faces)


def test_cleanup_mesh_drops_hidden_shells_before_decimating_and_carries_attributes():
    v, f, n_outer_v, n_outer_f = _shell_in_shell()
    attrs = np.arange(len(v), dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    outer_only = lambda vv, ff: np.arange(len(ff)) < n_outer_f  # noqa: E731 (the outer faces come first)
    out_v, out_f, out_a, report = cleanup_mesh(v, f, attributes=attrs, simplify_ratio=0.5, seen_faces=outer_only)
    assert report["hidden"] == {"vertices": n_outer_v, "faces": n_outer_f}
    assert abs(report["simplify"]["faces"] - n_outer_f // 2) <= 0.05 * n_outer_f
    assert np.linalg.norm(out_v, axis=1).min() > 0.9  # nothing of the inner sphere is left
    assert out_a.shape == (len(out_v), 3) and out_a.max() < n_outer_v  # attributes of outer vertices only
    # without decimation the step is skipped (the visibility clean-up alone decides)
    _, _, _, report = cleanup_mesh(v, f, simplify_ratio=0.0, seen_faces=outer_only)
    assert report["hidden"]["faces"] == len(f)
