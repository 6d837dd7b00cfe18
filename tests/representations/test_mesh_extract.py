"""Mesh extraction (SparseFeatures2Mesh + FlexiCubes, training=False) against the official outputs."""
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from trellis_impl.representations.flexicubes import CUBE_CORNER_OFFSETS, dense_index, flexicubes_extract
from trellis_impl.representations.mesh import (
    Mesh, features_to_mesh, mesh_feature_channels, mesh_feature_layout)

CASES = Path(__file__).parents[1] / 'fixtures' / 'conformance' / 'cases'
TOLERANCE = 1e-4  # of max|ref|


def _load(case: str):
    with safe_open(str(CASES / f'{case}.safetensors'), 'pt') as f:
        return {k: f.get_tensor(k) for k in f.keys()}, int(f.metadata()['mesh_res'])


def _rel_err(actual: torch.Tensor, ref: torch.Tensor) -> float:
    assert actual.shape == ref.shape, f'{tuple(actual.shape)} != {tuple(ref.shape)}'
    return float((actual - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize('item', [0, 1])
@pytest.mark.parametrize('case', ['slat_dec_mesh', 'slat_dec_mesh_elastic'])
def test_matches_official(case, item):
    tensors, res = _load(case)
    rows = tensors['out_layer_coords'][:, 0] == item
    coords = tensors['out_layer_coords'][rows, 1:]
    feats = tensors['out_layer_feats'][rows]
    feats_before = feats.clone()

    mesh = features_to_mesh(coords, feats, res, use_color=True)

    assert torch.equal(feats, feats_before), 'feats modified in place'
    assert mesh.success and mesh.res == res
    assert mesh.faces.dtype == torch.int64 and mesh.vertices.dtype == torch.float32
    assert torch.equal(mesh.faces, tensors[f'item{item}.faces'])
    assert _rel_err(mesh.vertices, tensors[f'item{item}.vertices']) <= TOLERANCE
    assert _rel_err(mesh.vertex_attrs, tensors[f'item{item}.vertex_attrs']) <= TOLERANCE
    assert mesh.face_normal.shape == (mesh.faces.shape[0], 3, 3)


def _dense_grid_mesh(coords: torch.Tensor, feats: torch.Tensor, res: int, use_color: bool):
    """The official dense construction ((res + 1)^3 vertices, res^3 cubes) fed to FlexiCubes."""
    corner_offsets = torch.tensor(CUBE_CORNER_OFFSETS)
    size = res + 1
    corner_attrs = [feats[:, :8, None] - 1.0 / res, feats[:, 8:32].reshape(-1, 8, 3)]
    if use_color:
        corner_attrs.append(feats[:, 53:101].reshape(-1, 8, 6))
    corner_attrs = torch.cat(corner_attrs, -1).reshape(coords.shape[0] * 8, -1)
    num_attrs = corner_attrs.shape[-1]
    corner_keys = dense_index((coords[:, None] + corner_offsets).reshape(-1, 3), size)
    vertex_attrs = torch.zeros(size ** 3, num_attrs)
    vertex_attrs[:, 0] = 1.0  # untouched vertices are outside
    vertex_attrs = vertex_attrs.scatter_reduce(
        0, corner_keys[:, None].expand(-1, num_attrs), corner_attrs, reduce='mean', include_self=False)

    axis = torch.arange(size)
    vertex_coords = torch.stack(torch.meshgrid(axis, axis, axis, indexing='ij'), -1).reshape(-1, 3)
    vertices = vertex_coords / res - 0.5 + (1 - 1e-8) / (res * 2) * torch.tanh(vertex_attrs[:, 1:4])
    cube_coords = vertex_coords[(vertex_coords < res).all(-1)]
    cube_corners = dense_index((cube_coords[:, None] + corner_offsets).reshape(-1, 3), size).reshape(-1, 8)
    weights = torch.zeros(res ** 3, 21)
    weights[dense_index(coords, res)] = feats[:, 32:53]
    return flexicubes_extract(
        vertices, vertex_attrs[:, 0], cube_corners, cube_coords, res,
        beta=weights[:, :12], alpha=weights[:, 12:20], gamma=weights[:, 20],
        vertex_colors=vertex_attrs[:, 4:] if use_color else None)


def _assert_same_as_dense_grid(coords, feats, res, use_color):
    mesh = features_to_mesh(coords, feats, res, use_color=use_color)
    vertices, faces, colors = _dense_grid_mesh(coords.long(), feats, res, use_color)
    assert torch.equal(mesh.faces, faces)
    torch.testing.assert_close(mesh.vertices, vertices, rtol=0, atol=1e-7)
    if use_color:
        torch.testing.assert_close(mesh.vertex_attrs, colors, rtol=0, atol=1e-7)
    else:
        assert mesh.vertex_attrs is None and colors is None
    return mesh


def _random_feats(num_voxels: int, use_color: bool, inside_sdf: float) -> torch.Tensor:
    feats = torch.randn(num_voxels, mesh_feature_channels(use_color))
    feats[:, :8] = inside_sdf + 0.05 * feats[:, :8]
    return feats


def _closed(faces: torch.Tensor) -> bool:
    """Every undirected edge is shared by exactly two faces."""
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(-1).values
    _, counts = torch.unique(edges, dim=0, return_counts=True)
    return bool((counts == 2).all())


@pytest.mark.parametrize('use_color', [True, False])
def test_single_voxel(use_color):
    res = 4
    coords = torch.tensor([[1, 2, 1]], dtype=torch.int32)
    mesh = _assert_same_as_dense_grid(coords, _random_feats(1, use_color, inside_sdf=-0.3), res, use_color)
    assert mesh.success and _closed(mesh.faces)
    assert mesh.vertices.abs().max() <= 0.5


def test_voxels_at_grid_border():
    res = 6
    coords = torch.tensor([[0, 0, 0], [res - 1, res - 1, res - 1], [0, res - 1, 2], [3, 0, res - 1], [2, 3, 3]])
    mesh = _assert_same_as_dense_grid(coords, _random_feats(len(coords), True, inside_sdf=-0.2), res, True)
    assert mesh.success and mesh.vertices.abs().max() <= 0.5


def test_random_unsorted_voxels_match_dense_grid():
    res = 10
    coords = torch.nonzero(torch.rand(res, res, res) < 0.3)
    coords = coords[torch.randperm(len(coords))]
    # Mixed signs around 0 give many ambiguous (C16/C19) cubes.
    _assert_same_as_dense_grid(coords, _random_feats(len(coords), True, inside_sdf=0.0) * 2, res, True)


@pytest.mark.parametrize('use_color', [True, False])
def test_empty_input(use_color):
    channels = mesh_feature_channels(use_color)
    mesh = features_to_mesh(torch.zeros(0, 3, dtype=torch.int32), torch.zeros(0, channels), 8, use_color)
    assert isinstance(mesh, Mesh) and not mesh.success
    assert mesh.vertices.shape == (0, 3) and mesh.faces.shape == (0, 3) and mesh.face_normal.shape == (0, 3, 3)
    if use_color:
        assert mesh.vertex_attrs.shape == (0, 6)
    else:
        assert mesh.vertex_attrs is None


def test_no_surface_gives_empty_mesh():
    coords = torch.tensor([[1, 1, 1], [2, 1, 1]])
    mesh = features_to_mesh(coords, _random_feats(2, True, inside_sdf=0.5), 4)
    assert not mesh.success and mesh.faces.shape == (0, 3)


@pytest.mark.parametrize('use_color, channels', [(True, 101), (False, 53)])
def test_wrong_channel_count_raises(use_color, channels):
    with pytest.raises(ValueError, match=str(channels)):
        features_to_mesh(torch.zeros(2, 3, dtype=torch.int32), torch.zeros(2, 77), 8, use_color)


def test_half_precision_input_computes_in_float32():
    tensors, res = _load('slat_dec_mesh_elastic')
    rows = tensors['out_layer_coords'][:, 0] == 1
    feats = tensors['out_layer_feats'][rows]
    mesh = features_to_mesh(tensors['out_layer_coords'][rows, 1:], feats.half(), res)
    reference = features_to_mesh(tensors['out_layer_coords'][rows, 1:], feats.half().float(), res)
    assert mesh.vertices.dtype == torch.float32
    assert torch.equal(mesh.faces, reference.faces) and torch.equal(mesh.vertices, reference.vertices)


def test_feature_layout():
    layout = mesh_feature_layout(use_color=True)
    assert {name: group['range'] for name, group in layout.items()} == {
        'sdf': (0, 8), 'deform': (8, 32), 'weights': (32, 53), 'color': (53, 101)}
    assert 'color' not in mesh_feature_layout(use_color=False)
    assert (mesh_feature_channels(True), mesh_feature_channels(False)) == (101, 53)


def test_mesh_save_ply_round_trip(tmp_path):
    vertices = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    faces = torch.tensor([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])
    attrs = torch.rand(4, 6)
    mesh = Mesh(vertices, faces, attrs)
    path = tmp_path / "m.ply"
    mesh.save_ply(path)
    data = path.read_bytes()
    header, body = data.split(b"end_header\n")
    assert b"element vertex 4" in header and b"element face 4" in header and b"property uchar red" in header
    verts = np.frombuffer(body[: 4 * 15], dtype=[("xyz", "<f4", (3,)), ("rgb", "u1", (3,))])
    assert np.array_equal(verts["xyz"], vertices.numpy())
    assert np.array_equal(verts["rgb"], (attrs[:, :3] * 255).round().to(torch.uint8).numpy())
    tris = np.frombuffer(body[4 * 15:], dtype=[("n", "u1"), ("v", "<i4", (3,))])
    assert np.array_equal(tris["v"], faces.numpy()) and (tris["n"] == 3).all()
    with pytest.raises(FileExistsError):
        mesh.save_ply(path)
    with pytest.raises(ValueError, match="empty"):
        Mesh(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long)).save_ply(tmp_path / "e.ply")
