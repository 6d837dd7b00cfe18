"""GLB / OBJ+MTL / PLY mesh writers (trellis_impl.export.mesh_files), reloaded with trimesh."""
import json
import struct

import numpy as np
import pytest
import torch
import trimesh

import trellis_impl.files
from trellis_impl.export.mesh_files import (
    GLTF_TO_TRELLIS, TRELLIS_TO_GLTF, from_gltf_frame, place, save_glb, save_mesh_ply, save_obj,
    to_gltf_frame)


def box_mesh(seed=0):
    """An asymmetric box-like mesh: 8 corners of a non-cube box, 12 triangles, off-centre."""
    lo, hi = np.array([-0.4, -0.2, -0.1]), np.array([0.3, 0.45, 0.2])
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])],
                       np.float32)
    faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]], np.int64)
    rng = np.random.default_rng(seed)
    uv = rng.uniform(0, 1, (8, 2)).astype(np.float32)
    colors = rng.uniform(0, 1, (8, 3)).astype(np.float32)
    return corners, faces, uv, colors


def load(path):
    return trimesh.load(path, force="mesh", process=False)


def test_frame_matrices_and_known_points():
    assert np.allclose(TRELLIS_TO_GLTF @ GLTF_TO_TRELLIS, np.eye(3))
    assert np.isclose(np.linalg.det(TRELLIS_TO_GLTF), 1.0)
    points = np.array([[0, 0, 1], [0, -1, 0], [1, 0, 0]], np.float64)  # up, front, right in TRELLIS
    out = to_gltf_frame(points)
    assert np.allclose(out, [[0, 1, 0], [0, 0, 1], [1, 0, 0]])  # glTF up +Y, front +Z, right +X
    assert np.allclose(from_gltf_frame(out), points)
    t = torch.tensor(points, dtype=torch.float32)
    assert torch.allclose(to_gltf_frame(t), torch.tensor(out, dtype=torch.float32))


def test_place_center_and_base():
    v, _, _, _ = box_mesh()
    c = place(v, "center")
    assert np.allclose((c.min(0) + c.max(0)) / 2, 0, atol=1e-6)
    b = place(v, "base")
    assert np.isclose(b[:, 1].min(), 0, atol=1e-6)
    assert np.allclose((b.min(0) + b.max(0))[[0, 2]] / 2, 0, atol=1e-6)
    assert np.allclose(b.max(0) - b.min(0), v.max(0) - v.min(0), atol=1e-6)
    assert np.allclose(place(v, "none"), v)
    with pytest.raises(ValueError):
        place(v, "top")


def test_glb_yup_conversion_and_bounds(tmp_path):
    v, f, _, colors = box_mesh()
    # a single marker vertex high on TRELLIS +Z and one far on TRELLIS -Y (front)
    v = np.concatenate([v, [[0.0, 0.0, 0.49], [0.0, -0.49, 0.0]]]).astype(np.float32)
    f = np.concatenate([f, [[8, 9, 0]]])
    g = to_gltf_frame(v)
    path = save_glb(tmp_path / "a.glb", g, f, vertex_colors=np.concatenate([colors, colors[:2]]))
    m = load(path)
    assert len(m.vertices) == len(v) and len(m.faces) == len(f)
    assert np.allclose(m.vertices, g, atol=1e-4)
    assert np.allclose(m.bounds, [g.min(0), g.max(0)], atol=1e-4)
    assert np.allclose(m.vertices[8], [0, 0.49, 0], atol=1e-6)   # TRELLIS +Z -> glTF +Y
    assert np.allclose(m.vertices[9], [0, 0, 0.49], atol=1e-6)   # TRELLIS -Y (front) -> glTF +Z
    assert np.array_equal(np.asarray(m.faces), f)


def test_glb_texture_and_uv(tmp_path):
    v, f, uv, _ = box_mesh()
    tex = np.zeros((16, 32, 3), np.uint8)
    tex[..., 0] = 200
    path = save_glb(tmp_path / "t.glb", v, f, uv=uv, texture=tex, normals=v)
    m = load(path)
    assert len(m.vertices) == 8 and len(m.faces) == 12
    got = np.asarray(m.visual.uv)
    assert got.shape == (8, 2) and got.min() >= 0 and got.max() <= 1
    assert np.allclose(got[:, 0], uv[:, 0], atol=1e-6)
    assert np.allclose(got[:, 1], 1 - uv[:, 1], atol=1e-6)  # glTF v-down in the file, trimesh v-up
    image = m.visual.material.baseColorTexture
    assert image is not None and image.size == (32, 16)
    assert np.asarray(image.convert("RGB"))[0, 0, 0] == 200
    # float texture in 0..1 is accepted as well
    save_glb(tmp_path / "t2.glb", v, f, uv=uv, texture=np.full((4, 4, 4), 0.5, np.float32))
    gltf = _glb_json(tmp_path / "t.glb")
    pbr = gltf["materials"][0]["pbrMetallicRoughness"]
    assert pbr["metallicFactor"] == 0.0 and pbr["roughnessFactor"] == 1.0 and "baseColorTexture" in pbr
    attrs = gltf["meshes"][0]["primitives"][0]["attributes"]
    assert {"POSITION", "NORMAL", "TEXCOORD_0"} <= set(attrs)
    pos = gltf["accessors"][attrs["POSITION"]]
    assert np.allclose(pos["min"], v.min(0)) and np.allclose(pos["max"], v.max(0))
    assert gltf["accessors"][gltf["meshes"][0]["primitives"][0]["indices"]]["componentType"] == 5125


def test_glb_vertex_colors_round_trip(tmp_path):
    v, f, _, colors = box_mesh()
    path = save_glb(tmp_path / "c.glb", v, f, vertex_colors=colors)
    gltf = _glb_json(path)
    primitive = gltf["meshes"][0]["primitives"][0]
    assert "COLOR_0" in primitive["attributes"] and "TEXCOORD_0" not in primitive["attributes"]
    assert "baseColorTexture" not in gltf["materials"][primitive["material"]]["pbrMetallicRoughness"]
    # trimesh keeps COLOR_0 as vertex colours only when it skips the (untextured) material
    m = trimesh.load(path, force="mesh", process=False, skip_materials=True)
    assert len(m.vertices) == 8 and len(m.faces) == 12
    got = np.asarray(m.visual.vertex_colors)[:, :3].astype(np.float64)
    assert np.abs(got - colors * 255).max() <= 1.0


def _glb_json(path):
    data = open(path, "rb").read()
    magic, version, total = struct.unpack_from("<4sII", data, 0)
    assert magic == b"glTF" and version == 2 and total == len(data)
    json_len, json_type = struct.unpack_from("<I4s", data, 12)
    assert json_type == b"JSON" and json_len % 4 == 0
    bin_len, bin_type = struct.unpack_from("<I4s", data, 20 + json_len)
    assert bin_type == b"BIN\x00" and bin_len % 4 == 0 and 28 + json_len + bin_len == len(data)
    gltf = json.loads(data[20:20 + json_len])
    assert gltf["buffers"][0]["byteLength"] == bin_len
    assert all(view["byteOffset"] % 4 == 0 for view in gltf["bufferViews"])
    return gltf


def test_glb_header_and_alignment(tmp_path):
    v, f, _, _ = box_mesh()
    for n in range(1, 4):  # different sizes, so padding varies
        path = save_glb(tmp_path / f"h{n}.glb", v, f[:n])
        _glb_json(path)


def test_obj_mtl_png(tmp_path):
    v, f, uv, colors = box_mesh()
    tex = np.random.default_rng(1).integers(0, 255, (8, 12, 3), dtype=np.uint8)
    path = save_obj(tmp_path / "m.obj", v, f, uv=uv, texture=tex)
    for name in ("m.obj", "m.mtl", "m.png"):
        assert (tmp_path / name).is_file()
    text = (tmp_path / "m.obj").read_text()
    assert "mtllib m.mtl" in text and "map_Kd m.png" in (tmp_path / "m.mtl").read_text()
    m = load(path)
    assert len(m.faces) == 12
    assert np.allclose(m.bounds, [v.min(0), v.max(0)], atol=1e-4)
    assert m.visual.material.image.size == (12, 8)
    got = np.asarray(m.visual.uv)
    assert got.min() >= 0 and got.max() <= 1
    assert len(got) == len(m.vertices)
    # without texture: vertex colours, only OBJ + MTL
    path = save_obj(tmp_path / "c.obj", v, f, vertex_colors=colors)
    assert not (tmp_path / "c.png").exists() and (tmp_path / "c.mtl").exists()
    m = load(path)
    assert len(m.vertices) == 8 and len(m.faces) == 12
    assert np.allclose(m.vertices, v, atol=1e-4)


def test_ply_round_trip(tmp_path):
    v, f, _, colors = box_mesh()
    m = load(save_mesh_ply(tmp_path / "m.ply", v, f, vertex_colors=colors))
    assert len(m.vertices) == 8 and len(m.faces) == 12
    assert np.allclose(m.vertices, v, atol=1e-6) and np.array_equal(np.asarray(m.faces), f)
    got = np.asarray(m.visual.vertex_colors)[:, :3].astype(np.float64)
    assert np.abs(got - colors * 255).max() <= 0.51
    m = load(save_mesh_ply(tmp_path / "p.ply", torch.tensor(v), torch.tensor(f)))
    assert len(m.vertices) == 8


def test_validation(tmp_path):
    v, f, uv, colors = box_mesh()
    cases = [
        (dict(vertices=v[:0], faces=f[:0]), "empty"),
        (dict(vertices=np.where(np.arange(8)[:, None] == 3, np.nan, v), faces=f), "non-finite"),
        (dict(vertices=v, faces=f + 1), "out of range"),
        (dict(vertices=v, faces=f - 1), "out of range"),
        (dict(vertices=v, faces=f, uv=uv[:5], texture=np.zeros((2, 2, 3))), "uv"),
        (dict(vertices=v, faces=f, vertex_colors=colors[:, :2]), "vertex_colors"),
        (dict(vertices=v, faces=f, uv=uv, texture=np.zeros((2, 2))), "texture"),
    ]
    for kwargs, word in cases:
        with pytest.raises(ValueError, match=word):
            save_glb(tmp_path / "bad.glb", **kwargs)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="vertex_colors"):
        save_mesh_ply(tmp_path / "bad.ply", v, f, vertex_colors=colors[:3])
    # degenerate faces are kept
    degenerate = np.concatenate([f, [[0, 0, 1]]])
    m = load(save_glb(tmp_path / "d.glb", v, degenerate))
    assert len(m.faces) == 13


def test_refuses_to_overwrite(tmp_path):
    v, f, uv, _ = box_mesh()
    for name, call in [("a.glb", lambda p, **k: save_glb(p, v, f, **k)),
                       ("a.ply", lambda p, **k: save_mesh_ply(p, v, f, **k))]:
        target = tmp_path / name
        target.write_bytes(b"keep")
        with pytest.raises(FileExistsError):
            call(target)
        assert target.read_bytes() == b"keep"
        call(target, overwrite=True)
        assert target.read_bytes() != b"keep"
    # OBJ group: an existing MTL blocks the whole write, nothing else is created
    (tmp_path / "o.mtl").write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        save_obj(tmp_path / "o.obj", v, f, uv=uv, texture=np.zeros((2, 2, 3), np.uint8))
    assert (tmp_path / "o.mtl").read_bytes() == b"keep"
    assert not (tmp_path / "o.obj").exists() and not (tmp_path / "o.png").exists()


def test_no_partial_files_on_failure(tmp_path, monkeypatch):
    v, f, uv, _ = box_mesh()
    tex = np.zeros((2, 2, 3), np.uint8)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(trellis_impl.files.os, "link", boom)
    monkeypatch.setattr(trellis_impl.files.os, "replace", boom)
    with pytest.raises(OSError):
        save_glb(tmp_path / "a.glb", v, f)
    with pytest.raises(OSError):
        save_mesh_ply(tmp_path / "a.ply", v, f)
    with pytest.raises(OSError):
        save_obj(tmp_path / "a.obj", v, f, uv=uv, texture=tex)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()

    # the second file of the OBJ group fails: the first one is removed again
    calls = []
    real = trellis_impl.files.write_new_file

    def fail_second(path, data, overwrite=False):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(path, data, overwrite)

    monkeypatch.setattr(trellis_impl.files, "write_new_file", fail_second)
    with pytest.raises(OSError):
        save_obj(tmp_path / "b.obj", v, f, uv=uv, texture=tex)
    assert list(tmp_path.iterdir()) == []
