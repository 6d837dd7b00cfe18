"""Reading mesh and point files, in one place: the one PLY reader (ascii and binary, scalar and
list properties: meshes and 3DGS Gaussians alike), OBJ, and trimesh for the other mesh formats.

``load_mesh`` returns a file's triangles as they are stored (no axis change: see
``trellis_impl/frames.py`` for which frame each format uses).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, NamedTuple, Tuple, Union

import numpy as np
import torch

__all__ = ["MESH_EXTENSIONS", "PlyFile", "read_ply", "check_mesh", "check_mesh_path", "load_mesh"]

MESH_EXTENSIONS = (".obj", ".ply", ".stl", ".glb", ".gltf")


class PlyFile(NamedTuple):
    """A PLY file: its header text (up to and including the ``end_header`` line) and, per element
    in file order, {property: values}: float / int arrays [N] for scalar properties, [N, k] for
    lists of one size k, else a list of N arrays (e.g. polygons of several sizes)."""
    header: str
    elements: Dict[str, Dict[str, object]]


def check_mesh(vertices, faces, name: str) -> None:
    """ValueError naming ``name`` unless vertices is a finite float [V >= 1, 3] tensor and faces an
    int [F >= 1, 3] tensor of indices into it."""
    def describe(value):
        return f"{value.dtype} {tuple(value.shape)}" if torch.is_tensor(value) else type(value).__name__

    if not (torch.is_tensor(vertices) and vertices.dim() == 2 and vertices.shape[1] == 3
            and vertices.is_floating_point()):
        raise ValueError(f"{name}: vertices must be a float tensor [V, 3], got {describe(vertices)}")
    if not (torch.is_tensor(faces) and faces.dim() == 2 and faces.shape[1] == 3
            and not faces.is_floating_point() and not faces.is_complex() and faces.dtype != torch.bool):
        raise ValueError(f"{name}: faces must be an int tensor [F, 3] of corner indices, got {describe(faces)}")
    if vertices.shape[0] == 0 or faces.shape[0] == 0:
        raise ValueError(f"{name}: empty mesh ({vertices.shape[0]} vertices, {faces.shape[0]} faces); "
                         "need at least one triangle")
    if not torch.isfinite(vertices).all():
        raise ValueError(f"{name}: {int((~torch.isfinite(vertices)).any(1).sum())} vertices are not finite (nan/inf)")
    low, high = int(faces.min()), int(faces.max())
    if low < 0 or high >= vertices.shape[0]:
        raise ValueError(f"{name}: face indices span [{low}, {high}], allowed [0, {vertices.shape[0] - 1}] "
                         f"({vertices.shape[0]} vertices)")


def check_mesh_path(path: Union[str, Path]) -> Path:
    """``path`` as a Path when it names an existing file of a supported mesh format (ValueError otherwise)."""
    path = Path(path)
    extension = path.suffix.lower()
    if extension not in MESH_EXTENSIONS:
        raise ValueError(f"{path}: unsupported mesh format {extension or '(no extension)'!r}; "
                         f"allowed: {', '.join(MESH_EXTENSIONS)}")
    if not path.is_file():
        raise ValueError(f"mesh file not found: {path}")
    return path


def load_mesh(path: Union[str, Path]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Reads a triangle mesh: vertices float64 [V, 3], faces int64 [F, 3] (polygons fanned into
    triangles). .obj, .ply, .stl, .glb, .gltf through trimesh when it is installed (scenes are
    merged with their node transforms); without trimesh, a built-in reader handles .obj and .ply
    (ascii and binary)."""
    path = check_mesh_path(path)
    extension = path.suffix.lower()
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
    check_mesh(vertices, faces, str(path))
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
    """(vertices [V, 3], faces [F, 3]) arrays of the file, a scene merged into one mesh."""
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


def read_ply(path: Union[str, Path]) -> PlyFile:
    """Every element of a PLY file (ascii, binary little or big endian; scalar and list
    properties). ValueError naming the file when it is not a PLY or is malformed or truncated."""
    path = Path(path)
    data = path.read_bytes()
    header_end = data.find(b"end_header")
    body_start = data.find(b"\n", max(header_end, 0)) + 1
    if not data.startswith(b"ply") or header_end < 0 or body_start == 0:
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
    body = data[body_start:]
    reader = _PlyAscii(body) if encoding is None else _PlyBinary(body, encoding)
    read = {}
    try:
        for name, count, properties in elements:
            read[name] = {key: _native(values) for key, values in reader.element(count, properties).items()}
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(f"{path}: malformed or truncated PLY data in element {name!r} ({error!r})") from None
    return PlyFile(data[:body_start].decode("ascii", errors="replace"), read)


def _native(values):
    """Arrays in the machine's byte order (torch takes no other); lists of rows as they are."""
    return values.astype(values.dtype.newbyteorder("=")) if isinstance(values, np.ndarray) else values


def _read_ply_mesh(path: Path):
    """The x, y, z of element ``vertex`` and the ``vertex_indices`` (or ``vertex_index``) lists of
    element ``face``."""
    elements = read_ply(path).elements
    try:
        vertex, face = elements.get("vertex"), elements.get("face", {})
        vertices = [] if vertex is None else np.stack([np.asarray(vertex[axis], dtype=np.float64) for axis in "xyz"], 1)
        faces = []
        if face:
            key = "vertex_indices" if "vertex_indices" in face else "vertex_index"
            faces = _fan(face[key]) if isinstance(face[key], list) else _fan_array(face[key])
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(f"{path}: malformed PLY data ({error!r}); need element 'vertex' (x, y, z) "
                         "and element 'face' (vertex_indices)") from None
    return vertices, faces


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
        if block.size == count * width:
            columns = np.split(block.reshape(count, width), np.cumsum(widths)[:-1], 1)
            if all(len(prop) == 2 or (column[:, 0].astype(np.int64) == column.shape[1] - 1).all()
                   for prop, column in zip(properties, columns)):
                self.position += count * width
                return {prop[0]: column[:, 0].astype(prop[1]) if len(prop) == 2 else column[:, 1:].astype(prop[2])
                        for prop, column in zip(properties, columns)}
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


_BUILTIN_READERS = {".obj": _read_obj, ".ply": _read_ply_mesh}
