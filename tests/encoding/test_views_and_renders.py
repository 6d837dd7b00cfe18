"""Cameras, asset loading and albedo renders of the encoder (CPU, tiny)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from meshes import BLUE, RED, box, coloured_box, textured_quad, write  # noqa: E402

from trellis_impl.encoding import (TexturedMesh, blender_camera, camera_from_frame, camera_to_frame,
                                   hammersley_cameras, hammersley_yaw_pitch, load_textured_mesh, render_albedo)
from trellis_impl.readers import load_mesh


def test_hammersley_cameras_sit_where_blender_puts_them():
    offset = (0.25, 0.5)
    cameras = hammersley_cameras(12, offset, resolution=64)
    for i, camera in enumerate(cameras):
        yaw, pitch = hammersley_yaw_pitch(i, 12, offset)
        expected = 2 * torch.tensor([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch),
                                     math.sin(pitch)], dtype=torch.float64)
        torch.testing.assert_close(camera.position, expected)
        u, v, depth = camera.project(torch.zeros(1, 3))[0].tolist()
        assert (u, v) == pytest.approx((32, 32)) and depth == pytest.approx(2)  # looks at the origin
        assert camera.project(torch.tensor([[0.0, 0.0, 0.1]]))[0, 1] < 32      # +Z is up in the image
        assert camera.fx == pytest.approx(32 / math.tan(math.radians(20)))     # 40 degrees across
        back = camera_from_frame(camera_to_frame(camera), 64)
        torch.testing.assert_close(back.extrinsics, camera.extrinsics)


def test_camera_arguments_are_checked():
    with pytest.raises(ValueError, match="num_views"):
        hammersley_cameras(0)
    with pytest.raises(ValueError, match="offset"):
        hammersley_cameras(4, (0.5, 1.5))
    with pytest.raises(ValueError, match="transform_matrix"):
        camera_from_frame({"camera_angle_x": 0.7})


@pytest.mark.parametrize("kind", ["vertex", "face"])
def test_renders_show_the_mesh_colours(tmp_path, kind):
    loaded = load_textured_mesh(write(coloured_box(RED, kind), tmp_path / "box.ply"))
    rgba = render_albedo(loaded.normalized(), hammersley_cameras(2, (0.3, 0.6), resolution=48))
    inside, outside = rgba[..., 3] == 1, rgba[..., 3] == 0
    assert inside.sum() > 100 and outside.sum() > 100 and (inside | outside).all()
    torch.testing.assert_close(rgba[..., :3][inside], torch.tensor(RED).float().div(255).expand(int(inside.sum()), 3),
                               atol=1e-6, rtol=0)
    assert (rgba[outside] == 0).all()


def test_untextured_mesh_is_grey_and_supersampling_blends_edges():
    mesh = TexturedMesh.from_arrays(box().vertices, box().faces).normalized()
    cameras = hammersley_cameras(1, (0.3, 0.6), resolution=40)
    sharp, smooth = render_albedo(mesh, cameras), render_albedo(mesh, cameras, supersample=3)
    assert torch.allclose(sharp[..., :3][sharp[..., 3] == 1], torch.tensor(0.5))
    partial = (smooth[..., 3] > 0) & (smooth[..., 3] < 1)
    assert partial.any()  # anti-aliased silhouette
    assert torch.allclose(smooth[..., :3][smooth[..., 3] > 0], torch.tensor(0.5))  # straight alpha keeps the colour


def test_texture_orientation(tmp_path):
    """The texture's top (red) shows at the top of the image for a quad whose top vertices have v = 1."""
    path = write(textured_quad(), tmp_path / "quad.glb")
    mesh = load_textured_mesh(path)
    assert len(mesh.textures) == 1 and (mesh.face_texture == 0).all()
    camera = blender_camera(-math.pi / 2, 0.0, resolution=32)  # on -Y, facing the quad
    rgba = render_albedo(mesh.normalized(), [camera])[0]
    red, blue = torch.tensor(RED).float() / 255, torch.tensor(BLUE).float() / 255
    torch.testing.assert_close(rgba[12, 16, :3], red, atol=1e-6, rtol=0)
    torch.testing.assert_close(rgba[20, 16, :3], blue, atol=1e-6, rtol=0)


@pytest.mark.parametrize("extension", [".glb", ".gltf", ".obj", ".ply", ".stl"])
def test_every_format_loads_with_the_voxeliser_geometry(tmp_path, extension):
    source = textured_quad() if extension in (".glb", ".gltf", ".obj") else coloured_box(BLUE)
    path = write(source, tmp_path / f"mesh{extension}")
    mesh = load_textured_mesh(path)
    vertices, faces = load_mesh(path)
    assert torch.equal(mesh.vertices, vertices) and torch.equal(mesh.faces, faces)
    rgba = render_albedo(mesh.normalized(), hammersley_cameras(2, (0.1, 0.2), resolution=32))
    colours = rgba[..., :3][rgba[..., 3] == 1]
    assert len(colours) > 0
    if extension == ".stl":  # no colour in the file
        assert torch.allclose(colours, torch.tensor(0.5))
    elif extension == ".ply":
        torch.testing.assert_close(colours.mean(0), torch.tensor(BLUE).float() / 255, atol=1e-6, rtol=0)
    else:  # the texture's two colours
        exact = [tuple(c) for c in (colours * 255).round().int().tolist()]
        assert RED in exact and BLUE in exact  # bilinear filtering blends them only along the border
        assert sum(c in (RED, BLUE) for c in exact) >= 0.8 * len(exact)


def test_bad_mesh_files(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_textured_mesh(tmp_path / "missing.obj")
    (tmp_path / "mesh.fbx").write_text("")
    with pytest.raises(ValueError, match="unsupported mesh format"):
        load_textured_mesh(tmp_path / "mesh.fbx")
    with pytest.raises(ValueError, match="texture needs uv"):
        TexturedMesh.from_arrays(np.eye(3), [[0, 1, 2]], texture=np.zeros((2, 2, 3), np.uint8))
