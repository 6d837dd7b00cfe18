"""End-to-end GLB export (clean-up, visibility, unwrap, bake, write) and its bad inputs."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import trimesh

from trellis_impl.export import glb_export
from trellis_impl.export.glb_export import prepare_glb, to_glb
from trellis_impl.representations.mesh import Mesh

SMALL = dict(bake_views=4, bake_resolution=64, visibility_views=12, visibility_resolution=96, texture_size=512)


def _sphere(radius, subdivisions=3, centre=(0.0, 0.0, 0.0)):
    s = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return np.asarray(s.vertices) + np.asarray(centre), np.asarray(s.faces)


def _asset(stretch=(1.0, 1.0, 1.0), inner=False):
    """A TRELLIS-frame ellipsoid (optionally with a hidden inner sphere), vertex colours red on
    the TRELLIS -Y (front) side and blue elsewhere, and Gaussians on its vertices."""
    v, f = _sphere(0.35)
    v = v * np.asarray(stretch)
    if inner:
        vi, fi = _sphere(0.1, subdivisions=2)
        f = np.concatenate([f, fi + len(v)])
        v = np.concatenate([v, vi])
    colors = np.where(v[:, 1:2] < -0.1, [[1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]])
    mesh = Mesh(torch.tensor(v, dtype=torch.float32), torch.tensor(f),
                torch.tensor(np.concatenate([colors, np.full_like(colors, 0.5)], 1), dtype=torch.float32))
    vt = torch.tensor(v, dtype=torch.float32)
    gaussians = {"xyz": vt, "scaling": torch.full_like(vt, 0.02), "opacity": torch.ones(len(v), 1),
                 "rotation": torch.tensor([[1.0, 0, 0, 0]]).repeat(len(v), 1),
                 "colors": torch.tensor(colors, dtype=torch.float32)}
    return mesh, gaussians


def _load(path, **kwargs):
    scene = trimesh.load(path, **kwargs)
    return list(scene.geometry.values())[0]


def test_textured_glb_round_trip_axes_bounds_uv(tmp_path):
    mesh, gaussians = _asset(stretch=(0.6, 0.8, 1.2))  # tallest along TRELLIS Z (up)
    path = tmp_path / "asset.glb"
    result = to_glb(path, mesh, gaussians, simplify=0.5, **SMALL)
    geom = _load(path)
    assert len(geom.vertices) == len(result.vertices) and len(geom.faces) == len(result.faces)
    assert len(result.faces) < len(mesh.faces)                       # simplified
    np.testing.assert_allclose(geom.bounds, np.stack([result.vertices.min(0), result.vertices.max(0)]), atol=1e-4)
    extent = geom.bounds[1] - geom.bounds[0]
    assert extent[1] > extent[2] > extent[0]                         # TRELLIS Z -> glTF Y, Y -> Z, X -> X
    np.testing.assert_allclose(geom.bounds.mean(0), 0.0, atol=1e-4)  # origin at the box centre
    uv = geom.visual.uv
    assert uv.min() >= 0.0 and uv.max() <= 1.0
    tex = geom.visual.material.baseColorTexture
    assert tex.size == (512, 512)
    assert set(result.timings) >= {"cleanup", "visibility", "unwrap", "bake", "write", "total"}


def test_front_faces_gltf_plus_z_and_base_origin(tmp_path):
    mesh, gaussians = _asset()
    result = to_glb(tmp_path / "a.glb", mesh, gaussians, simplify=0.0, bake="vertex_colors", origin="base",
                    fill_holes=False)
    geom = _load(tmp_path / "a.glb", skip_materials=True)  # trimesh keeps COLOR_0 only without materials
    assert abs(geom.bounds[0][1]) < 1e-6                             # lowest point at y = 0
    colors = np.asarray(geom.visual.vertex_colors)[:, :3].astype(float) / 255
    red = colors[:, 0] > 0.5
    # the red (TRELLIS -Y, front) side ends up at glTF +Z
    assert geom.vertices[red, 2].mean() > 0.1 > geom.vertices[~red, 2].mean()
    assert result.texture is None and result.uv is None


def test_bake_none_is_geometry_only(tmp_path):
    mesh, _ = _asset()
    result = to_glb(tmp_path / "g.glb", mesh, None, bake="none", simplify=0.0, fill_holes=False)
    assert result.texture is None and result.vertex_colors is None
    assert len(_load(tmp_path / "g.glb").faces) == len(mesh.faces)


def test_visibility_removes_hidden_inner_sphere():
    mesh, gaussians = _asset(inner=True)
    outer_faces = len(_sphere(0.35)[1])
    result = prepare_glb(mesh, gaussians, simplify=0.0, bake="vertex_colors", **SMALL)
    assert result.report["visibility"]["interior_faces_removed"] == len(mesh.faces) - outer_faces
    assert len(result.faces) == outer_faces


def test_optimising_bake_and_progress(tmp_path):
    mesh, gaussians = _asset()
    calls = []
    result = to_glb(tmp_path / "o.glb", mesh, gaussians, simplify=0.0, bake="opt", bake_steps=20,
                    progress=lambda phase, done, total: calls.append((phase, done, total)), **SMALL)
    phases = [c[0] for c in calls]
    assert [p for p in glb_export.PHASES if p in phases] == list(glb_export.PHASES)
    assert sum(1 for c in calls if c[0] == "bake") >= 20
    tex = result.texture.astype(float) / 255
    # the texture holds the asset's colours: red and blue, no green
    assert tex[..., 1].mean() < 0.15 and tex[..., 0].max() > 0.8 and tex[..., 2].max() > 0.8


# ---------------------------------------------------------------------------------------- bad input

def test_empty_mesh_is_a_clear_error(tmp_path):
    empty = Mesh(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        to_glb(tmp_path / "e.glb", empty, None, bake="none")
    assert list(tmp_path.iterdir()) == []


def test_degenerate_and_non_manifold_faces_export(tmp_path):
    mesh, gaussians = _asset()
    v, f = mesh.vertices, mesh.faces
    extra = torch.tensor([[0, 0, 1], [2, 2, 2], [f[0, 0], f[0, 1], len(v)]])   # repeated indices; a third
    v = torch.cat([v, torch.tensor([[0.0, 0.0, 0.6]])])                          # face on an existing edge
    bad = Mesh(v, torch.cat([f, extra]), torch.cat([mesh.vertex_attrs, torch.full((1, 6), 0.5)]))
    result = to_glb(tmp_path / "d.glb", bad, gaussians, simplify=0.0, **SMALL)
    faces = result.faces
    assert (faces[:, 0] != faces[:, 1]).all() and (faces[:, 1] != faces[:, 2]).all() and (faces[:, 0] != faces[:, 2]).all()
    assert len(_load(tmp_path / "d.glb").faces) == len(faces)


@pytest.mark.parametrize("field", ["xyz", "scaling", "opacity", "colors"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_gaussians_rejected_before_any_work(tmp_path, monkeypatch, field, value):
    mesh, gaussians = _asset()
    gaussians[field] = gaussians[field].clone()
    gaussians[field].view(-1)[3] = value
    monkeypatch.setattr(glb_export, "cleanup_mesh", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(ValueError, match=field):
        to_glb(tmp_path / "n.glb", mesh, gaussians, **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_zero_area_uv_chart_still_exports(tmp_path, monkeypatch):
    """A chart that the atlas maps to a single point (zero UV area) covers no texel; the bake
    fills it from its neighbours and the file is written."""
    mesh, gaussians = _asset()
    real_unwrap = glb_export.unwrap

    def collapsing_unwrap(*args, **kwargs):
        vmap, faces, uv, info = real_unwrap(*args, **kwargs)
        uv = uv.copy()
        uv[faces[:10].reshape(-1)] = uv[faces[0, 0]]                # first 10 faces: zero UV area
        return vmap, faces, uv, info
    monkeypatch.setattr(glb_export, "unwrap", collapsing_unwrap)
    result = to_glb(tmp_path / "z.glb", mesh, gaussians, simplify=0.0, fill_holes=False, **SMALL)
    assert np.isfinite(result.texture.astype(float)).all() and result.texture.shape == (512, 512, 3)
    assert _load(tmp_path / "z.glb").visual.material.baseColorTexture.size == (512, 512)


def test_existing_output_is_never_overwritten(tmp_path, monkeypatch):
    mesh, gaussians = _asset()
    path = tmp_path / "taken.glb"
    path.write_bytes(b"precious")
    monkeypatch.setattr(glb_export, "cleanup_mesh", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(FileExistsError, match="taken.glb"):
        to_glb(path, mesh, gaussians, **SMALL)
    assert path.read_bytes() == b"precious"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root may write into a 0o555 directory; the read-only file system case below "
                           "covers the error path for every user")
def test_read_only_directory_is_a_clear_error(tmp_path):
    mesh, _ = _asset()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            to_glb(ro / "x.glb", mesh, None, bake="none")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("failure", ["read_only_fs", "disk_full"])
def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch, failure):
    """A read-only file system (creating the file fails) or a write failing mid-way (disk full)
    raises the OS error and leaves nothing behind."""
    import errno

    from trellis_impl import files
    mesh, _ = _asset()
    if failure == "read_only_fs":
        def failing_open(path, *args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        monkeypatch.setattr(files.os, "open", failing_open)
        match = "Read-only"
    else:
        real_fdopen = os.fdopen

        class FullDisk:
            def __init__(self, fd, *args, **kwargs):
                self.file = real_fdopen(fd, *args, **kwargs)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.file.close()

            def write(self, data):
                self.file.write(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(files.os, "fdopen", FullDisk)
        match = "No space"
    with pytest.raises(OSError, match=match):
        to_glb(tmp_path / "x.glb", mesh, None, bake="none", simplify=0.0, fill_holes=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option, value, match", [
    ("bake", "paint", "bake must be one of"), ("unwrap_method", "magic", "unwrap_method"),
    ("texture_size", 100, "texture_size"), ("texture_size", 8192, "texture_size"), ("simplify", 1.0, "simplify"),
    ("origin", "top", "origin"), ("bake_steps", 0, "bake_steps")])
def test_bad_options_name_the_option(tmp_path, option, value, match):
    mesh, gaussians = _asset()
    with pytest.raises(ValueError, match=match):
        to_glb(tmp_path / "b.glb", mesh, gaussians, **{**SMALL, option: value})
    assert list(tmp_path.iterdir()) == []


def test_texture_bake_needs_gaussians(tmp_path):
    mesh, _ = _asset()
    with pytest.raises(ValueError, match="gaussians"):
        to_glb(tmp_path / "t.glb", mesh, None, bake="fast")


def test_device_follows_the_gaussians_and_picks_the_view_defaults(monkeypatch):
    """Without ``device``, work runs where the Gaussians (or the mesh) live; the visibility
    defaults are 100 views at 512 px on a GPU and 24 at 256 px on CPU."""
    seen = {}

    def spy(vertices, faces, num_views, resolution, **kwargs):
        seen.update(device=vertices.device, views=num_views, resolution=resolution)
        raise RuntimeError("stop here")
    monkeypatch.setattr(glb_export, "remove_invisible_and_fill_holes", spy)
    mesh, gaussians = _asset()
    with pytest.raises(RuntimeError, match="stop here"):
        prepare_glb(mesh, gaussians, simplify=0.0, texture_size=512)
    assert seen == {"device": torch.device("cpu"), "views": 24, "resolution": 256}
    # (the CUDA side: tests/render/test_render_gpu.py::test_gpu_glb_export_matches_cpu)


def test_fast_bake_reports_every_view_and_can_be_cancelled(tmp_path):
    """The default bake reports after each rendered and each projected view, so a host's Cancel
    (a progress callback that raises) stops it within one view; nothing is written."""
    mesh, gaussians = _asset()
    views = SMALL.get("bake_views", 16)
    calls = []
    to_glb(tmp_path / "f.glb", mesh, gaussians, simplify=0.0, bake="fast",
           progress=lambda phase, done, total: calls.append((phase, done, total)), **SMALL)
    bake = [(done, total) for phase, done, total in calls if phase == "bake"]
    assert bake == [(i, 2 * views) for i in range(1, 2 * views + 1)]

    class Cancelled(Exception):
        pass

    def cancel_at_third_view(phase, done, total):
        if phase == "bake" and done == 3:
            raise Cancelled

    with pytest.raises(Cancelled):
        to_glb(tmp_path / "c.glb", mesh, gaussians, simplify=0.0, bake="fast", progress=cancel_at_third_view, **SMALL)
    assert not (tmp_path / "c.glb").exists()
