"""Small mesh files for the encoding tests (written with trimesh): a box in every format, with a
texture, vertex colours, face colours or no colour."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

trimesh = pytest.importorskip("trimesh")

RED, BLUE = (220, 30, 30), (30, 40, 210)


def box(extents=(1.0, 0.6, 0.4)):
    return trimesh.creation.box(extents=extents)


def two_colour_texture(size: int = 16) -> np.ndarray:
    """uint8 [size, size, 3]: the top half (rows 0 .. size/2) red, the bottom half blue."""
    image = np.zeros((size, size, 3), np.uint8)
    image[: size // 2], image[size // 2:] = RED, BLUE
    return image


def textured_quad():
    """A 1 x 1 quad in the x-z plane (facing -y, Z up) whose texture's top (red) is at z > 0:
    trimesh keeps uv with v up, so the top vertices get v = 1."""
    from PIL import Image
    vertices = np.array([[-0.5, 0, -0.5], [0.5, 0, -0.5], [0.5, 0, 0.5], [-0.5, 0, 0.5]], float)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.fromarray(two_colour_texture()))
    return trimesh.Trimesh(vertices, faces, visual=trimesh.visual.TextureVisuals(uv=uv, material=material),
                           process=False)


def write(mesh, path: Path) -> Path:
    mesh.export(str(path))
    return path


def coloured_box(colour, kind: str = "vertex"):
    mesh = box()
    if kind == "vertex":
        mesh.visual.vertex_colors = np.tile([*colour, 255], (len(mesh.vertices), 1)).astype(np.uint8)
    else:
        mesh.visual.face_colors = np.tile([*colour, 255], (len(mesh.faces), 1)).astype(np.uint8)
    return mesh
