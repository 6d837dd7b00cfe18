"""TrellisPreview: the asset's mesh (quick vertex-colour GLB) and splat (.spz) side by side in the
pack's viewer widget (web/js/trellis_preview.js). The files are previews, so they go to ComfyUI's
temp folder (emptied at start-up), not to the output folder."""
from __future__ import annotations

from ..trellis_impl.export.glb_export import to_glb
from ..trellis_impl.export.splat_files import save_spz
from . import host
from .export import _check_asset, _prefix_input
from .host import io
from .sockets import ASSET, REGION


class TrellisPreview(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TrellisPreview", display_name="TRELLIS Preview (mesh + splat)", category="TRELLIS/export",
            description="Shows the decoded mesh and Gaussians in the node's viewer (toggle or side by side); writes a "
                        "quick vertex-colour GLB and an .spz (one number) under ComfyUI's temp folder.",
            is_output_node=True,
            inputs=[
                ASSET.Input("asset", tooltip="From TrellisDecode (mesh and/or gaussian)."),
                _prefix_input("trellis/preview"),
                REGION.Input("region", optional=True, tooltip="An edit region, shown as translucent boxes."),
            ])

    @classmethod
    def execute(cls, asset, filename_prefix="trellis/preview", region=None):
        asset = _check_asset(asset, "TrellisPreview")
        host.check_filename_prefix(filename_prefix)
        meshes = [m for m in asset.decoded.get("mesh", []) if getattr(m, "success", True)]
        gaussians = asset.decoded.get("gaussian") or []
        if not meshes and not gaussians:
            raise ValueError("TrellisPreview: the asset has neither a mesh nor Gaussians; enable one in TrellisDecode")
        items = []
        for i in range(max(len(meshes), len(gaussians))):
            host.check_interrupt()
            item = {"mesh": None, "splat": None, "splat_format": "spz",
                    "edit_boxes": [] if region is None else list(region.boxes)}
            saves = {}
            if i < len(meshes):
                g = gaussians[i] if i < len(gaussians) else None
                saves["glb"] = lambda p, m=meshes[i], g=g: to_glb(p, m, g, bake="vertex_colors", simplify=0.9,
                                                                   fill_holes=False, origin="none")
            if i < len(gaussians):
                saves["spz"] = lambda p, g=gaussians[i]: save_spz(g, p)
            # previews are not results: ComfyUI's temp folder, emptied at start-up; one number per item
            written = host.save_output_set(filename_prefix, saves, kind="temp")
            for key, ext in (("mesh", "glb"), ("splat", "spz")):
                if ext in written:
                    item[key] = {k: written[ext][k] for k in ("filename", "subfolder", "type")}
            items.append(item)
        return io.NodeOutput(ui={"trellis_preview": items})
