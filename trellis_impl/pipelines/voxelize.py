"""Mesh -> the sparse structure that TRELLIS variants start from: the surface voxels of a 64^3 grid.

Reproduces the official ``TrellisTextTo3DPipeline.voxelize`` (used by ``run_variant``): the
vertices are normalised into the unit cube (``normalize_vertices``), then every voxel of the
grid over [-0.5, 0.5]^3 that a triangle touches is kept, as open3d's
``VoxelGrid.create_from_triangle_mesh_within_bounds`` does: for each triangle, the voxels of an
index box around the triangle's bounding box go through Akenine-Möller's separating-axis
triangle/box test. Boxes are closed (a triangle touching a voxel's face marks it), degenerate
triangles mark the voxels their segment or point touches, and nothing inside is filled.
The float64 arithmetic follows open3d's evaluation order operation by operation, so the voxel
set is open3d's, ties on voxel boundaries included.

open3d lists its voxels in hash-map order, which cannot be reproduced; ``voxelize_mesh`` sorts
them (x, y, z) ascending like ``argwhere``. The SLat noise is drawn one row per voxel, so a given
seed pairs the noise with other voxels than the official code does: an equally valid sample,
not the official one.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple, Union

import numpy as np
import torch

__all__ = ["normalize_vertices", "voxelize_mesh", "load_mesh", "MESH_EXTENSIONS"]

MESH_EXTENSIONS = (".obj", ".ply", ".stl", ".glb", ".gltf")
_GRID_MIN = -0.5  # the grid spans [-0.5, 0.5]^3, open3d's min_bound / max_bound
_CLIP = 0.5 - 1e-6  # official clip, keeps every vertex strictly inside the grid
# Candidate voxels tested at once: ~40 float64 temporaries each, so ~350 MB per batch.
_CANDIDATES_PER_BATCH = 1 << 20


def normalize_vertices(vertices: torch.Tensor) -> torch.Tensor:
    """[V, 3] -> float64 [V, 3]: AABB centre to the origin, divided by the largest AABB extent,
    clipped to [-0.5 + 1e-6, 0.5 - 1e-6] (the official ``voxelize``, float64 like open3d)."""
    vertices = vertices.double()
    low, high = vertices.min(0).values, vertices.max(0).values
    scale = (high - low).max()
    if scale == 0:
        raise ValueError(f"vertices: degenerate mesh, all {vertices.shape[0]} vertices are identical "
                         "(zero extent), nothing to voxelize")
    return ((vertices - (low + high) / 2) / scale).clamp(-_CLIP, _CLIP)


def voxelize_mesh(vertices: torch.Tensor, faces: torch.Tensor, resolution: int = 64,
                  normalize: bool = True) -> torch.Tensor:
    """Surface voxels of a triangle mesh, as open3d's ``create_from_triangle_mesh_within_bounds``
    (voxel_size = 1 / resolution, bounds [-0.5, 0.5]^3) finds them.

    vertices: float [V, 3]; faces: int [F, 3] (indices into vertices). With ``normalize`` the
    vertices go through ``normalize_vertices`` first (the official pipeline); without, they are
    only clipped (the official dataset toolkit, for meshes already in the unit cube).
    Returns int32 [N, 3] unique (x, y, z) grid indices in [0, resolution), sorted ascending,
    on the device of ``vertices``.
    """
    _check_mesh(vertices, faces, "vertices/faces")
    if not (isinstance(resolution, int) and resolution > 0):
        raise ValueError(f"resolution must be a positive int, got {resolution!r}")
    vertices = normalize_vertices(vertices) if normalize else vertices.double().clamp(-_CLIP, _CLIP)
    triangles = vertices[faces.to(vertices.device).long()]  # [F, 3 corners, 3 axes]
    voxel_size = 1.0 / resolution
    first, last = _candidate_ranges(triangles.min(1).values, triangles.max(1).values, voxel_size)
    sizes = (last - first + 1).clamp_min(0)  # [F, 3]
    counts = sizes.prod(1)
    ends = counts.cumsum(0)
    total = int(ends[-1])
    keys = []
    for start in range(0, total, _CANDIDATES_PER_BATCH):
        flat = torch.arange(start, min(start + _CANDIDATES_PER_BATCH, total), device=vertices.device)
        owner = torch.searchsorted(ends, flat, right=True)
        local = flat - (ends - counts)[owner]
        size = sizes[owner]
        offset = torch.stack([local // (size[:, 1] * size[:, 2]), local // size[:, 2] % size[:, 1],
                              local % size[:, 2]], 1)
        index = first[owner] + offset  # [C, 3] candidate voxels
        hit = _triangle_box_overlap(triangles[owner], _voxel_centers(index, voxel_size), voxel_size / 2)
        index = index[hit]
        keys.append(torch.unique((index[:, 0] * resolution + index[:, 1]) * resolution + index[:, 2]))
    keys = torch.unique(torch.cat(keys))  # sorted, so (x, y, z) ascending
    return torch.stack([keys // (resolution * resolution), keys // resolution % resolution,
                        keys % resolution], 1).int()


def _voxel_centers(index: torch.Tensor, voxel_size: float) -> torch.Tensor:
    """int [..., 3] grid indices -> float64 box centres, rounded like open3d's
    ``min_bound + box_half_size + index * voxel_size``."""
    return (_GRID_MIN + voxel_size / 2) + index.double() * voxel_size


def _candidate_ranges(low: torch.Tensor, high: torch.Tensor, voxel_size: float):
    """Per triangle and axis (low, high: float64 [F, 3] bounding box), the inclusive index range
    [first, last] (int64 [F, 3] each) of the voxels open3d tests whose box also meets the
    bounding box on that axis. open3d tests floor((low - min) / size) + [0, round(extent / size) + 2)
    and rejects the others by the SAT box-axis test; as that test is monotone in the index, it is
    evaluated only on a few indices at both ends of open3d's range to find where it flips."""
    half = voxel_size / 2
    start = torch.floor((low - _GRID_MIN) / voxel_size)
    extent = (high - low) / voxel_size
    # std::round (halves away from zero) of a non-negative number; torch.round halves to even.
    rounded = extent.floor() + (extent - extent.floor() >= 0.5).double()
    start, end = start.long(), (start + rounded + 1).long()  # end >= start + 1

    def passes(index, bound, keep):  # the box-axis test on one side, where index is in range
        index = torch.minimum(torch.maximum(index, start), end)
        return keep(bound - _voxel_centers(index, voxel_size)) | (index != index.clamp(start, end))

    # The triangle's low side is past the box's high face for the first indices of the range,
    # at most the first one; its high side is below the box's low face for at most the last three.
    low_fails = sum((~passes(start + k, low, lambda d: d <= half)).long() for k in range(2))
    high_fails = sum((~passes(end - k, high, lambda d: d >= -half)).long() for k in range(4))
    return start + low_fails, end - high_fails


def _separated(p_first: torch.Tensor, p_second: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Both projections beyond the box's projected radius on the same side: a separating axis."""
    return ((p_first > radius) & (p_second > radius)) | ((p_first < -radius) & (p_second < -radius))


def _triangle_box_overlap(triangles: torch.Tensor, centers: torch.Tensor, half: float) -> torch.Tensor:
    """Akenine-Möller's triangle/box test (``triBoxOverlap``, as open3d evaluates it), for boxes
    already known to overlap the triangle's bounding box. triangles: float64 [C, 3, 3];
    centers: float64 [C, 3] box centres; half: the box half size. Returns bool [C]."""
    v = triangles - centers[:, None, :]  # [C, corner, axis], in the box's frame
    edges = v[:, [1, 2, 0]] - v  # edge k runs from corner k to corner k + 1
    radius_part = edges.abs() * half
    x, y, z = 0, 1, 2
    separated = torch.zeros(v.shape[0], dtype=torch.bool, device=v.device)
    # Axes edge_k x unit axis. A projection is the same for both ends of edge k, so each test
    # projects one end and the opposite corner; the corner pairs are those of triBoxOverlap.
    for axis, (a, b), corner_pairs in ((x, (z, y), ((0, 2), (0, 2), (0, 1))),
                                       (y, (z, x), ((0, 2), (0, 2), (0, 1))),
                                       (z, (y, x), ((1, 2), (0, 1), (1, 2)))):
        first, second = (v[:, [pair[i] for pair in corner_pairs]] for i in (0, 1))  # [C, edge, axis]
        ea, eb = edges[..., a], edges[..., b]  # [C, edge]
        radius = radius_part[..., a] + radius_part[..., b]
        if axis == y:  # projected on (-e_z, 0, e_x): b * v_z - a * v_x
            project = lambda p: eb * p[..., z] - ea * p[..., x]  # noqa: E731
        else:  # x: a * v_y - b * v_z; z: a * v_x - b * v_y
            u, w = (y, z) if axis == x else (x, y)
            project = lambda p, u=u, w=w: ea * p[..., u] - eb * p[..., w]  # noqa: E731
        separated |= _separated(project(first), project(second), radius).any(1)
    # The triangle's plane: normal = edge0 x edge1 (zero for degenerate triangles, which passes).
    e0, e1 = edges[:, 0], edges[:, 1]
    normal = torch.stack([e0[:, y] * e1[:, z] - e0[:, z] * e1[:, y],
                          e0[:, z] * e1[:, x] - e0[:, x] * e1[:, z],
                          e0[:, x] * e1[:, y] - e0[:, y] * e1[:, x]], 1)
    positive = normal > 0
    corner_min = torch.where(positive, -half - v[:, 0], half - v[:, 0])
    corner_max = torch.where(positive, half - v[:, 0], -half - v[:, 0])
    dot_min, dot_max = (((normal[:, 0] * c[:, 0]) + normal[:, 1] * c[:, 1]) + normal[:, 2] * c[:, 2]
                        for c in (corner_min, corner_max))
    return ~separated & ~(dot_min > 0) & (dot_max >= 0)


def _check_mesh(vertices, faces, name: str) -> None:
    """ValueError naming ``name`` unless vertices is a finite float [V >= 1, 3] tensor and faces an
    int [F >= 1, 3] tensor of indices into it."""
    if not (torch.is_tensor(vertices) and vertices.dim() == 2 and vertices.shape[1] == 3
            and vertices.is_floating_point()):
        raise ValueError(f"{name}: vertices must be a float tensor [V, 3], got "
                         f"{getattr(vertices, 'dtype', type(vertices).__name__)} {tuple(getattr(vertices, 'shape', ()))}")
    if not (torch.is_tensor(faces) and faces.dim() == 2 and faces.shape[1] == 3
            and not faces.is_floating_point() and not faces.is_complex() and faces.dtype != torch.bool):
        raise ValueError(f"{name}: faces must be an int tensor [F, 3] of triangle corner indices, got "
                         f"{getattr(faces, 'dtype', type(faces).__name__)} {tuple(getattr(faces, 'shape', ()))}")
    if vertices.shape[0] == 0 or faces.shape[0] == 0:
        raise ValueError(f"{name}: empty mesh ({vertices.shape[0]} vertices, {faces.shape[0]} faces); "
                         "need at least one triangle")
    if not torch.isfinite(vertices).all():
        raise ValueError(f"{name}: {int((~torch.isfinite(vertices)).any(1).sum())} vertices are not finite (nan/inf)")
    low, high = int(faces.min()), int(faces.max())
    if low < 0 or high >= vertices.shape[0]:
        raise ValueError(f"{name}: face indices span [{low}, {high}], allowed [0, {vertices.shape[0] - 1}] "
                         f"({vertices.shape[0]} vertices)")


def load_mesh(path: Union[str, Path]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Reads a triangle mesh: vertices float64 [V, 3], faces int64 [F, 3] (polygons fanned into
    triangles). .obj, .ply, .stl, .glb, .gltf through trimesh when it is installed (scenes are
    merged with their node transforms); without trimesh, a built-in reader handles .obj and .ply
    (ascii and binary)."""
    path = Path(path)
    extension = path.suffix.lower()
    if extension not in MESH_EXTENSIONS:
        raise ValueError(f"{path}: unsupported mesh format {extension or '(no extension)'!r}; "
                         f"allowed: {', '.join(MESH_EXTENSIONS)}")
    if not path.is_file():
        raise ValueError(f"mesh file not found: {path}")
    trimesh = _import_trimesh()
    if trimesh is not None:
        vertices, faces = _read_with_trimesh(trimesh, path)
    elif extension in _BUILTIN_READERS:
        vertices, faces = _BUILTIN_READERS[extension](path)
    else:
        raise ValueError(f"{path}: reading {extension} needs trimesh (pip install trimesh); "
                         f"without it only {', '.join(_BUILTIN_READERS)} can be read")
    vertices = torch.as_tensor(np.asarray(vertices, dtype=np.float64).reshape(-1, 3))
    faces = torch.as_tensor(np.asarray(faces, dtype=np.int64).reshape(-1, 3))
    _check_mesh(vertices, faces, str(path))
    if (vertices.max(0).values == vertices.min(0).values).all():
        raise ValueError(f"{path}: degenerate mesh, all {vertices.shape[0]} vertices are identical (zero extent)")
    return vertices, faces


def _import_trimesh():
    """The trimesh module, or None when it is not installed."""
    try:
        import trimesh
    except ImportError:
        return None
    return trimesh


def _read_with_trimesh(trimesh, path: Path):
    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
    except Exception as error:  # trimesh raises many types for malformed files
        raise ValueError(f"{path}: trimesh could not read it: {error}") from error
    if not hasattr(mesh, "faces"):
        raise ValueError(f"{path}: no triangles in it (trimesh read a {type(mesh).__name__})")
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


def _fan(polygons) -> List[List[int]]:
    """Polygons (sequences of corner indices) -> triangles (c0, ci, ci+1), as most readers do."""
    return [[polygon[0], polygon[i], polygon[i + 1]] for polygon in polygons for i in range(1, len(polygon) - 1)]


def _read_obj(path: Path):
    """Wavefront OBJ: ``v x y z`` and ``f a b c ...`` (1-based, negative = relative, ``a/t/n`` forms)."""
    vertices, polygons = [], []
    with open(path, "r", encoding="utf-8", errors="replace") as file:
        for line_number, line in enumerate(file, 1):
            words = line.split()
            try:
                if words and words[0] == "v":
                    if len(words) < 4:
                        raise ValueError("a vertex needs 3 coordinates")
                    vertices.append([float(word) for word in words[1:4]])
                elif words and words[0] == "f":
                    corners = [int(word.split("/")[0]) for word in words[1:]]
                    # 0 is no valid OBJ index: mapped to -1, which the range check reports
                    polygons.append([c - 1 if c >= 0 else len(vertices) + c for c in corners])
            except ValueError as error:
                raise ValueError(f"{path}:{line_number}: malformed OBJ line {line.strip()!r}: {error}") from None
    return vertices, _fan(polygons)


_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def _read_ply(path: Path):
    """PLY (ascii, binary little or big endian): the x, y, z of element ``vertex`` and the
    ``vertex_indices`` (or ``vertex_index``) lists of element ``face``."""
    data = path.read_bytes()
    header_end = data.find(b"end_header")
    if not data.startswith(b"ply") or header_end < 0:
        raise ValueError(f"{path}: not a PLY file (no 'ply' ... 'end_header' header)")
    encoding, elements = None, []  # elements: (name, count, [(property, type) or (property, count type, item type)])
    try:
        for line in data[:header_end].decode("ascii", errors="replace").splitlines():
            words = line.split()
            if words and words[0] == "format":
                encoding = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}[words[1]]
            elif words and words[0] == "element":
                elements.append((words[1], int(words[2]), []))
            elif words and words[0] == "property":
                types = [_PLY_TYPES[word] for word in words[2:4]] if words[1] == "list" else [_PLY_TYPES[words[1]]]
                elements[-1][2].append((words[-1], *types))
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(f"{path}: malformed PLY header ({error!r})") from None
    body = data[data.index(b"\n", header_end) + 1:]
    reader = _PlyAscii(body) if encoding is None else _PlyBinary(body, encoding)
    vertices, faces = None, []
    try:
        for name, count, properties in elements:
            rows = reader.element(count, properties)
            if name == "vertex":
                vertices = np.stack([np.asarray(rows[axis], dtype=np.float64) for axis in "xyz"], 1)
            elif name == "face":
                key = "vertex_indices" if "vertex_indices" in rows else "vertex_index"
                faces = _fan(rows[key]) if isinstance(rows[key], list) else _fan_array(rows[key])
            if vertices is not None and name == "face":
                break
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(f"{path}: malformed PLY data ({error!r}); need element 'vertex' (x, y, z) "
                         "and element 'face' (vertex_indices)") from None
    return ([] if vertices is None else vertices), faces


def _fan_array(polygons: np.ndarray) -> np.ndarray:
    """[F, k] polygons of one size -> [F * (k - 2), 3] fanned triangles."""
    return np.stack([np.stack([polygons[:, 0], polygons[:, i], polygons[:, i + 1]], 1)
                     for i in range(1, polygons.shape[1] - 1)], 1).reshape(-1, 3)


class _PlyAscii:
    """Reads PLY ascii elements, a whitespace-separated token stream."""

    def __init__(self, body: bytes):
        self.tokens, self.position = body.split(), 0

    def element(self, count, properties):
        """{property: array [count] for scalars, [count, k] for lists of one size k, else a list}."""
        if count == 0:
            return {prop[0]: [] for prop in properties}
        widths = []  # tokens per property in the first row; every row has them when lists share a size
        for prop in properties:
            widths.append(1 if len(prop) == 2 else 1 + int(self.tokens[self.position + sum(widths)]))
        width = sum(widths)
        block = np.array(self.tokens[self.position:self.position + count * width])
        if block.size == count * width and all(
                len(prop) == 2 or (block.reshape(count, width)[:, sum(widths[:i])].astype(np.int64) == widths[i] - 1).all()
                for i, prop in enumerate(properties)):
            block = block.reshape(count, width)
            self.position += count * width
            columns, rows = np.split(block, np.cumsum(widths)[:-1], 1), {}
            for prop, column in zip(properties, columns):
                rows[prop[0]] = column[:, 0].astype(prop[1]) if len(prop) == 2 else column[:, 1:].astype(prop[2])
            return rows
        rows = {prop[0]: [] for prop in properties}
        for _ in range(count):  # polygons of several sizes: row by row
            for prop in properties:
                size = 1 if len(prop) == 2 else int(self.tokens[self.position])
                start = self.position + (len(prop) == 3)
                values = np.array(self.tokens[start:start + size]).astype(prop[-1])
                rows[prop[0]].append(values[0] if len(prop) == 2 else values)
                self.position = start + size
        return rows


class _PlyBinary:
    """Reads PLY binary elements with numpy record dtypes."""

    def __init__(self, body: bytes, byte_order: str):
        self.body, self.position, self.order = body, 0, byte_order

    def element(self, count, properties):
        """{property: array [count] for scalars, [count, k] for lists of one size k, else a list}."""
        if count == 0:
            return {prop[0]: [] for prop in properties}
        fields = []  # the first row's layout; every row has it when lists share a size
        for prop in properties:
            if len(prop) == 2:
                fields.append((prop[0], self.order + prop[1]))
            else:
                at = self.position + (np.dtype(fields).itemsize if fields else 0)
                size = int(np.frombuffer(self.body, self.order + prop[1], 1, at)[0])
                fields += [(prop[0] + " count", self.order + prop[1]), (prop[0], self.order + prop[2], (size,))]
        record = np.dtype(fields)
        if self.position + count * record.itemsize <= len(self.body):
            table = np.frombuffer(self.body, record, count, self.position)
            if all((table[prop[0] + " count"] == table.dtype[prop[0]].shape[0]).all()
                   for prop in properties if len(prop) == 3):
                self.position += count * record.itemsize
                return {prop[0]: table[prop[0]] for prop in properties}
        rows = {prop[0]: [] for prop in properties}
        for _ in range(count):  # polygons of several sizes: row by row
            for prop in properties:
                size = 1
                if len(prop) == 3:
                    kind = np.dtype(self.order + prop[1])
                    size = int(np.frombuffer(self.body, kind, 1, self.position)[0])
                    self.position += kind.itemsize
                kind = np.dtype(self.order + prop[-1])
                values = np.frombuffer(self.body, kind, size, self.position)
                rows[prop[0]].append(values[0] if len(prop) == 2 else values)
                self.position += kind.itemsize * size
        return rows


_BUILTIN_READERS = {".obj": _read_obj, ".ply": _read_ply}
