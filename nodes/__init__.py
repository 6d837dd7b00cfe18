"""ComfyUI node adapters over trellis_impl (V1 API). ``host`` is the only module touching ComfyUI.

Node ids are prefixed ``Trellis`` (never ``Trellis2*``, never a core id); widget order is part
of the contract (saved workflows bind widget values by position): append, never reorder.
"""
import logging
import os

from . import host
from .edit import TrellisDetailVariation, TrellisEditRegion, TrellisInvertAsset, TrellisRegionEdit
from .export import TrellisExportGLB, TrellisExportSplat, TrellisTurntable
from .preview import TrellisPreview
from .generation import (TrellisDecode, TrellisImageCondition, TrellisLatentSampler, TrellisMeshToStructure,
                     TrellisModelLoader, TrellisStructureSampler, TrellisTextCondition)

NODE_CLASS_MAPPINGS = {
    "TrellisModelLoader": TrellisModelLoader,
    "TrellisImageCondition": TrellisImageCondition,
    "TrellisTextCondition": TrellisTextCondition,
    "TrellisStructureSampler": TrellisStructureSampler,
    "TrellisLatentSampler": TrellisLatentSampler,
    "TrellisDecode": TrellisDecode,
    "TrellisMeshToStructure": TrellisMeshToStructure,
    "TrellisExportGLB": TrellisExportGLB,
    "TrellisExportSplat": TrellisExportSplat,
    "TrellisTurntable": TrellisTurntable,
    "TrellisPreview": TrellisPreview,
    "TrellisEditRegion": TrellisEditRegion,
    "TrellisRegionEdit": TrellisRegionEdit,
    "TrellisDetailVariation": TrellisDetailVariation,
    "TrellisInvertAsset": TrellisInvertAsset,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "TrellisModelLoader": "TRELLIS Model Loader",
    "TrellisImageCondition": "TRELLIS Image Condition",
    "TrellisTextCondition": "TRELLIS Text Condition",
    "TrellisStructureSampler": "TRELLIS Structure Sampler",
    "TrellisLatentSampler": "TRELLIS Latent Sampler",
    "TrellisDecode": "TRELLIS Decode",
    "TrellisMeshToStructure": "TRELLIS Mesh to Structure",
    "TrellisExportGLB": "TRELLIS Export GLB",
    "TrellisExportSplat": "TRELLIS Export Splat",
    "TrellisTurntable": "TRELLIS Turntable",
    "TrellisPreview": "TRELLIS Preview (mesh + splat)",
    "TrellisEditRegion": "TRELLIS Edit Region",
    "TrellisRegionEdit": "TRELLIS Region Edit (delete / add / replace)",
    "TrellisDetailVariation": "TRELLIS Detail Variation",
    "TrellisInvertAsset": "TRELLIS Invert Asset (for inversion edits)",
}

from .encode import TrellisEncodeMesh  # noqa: E402

NODE_CLASS_MAPPINGS["TrellisEncodeMesh"] = TrellisEncodeMesh
NODE_DISPLAY_NAME_MAPPINGS["TrellisEncodeMesh"] = "TRELLIS Encode Mesh (no sampling)"

_ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
# The example workflows' inputs, under names of their own: ComfyUI ships an example.png of its own
# (no alpha), which a workflow naming 'example.png' would silently take instead.
EXAMPLE_INPUTS = {
    "trellis_example.png": os.path.join(_ASSETS, "example.png"),
    "trellis_example_side.png": os.path.join(_ASSETS, "example_side.png"),
    "3d/trellis_example_mesh.obj": os.path.join(_ASSETS, "example_mesh.obj"),
}
try:
    host.install_example_inputs(EXAMPLE_INPUTS)
except OSError as error:  # e.g. a read-only input folder: the nodes still load
    logging.getLogger(__name__).warning("[trellis] the example workflows' inputs were not copied into ComfyUI's "
                                        "input folder (%s); copy assets/ there by hand", error)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "EXAMPLE_INPUTS"]
