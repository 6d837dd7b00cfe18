"""Writing generated assets to files."""
from .asset_files import DEFAULT_FILE_KINDS, FILE_KINDS, SlatFile, load_slat_file, save_generation, check_file_kinds
from .glb_export import BAKE_MODES, TexturedMesh, prepare_glb, to_glb
from .mesh_cleanup import cleanup_mesh, remove_small_components, simplify, weld
from .mesh_files import (GLTF_TO_TRELLIS, TRELLIS_TO_GLTF, from_gltf_frame, place, save_glb, save_mesh_ply, save_obj,
                         to_gltf_frame)
from .splat_files import load_spz, load_splat, save_splat, save_spz
from .mesh_visibility import remove_invisible_and_fill_holes
from .texture_bake import bake_from_gaussians, bake_texture_fast, bake_texture_optimised, uv_rasterize
from .uv_atlas import unwrap

__all__ = ["save_generation", "check_file_kinds", "load_slat_file", "SlatFile", "FILE_KINDS", "DEFAULT_FILE_KINDS", "to_glb", "prepare_glb",
           "TexturedMesh", "BAKE_MODES", "remove_invisible_and_fill_holes", "bake_texture_optimised", "save_spz", "load_spz", "save_splat", "load_splat", "TRELLIS_TO_GLTF",
           "GLTF_TO_TRELLIS", "to_gltf_frame", "from_gltf_frame", "place", "save_glb", "save_obj", "save_mesh_ply",
           "cleanup_mesh", "weld", "remove_small_components", "simplify", "uv_rasterize", "bake_texture_fast",
           "bake_from_gaussians", "unwrap"]
