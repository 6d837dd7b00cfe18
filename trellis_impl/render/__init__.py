"""Rendering: cameras, Gaussian rasterisation, mesh rasterisation, radiance-field ray marching and
turntables (backend families ``gaussian_raster``, ``mesh_raster``, ``radiance_field_render``)."""
from .cameras import Camera, look_at_extrinsics, orbit_cameras
from .gaussian_raster import GAUSSIAN_RASTER, SH_C0, gaussian_tensors, render_gaussians
from .mesh_raster import MESH_RASTER, interpolate, rasterize, render_mesh, texture
from .radiance_field_render import RADIANCE_FIELD_RENDER, render_radiance_field
from .turntable import turntable

__all__ = ["Camera", "look_at_extrinsics", "orbit_cameras", "render_gaussians", "gaussian_tensors",
           "GAUSSIAN_RASTER", "SH_C0", "rasterize", "interpolate", "texture", "render_mesh", "MESH_RASTER",
           "render_radiance_field", "RADIANCE_FIELD_RENDER", "turntable"]
