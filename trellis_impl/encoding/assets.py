"""Textured meshes for encoding: geometry plus a base colour per pixel of the surface.

A :class:`TexturedMesh` keeps the file's vertices and faces exactly as ``readers.load_mesh``
reads them (the same arrays, so the same normalisation and voxels), and its appearance per face
corner, so that per-face colours and per-part materials need no vertex splitting:

    base colour = corner colour (interpolated) x texture(uv) where the face has a texture,

in display (sRGB) values in [0, 1]. Where a file gives them, the corner colour is the material's
base colour factor (glTF ``baseColorFactor``; OBJ ``Kd`` when there is no ``map_Kd``, as
Blender's importer uses it) times the vertex colour; a face colour
counts as the colour of its three corners; a surface without any colour is neutral grey 0.5.
There is no colour management (Blender multiplies factors and textures in linear space) and
texture alpha is ignored (surfaces are opaque).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List, Optional, Union

import numpy as np
import torch

from ..pipelines.voxelize import normalize_vertices
from ..readers import check_mesh, check_mesh_path

__all__ = ["TexturedMesh", "load_textured_mesh", "NEUTRAL_GREY"]

NEUTRAL_GREY = 0.5


@dataclass
class TexturedMesh:
    """A triangle mesh with its base colour.

    vertices: float64 [V, 3] (any frame; ``normalized()`` brings them into the unit cube);
    faces: int64 [F, 3]; corner_colors: float32 [F, 3 corners, 3] RGB in [0, 1];
    corner_uv: float32 [F, 3, 2] or None, texture coordinates in the glTF convention (u right,
    v down from the image's top-left corner, as ``render.mesh_raster.texture`` samples);
    textures: float32 [H, W, 3] images in [0, 1]; face_texture: int64 [F], the texture of each
    face (-1: none)."""
    vertices: torch.Tensor
    faces: torch.Tensor
    corner_colors: torch.Tensor
    corner_uv: Optional[torch.Tensor] = None
    textures: List[torch.Tensor] = field(default_factory=list)
    face_texture: Optional[torch.Tensor] = None

    def __post_init__(self):
        check_mesh(self.vertices, self.faces, "mesh")
        faces = self.faces.shape[0]
        if tuple(self.corner_colors.shape) != (faces, 3, 3):
            raise ValueError(f"mesh: corner_colors must be [F={faces}, 3, 3], got {tuple(self.corner_colors.shape)}")
        if self.face_texture is None:
            self.face_texture = torch.full((faces,), -1, dtype=torch.long)
        if tuple(self.face_texture.shape) != (faces,):
            raise ValueError(f"mesh: face_texture must be [F={faces}], got {tuple(self.face_texture.shape)}")
        textured = self.face_texture >= 0
        if bool(textured.any()):
            if self.corner_uv is None or tuple(self.corner_uv.shape) != (faces, 3, 2):
                raise ValueError("mesh: textured faces need corner_uv [F, 3, 2]")
            if int(self.face_texture.max()) >= len(self.textures):
                raise ValueError(f"mesh: face_texture names texture {int(self.face_texture.max())} of "
                                 f"{len(self.textures)}")

    @classmethod
    def from_arrays(cls, vertices, faces, vertex_colors=None, uv=None, texture=None) -> "TexturedMesh":
        """From per-vertex arrays: vertices [V, 3], faces [F, 3], optional vertex_colors [V, 3 or 4]
        (0..1 floats or 0..255 ints), uv [V, 2] (glTF convention) with texture [H, W, 3 or 4]
        (0..1 floats or uint8). Without colours the surface is grey 0.5."""
        vertices = torch.as_tensor(np.asarray(vertices), dtype=torch.float64)
        faces = torch.as_tensor(np.asarray(faces), dtype=torch.long)
        check_mesh(vertices, faces, "mesh")
        colors = (torch.full((vertices.shape[0], 3), NEUTRAL_GREY) if vertex_colors is None
                  else _unit_colors(vertex_colors, "vertex_colors", vertices.shape[0]))
        textures, face_texture, corner_uv = [], None, None
        if texture is not None:
            if uv is None:
                raise ValueError("mesh: a texture needs uv [V, 2]")
            uv = torch.as_tensor(np.asarray(uv), dtype=torch.float32)
            if tuple(uv.shape) != (vertices.shape[0], 2):
                raise ValueError(f"mesh: uv must be [V={vertices.shape[0]}, 2], got {tuple(uv.shape)}")
            textures, corner_uv = [_texture_image(texture)], uv[faces]
            face_texture = torch.zeros(faces.shape[0], dtype=torch.long)
        return cls(vertices, faces, colors[faces], corner_uv, textures, face_texture)

    def normalized(self) -> "TexturedMesh":
        """The same mesh with ``normalize_vertices`` applied (unit cube, as the voxelisation)."""
        return replace(self, vertices=normalize_vertices(self.vertices))


def _unit_colors(colors, what: str, rows: int) -> torch.Tensor:
    """[rows, 3 or 4] colours (0..1 floats or 0..255 integers) -> float32 [rows, 3] in [0, 1]."""
    array = np.asarray(colors)
    if array.ndim != 2 or array.shape[0] != rows or array.shape[1] not in (3, 4):
        raise ValueError(f"mesh: {what} must be [{rows}, 3 or 4], got {list(array.shape)}")
    values = torch.as_tensor(array[:, :3].astype(np.float32))
    return (values / 255.0 if array.dtype.kind in "ui" else values).clamp(0.0, 1.0)


def _texture_image(image) -> torch.Tensor:
    """A PIL image or [H, W, C] array (uint8, or floats in [0, 1]) -> float32 [H, W, 3]."""
    if hasattr(image, "convert"):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or 0 in array.shape:
        raise ValueError(f"mesh: texture must be an image [H, W, 3 or 4], got {list(array.shape)}")
    values = torch.as_tensor(array[:, :, :3].astype(np.float32))
    if array.shape[2] == 1:
        values = values.expand(-1, -1, 3)
    return (values / 255.0 if array.dtype.kind in "ui" else values).clamp(0.0, 1.0).contiguous()


def _part_appearance(geometry, textures: List[torch.Tensor]):
    """(corner colours [F, 3, 3], corner uv [F, 3, 2] or None, texture index or -1) of one trimesh part."""
    faces = torch.as_tensor(np.asarray(geometry.faces, dtype=np.int64))
    rows = len(geometry.vertices)
    visual = geometry.visual
    colors = torch.full((rows, 3), NEUTRAL_GREY)
    if visual.kind == "vertex":
        colors = _unit_colors(visual.vertex_colors, "vertex colours", rows)
    elif visual.kind == "face":
        return _unit_colors(visual.face_colors, "face colours", len(faces))[:, None].expand(-1, 3, -1), None, -1
    elif visual.kind == "texture":
        material = visual.material
        factor = getattr(material, "baseColorFactor", None)
        image = getattr(material, "baseColorTexture", None)
        if factor is None and image is None:  # OBJ / simple material: map_Kd, else Kd (as Blender imports it)
            image = getattr(material, "image", None)
            factor = getattr(material, "diffuse", None) if image is None else None
        vertex_colors = getattr(visual, "vertex_attributes", {}).get("color")
        if vertex_colors is not None and len(vertex_colors) == rows:
            colors = _unit_colors(vertex_colors, "vertex colours", rows)
        elif factor is not None or image is not None:
            colors = torch.ones(rows, 3)
        if factor is not None:
            colors = colors * _unit_colors(np.asarray(factor).reshape(1, -1), "base colour factor", 1)
        uv = getattr(visual, "uv", None)
        if image is not None and uv is not None and len(uv) == rows:
            textures.append(_texture_image(image))
            corner_uv = torch.as_tensor(np.asarray(uv, dtype=np.float32))[faces]
            corner_uv[..., 1] = 1.0 - corner_uv[..., 1]  # trimesh keeps v up (OpenGL); textures are sampled v down
            return colors[faces], corner_uv, len(textures) - 1
    return colors[faces], None, -1


def load_textured_mesh(path: Union[str, Path], up: Optional[str] = None) -> TexturedMesh:
    """Read a mesh file with its base colour (.glb .gltf .obj .ply .stl, through trimesh).

    The vertices and faces are those ``readers.load_mesh`` returns for the file (the
    scene's parts with their node transforms, concatenated in order; no vertex merging), as stored
    (``up=None``) or turned into the TRELLIS frame (``up``: 'auto', 'y' or 'z', see
    ``frames.mesh_file_frame``). Per part: UV + base-colour texture and factor, vertex colours, face
    colours or material colour, else grey 0.5 (see the module docstring)."""
    path = check_mesh_path(path)
    if up is not None:
        from dataclasses import replace

        from ..frames import convert, mesh_file_frame
        mesh = load_textured_mesh(path)
        return replace(mesh, vertices=convert(mesh.vertices, mesh_file_frame(path, up), "trellis"))
    try:
        import trimesh
    except ImportError:
        raise ValueError("reading textured meshes needs trimesh (pip install trimesh)") from None
    try:
        scene = trimesh.load_scene(str(path), process=False)
    except Exception as error:  # trimesh raises many types for malformed files
        raise ValueError(f"{path}: trimesh could not read it: {error}") from error
    parts = [g for g in scene.dump() if isinstance(g, trimesh.Trimesh)]
    if not parts or not any(len(g.faces) for g in parts):
        raise ValueError(f"{path}: no triangles in it")
    vertices, faces, corner_colors, corner_uv, face_texture, textures = [], [], [], [], [], []
    offset = 0
    for part in parts:
        colors, uv, texture_index = _part_appearance(part, textures)
        part_faces = torch.as_tensor(np.asarray(part.faces, dtype=np.int64)).reshape(-1, 3)
        vertices.append(torch.as_tensor(np.asarray(part.vertices, dtype=np.float64)).reshape(-1, 3))
        faces.append(part_faces + offset)
        corner_colors.append(colors.reshape(-1, 3, 3))
        corner_uv.append(torch.zeros(len(part_faces), 3, 2) if uv is None else uv)
        face_texture.append(torch.full((len(part_faces),), texture_index, dtype=torch.long))
        offset += len(part.vertices)
    return TexturedMesh(torch.cat(vertices), torch.cat(faces), torch.cat(corner_colors).float().contiguous(),
                        torch.cat(corner_uv).float() if textures else None, textures, torch.cat(face_texture))
