"""ComfyUI nodes over trellis_impl, in the V3 schema (``io.ComfyNode``). ``host`` is the only module
touching ComfyUI.

Node ids are prefixed ``Trellis`` (never ``Trellis2*``, never a core id); the ids, input ids, their
order and their types are what the V1 nodes had (saved workflows bind widget values by position):
append, never reorder.

The pack enters through ``comfy_entrypoint`` (the top-level __init__.py), which returns
``TrellisExtension``, and keeps no ``NODE_CLASS_MAPPINGS``: the loader of every supported host
(``nodes.py: load_custom_node``, 0.3.64 and 0.24.0) takes a module's ``NODE_CLASS_MAPPINGS`` first
and then ignores its ``comfy_entrypoint``. Listed there, these classes would still load, but their
display names would have to come from a second table and a broken schema would only show at the
first ``/object_info``; through the entry point the loader builds every schema at start-up and takes
the display names from them. ``on_load`` is not used: 0.3.64 never calls it, so the example inputs
are copied when this module is imported (by the entry point, at start-up).
"""
import logging
import os

from . import host
from .edit import TrellisDetailVariation, TrellisEditRegion, TrellisInvertAsset, TrellisRegionEdit
from .encode import TrellisEncodeMesh
from .export import TrellisExportGLB, TrellisExportSplat, TrellisTurntable
from .generation import (TrellisDecode, TrellisImageCondition, TrellisLatentSampler, TrellisMeshToStructure,
                         TrellisModelLoader, TrellisStructureSampler, TrellisTextCondition)
from .preview import TrellisPreview

NODES = (TrellisModelLoader, TrellisImageCondition, TrellisTextCondition, TrellisStructureSampler,
         TrellisLatentSampler, TrellisDecode, TrellisMeshToStructure, TrellisExportGLB, TrellisExportSplat,
         TrellisTurntable, TrellisPreview, TrellisEditRegion, TrellisRegionEdit, TrellisDetailVariation,
         TrellisInvertAsset, TrellisEncodeMesh)


class TrellisExtension(host.ComfyExtension):
    async def get_node_list(self) -> list:
        return list(NODES)


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

__all__ = ["NODES", "TrellisExtension", "EXAMPLE_INPUTS"]
