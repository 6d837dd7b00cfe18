"""3D editing of existing assets: edit regions on the structure grid, detail variations and
region edits (replace / delete / add) by RePaint or inversion on a TrellisPipeline."""
from .edit import (EDIT_METHODS, EDIT_MODES, AssetInversion, EditResult, detail_variation, encode_structure,
                   invert_asset, region_edit)
from .region import (FRAMES, box_region, edit_region, check_region, coords_in_region, dilate_region, fill_inside,
                     latent_region, mesh_region, points_region)

__all__ = ["EditResult", "AssetInversion", "invert_asset", "detail_variation", "region_edit", "encode_structure",
           "EDIT_MODES", "EDIT_METHODS", "edit_region", "box_region", "mesh_region", "points_region", "dilate_region",
           "fill_inside", "latent_region", "coords_in_region", "check_region", "FRAMES"]
