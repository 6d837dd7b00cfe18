"""Fitting-free encoding of textured meshes into TRELLIS latents (structure + SLat), as the
official dataset toolkit computes its training latents; see docs/encoding.md."""
from .albedo import render_albedo, to_rgba8
from .assets import TexturedMesh, load_textured_mesh
from .encode import ENCODE_PHASES, EncodedAsset, EncodeProgress, encode_asset, save_encoded
from .features import (FeatureAccumulator, patch_token_maps, project_to_grid, sample_token_maps, view_pixels,
                       voxel_centers)
from .views import (blender_camera, camera_from_frame, camera_to_frame, hammersley_cameras, hammersley_yaw_pitch,
                    view_offset)

__all__ = ["encode_asset", "EncodedAsset", "EncodeProgress", "ENCODE_PHASES", "save_encoded", "TexturedMesh",
           "load_textured_mesh", "render_albedo", "to_rgba8", "view_pixels", "patch_token_maps", "voxel_centers",
           "project_to_grid", "sample_token_maps", "FeatureAccumulator", "hammersley_yaw_pitch", "view_offset",
           "hammersley_cameras", "blender_camera", "camera_to_frame", "camera_from_frame"]
