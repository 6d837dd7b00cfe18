"""The cameras of the official dataset renders (``dataset_toolkits/render.py``) and their
``transforms.json`` frames.

The official toolkit renders ``num_views`` views per asset on a sphere: view i has
(yaw, pitch) = ``sphere_hammersley_sequence(i, num_views, offset)`` with one random
``offset`` in [0, 1)^2 per asset, radius 2, field of view 40 degrees, 512 x 512 px. Blender's
camera sits at ``radius * (cos yaw cos pitch, sin yaw cos pitch, sin pitch)`` (Z up) and a
TRACK_TO constraint (track -Z, up Y) points it at the origin. ``transforms.json`` stores per
view ``camera_angle_x`` (radians) and ``transform_matrix``, Blender's camera-to-world matrix
(OpenGL camera axes: x right, y up, looking down -z). ``extract_feature.py`` turns a frame into
OpenCV extrinsics by negating the matrix's columns 1 and 2 and inverting it.

Here cameras are :class:`~trellis_impl.render.cameras.Camera` objects (OpenCV world-to-camera
extrinsics, intrinsics in pixels). Yaw and pitch are in radians.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..render.cameras import Camera, look_at_extrinsics
from ..sequences import hammersley_yaw_pitch

__all__ = ["hammersley_yaw_pitch", "view_offset", "hammersley_cameras", "blender_camera", "camera_to_frame",
           "camera_from_frame", "RENDER_RADIUS", "RENDER_FOV_DEGREES", "RENDER_RESOLUTION"]

RENDER_RADIUS = 2.0
RENDER_FOV_DEGREES = 40.0
RENDER_RESOLUTION = 512


def view_offset(seed: int) -> Tuple[float, float]:
    """A reproducible stand-in for the official per-asset ``(np.random.rand(), np.random.rand())``:
    two uniform numbers in [0, 1) from ``numpy.random.default_rng(seed)``."""
    first, second = np.random.default_rng(seed).random(2)
    return float(first), float(second)


def blender_camera(yaw: float, pitch: float, radius: float = RENDER_RADIUS, fov_degrees: float = RENDER_FOV_DEGREES,
                   resolution: int = RENDER_RESOLUTION) -> Camera:
    """The camera of the official Blender script for one view: at
    ``radius * (cos yaw cos pitch, sin yaw cos pitch, sin pitch)``, looking at the origin with +Z
    up in the image (TRACK_TO, track -Z, up Y), square ``resolution`` px with ``fov_degrees`` across."""
    eye = (radius * math.cos(yaw) * math.cos(pitch), radius * math.sin(yaw) * math.cos(pitch), radius * math.sin(pitch))
    focal = resolution / (2.0 * math.tan(math.radians(fov_degrees) / 2.0))
    return Camera(look_at_extrinsics(eye, (0.0, 0.0, 0.0), (0.0, 0.0, 1.0)), focal, focal, resolution / 2.0,
                  resolution / 2.0, resolution, resolution)


def hammersley_cameras(num_views: int = 150, offset: Optional[Sequence[float]] = None, seed: int = 0,
                       radius: float = RENDER_RADIUS, fov_degrees: float = RENDER_FOV_DEGREES,
                       resolution: int = RENDER_RESOLUTION) -> List[Camera]:
    """The ``num_views`` cameras of one asset's official renders. ``offset`` (two numbers in
    [0, 1)) defaults to ``view_offset(seed)``; offset[0] = 0 puts view 0 exactly on the south pole,
    where the look-at direction is undefined (the official draw makes that improbable)."""
    if not (isinstance(num_views, int) and num_views >= 1):
        raise ValueError(f"num_views must be an int >= 1, got {num_views!r}")
    offset = view_offset(seed) if offset is None else tuple(float(o) for o in offset)
    if len(offset) != 2 or not all(0.0 <= o < 1.0 for o in offset):
        raise ValueError(f"offset must be two numbers in [0, 1), got {offset!r}")
    return [blender_camera(*hammersley_yaw_pitch(i, num_views, offset), radius=radius, fov_degrees=fov_degrees,
                           resolution=resolution) for i in range(num_views)]


# OpenCV camera axes (x right, y down, z forward) <-> Blender/OpenGL (x right, y up, z backward).
_CV_TO_GL = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


def camera_to_frame(camera: Camera) -> dict:
    """A ``transforms.json`` frame of a square camera with its principal point at the image centre:
    {'camera_angle_x': fov in radians, 'transform_matrix': 4 x 4 nested lists, Blender
    camera-to-world}."""
    if camera.width != camera.height or camera.fx != camera.fy or (camera.cx, camera.cy) != (camera.width / 2,
                                                                                          camera.height / 2):
        raise ValueError("camera: a transforms.json frame describes square images with square pixels and a centred "
                         f"principal point; got {camera.width}x{camera.height}, f=({camera.fx}, {camera.fy}), "
                         f"c=({camera.cx}, {camera.cy})")
    camera_to_world = torch.linalg.inv(camera.extrinsics) @ _CV_TO_GL
    return {"camera_angle_x": 2.0 * math.atan(camera.width / (2.0 * camera.fx)),
            "transform_matrix": camera_to_world.tolist()}


def camera_from_frame(frame: dict, resolution: int = RENDER_RESOLUTION) -> Camera:
    """The camera of a ``transforms.json`` frame (as ``extract_feature.py`` reads it: columns 1
    and 2 of ``transform_matrix`` negated, inverted; focal 0.5 / tan(camera_angle_x / 2) of the
    image side) for a square image of ``resolution`` px."""
    try:
        camera_to_world = torch.tensor(frame["transform_matrix"], dtype=torch.float64)
        fov = float(frame["camera_angle_x"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"frame: needs 'transform_matrix' (4 x 4) and 'camera_angle_x' (radians) ({error!r})") from None
    if camera_to_world.shape != (4, 4) or not 0.0 < fov < math.pi:
        raise ValueError(f"frame: transform_matrix must be 4 x 4 and camera_angle_x in (0, pi); got "
                         f"{tuple(camera_to_world.shape)} and {fov}")
    focal = resolution * 0.5 / math.tan(fov / 2)
    return Camera(torch.linalg.inv(camera_to_world @ _CV_TO_GL), focal, focal, resolution / 2.0, resolution / 2.0,
                  resolution, resolution)
