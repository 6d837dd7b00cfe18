"""The coordinate frames (trellis_impl/frames.py) as one table: each frame's up and front, where
every writer and reader takes them from, and that every transform is a proper rotation."""
import itertools

import numpy as np
import pytest
import torch

from trellis_impl import frames

# (frame, up, front) as the module's table states them: the facts the transforms must reproduce
TABLE = [("trellis", (0, 0, 1), (0, -1, 0)), ("gltf", (0, 1, 0), (0, 0, 1)), ("ply", (0, -1, 0), (0, 0, -1))]


@pytest.mark.parametrize("src, dst", list(itertools.product(frames.FRAMES, repeat=2)))
def test_up_front_and_right_map_between_every_pair(src, dst):
    rows = {name: (up, front) for name, up, front in TABLE}
    matrix = frames.transform(src, dst)
    assert np.allclose(matrix @ matrix.T, np.eye(3)) and np.isclose(np.linalg.det(matrix), 1.0)
    for which in (0, 1):
        assert np.allclose(np.array(rows[src][which], float) @ matrix, rows[dst][which]), (src, dst, which)
    assert np.allclose(np.array([1.0, 0, 0]) @ matrix, [1, 0, 0])  # x (the asset's right) is shared
    assert (frames.UP[src], frames.FRONT[src]) == rows[src]


def test_convert_keeps_array_kinds_and_round_trips():
    points = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    gltf = frames.convert(points, "trellis", "gltf")
    assert gltf.dtype == np.float32 and np.allclose(gltf[:, 1], points[:, 2]) and np.allclose(gltf[:, 2], -points[:, 1])
    tensor = torch.from_numpy(points).double()
    assert torch.allclose(frames.convert(frames.convert(tensor, "trellis", "ply"), "ply", "trellis"), tensor)
    assert frames.convert(np.array([[0, 0, 1]]), "trellis", "gltf").dtype == np.float64  # integers become float
    with pytest.raises(ValueError, match="src frame must be one of"):
        frames.transform("blender", "gltf")


def test_every_format_takes_its_frame_from_the_module():
    from trellis_impl.export import mesh_files, splat_files
    from trellis_impl.representations.gaussians import DEFAULT_PLY_TRANSFORM
    # GLB / OBJ writers and the MESH type: glTF; the official save_ply transform: TRELLIS -> ply
    assert np.array_equal(mesh_files.TRELLIS_TO_GLTF, frames.transform("trellis", "gltf"))
    assert np.allclose(np.array(DEFAULT_PLY_TRANSFORM).T, frames.transform("trellis", "ply"))
    # .spz stores RUB: the PLY frame turned into the glTF frame
    assert np.allclose(np.diag(splat_files._FLIP_P), frames.transform("ply", "gltf"))
    # edit regions in the glTF frame name the same voxels as in the TRELLIS frame
    from trellis_impl.editing import box_region
    box = np.array([[-0.4, 0.1, -0.3], [0.0, 0.4, 0.2]])
    in_trellis = np.sort(frames.convert(box, "gltf", "trellis"), axis=0)
    assert torch.equal(box_region([box.tolist()], resolution=16, frame="gltf"),
                       box_region([in_trellis.tolist()], resolution=16, frame="trellis"))


def test_mesh_files_are_read_with_the_official_toolkits_up_axis():
    from trellis_impl.frames import mesh_file_frame
    assert [mesh_file_frame(f"a{ext}") for ext in (".glb", ".GLTF", ".obj", ".ply", ".stl")] == \
        ["gltf", "gltf", "gltf", "trellis", "trellis"]
    assert mesh_file_frame("a.ply", up="y") == "gltf" and mesh_file_frame("a.glb", up="z") == "trellis"
    with pytest.raises(ValueError, match="up must be one of auto, y, z"):
        mesh_file_frame("a.glb", up="x")
