"""Rendering: cameras and Gaussian rasterisation (backend family ``gaussian_raster``)."""
from .cameras import Camera, look_at_extrinsics, orbit_cameras
from .gaussian_raster import GAUSSIAN_RASTER, SH_C0, gaussian_tensors, render_gaussians

__all__ = ["Camera", "look_at_extrinsics", "orbit_cameras", "render_gaussians", "gaussian_tensors",
           "GAUSSIAN_RASTER", "SH_C0"]
