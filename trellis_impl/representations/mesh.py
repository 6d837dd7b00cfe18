"""Mesh representation of TRELLIS's SLatMeshDecoder and its sparse-voxel to mesh extractor.

``features_to_mesh`` reproduces ``SparseFeatures2Mesh.__call__(training=False)`` of the official
code for one batch item: each active voxel predicts, for its 8 corners, an SDF value, a
deformation and (optionally) 6 colour/normal channels, plus 21 FlexiCubes weights for itself;
corner values shared by neighbouring voxels are averaged, and FlexiCubes turns the grid into a
triangle mesh.

The official code fills dense ``(res + 1)^3`` grids (untouched vertices: SDF 1, deformation 0,
colour 0; untouched cubes: weights 0). Here only the cubes that have an inside (SDF < 0) corner are
built, which are the only ones that can be surface cubes, with the same defaults and the same
dense-index ordering, so vertices and faces come out identical, in the same order.

``features_to_mesh(..., training=True)`` reproduces ``training=True``: FlexiCubes' training
triangulation (4 triangles per quad around a centre vertex), differentiable w.r.t. every decoder
channel (SDF, deformation, weights, colours), plus the regularisers the mesh-decoder trainer adds
(``Mesh.reg_loss``) and the vertex samples of its TSDF loss (``Mesh.tsdf_v``, ``Mesh.tsdf_s``).
"""

from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..backends.transfer import to_device
from ..files import write_new_file
from .flexicubes import CUBE_CORNER_OFFSETS, dense_index, flexicubes_extract, flexicubes_extract_training, sorted_lookup

# Channel groups of the decoder output, in order: name -> per-voxel shape.
_LAYOUT_SHAPES = (
    ('sdf', (8, 1)),        # SDF at the 8 cube corners
    ('deform', (8, 3)),     # corner offsets, pre-tanh
    ('weights', (21,)),     # FlexiCubes beta[12] | alpha[8] | gamma[1], pre-activation
    ('color', (8, 6)),      # per corner rgb + normal, pre-sigmoid (only with use_color)
)
_OUTSIDE_SDF = 1.0  # SDF of grid vertices no voxel touches
# Weights of the official SparseFeatures2Mesh regularisers (training=True).
DEVIATION_WEIGHT = 0.5      # on L_dev.mean()
FLEXI_WEIGHT_WEIGHT = 0.2   # on |beta, alpha| (raw weights[:, :20]).abs().mean()


class Mesh:
    """A decoded triangle mesh, with the attribute names of the official ``MeshExtractResult``.

    Attributes:
        vertices: [V, 3] float32, in the unit cube centred at 0 (about [-0.5, 0.5]).
        faces: [F, 3] int64 vertex indices.
        vertex_attrs: [V, 6] float (rgb, then normal channels, each in [0, 1]) or None.
        res: mesh grid resolution (cubes per axis).
        face_normal: [F, 3, 3] float, unit normal of each face, repeated for its 3 corners.
        success: False when the mesh has no vertices or no faces.
        reg_loss: 0-dim tensor (training meshes only, else None): the official mesh regularisers,
            ``consistency + 0.5 * L_dev.mean() (if success) + 0.2 * |weights[:, :20]|.mean()``,
            where consistency is the mean squared difference between each voxel's 8 corner
            predictions (sdf, deform, colour channels) and their per-vertex averages.
        tsdf_v: [T, 3] float (training only): deformed positions of every grid vertex a voxel
            touches, in increasing dense index order.
        tsdf_s: [T] float (training only): their averaged SDF (bias -1/res included).
    """

    def __init__(self, vertices: Tensor, faces: Tensor, vertex_attrs: Optional[Tensor] = None, res: int = 64):
        self.vertices = vertices
        self.faces = faces.long()
        self.vertex_attrs = vertex_attrs
        self.res = res
        self.face_normal = _face_normals(vertices, self.faces)
        self.success = vertices.shape[0] != 0 and faces.shape[0] != 0
        self.reg_loss: Optional[Tensor] = None
        self.tsdf_v: Optional[Tensor] = None
        self.tsdf_s: Optional[Tensor] = None

    def save_ply(self, path, overwrite: bool = False) -> str:
        """Write the raw mesh as a binary PLY: positions in TRELLIS's own frame (Z up, unit cube
        at the origin), the rgb channels of ``vertex_attrs`` as 8-bit vertex colours when present.
        Never replaces an existing file unless ``overwrite``; never leaves a partial file."""
        if not self.success:
            raise ValueError("the mesh is empty (no vertices or faces); nothing to write")
        if not torch.isfinite(self.vertices).all():
            raise ValueError("the mesh has non-finite vertex positions")
        vertex_fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
        colors = self.vertex_attrs is not None
        if colors:
            vertex_fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        vertices = np.empty(self.vertices.shape[0], dtype=vertex_fields)
        xyz = self.vertices.detach().float().cpu().numpy()
        vertices["x"], vertices["y"], vertices["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
        if colors:
            rgb = (self.vertex_attrs[:, :3].detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
            vertices["red"], vertices["green"], vertices["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
        faces = np.empty(self.faces.shape[0], dtype=[("n", "u1"), ("v", "<i4", (3,))])
        faces["n"] = 3
        faces["v"] = self.faces.detach().cpu().numpy().astype(np.int32)
        header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(vertices)}"]
        header += [f"property {'float' if t == '<f4' else 'uchar'} {name}" for name, t in vertex_fields]
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header", ""]
        return write_new_file(path, "\n".join(header).encode("ascii") + vertices.tobytes() + faces.tobytes(),
                              overwrite)


def _face_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """[V, 3] vertices, [F, 3] faces -> [F, 3, 3] unit face normals, one copy per face corner."""
    v0, v1, v2 = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    normals = F.normalize(torch.cross(v1 - v0, v2 - v0, dim=-1), dim=1)
    return normals[:, None, :].repeat(1, 3, 1)


def mesh_feature_layout(use_color: bool) -> Dict[str, Dict[str, tuple]]:
    """Channel layout of the mesh decoder's output features.

    Returns:
        name -> {'shape': per-voxel shape, 'size': channel count, 'range': (start, end)} for
        'sdf' [8, 1], 'deform' [8, 3], 'weights' [21] and, with ``use_color``, 'color' [8, 6],
        in that channel order.
    """
    layout = {}
    start = 0
    for name, shape in _LAYOUT_SHAPES:
        if name == 'color' and not use_color:
            continue
        size = 1
        for dim in shape:
            size *= dim
        layout[name] = {'shape': shape, 'size': size, 'range': (start, start + size)}
        start += size
    return layout


def mesh_feature_channels(use_color: bool) -> int:
    """Channels per voxel the mesh decoder outputs: 101 with colour, 53 without."""
    return sum(group['size'] for group in mesh_feature_layout(use_color).values())


def features_to_mesh(coords: Tensor, feats: Tensor, res: int, use_color: bool = True,
                     training: bool = False) -> Mesh:
    """Extract the mesh of one batch item from the mesh decoder's sparse output.

    Computes in float32 on ``feats.device`` (float64 input stays float64 with ``training``);
    ``feats`` is not modified.

    Args:
        coords: [N, 3] integer voxel coordinates (x, y, z) at mesh resolution, in [0, res), unique.
        feats: [N, C] decoder output, C = ``mesh_feature_channels(use_color)``.
        res: mesh resolution (cubes per axis; 256 for the released model).
        use_color: whether ``feats`` carries the 8 x 6 colour channels.
        training: the official ``training=True`` path: the training triangulation (see
            ``flexicubes_extract_training``; vertices, faces and colours differ from inference)
            and ``reg_loss``, ``tsdf_v``, ``tsdf_s`` set on the mesh, all differentiable w.r.t.
            ``feats``.

    Returns:
        The ``Mesh``; empty (``success`` False) when no surface crosses the voxels.
    """
    expected_channels = mesh_feature_channels(use_color)
    if feats.dim() != 2 or feats.shape[1] != expected_channels:
        raise ValueError(f"feats must be [N, {expected_channels}] (use_color={use_color}), "
                         f"got {list(feats.shape)}")
    if coords.dim() != 2 or coords.shape[1] != 3 or coords.shape[0] != feats.shape[0]:
        raise ValueError(f"coords must be [N, 3] (x, y, z) with N = {feats.shape[0]}, got {list(coords.shape)}")
    if coords.dtype.is_floating_point or coords.dtype == torch.bool:
        raise ValueError(f"coords must be an integer tensor, got {coords.dtype}")
    device = feats.device
    dtype = torch.float64 if training and feats.dtype == torch.float64 else torch.float32
    coords = coords.to(device=device, dtype=torch.long)
    if coords.numel() and (int(coords.min()) < 0 or int(coords.max()) >= res):
        raise ValueError(f"coords must lie in [0, {res}), got [{int(coords.min())}, {int(coords.max())}]")
    voxel_keys, voxel_order = torch.sort(dense_index(coords, res))
    if bool((voxel_keys[1:] == voxel_keys[:-1]).any()):
        raise ValueError("coords contain duplicate voxels")

    layout = mesh_feature_layout(use_color)

    def channels(name: str) -> Tensor:  # each group in float32 as it is used: no float32 copy of all of feats
        start, end = layout[name]['range']
        return feats[:, start:end].to(dtype).reshape(-1, *layout[name]['shape'])

    def corner_attributes() -> Tensor:  # [N, 8, A]: sdf | deform xyz | colour (6)
        sdf = channels('sdf') + (-1.0 / res)
        return torch.cat([sdf, channels('deform')] + ([channels('color')] if use_color else []), dim=-1)

    # Each phase is a function, so that its temporaries (several N x 8 tensors) are freed before
    # FlexiCubes, which is the mesh decoder's memory peak.
    touched_keys, touched_attrs, corner_vertex = _average_corners(coords, corner_attributes(), res)
    cube_keys = _candidate_cubes(touched_keys, touched_attrs[:, 0] < 0, res)
    cube_coords = _unflatten(cube_keys, res)
    grid_keys, cube_corners, grid_attrs = _grid_attributes(cube_coords, touched_keys, touched_attrs, res)
    cube_weights = _cube_weights(voxel_keys, voxel_order, channels('weights'), cube_keys)
    if not training:  # the training terms below need them; inference frees them now
        del touched_keys, touched_attrs, corner_vertex

    grid_vertices = _deformed_positions(_unflatten(grid_keys, res + 1), grid_attrs[:, 1:4], res)
    extract = flexicubes_extract_training if training else flexicubes_extract
    extracted = extract(
        grid_vertices, grid_attrs[:, 0], cube_corners, cube_coords, res,
        beta=cube_weights[:, :12], alpha=cube_weights[:, 12:20], gamma=cube_weights[:, 20],
        vertex_colors=grid_attrs[:, 4:] if use_color else None)
    mesh = Mesh(extracted[0], extracted[1], extracted[2], res)
    if training:
        # official sparse_cube2verts(training=True): corner predictions vs their vertex averages
        corner_attrs = corner_attributes()
        consistency = torch.mean((corner_attrs - touched_attrs[corner_vertex].reshape(corner_attrs.shape)) ** 2)
        reg_loss = consistency + FLEXI_WEIGHT_WEIGHT * channels('weights')[:, :20].abs().mean()
        if feats.shape[0] == 0:
            reg_loss = feats.sum()  # no voxels: 0, still attached to feats
        elif mesh.success:
            reg_loss = reg_loss + DEVIATION_WEIGHT * extracted[3].mean()
        mesh.reg_loss = reg_loss
        mesh.tsdf_v = _deformed_positions(_unflatten(touched_keys, res + 1), touched_attrs[:, 1:4], res)
        mesh.tsdf_s = touched_attrs[:, 0]
    return mesh


def _corner_offsets(device) -> Tensor:
    """[8, 3] int64 offsets of a cube's corners from its own coordinates (``CUBE_CORNER_OFFSETS``)."""
    return to_device(CUBE_CORNER_OFFSETS, device, torch.long)


def _average_corners(coords: Tensor, corner_attrs: Tensor, res: int):
    """Average the 8 corner predictions of all voxels into their shared grid vertices.

    Args:
        coords: [N, 3] int64 voxel coordinates.
        corner_attrs: [N, 8, A] float, per-voxel corner attributes.

    Returns:
        touched_keys: [T] int64 sorted dense indices (grid of res + 1) of the vertices some voxel touches;
        touched_attrs: [T, A] their mean attributes;
        corner_vertex: [N * 8] int64, the touched vertex of each voxel corner.
    """
    corner_offsets = _corner_offsets(coords.device)
    num_attrs = corner_attrs.shape[-1]
    corner_keys = dense_index((coords[:, None, :] + corner_offsets).reshape(-1, 3), res + 1)
    touched_keys, corner_vertex = torch.unique(corner_keys, return_inverse=True)
    touched_attrs = corner_attrs.new_zeros((touched_keys.shape[0], num_attrs)).scatter_reduce(
        0, corner_vertex[:, None].expand(-1, num_attrs), corner_attrs.reshape(-1, num_attrs),
        reduce='mean', include_self=False)
    return touched_keys, touched_attrs, corner_vertex


def _candidate_cubes(touched_keys: Tensor, touched_inside: Tensor, res: int) -> Tensor:
    """[K] int64 sorted dense indices of the cubes with an inside corner (only those can be surface
    cubes; untouched vertices are outside). ``touched_inside``: [T] bool per touched vertex."""
    corner_offsets = _corner_offsets(touched_keys.device)
    inside_vertices = _unflatten(touched_keys[touched_inside], res + 1)
    candidates = (inside_vertices[:, None, :] - corner_offsets).reshape(-1, 3)
    candidates = candidates[((candidates >= 0) & (candidates < res)).all(-1)]
    return torch.unique(dense_index(candidates, res))


def _grid_attributes(cube_coords: Tensor, touched_keys: Tensor, touched_attrs: Tensor, res: int):
    """The grid vertices of the candidate cubes and their attributes.

    Returns:
        grid_keys: [V] int64 sorted dense indices (grid of res + 1);
        cube_corners: [K, 8] int64 indices into grid_keys of each cube's corners;
        grid_attrs: [V, A] float, the touched vertices' means, untouched ones outside (SDF
            ``_OUTSIDE_SDF``, the rest 0).
    """
    corner_offsets = _corner_offsets(cube_coords.device)
    grid_keys, cube_corners = torch.unique(
        dense_index((cube_coords[:, None, :] + corner_offsets).reshape(-1, 3), res + 1), return_inverse=True)
    grid_attrs = touched_attrs.new_zeros((grid_keys.shape[0], touched_attrs.shape[1]))
    grid_attrs[:, 0] = _OUTSIDE_SDF
    touched_index = sorted_lookup(touched_keys, grid_keys)
    is_touched = touched_index >= 0
    grid_attrs[is_touched] = touched_attrs[touched_index[is_touched]]
    return grid_keys, cube_corners.reshape(-1, 8), grid_attrs


def _cube_weights(voxel_keys: Tensor, voxel_order: Tensor, weights: Tensor, cube_keys: Tensor) -> Tensor:
    """[K, 21] FlexiCubes weights of the candidate cubes: their voxel's, 0 for cubes no voxel covers.
    ``voxel_keys``, ``voxel_order``: the voxels' sorted dense indices and their order (``torch.sort``);
    ``weights``: [N, 21] per voxel."""
    cube_weights = weights.new_zeros((cube_keys.shape[0], weights.shape[1]))
    voxel_index = sorted_lookup(voxel_keys, cube_keys)
    is_voxel = voxel_index >= 0
    cube_weights[is_voxel] = weights[voxel_order[voxel_index[is_voxel]]]
    return cube_weights


def _unflatten(keys: Tensor, size: int) -> Tensor:
    """[M] int64 x-major dense index -> [M, 3] int64 (x, y, z); inverse of ``dense_index``."""
    return torch.stack([keys // (size * size), (keys // size) % size, keys % size], dim=-1)


def _deformed_positions(grid_coords: Tensor, deform: Tensor, res: int) -> Tensor:
    """Grid vertex positions in the unit cube centred at 0, each moved by under half a cube.

    Args:
        grid_coords: [V, 3] int64 grid vertex coordinates in [0, res].
        deform: [V, 3] float, pre-tanh offsets.

    Returns:
        [V, 3] in deform's dtype.
    """
    return grid_coords.to(deform.dtype) / res - 0.5 + (1 - 1e-8) / (res * 2) * torch.tanh(deform)
