"""The coordinate frames TRELLIS data meets, and the transforms between them, in one place.

All frames share the origin, the unit (1 = the TRELLIS unit cube's side, written as 1 m) and the
x axis (the asset's right); each is right-handed, so every transform is a proper rotation:

| frame | up | front (towards a viewer) | where |
| --- | --- | --- | --- |
| ``trellis`` | +Z | -Y | the models, voxel grids, training data, ``frame='trellis'`` edit regions |
| ``gltf`` | +Y | +Z | GLB / OBJ files, ComfyUI MESH and VOXEL (via core VoxelToMesh), edit regions by default, ``.spz`` ("RUB") |
| ``ply`` | -Y | -Z | the official 3DGS PLY and ``.splat`` ("RDF", OpenCV), ComfyUI SPLAT |

Why: TRELLIS was trained on Objaverse glTF assets imported into Blender, whose importer maps glTF
(x, y, z) to (x, -z, y); the official ``to_glb`` undoes that, and the official ``save_ply`` writes
(x, -z, y) of TRELLIS, the frame 3DGS tools expect. ``.spz`` stores RUB, which is the glTF frame.

Matrices act on row vectors: ``points_dst = points_src @ transform(src, dst)``.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

__all__ = ["FRAMES", "UP", "FRONT", "transform", "convert", "TRELLIS_TO_GLTF", "GLTF_TO_TRELLIS", "TRELLIS_TO_PLY",
           "to_gltf_frame", "from_gltf_frame", "UP_AXES", "mesh_file_frame"]

FRAMES = ("trellis", "gltf", "ply")
#: Each frame's up and front (the direction the asset faces) as unit vectors of that frame.
UP: Dict[str, tuple] = {"trellis": (0, 0, 1), "gltf": (0, 1, 0), "ply": (0, -1, 0)}
FRONT: Dict[str, tuple] = {"trellis": (0, -1, 0), "gltf": (0, 0, 1), "ply": (0, 0, -1)}

#: (x, y, z) -> (x, z, -y): TRELLIS to glTF (the official ``to_glb``).
TRELLIS_TO_GLTF = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
#: (x, y, z) -> (x, -z, y), the inverse (the transpose, as for every rotation).
GLTF_TO_TRELLIS = TRELLIS_TO_GLTF.T.copy()
#: (x, y, z) -> (x, -z, y): TRELLIS to the 3DGS PLY frame (the official ``save_ply``).
TRELLIS_TO_PLY = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

_TO_TRELLIS = {"trellis": np.eye(3), "gltf": GLTF_TO_TRELLIS, "ply": TRELLIS_TO_PLY.T.copy()}

#: How a mesh file's up axis is chosen: 'auto' (by format, ``mesh_file_frame``), or 'y' / 'z' for every file.
UP_AXES = ("auto", "y", "z")
# The official toolkit's Blender importers turn these formats Z up (they are Y up by convention);
# .ply and .stl are taken as stored.
_Y_UP_FORMATS = (".glb", ".gltf", ".obj")


def transform(src: str, dst: str) -> np.ndarray:
    """float64 [3, 3] row-vector rotation taking ``src`` frame coordinates to ``dst``'s."""
    for name, frame in (("src", src), ("dst", dst)):
        if frame not in FRAMES:
            raise ValueError(f"{name} frame must be one of {', '.join(FRAMES)}, got {frame!r}")
    return _TO_TRELLIS[src] @ _TO_TRELLIS[dst].T


def convert(points, src: str, dst: str):
    """Points [..., 3] (numpy or torch; float kept, integers become float64) from frame ``src``
    to frame ``dst``."""
    matrix = transform(src, dst)
    if hasattr(points, "detach"):
        import torch
        dtype = points.dtype if points.is_floating_point() else torch.float64
        return points.to(dtype) @ torch.as_tensor(matrix, dtype=dtype, device=points.device)
    array = np.asarray(points)
    return (array @ matrix).astype(array.dtype if array.dtype.kind == "f" else np.float64)


def mesh_file_frame(path, up: str = "auto") -> str:
    """The frame of a mesh file's vertices: 'gltf' (Y up) or 'trellis' (Z up). ``up='auto'``: Y up
    for .glb/.gltf/.obj, Z up for .ply/.stl, as the official toolkit reads them (the training data
    and every mesh input of the CLI and the nodes follow this rule)."""
    if up not in UP_AXES:
        raise ValueError(f"up must be one of {', '.join(UP_AXES)}, got {up!r}")
    if up == "auto":
        up = "y" if str(path).lower().endswith(_Y_UP_FORMATS) else "z"
    return "gltf" if up == "y" else "trellis"


def to_gltf_frame(vertices):
    """TRELLIS frame -> glTF frame, [V, 3] numpy or torch (``convert(v, 'trellis', 'gltf')``)."""
    return convert(vertices, "trellis", "gltf")


def from_gltf_frame(vertices):
    """glTF frame -> TRELLIS frame, the inverse of :func:`to_gltf_frame`."""
    return convert(vertices, "gltf", "trellis")
