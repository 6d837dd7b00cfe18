"""Procedural coloured objects: meshes for a small demo training set, made here from primitives.

Each object is a function of (kind, seed) alone: a ``numpy.random.Generator`` seeded from both
draws its proportions, its options (a hat or not, round or square table...) and its colours, so
the same pair always gives the same vertices, colours and file bytes. An object is a few trimesh
primitives (boxes, spheres, cylinders, cones, tori, surfaces of revolution) in the TRELLIS frame:
Z up, the front (a car's bonnet, a house's door, a chair's seat) towards -Y. GLB files are written
in glTF's own frame (Y up, front +Z), so any viewer shows them upright and ``prepare-data`` turns
them back Z up; PLY files keep the TRELLIS frame, which prepare-data takes as it is.
The whole object is then centred on its bounding box and scaled so its largest side is 1: it
fills the unit cube [-0.5, 0.5]^3.

Every part has one colour from a small palette with a random jitter, or a pattern (stripes,
checker, spots) of two colours per face of a finely tessellated part. Colours are stored as
vertex colours (sRGB, uint8); a patterned part has its own three vertices per face, so the
pattern stays sharp. Objects have at most ``MAX_FACES`` faces (a few thousand typically).

Split rule: ``split_of(kind, seed)`` is ``'held_out'`` when ``seed % 10 == 9`` and ``'train'``
otherwise, for every kind; ``write_procedural_meshes`` only takes seeds of the split asked for, so
held-out objects never enter a training folder made from a ``'train'`` set.
"""
from __future__ import annotations

import os
import tempfile
import zlib
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import trimesh

__all__ = ["OBJECT_KINDS", "MESH_FORMATS", "SPLITS", "MAX_FACES", "procedural_object", "object_name", "split_of",
           "object_plan", "write_procedural_meshes"]

OBJECT_KINDS = ("mushroom", "snowman", "table", "chair", "cup", "lamp", "tree", "bottle", "house", "car",
                "bench", "rocket", "teapot", "vase", "dumbbell")
MESH_FORMATS = ("glb", "ply")
SPLITS = ("train", "held_out")
MAX_FACES = 20000
HELD_OUT_MODULUS = 10  # seed % 10 == 9 is held out
# Called with ("objects", objects done, objects); may raise to interrupt.
WriteProgress = Callable[[str, int, int], None]

# A part of an object: vertices float64 [V, 3], faces int64 [F, 3], colours float64 [V, 3] in [0, 1].
Part = Tuple[np.ndarray, np.ndarray, np.ndarray]

_PALETTE = {
    "red": (0.80, 0.12, 0.10), "orange": (0.93, 0.47, 0.10), "yellow": (0.95, 0.80, 0.15),
    "green": (0.20, 0.60, 0.22), "dark_green": (0.10, 0.38, 0.15), "lime": (0.55, 0.78, 0.20),
    "blue": (0.15, 0.35, 0.80), "sky": (0.50, 0.74, 0.93), "navy": (0.10, 0.14, 0.40),
    "purple": (0.50, 0.25, 0.65), "pink": (0.93, 0.55, 0.70), "white": (0.94, 0.94, 0.92),
    "cream": (0.93, 0.87, 0.72), "grey": (0.55, 0.56, 0.58), "dark_grey": (0.22, 0.22, 0.24),
    "black": (0.07, 0.07, 0.08), "brown": (0.45, 0.28, 0.14), "wood": (0.66, 0.46, 0.27),
    "light_wood": (0.82, 0.66, 0.45), "teal": (0.10, 0.55, 0.55), "brick": (0.66, 0.25, 0.18),
    "gold": (0.85, 0.68, 0.25), "silver": (0.75, 0.76, 0.78), "bottle_green": (0.18, 0.45, 0.25),
    "amber": (0.60, 0.35, 0.10),
}
_BRIGHT = ("red", "orange", "yellow", "green", "blue", "sky", "purple", "pink", "teal", "lime")
_WOODS = ("wood", "light_wood", "brown")


# ---------------------------------------------------------------- colours and patterns

def _colour(rng: np.random.Generator, names: Sequence[str]) -> np.ndarray:
    """One palette colour among ``names`` with a small jitter: float64 [3] in [0, 1]."""
    base = np.asarray(_PALETTE[names[int(rng.integers(len(names)))]])
    return np.clip(base + rng.normal(0.0, 0.035, 3), 0.0, 1.0)


def _contrast(rng: np.random.Generator, colour: np.ndarray, names: Sequence[str] = ("white", "black", *_BRIGHT)):
    """A palette colour clearly different from ``colour`` (for patterns)."""
    for _ in range(8):
        other = _colour(rng, names)
        if np.abs(other - colour).sum() > 0.6:
            return other
    return np.where(colour.mean() > 0.5, 0.08, 0.94) * np.ones(3)


def _face_pattern(rng: np.random.Generator, mesh: trimesh.Trimesh, base: np.ndarray, accent: np.ndarray,
                  style: str, cells: int, around: bool) -> np.ndarray:
    """float64 [F, 3] face colours of ``style`` over the mesh's own (local) bounding box.

    stripes: ``cells`` horizontal bands (along Z); bars: 4, 8 or 16 vertical bands around the Z
    axis; checker: ``cells`` rows by bars around Z (``around``) or a 3D checkerboard of ``cells``
    per side of the box; spots: 4-12 discs of about 1 / ``cells`` of the largest side. A face
    takes the cell of its vertices' lowest coordinates (and of its centre's angle), which both
    triangles of a grid quad share, so cell borders follow the tessellation's rows and columns
    (32- or 48-section lathes, boxes subdivided into 8 per side) without zigzags."""
    low, extent = mesh.bounds[0], np.maximum(np.ptp(mesh.bounds, axis=0), 1e-12)
    cell = np.floor((mesh.triangles.min(1) - low) / extent * cells + 1e-6).astype(np.int64)
    centres = mesh.triangles_center
    columns = 2 ** int(rng.integers(2, 5))
    column = np.floor((np.arctan2(centres[:, 1], centres[:, 0]) + np.pi) / (2 * np.pi) * columns + 1e-6)
    if style == "stripes":
        on = cell[:, 2] % 2 == 1
    elif style == "bars":
        on = column.astype(np.int64) % 2 == 1
    elif style == "checker":
        on = (cell[:, 2] + (column.astype(np.int64) if around else cell[:, 0] + cell[:, 1])) % 2 == 1
    elif style == "spots":
        spots = centres[rng.choice(len(centres), size=int(rng.integers(4, 13)), replace=len(centres) < 13)]
        radius = extent.max() / cells * rng.uniform(0.6, 1.2, len(spots))
        distance = np.linalg.norm(centres[:, None] - spots[None], axis=2)
        on = (distance < radius[None]).any(1)
    else:
        raise ValueError(f"pattern style must be stripes, bars, checker or spots, got {style!r}")
    return np.where(on[:, None], accent[None], base[None])


def _solid(mesh: trimesh.Trimesh, colour: np.ndarray) -> Part:
    vertices = np.asarray(mesh.vertices, np.float64)
    return vertices, np.asarray(mesh.faces, np.int64), np.tile(colour, (len(vertices), 1))


def _per_face(mesh: trimesh.Trimesh, face_colours: np.ndarray) -> Part:
    """A part with its own three vertices per face, so that face colours stay exact as vertex colours."""
    faces = np.asarray(mesh.faces, np.int64)
    vertices = np.asarray(mesh.vertices, np.float64)[faces].reshape(-1, 3)
    return vertices, np.arange(len(vertices), dtype=np.int64).reshape(-1, 3), np.repeat(face_colours, 3, axis=0)


def _painted(rng: np.random.Generator, mesh: trimesh.Trimesh, base: np.ndarray, styles: Dict[str, float],
             cells: int = 8, accent: Optional[np.ndarray] = None, transform: Optional[np.ndarray] = None,
             around: bool = True) -> Part:
    """The mesh in ``base`` or, with the probabilities ``styles`` (style -> p, the rest plain), a
    pattern of base and ``accent`` (``_face_pattern``) in the mesh's local frame; then ``transform``
    (4 x 4). ``around``: the mesh is round about its Z axis (a lathe, a torus), else box-like."""
    names = list(styles)
    draw = rng.random()
    cumulative = np.cumsum([styles[n] for n in names])
    style = names[int(np.searchsorted(cumulative, draw, side="right"))] if draw < cumulative[-1] else "plain"
    accent = _contrast(rng, base) if accent is None else accent
    if style == "plain":
        part = _solid(mesh, base)
    else:
        part = _per_face(mesh, _face_pattern(rng, mesh, base, accent, style, cells, around))
    return part if transform is None else _transformed(part, transform)


def _transformed(part: Part, transform: np.ndarray) -> Part:
    vertices, faces, colours = part
    return vertices @ transform[:3, :3].T + transform[:3, 3], faces, colours


# ---------------------------------------------------------------- geometry

def _pose(translation=(0.0, 0.0, 0.0), axis=None, angle: float = 0.0, scale=None) -> np.ndarray:
    """4 x 4: scale (per axis), then rotate by ``angle`` (radians) about ``axis``, then translate."""
    matrix = np.eye(4)
    if scale is not None:
        matrix[:3, :3] = np.diag(np.broadcast_to(np.asarray(scale, float), (3,)))
    if axis is not None:
        matrix = trimesh.transformations.rotation_matrix(angle, axis) @ matrix
    matrix[:3, 3] += np.asarray(translation, float)
    return matrix


def _placed(mesh: trimesh.Trimesh, transform: np.ndarray) -> trimesh.Trimesh:
    return trimesh.Trimesh(np.asarray(mesh.vertices) @ transform[:3, :3].T + transform[:3, 3], mesh.faces,
                           process=False)


def _resampled(points: np.ndarray, count: int) -> np.ndarray:
    """A polyline [N, 2] -> ``count`` points evenly spaced along it (its corners may be cut)."""
    steps = np.linalg.norm(np.diff(points, axis=0), axis=1)
    along = np.concatenate([[0.0], np.cumsum(steps)])
    target = np.linspace(0.0, along[-1], count)
    return np.stack([np.interp(target, along, points[:, 0]), np.interp(target, along, points[:, 1])], 1)


def _lathe(profile, sections: int = 32, rings: Optional[int] = None) -> trimesh.Trimesh:
    """Surface of revolution about +Z of ``profile`` [(radius, z), ...] (radius >= 0; a point on the
    axis closes the surface there), resampled to ``rings`` points when given."""
    points = np.asarray(profile, np.float64)
    if rings is not None:
        points = _resampled(points, rings)
    points[:, 0] = np.maximum(points[:, 0], 0.0)
    return trimesh.creation.revolve(points, sections=sections)


def _cylinder(radius: float, height: float, sections: int = 24, rings: Optional[int] = None,
              top_radius: Optional[float] = None) -> trimesh.Trimesh:
    """A closed (truncated) cone from z = 0 to z = height, ``rings`` rows of faces up its side when given."""
    top = radius if top_radius is None else top_radius
    if rings is None:
        return _lathe([(0, 0), (radius, 0), (top, height), (0, height)], sections)
    side = np.stack([np.linspace(radius, top, rings), np.linspace(0, height, rings)], 1)
    return _lathe(np.concatenate([[(0, 0)], side, [(0, height)]]), sections)


def _box(extents, subdivisions: int = 0) -> trimesh.Trimesh:
    mesh = trimesh.creation.box(extents=extents)
    for _ in range(subdivisions):
        mesh = mesh.subdivide()
    return mesh


def _sphere(radius: float, subdivisions: int = 2) -> trimesh.Trimesh:
    return trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)


def _hexahedron(corners) -> trimesh.Trimesh:
    """A closed solid from 8 corners [8, 3]: the bottom quad (0-3, counter-clockwise from above) then the top
    quad (4-7, above 0-3)."""
    quads = [(0, 3, 2, 1), (4, 5, 6, 7), (0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7)]
    faces = [f for a, b, c, d in quads for f in ((a, b, c), (a, c, d))]
    return trimesh.Trimesh(np.asarray(corners, float), np.asarray(faces), process=False)


def _tapered_box(bottom, top, height: float, top_shift=(0.0, 0.0)) -> trimesh.Trimesh:
    """A box from z = 0 to ``height`` whose bottom is ``bottom`` (x, y sizes) and top ``top``, the top
    centred at ``top_shift`` (x, y)."""
    (bx, by), (tx, ty), (sx, sy) = bottom, top, top_shift
    corners = [(-bx / 2, -by / 2, 0), (bx / 2, -by / 2, 0), (bx / 2, by / 2, 0), (-bx / 2, by / 2, 0),
               (sx - tx / 2, sy - ty / 2, height), (sx + tx / 2, sy - ty / 2, height),
               (sx + tx / 2, sy + ty / 2, height), (sx - tx / 2, sy + ty / 2, height)]
    return _hexahedron(corners)


def _half_torus(major: float, minor: float) -> trimesh.Trimesh:
    """The x >= 0 half of a torus about Z (for handles), in the x-z plane after a turn about X."""
    torus = trimesh.creation.torus(major, minor, major_sections=32, minor_sections=12)
    keep = torus.triangles_center[:, 0] >= -0.02 * major
    half = trimesh.Trimesh(torus.vertices, torus.faces[keep], process=False)
    half.remove_unreferenced_vertices()
    return _placed(half, _pose(axis=(1, 0, 0), angle=np.pi / 2))


def _assembled(parts: List[Part]) -> trimesh.Trimesh:
    """Concatenate the parts, centre the bounding box and scale its largest side to 1."""
    vertices = np.concatenate([p[0] for p in parts])
    offsets = np.cumsum([0] + [len(p[0]) for p in parts[:-1]])
    faces = np.concatenate([p[1] + o for p, o in zip(parts, offsets)])
    colours = np.concatenate([p[2] for p in parts])
    low, high = vertices.min(0), vertices.max(0)
    vertices = (vertices - (low + high) / 2) / (high - low).max()
    rgba = np.concatenate([np.round(np.clip(colours, 0, 1) * 255), np.full((len(colours), 1), 255)], 1)
    return trimesh.Trimesh(vertices, faces, vertex_colors=rgba.astype(np.uint8), process=False)


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


# ---------------------------------------------------------------- the kinds (units: about 1 high)

def _mushroom(rng: np.random.Generator) -> List[Part]:
    parts = _one_mushroom(rng)
    if rng.random() < 0.35:  # a small one beside it
        scale, angle = _uniform(rng, 0.35, 0.6), _uniform(rng, 0, 2 * np.pi)
        small = _one_mushroom(rng)
        shift = _pose((0.55 * np.cos(angle), 0.55 * np.sin(angle), 0.0), scale=scale)
        parts += [_transformed(p, shift) for p in small]
    return parts


def _one_mushroom(rng: np.random.Generator) -> List[Part]:
    stem_height, stem_radius = _uniform(rng, 0.35, 0.8), _uniform(rng, 0.07, 0.16)
    flare, taper = _uniform(rng, 1.0, 1.5), _uniform(rng, 0.7, 1.0)
    stem = _lathe([(0, 0), (stem_radius * flare, 0), (stem_radius * taper, stem_height), (0, stem_height)], 24, 16)
    cap_radius, cap_height = _uniform(rng, 0.28, 0.6), _uniform(rng, 0.15, 0.45)
    power, base = _uniform(rng, 0.5, 1.5), stem_height - 0.03
    t = np.linspace(0, np.pi / 2, 20)
    top = np.stack([cap_radius * np.sin(t), base + cap_height * np.cos(t) ** power], 1)
    under = [(cap_radius * 0.97, base - 0.02), (stem_radius * taper * 0.9, base + 0.1 * cap_height)]
    cap_colour = _colour(rng, ("red", "brown", "orange", "purple", "yellow", "amber"))
    stem_colour = _colour(rng, ("cream", "white", "light_wood"))
    return [_solid(stem, stem_colour),
            _painted(rng, _lathe(top, 48), cap_colour, {"spots": 0.5, "stripes": 0.1}, 8,
                     accent=_colour(rng, ("white", "cream"))),
            _solid(_lathe([top[-1], *under], 40, 6), np.clip(stem_colour * 0.85, 0, 1))]


def _snowman(rng: np.random.Generator) -> List[Part]:
    snow = _colour(rng, ("white",))
    radius, ratio = _uniform(rng, 0.35, 0.45), _uniform(rng, 0.65, 0.82)
    balls = 3 if rng.random() < 0.7 else 2
    radii = [radius * ratio ** i for i in range(balls)]
    centres = [radii[0]]
    for below, above in zip(radii, radii[1:]):  # each ball sinks a little into the one below
        centres.append(centres[-1] + 0.85 * (below + above))
    parts = [_transformed(_solid(_sphere(r, 3), snow), _pose((0, 0, z))) for r, z in zip(radii, centres)]
    head, head_z = radii[-1], centres[-1]
    middle, middle_z = radii[1], centres[1]
    black = _colour(rng, ("black", "dark_grey"))
    for side in (-1, 1):  # eyes
        direction = np.array([0.35 * side, -0.88, 0.3])
        parts.append(_transformed(_solid(_sphere(head * 0.1, 1), black),
                                  _pose(np.array([0, 0, head_z]) + head * direction / np.linalg.norm(direction))))
    nose = trimesh.creation.cone(head * _uniform(rng, 0.12, 0.2), head * _uniform(rng, 0.4, 0.9), sections=16)
    parts.append(_transformed(_solid(nose, _colour(rng, ("orange",))),
                              _pose((0, -head * 0.9, head_z), axis=(1, 0, 0), angle=np.pi / 2)))
    for k in range(int(rng.integers(2, 4)) if balls == 3 else 0):  # buttons on the middle ball
        pitch = 0.35 - 0.3 * k
        parts.append(_transformed(_solid(_sphere(middle * 0.08, 1), black),
                                  _pose((0, -middle * np.cos(pitch), middle_z + middle * np.sin(pitch)))))
    if rng.random() < 0.7:  # hat
        hat = _colour(rng, ("black", "red", "blue", "dark_green", "purple"))
        brim, crown = head * _uniform(rng, 0.9, 1.2), head * _uniform(rng, 0.55, 0.75)
        top = head_z + head * 0.8
        parts.append(_transformed(_solid(_cylinder(brim, head * 0.06, 32), hat), _pose((0, 0, top))))
        parts.append(_painted(rng, _cylinder(crown, head * _uniform(rng, 0.6, 1.1), 32, 13), hat,
                              {"stripes": 0.4}, 4, transform=_pose((0, 0, top))))
    if rng.random() < 0.6:  # scarf at the neck
        scarf = _colour(rng, _BRIGHT)
        neck = head_z - head * 0.85
        parts.append(_painted(rng, trimesh.creation.torus(head * 0.8, head * 0.2, 32, 12), scarf,
                              {"bars": 0.6, "checker": 0.2}, 4, transform=_pose((0, 0, neck))))
    if balls == 3 and rng.random() < 0.7:  # stick arms
        stick = _colour(rng, ("brown",))
        for side in (-1, 1):
            length, lift = middle * _uniform(rng, 1.2, 1.8), _uniform(rng, 0.2, 0.8)
            arm = _cylinder(middle * 0.05, length, 8)
            turn = _pose(axis=(0, 1, 0), angle=side * (np.pi / 2 - lift))
            parts.append(_transformed(_solid(arm, stick),
                                      _pose((side * middle * 0.8, 0, middle_z + middle * 0.2)) @ turn))
    return parts


def _legs(width: float, depth: float, height: float, thickness: float,
          colour: np.ndarray, round_legs: bool, inset: float) -> List[Part]:
    """Four vertical legs from z = 0 to ``height`` at the corners of a width x depth rectangle."""
    parts = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            at = (sx * (width / 2 - inset), sy * (depth / 2 - inset), 0)
            leg = _cylinder(thickness / 2, height, 12) if round_legs else _box((thickness, thickness, height))
            lift = (0, 0, 0) if round_legs else (0, 0, height / 2)
            parts.append(_transformed(_solid(leg, colour), _pose(np.add(at, lift))))
    return parts


def _table(rng: np.random.Generator) -> List[Part]:
    wood = _colour(rng, _WOODS + ("white", "dark_grey"))
    legs = np.clip(wood * _uniform(rng, 0.7, 0.9), 0, 1)  # a darker shade under the top
    height, thickness = _uniform(rng, 0.45, 0.8), _uniform(rng, 0.03, 0.08)
    cloth = _colour(rng, ("red", "blue", "green", "yellow"))
    styles = {"checker": 0.35}
    if rng.random() < 0.65:  # rectangular
        width = _uniform(rng, 0.8, 1.4)
        depth = width * _uniform(rng, 0.45, 1.0)
        top = _box((width, depth, thickness), 3)
        parts = [_painted(rng, top, wood, styles, 8, accent=cloth, transform=_pose((0, 0, height)), around=False)]
        parts += _legs(width, depth, height - thickness / 2, _uniform(rng, 0.04, 0.08), legs,
                       rng.random() < 0.4, _uniform(rng, 0.05, 0.12))
        return parts
    radius = _uniform(rng, 0.4, 0.7)
    top = _cylinder(radius, thickness, 48, 3)
    parts = [_painted(rng, top, wood, styles, 2, accent=cloth,
                      transform=_pose((0, 0, height - thickness / 2)))]
    if rng.random() < 0.5:  # pedestal
        parts.append(_solid(_cylinder(radius * 0.08, height, 16), legs))
        parts.append(_solid(_cylinder(radius * _uniform(rng, 0.35, 0.6), thickness, 32), legs))
    else:
        parts += _legs(radius * 1.2, radius * 1.2, height - thickness / 2, _uniform(rng, 0.04, 0.07), legs,
                       True, 0.0)
    return parts


def _chair(rng: np.random.Generator) -> List[Part]:
    frame = _colour(rng, _WOODS + ("black", "white", "red", "blue"))
    width, depth = _uniform(rng, 0.4, 0.55), _uniform(rng, 0.38, 0.55)
    height, thickness = _uniform(rng, 0.4, 0.5), _uniform(rng, 0.04, 0.08)
    leg = _uniform(rng, 0.03, 0.05)
    seat = _box((width, depth, thickness), 3)
    parts = [_painted(rng, seat, _colour(rng, _WOODS + _BRIGHT), {"checker": 0.25, "spots": 0.1}, 8,
                      transform=_pose((0, 0, height)), around=False)]
    round_legs = rng.random() < 0.3
    parts += _legs(width, depth, height - thickness / 2, leg, frame, round_legs, leg / 2)
    back_height = _uniform(rng, 0.35, 0.6)
    back_y, back_z = depth / 2 - leg / 2, height + thickness / 2
    for sx in (-1, 1):  # back posts (the back is at +Y: the seat faces -Y)
        parts.append(_transformed(_solid(_box((leg, leg, back_height)), frame),
                                  _pose((sx * (width / 2 - leg / 2), back_y, back_z + back_height / 2))))
    style = int(rng.integers(3))
    inner = width - 2 * leg
    if style == 0:  # solid panel
        panel_height = back_height * _uniform(rng, 0.4, 0.9)
        panel = _box((inner, leg * 0.8, panel_height), 3)
        parts.append(_painted(rng, panel, frame, {"stripes": 0.3}, 8,
                              transform=_pose((0, back_y, back_z + back_height - panel_height / 2)),
                              around=False))
    elif style == 1:  # vertical slats under a top rail
        count = int(rng.integers(2, 6))
        rail = back_height * 0.18
        parts.append(_transformed(_solid(_box((inner, leg, rail)), frame),
                                  _pose((0, back_y, back_z + back_height - rail / 2))))
        for k in range(count):
            x = -inner / 2 + inner * (k + 1) / (count + 1)
            parts.append(_transformed(_solid(_box((leg * 0.7, leg * 0.6, back_height - rail)), frame),
                                      _pose((x, back_y, back_z + (back_height - rail) / 2))))
    else:  # horizontal rails
        for k in range(int(rng.integers(2, 5))):
            z = back_z + back_height * (1 - 0.22 * k) - leg
            parts.append(_transformed(_solid(_box((inner, leg * 0.7, leg * 1.4)), frame), _pose((0, back_y, z))))
    if rng.random() < 0.3:  # armrests
        arm_z = height + _uniform(rng, 0.18, 0.25)
        for sx in (-1, 1):
            x = sx * (width / 2 - leg / 2)
            parts.append(_transformed(_solid(_box((leg * 1.3, depth, leg)), frame), _pose((x, 0, arm_z))))
            parts.append(_transformed(_solid(_box((leg, leg, arm_z - height)), frame),
                                      _pose((x, -depth / 2 + leg, (arm_z + height) / 2))))
    return parts


def _cup(rng: np.random.Generator) -> List[Part]:
    base_radius, height = _uniform(rng, 0.22, 0.35), _uniform(rng, 0.4, 0.85)
    top_radius, wall = base_radius * _uniform(rng, 0.95, 1.25), _uniform(rng, 0.02, 0.035)
    colour = _colour(rng, _BRIGHT + ("white", "cream", "black"))
    side = np.stack([np.linspace(base_radius, top_radius, 33), np.linspace(0, height, 33)], 1)  # 32 rows
    outer = _lathe(np.concatenate([[(0, 0)], side, [(top_radius - wall, height)]]), 48)
    inner = _lathe([(top_radius - wall, height), (base_radius - wall, wall), (0, wall)], 48, 24)
    parts = [_painted(rng, outer, colour, {"stripes": 0.25, "spots": 0.2, "bars": 0.1, "checker": 0.1}, 8),
             _solid(inner, _colour(rng, ("white", "cream")) if rng.random() < 0.5 else colour)]
    handle_major = height * _uniform(rng, 0.22, 0.32)
    mid_radius = (base_radius + top_radius) / 2
    parts.append(_transformed(_solid(_half_torus(handle_major, wall * _uniform(rng, 1.0, 1.8)), colour),
                              _pose((mid_radius - wall, 0, height * 0.52))))
    if rng.random() < 0.3:  # saucer
        saucer = base_radius * _uniform(rng, 1.6, 2.0)
        plate = _lathe([(0, 0), (saucer * 0.7, 0), (saucer, 0.05), (saucer * 0.95, 0.06), (0, 0.02)], 40)
        parts.append(_transformed(_solid(plate, _colour(rng, ("white", "cream") + _BRIGHT)), _pose((0, 0, -0.02))))
    return parts


def _lamp(rng: np.random.Generator) -> List[Part]:
    metal = _colour(rng, ("black", "silver", "gold", "dark_grey", "white"))
    base_radius = _uniform(rng, 0.14, 0.3)
    base_height = _uniform(rng, 0.03, 0.08)
    parts = [_solid(_lathe([(0, 0), (base_radius, 0), (base_radius * 0.8, base_height), (0, base_height * 1.4)],
                           32, 12), metal)]
    pole = _uniform(rng, 0.5, 1.2)
    parts.append(_solid(_cylinder(_uniform(rng, 0.012, 0.025), pole, 12), metal))
    shade_bottom = _uniform(rng, 0.18, 0.35)
    shade_top = shade_bottom * _uniform(rng, 0.45, 0.9)
    shade_height = _uniform(rng, 0.18, 0.38)
    shade_z = pole - shade_height * 0.45
    shade = _lathe([(shade_bottom, 0), (shade_top, shade_height)], 48, 17)  # an open frustum
    parts.append(_painted(rng, shade, _colour(rng, ("cream", "white", "red", "teal", "yellow", "navy", "pink")),
                          {"stripes": 0.2, "bars": 0.25, "spots": 0.1}, 8,
                          transform=_pose((0, 0, shade_z))))
    parts.append(_transformed(_solid(_sphere(shade_top * 0.5, 2), _colour(rng, ("yellow", "white"))),
                              _pose((0, 0, shade_z + shade_height * 0.35))))
    return parts


def _tree(rng: np.random.Generator) -> List[Part]:
    bark = _colour(rng, ("brown", "wood"))
    trunk_height, trunk_radius = _uniform(rng, 0.25, 0.55), _uniform(rng, 0.05, 0.1)
    parts = [_solid(_cylinder(trunk_radius, trunk_height + 0.1, 16, top_radius=trunk_radius * 0.75), bark)]
    leaves = _colour(rng, ("green", "dark_green", "lime") if rng.random() < 0.8 else ("orange", "yellow", "red"))
    if rng.random() < 0.5:  # conifer: stacked cones
        tiers, width = int(rng.integers(2, 5)), _uniform(rng, 0.3, 0.5)
        z, styles = trunk_height, {"spots": 0.3}
        for k in range(tiers):
            radius = width * (1 - 0.22 * k)
            height = radius * _uniform(rng, 1.0, 1.6)
            cone = _lathe([(radius, 0), (0, height)], 32, 14)
            parts.append(_painted(rng, cone, leaves, styles, 16,
                                  accent=_colour(rng, ("red", "yellow", "blue", "white")),
                                  transform=_pose((0, 0, z))))
            z += height * _uniform(rng, 0.45, 0.6)
        return parts
    crown_z, crown = trunk_height + _uniform(rng, 0.2, 0.35), _uniform(rng, 0.25, 0.4)
    fruit = _colour(rng, ("red", "orange", "yellow")) if rng.random() < 0.35 else None
    for k in range(int(rng.integers(3, 8))):
        offset = rng.normal(0, 1, 3) * np.array([1.0, 1.0, 0.6])
        offset = offset / np.linalg.norm(offset) * crown * _uniform(rng, 0.2, 0.7)
        radius = crown * _uniform(rng, 0.55, 0.9)
        centre = np.array([0, 0, crown_z]) + offset
        parts.append(_transformed(_solid(_sphere(radius, 2), leaves), _pose(centre)))
        if fruit is not None:
            for _ in range(int(rng.integers(1, 4))):
                direction = rng.normal(0, 1, 3)
                direction[2] = abs(direction[2]) * 0.3 - 0.2
                point = centre + radius * 0.97 * direction / np.linalg.norm(direction)
                parts.append(_transformed(_solid(_sphere(radius * 0.13, 1), fruit), _pose(point)))
    return parts


def _bottle(rng: np.random.Generator) -> List[Part]:
    radius, body = _uniform(rng, 0.12, 0.22), _uniform(rng, 0.4, 0.8)
    shoulder, neck_radius = _uniform(rng, 0.06, 0.22), radius * _uniform(rng, 0.28, 0.5)
    neck = _uniform(rng, 0.1, 0.3)
    t = np.linspace(0, np.pi / 2, 10)
    curve = np.stack([neck_radius + (radius - neck_radius) * np.cos(t), body + shoulder * np.sin(t)], 1)
    top = body + shoulder + neck
    profile = [(0, 0), (radius * 0.92, 0), (radius, 0.03), (radius, body), *curve[1:], (neck_radius, top),
               (0, top)]
    glass = _colour(rng, ("bottle_green", "amber", "blue", "sky", "grey", "red"))
    parts = [_solid(_lathe(profile, 32), glass)]
    cap_height = _uniform(rng, 0.03, 0.07)
    parts.append(_transformed(_solid(_cylinder(neck_radius * 1.15, cap_height, 24),
                                     _colour(rng, ("gold", "silver", "red", "black", "white"))),
                              _pose((0, 0, top - cap_height * 0.4))))
    if rng.random() < 0.75:  # label: an open band just outside the body
        low, high = body * _uniform(rng, 0.15, 0.35), body * _uniform(rng, 0.6, 0.85)
        band = _lathe([(radius * 1.012, 0), (radius * 1.012, high - low)], 48, 17)
        parts.append(_painted(rng, band, _colour(rng, ("white", "cream", "yellow", "red", "navy")),
                              {"stripes": 0.3, "checker": 0.2, "bars": 0.1}, 8,
                              transform=_pose((0, 0, low))))
    return parts


def _gable_roof(width: float, depth: float, height: float) -> trimesh.Trimesh:
    """A triangular prism along X: a ``width`` x ``depth`` base at z = 0, the ridge at z = ``height``."""
    corners = [(-width / 2, -depth / 2, 0), (width / 2, -depth / 2, 0), (width / 2, depth / 2, 0),
               (-width / 2, depth / 2, 0), (-width / 2, 0, height), (width / 2, 0, height)]
    faces = [(0, 2, 1), (0, 3, 2), (0, 1, 5), (0, 5, 4), (3, 4, 5), (3, 5, 2), (0, 4, 3), (1, 2, 5)]
    mesh = trimesh.Trimesh(np.asarray(corners, float), np.asarray(faces), process=False)
    for _ in range(3):
        mesh = mesh.subdivide()
    return mesh


def _house(rng: np.random.Generator) -> List[Part]:
    width, depth, walls = _uniform(rng, 0.6, 1.0), _uniform(rng, 0.5, 0.85), _uniform(rng, 0.4, 0.7)
    wall = _colour(rng, ("cream", "white", "yellow", "pink", "light_wood", "brick", "sky"))
    body = _box((width, depth, walls), 3)
    parts = [_painted(rng, body, wall, {"stripes": 0.2}, 8,
                      accent=np.clip(wall * 0.8, 0, 1), transform=_pose((0, 0, walls / 2)), around=False)]
    roof_colour = _colour(rng, ("brick", "dark_grey", "brown", "navy", "dark_green"))
    overhang, roof_height = _uniform(rng, 0.03, 0.08), _uniform(rng, 0.25, 0.5)
    if rng.random() < 0.7:
        roof = _gable_roof(width + 2 * overhang, depth + 2 * overhang, roof_height)
    else:  # pyramid: a four-sided cone, turned square to the walls and stretched over them
        square = _placed(_lathe([(1.0, 0), (0, roof_height)], 4, 10), _pose(axis=(0, 0, 1), angle=np.pi / 4))
        stretch = (width + 2 * overhang) / np.sqrt(2), (depth + 2 * overhang) / np.sqrt(2)
        roof = _placed(square, _pose(scale=(*stretch, 1.0)))
    parts.append(_painted(rng, roof, roof_colour, {"stripes": 0.6}, 8,
                          accent=np.clip(roof_colour * 0.7, 0, 1), transform=_pose((0, 0, walls)), around=False))
    door_width, door_height = width * _uniform(rng, 0.15, 0.25), walls * _uniform(rng, 0.5, 0.7)
    door_x = width * _uniform(rng, -0.25, 0.25)
    parts.append(_transformed(_solid(_box((door_width, 0.02, door_height)),
                                     _colour(rng, ("brown", "red", "blue", "dark_green", "wood"))),
                              _pose((door_x, -depth / 2 - 0.005, door_height / 2))))
    glass = _colour(rng, ("sky", "navy", "yellow"))
    window = walls * _uniform(rng, 0.18, 0.28)
    window_z = walls * _uniform(rng, 0.55, 0.7)
    front_side = -np.sign(door_x) if door_x != 0 else 1.0
    spots = [((front_side * width * 0.3, -depth / 2 - 0.005), (window, 0.02))]
    for sx in (-1, 1):
        for k in range(int(rng.integers(1, 3))):
            y = depth * (0.0 if k == 0 else 0.25) * (1 if k == 0 else -1)
            spots.append(((sx * (width / 2 + 0.005), y), (0.02, window)))
    if door_x + door_width / 2 < width * 0.3 - window / 2 or door_x - door_width / 2 > -width * 0.3 + window / 2:
        spots.append(((-front_side * width * 0.3, -depth / 2 - 0.005), (window, 0.02)))
    for (x, y), (sx, sy) in spots:
        parts.append(_transformed(_solid(_box((sx, sy, window)), glass), _pose((x, y, window_z))))
    if rng.random() < 0.5:  # chimney through the roof
        side = _uniform(rng, 0.06, 0.12)
        x = width * _uniform(rng, 0.15, 0.3) * (1 if rng.random() < 0.5 else -1)
        parts.append(_transformed(_solid(_box((side, side, roof_height * 0.9)), _colour(rng, ("brick", "grey"))),
                                  _pose((x, depth * 0.18, walls + roof_height * 0.6))))
    return parts


def _car(rng: np.random.Generator) -> List[Part]:
    length, width = _uniform(rng, 0.9, 1.3), _uniform(rng, 0.45, 0.6)
    wheel, tyre = _uniform(rng, 0.11, 0.17), _uniform(rng, 0.07, 0.11)
    body_height = _uniform(rng, 0.16, 0.28)
    paint = _colour(rng, _BRIGHT + ("white", "black", "silver", "navy"))
    floor = wheel * 0.75
    body = _box((width, length, body_height), 3)
    parts = [_painted(rng, body, paint, {"stripes": 0.1, "checker": 0.05}, 4,
                      transform=_pose((0, 0, floor + body_height / 2)), around=False)]
    cabin_length, cabin_height = length * _uniform(rng, 0.4, 0.6), _uniform(rng, 0.14, 0.24)
    cabin_y = length * _uniform(rng, 0.0, 0.12)
    cabin = _tapered_box((width * 0.92, cabin_length), (width * 0.78, cabin_length * _uniform(rng, 0.5, 0.8)),
                         cabin_height, (0, cabin_length * _uniform(rng, 0.0, 0.12)))
    glass = _colour(rng, ("navy", "dark_grey", "sky"))
    upward = np.abs(cabin.face_normals[:, 2]) > 0.85  # the roof keeps the paint, the sides are windows
    parts.append(_transformed(_per_face(cabin, np.where(upward[:, None], paint[None], glass[None])),
                              _pose((0, cabin_y, floor + body_height))))
    rim = _colour(rng, ("silver", "grey", "gold", "white"))
    for sx in (-1, 1):
        for sy in (-1, 1):
            turn = _pose((sx * (width / 2 - tyre * 0.35), sy * length * 0.32, wheel), axis=(0, 1, 0),
                         angle=sx * np.pi / 2)
            parts.append(_transformed(_solid(_cylinder(wheel, tyre, 24), _colour(rng, ("black",))),
                                      turn @ _pose((0, 0, -tyre / 2))))
            parts.append(_transformed(_solid(_cylinder(wheel * 0.55, tyre * 0.15, 16), rim),
                                      turn @ _pose((0, 0, tyre / 2 - tyre * 0.05))))
    lamp_z = floor + body_height * 0.65
    for sx in (-1, 1):
        parts.append(_transformed(_solid(_box((width * 0.18, 0.02, body_height * 0.22)),
                                         _colour(rng, ("yellow", "white"))),
                                  _pose((sx * width * 0.32, -length / 2 - 0.005, lamp_z))))
        parts.append(_transformed(_solid(_box((width * 0.16, 0.02, body_height * 0.2)), _colour(rng, ("red",))),
                                  _pose((sx * width * 0.32, length / 2 + 0.005, lamp_z))))
    return parts


def _bench(rng: np.random.Generator) -> List[Part]:
    length, depth, height = _uniform(rng, 1.0, 1.6), _uniform(rng, 0.3, 0.45), _uniform(rng, 0.35, 0.45)
    slat_colour = _colour(rng, _WOODS + ("green", "red", "blue", "white"))
    metal = _colour(rng, ("black", "dark_grey", "dark_green", "silver"))
    count = int(rng.integers(3, 6))
    gap = depth / count
    parts: List[Part] = []
    for k in range(count):
        y = -depth / 2 + gap * (k + 0.5)
        parts.append(_transformed(_solid(_box((length, gap * 0.8, 0.035)), slat_colour), _pose((0, y, height))))
    leg_width = _uniform(rng, 0.04, 0.07)
    ends = length / 2 - _uniform(rng, 0.05, 0.15)
    for sx in (-1, 1):  # a frame at each end
        for sy in (-1, 1):
            parts.append(_transformed(_solid(_box((leg_width, leg_width, height)), metal),
                                          _pose((sx * ends, sy * (depth / 2 - leg_width / 2), height / 2))))
        parts.append(_transformed(_solid(_box((leg_width, depth, leg_width)), metal),
                                      _pose((sx * ends, 0, height - 0.03))))
    if rng.random() < 0.75:  # backrest at +Y, leaning back
        back_height, lean = _uniform(rng, 0.25, 0.45), _uniform(rng, 0.05, 0.3)
        rails = int(rng.integers(2, 4))
        tilt = _pose(axis=(1, 0, 0), angle=-lean)
        for k in range(rails):
            z = back_height * (k + 0.6) / rails
            parts.append(_transformed(_solid(_box((length, 0.03, back_height / rails * 0.7)), slat_colour),
                                          _pose((0, depth / 2, height)) @ tilt @ _pose((0, 0, z))))
        for sx in (-1, 1):
            parts.append(_transformed(_solid(_box((leg_width, leg_width, back_height * 1.05)), metal),
                                          _pose((sx * ends, depth / 2 + 0.02, height)) @ tilt
                                          @ _pose((0, 0, back_height * 0.52))))
    return parts


def _rocket(rng: np.random.Generator) -> List[Part]:
    radius, body = _uniform(rng, 0.1, 0.18), _uniform(rng, 0.55, 1.0)
    nose, power = _uniform(rng, 0.2, 0.45), _uniform(rng, 0.4, 0.8)
    t = np.linspace(0, 1, 14)
    ogive = np.stack([radius * (1 - t) ** power, body + nose * t], 1)
    hull = _colour(rng, ("white", "silver", "red", "sky", "yellow"))
    parts = [_painted(rng, _cylinder(radius, body, 32, 25), hull, {"checker": 0.25, "stripes": 0.25, "bars": 0.1}, 8),
             _solid(_lathe([(radius, body), *ogive[1:]], 32), _colour(rng, ("red", "navy", "black", "orange")))]
    accent = _colour(rng, ("red", "navy", "black", "orange", "blue"))
    fins, span, fin_height = int(rng.integers(3, 5)), radius * _uniform(rng, 0.6, 1.2), body * _uniform(rng, 0.2, 0.35)
    sweep = _uniform(rng, 0.0, 0.5)
    for k in range(fins):
        fin = _hexahedron([(radius * 0.8, -0.01, 0), (radius + span, -0.01, -fin_height * sweep * 0.5),
                           (radius + span, 0.01, -fin_height * sweep * 0.5), (radius * 0.8, 0.01, 0),
                           (radius * 0.8, -0.01, fin_height), (radius + span, -0.01, fin_height * (0.5 - sweep * 0.5)),
                           (radius + span, 0.01, fin_height * (0.5 - sweep * 0.5)), (radius * 0.8, 0.01, fin_height)])
        parts.append(_transformed(_solid(fin, accent), _pose(axis=(0, 0, 1), angle=np.pi / 4 + 2 * np.pi * k / fins)))
    nozzle = _lathe([(radius * 0.5, 0), (radius * 0.75, -radius * 0.6)], 24, 6)
    parts.append(_solid(nozzle, _colour(rng, ("dark_grey", "grey"))))
    window_z = body * _uniform(rng, 0.6, 0.8)
    window = _cylinder(radius * 0.35, 0.04, 24)
    parts.append(_transformed(_solid(window, _colour(rng, ("sky", "navy"))),
                              _pose((0, -radius + 0.025, window_z), axis=(1, 0, 0), angle=np.pi / 2)))
    return parts


def _teapot(rng: np.random.Generator) -> List[Part]:
    radius, height = _uniform(rng, 0.3, 0.45), _uniform(rng, 0.35, 0.6)
    t = np.linspace(0, np.pi, 28)
    flat = _uniform(rng, 0.7, 0.9)
    body = np.stack([radius * np.sin(t) * (1 - 0.15 * np.cos(t)), height * (1 - np.cos(t)) / 2], 1)
    body[:, 0] = np.where(t > np.pi * flat, np.maximum(body[:, 0], radius * 0.45), body[:, 0])
    body[-1, 0] = 0.0
    china = _colour(rng, _BRIGHT + ("white", "cream", "navy"))
    parts = [_painted(rng, _lathe(body, 48), china, {"spots": 0.25, "stripes": 0.15, "bars": 0.1}, 8)]
    lid_radius = radius * 0.45
    lid = _lathe([(lid_radius * 1.05, 0), (lid_radius * 0.7, height * 0.12), (0, height * 0.15)], 32, 8)
    trim = _colour(rng, ("gold", "white", "black") + _BRIGHT)
    parts.append(_transformed(_solid(lid, trim), _pose((0, 0, height * 0.98))))
    parts.append(_transformed(_solid(_sphere(radius * 0.08, 2), trim), _pose((0, 0, height * 1.15))))
    tilt, spout = _uniform(rng, 0.5, 1.0), _uniform(rng, 0.3, 0.5)
    spout_mesh = _cylinder(radius * 0.14, spout, 16, top_radius=radius * 0.07)  # open ends are hidden anyway
    parts.append(_transformed(_solid(spout_mesh, china),
                              _pose((radius * 0.75, 0, height * 0.35), axis=(0, 1, 0), angle=tilt)))
    parts.append(_transformed(_solid(_half_torus(height * 0.28, radius * 0.05), china),
                              _pose((-radius * 0.85, 0, height * 0.5), axis=(0, 0, 1), angle=np.pi)))
    return parts


def _vase(rng: np.random.Generator) -> List[Part]:
    height, base = _uniform(rng, 0.6, 1.2), _uniform(rng, 0.12, 0.25)
    knots = np.concatenate([[base], base * rng.uniform(0.5, 1.8, 4)])
    z = np.linspace(0, height, 40)
    smooth = np.interp(z, np.linspace(0, height, len(knots)), knots)
    smooth = np.convolve(np.pad(smooth, 4, mode="edge"), np.ones(9) / 9, mode="valid")  # round the knots
    wall = 0.02
    outer = np.stack([smooth, z], 1)
    inner_depth = height * _uniform(rng, 0.15, 0.35)
    profile = np.concatenate([[(0, 0)], outer, [(smooth[-1] - wall, height),
                                                (smooth[-1] - wall, height - inner_depth), (0, height - inner_depth)]])
    colour = _colour(rng, _BRIGHT + ("white", "navy", "brick", "gold", "teal"))
    parts = [_painted(rng, _lathe(profile, 48), colour, {"stripes": 0.25, "bars": 0.15, "checker": 0.15,
                                                         "spots": 0.15}, 10)]
    return parts


def _dumbbell(rng: np.random.Generator) -> List[Part]:
    handle, grip = _uniform(rng, 0.5, 0.8), _uniform(rng, 0.03, 0.05)
    weight_colour = _colour(rng, ("black", "dark_grey", "red", "blue", "pink", "purple", "silver"))
    style = int(rng.integers(3))
    weights: List[Tuple[trimesh.Trimesh, float]] = []  # (mesh along +Z from z = 0, its radius)
    if style == 0:  # stacked plates, largest inside
        plates, radius, z = int(rng.integers(1, 4)), _uniform(rng, 0.15, 0.25), 0.0
        for k in range(plates):
            r, thick = radius * (1 - 0.18 * k), _uniform(rng, 0.04, 0.07)
            weights.append((_placed(_cylinder(r, thick, 32), _pose((0, 0, z))), r))
            z += thick
    elif style == 1:  # ball
        r = _uniform(rng, 0.12, 0.2)
        weights.append((_placed(_sphere(r, 3), _pose((0, 0, r * 0.8))), r))
    else:  # hexagonal
        r, thick = _uniform(rng, 0.12, 0.2), _uniform(rng, 0.1, 0.18)
        weights.append((_lathe([(0, 0), (r, 0), (r, thick), (0, thick)], 6), r))
    outer = max(r for _, r in weights)
    steel = _colour(rng, ("silver", "grey", "black"))
    # the handle along X, lying on the ground at the weights' radius
    lay = _pose((0, 0, outer), axis=(0, 1, 0), angle=np.pi / 2)
    parts = [_painted(rng, _cylinder(grip, handle, 16, 25), steel, {"stripes": 0.4}, 12,
                      transform=lay @ _pose((0, 0, -handle / 2)))]
    for side in (-1, 1):
        flip = _pose() if side > 0 else _pose(axis=(1, 0, 0), angle=np.pi)
        for mesh, _ in weights:
            parts.append(_transformed(_solid(mesh, weight_colour), lay @ flip @ _pose((0, 0, handle * 0.32))))
    return parts


_BUILDERS: Dict[str, Callable[[np.random.Generator], List[Part]]] = {
    "mushroom": _mushroom, "snowman": _snowman, "table": _table, "chair": _chair, "cup": _cup, "lamp": _lamp,
    "tree": _tree, "bottle": _bottle, "house": _house, "car": _car, "bench": _bench, "rocket": _rocket,
    "teapot": _teapot, "vase": _vase, "dumbbell": _dumbbell}


# ---------------------------------------------------------------- public API

def _check_kind_seed(kind: str, seed: int) -> None:
    if kind not in _BUILDERS:
        raise ValueError(f"kind must be one of {', '.join(OBJECT_KINDS)}, got {kind!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")


def procedural_object(kind: str, seed: int) -> trimesh.Trimesh:
    """The object ``kind`` number ``seed``: a trimesh with vertex colours (RGBA uint8 [V, 4], sRGB, opaque),
    vertices float64 [V, 3] in the TRELLIS frame (Z up, front -Y) centred in the unit cube with the
    largest side exactly 1, faces int64 [F, 3] (F <= ``MAX_FACES``). A function of (kind, seed) only."""
    _check_kind_seed(kind, seed)
    rng = np.random.default_rng(np.random.SeedSequence([zlib.crc32(kind.encode("utf-8")), int(seed)]))
    return _assembled(_BUILDERS[kind](rng))


def object_name(kind: str, seed: int) -> str:
    """The object's file stem (and asset name in ``prepare-data``): ``KIND_SEED``, seed zero-padded to 6 digits."""
    _check_kind_seed(kind, seed)
    return f"{kind}_{int(seed):06d}"


def split_of(kind: str, seed: int) -> str:
    """``'held_out'`` when ``seed % 10 == 9``, else ``'train'`` (the same rule for every kind)."""
    _check_kind_seed(kind, seed)
    return "held_out" if seed % HELD_OUT_MODULUS == HELD_OUT_MODULUS - 1 else "train"


def object_plan(count: int, seed: int = 0, kinds: Sequence[str] = OBJECT_KINDS,
                split: str = "train") -> List[Tuple[str, int]]:
    """The (kind, seed) of ``count`` objects: kinds cycled in the given order; object i has kind
    ``kinds[i % len(kinds)]`` and that kind's (i // len(kinds))-th seed >= ``seed`` of ``split``."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"count must be an int >= 1, got {count!r}")
    kinds = list(kinds)
    if not kinds:
        raise ValueError(f"kinds must name at least one of {', '.join(OBJECT_KINDS)}")
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"kinds must not repeat, got {kinds}")
    for kind in kinds:
        _check_kind_seed(kind, seed)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    per_kind = -(-count // len(kinds))
    seeds, candidate = [], int(seed)
    while len(seeds) < per_kind:  # split_of does not depend on the kind
        if split_of(kinds[0], candidate) == split:
            seeds.append(candidate)
        candidate += 1
    return [(kinds[i % len(kinds)], seeds[i // len(kinds)]) for i in range(count)]


def write_procedural_meshes(out_dir: Union[str, Path], count: int, seed: int = 0,
                            kinds: Sequence[str] = OBJECT_KINDS, split: str = "train", file_format: str = "glb",
                            progress: Optional[WriteProgress] = None) -> List[Path]:
    """Write the ``count`` objects of ``object_plan(count, seed, kinds, split)`` as
    ``out_dir/KIND_SEED.FORMAT`` (``glb`` or ``ply``, vertex colours), for ``prepare-data``.

    A file already there is kept as it is (never rewritten; an interrupted run resumes); new files
    are written whole (temporary file, then rename) and their bytes depend on (kind, seed) only.
    ``progress("objects", done, count)`` is called after each object and may raise to stop.
    Returns the ``count`` paths in plan order, kept and new."""
    if file_format not in MESH_FORMATS:
        raise ValueError(f"file_format must be one of {', '.join(MESH_FORMATS)}, got {file_format!r}")
    plan = object_plan(count, seed, kinds, split)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for done, (kind, object_seed) in enumerate(plan, 1):
        path = out / f"{object_name(kind, object_seed)}.{file_format}"
        if not path.exists():
            _write_whole(path, _file_bytes(procedural_object(kind, object_seed), file_format))
        paths.append(path)
        if progress is not None:
            progress("objects", done, len(plan))
    return paths


def _file_bytes(mesh, file_format: str) -> bytes:
    """A GLB in glTF's own frame (Y up, front +Z), which prepare-data turns back Z up; a PLY in the
    TRELLIS frame, which it reads as it is."""
    if file_format == "glb":
        from ..frames import to_gltf_frame
        mesh = mesh.copy()
        mesh.vertices = to_gltf_frame(np.asarray(mesh.vertices))
    return mesh.export(file_type=file_format)


def _write_whole(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
