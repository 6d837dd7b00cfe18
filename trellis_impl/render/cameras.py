"""Pinhole cameras for rendering TRELLIS assets.

Conventions (the same as TRELLIS, which builds its cameras with ``utils3d``):

* World: Z-up; TRELLIS assets live in the unit cube centred at the origin.
* Camera space: OpenCV convention, x right, y down, z forward (into the scene). Points in
  front of the camera have z > 0.
* ``extrinsics`` is the [4, 4] world-to-camera matrix: ``p_cam = R @ p_world + t``.
* Image: pixel (u, v) with u along x (columns) and v along y (rows, downwards); the centre of
  pixel (i, j) (row j, column i) is at (i + 0.5, j + 0.5). The intrinsics are in pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence

import torch

__all__ = ["Camera", "orbit_cameras", "look_at_extrinsics"]


def look_at_extrinsics(eye: Sequence[float], target: Sequence[float], up: Sequence[float]) -> torch.Tensor:
    """[4, 4] float64 world-to-camera matrix (OpenCV) of a camera at ``eye`` looking at ``target``.

    As ``utils3d.torch.extrinsics_look_at``: z = normalize(target - eye), x = normalize(-up x z),
    y = z x x, so world ``up`` appears towards the top of the image (negative y).
    """
    eye_t = torch.as_tensor(eye, dtype=torch.float64)
    target_t = torch.as_tensor(target, dtype=torch.float64)
    up_t = torch.as_tensor(up, dtype=torch.float64)
    z = target_t - eye_t
    if float(z.norm()) == 0.0:
        raise ValueError("camera eye and target coincide")
    z = z / z.norm()
    x = torch.linalg.cross(-up_t, z)
    if float(x.norm()) < 1e-12:
        raise ValueError("viewing direction is parallel to the up vector")
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    rot = torch.stack([x, y, z])  # rows: camera axes in world coordinates
    extr = torch.eye(4, dtype=torch.float64)
    extr[:3, :3] = rot
    extr[:3, 3] = -rot @ eye_t
    return extr


@dataclass
class Camera:
    """A pinhole camera.

    Attributes:
        extrinsics: [4, 4] world-to-camera matrix, OpenCV convention (x right, y down,
            z forward); world units.
        fx, fy: focal lengths in pixels.
        cx, cy: principal point in pixels (the image centre is (width / 2, height / 2)).
        width, height: image size in pixels.
        near, far: depth range (camera z, world units) outside which Gaussians are culled.
            The default near plane, 0.2, is the one hard-coded in the 3DGS rasteriser that
            TRELLIS uses (its own near/far of 0.8/1.6 only enter the unused projection matrix).
    """
    extrinsics: torch.Tensor
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    near: float = 0.2
    far: float = 1000.0

    def __post_init__(self):
        self.extrinsics = torch.as_tensor(self.extrinsics, dtype=torch.float64).reshape(4, 4)
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if not 0.0 < self.near < self.far:
            raise ValueError(f"need 0 < near < far, got near={self.near}, far={self.far}")

    @property
    def intrinsics(self) -> torch.Tensor:
        """[3, 3] float64 pixel intrinsics matrix K."""
        return torch.tensor([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]],
                            dtype=torch.float64)

    @property
    def position(self) -> torch.Tensor:
        """[3] float64 camera centre in world coordinates."""
        rot, t = self.extrinsics[:3, :3], self.extrinsics[:3, 3]
        return -rot.T @ t

    def project(self, points: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Project [N, 3] world points to [N, 3] (u, v in pixels, z = camera depth), in ``dtype``
        on the points' device (differentiable with respect to them)."""
        pts = torch.as_tensor(points).to(dtype).reshape(-1, 3)
        extr = self.extrinsics.to(device=pts.device, dtype=dtype)
        cam = pts @ extr[:3, :3].T + extr[:3, 3]
        z = cam[:, 2]
        return torch.stack([self.fx * cam[:, 0] / z + self.cx, self.fy * cam[:, 1] / z + self.cy, z], dim=1)

    @classmethod
    def orbit(cls, yaw: float, pitch: float, radius: float, fov_degrees: float, width: int, height: int,
              target: Sequence[float] = (0.0, 0.0, 0.0), up: Sequence[float] = (0.0, 0.0, 1.0),
              near: float = 0.2, far: float = 1000.0) -> "Camera":
        """A camera on a sphere around ``target``, looking at it, as TRELLIS's turntables.

        Args:
            yaw: radians about +Z; yaw 0 puts the camera on +Y (TRELLIS:
                eye = target + radius * (sin(yaw) cos(pitch), cos(yaw) cos(pitch), sin(pitch))).
            pitch: radians up from the XY plane (positive = looking down from above).
            radius: distance from ``target`` in world units.
            fov_degrees: field of view in degrees across the larger image side (both sides for
                the square images TRELLIS renders: f = size / (2 tan(fov / 2)) pixels); pixels
                are square.
            width, height: image size in pixels.
            target, up: world look-at point and up direction (TRELLIS: origin and +Z).
            near, far: culling depth range in world units.
        """
        if not 0.0 < fov_degrees < 180.0:
            raise ValueError(f"fov_degrees must be in (0, 180), got {fov_degrees}")
        offset = (math.sin(yaw) * math.cos(pitch), math.cos(yaw) * math.cos(pitch), math.sin(pitch))
        eye = [float(t) + radius * o for t, o in zip(target, offset)]
        extr = look_at_extrinsics(eye, target, up)
        focal = max(width, height) / (2.0 * math.tan(math.radians(fov_degrees) / 2.0))
        return cls(extr, focal, focal, width / 2.0, height / 2.0, int(width), int(height), near, far)


def orbit_cameras(n: int, pitch: float = 0.0, radius: float = 2.0, fov_degrees: float = 40.0,
                  width: int = 512, height: int = 512, yaw_offset: float = 0.0, **kwargs) -> List[Camera]:
    """``n`` turntable cameras with yaws ``yaw_offset + 2 pi k / n`` (radians), k = 0..n-1.

    Defaults are TRELLIS's video settings (radius 2, fov 40 degrees, 512 px). Other keyword
    arguments (target, up, near, far) go to :meth:`Camera.orbit`.
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    return [Camera.orbit(yaw_offset + 2.0 * math.pi * k / n, pitch, radius, fov_degrees, width, height, **kwargs)
            for k in range(n)]
