"""Write the example workflows (UI format) into ``workflows/`` from compact descriptions, with the
sockets and widget layout of the node definitions (the pack's and the core stand-ins'):

    python tests/workflows/build.py

Each description lists nodes (type, widget values by name, defaults for the rest) and links
(source node, output name) -> (target node, input name). The JSON is what the front end saves.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO / "tests"), str(HERE)]

import comfy_host  # noqa: E402
from core_nodes import CORE_NODES  # noqa: E402
from ui_graph import _inputs_in_order, choices, is_widget, widget_slots  # noqa: E402

# the image workflows run out of the box on the embedded demo model; the text one needs a released model
IMAGE_MODEL, TEXT_MODEL = "TRELLIS-demo", "microsoft/TRELLIS-text-large"
SAMPLER = {"seed": 1, "steps": 25, "cfg": 5.0}
NOTE = ("The image workflows load TRELLIS-demo, the small model embedded in the pack (no download; simple "
        "objects only): for real assets choose microsoft/TRELLIS-image-large in the loader and tick 'download', "
        "or put the model folders under ComfyUI/models/trellis. "
        "The pack copies the example inputs into ComfyUI/input (trellis_example*.png, 3d/trellis_example_mesh.obj).")
# What the front end's missing-model dialog offers to download (node properties and the workflow's list).
SDXL_BASE = {"name": "sd_xl_base_1.0.safetensors", "directory": "checkpoints",
             "url": "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/"
                    "sd_xl_base_1.0.safetensors"}
# Node sizes in px, so widgets and previews do not overlap once loaded: the title bar, one row per
# socket pair and per widget, plus the previews' heights (the pack's preview widget is at least
# MIN_HEIGHT = 320 px, web/js/trellis_preview.js).
TITLE, SOCKET_ROW, WIDGET_ROW = 30, 22, 26
PREVIEWS = {"LoadImage": 280, "Preview3D": 420, "SaveImage": 300}
PACK_PREVIEW, GAP = 340, 40


def image_to_3d():
    return {"nodes": {
        1: ("LoadImage", {"image": "trellis_example.png"}),
        2: ("TrellisModelLoader", {"model": IMAGE_MODEL}),
        3: ("TrellisImageCondition", {}),
        4: ("TrellisStructureSampler", SAMPLER),
        5: ("TrellisLatentSampler", SAMPLER),
        6: ("TrellisDecode", {}),
        7: ("TrellisExportGLB", {"filename_prefix": "trellis/image_to_3d"}),
        8: ("TrellisExportSplat", {"filename_prefix": "trellis/image_to_3d", "format": "spz"}),
        9: ("TrellisTurntable", {}),
        10: ("SaveImage", {"filename_prefix": "trellis/image_to_3d_turntable"}),
        11: ("Preview3D", {"model_file": ""}),
        12: ("TrellisPreview", {"filename_prefix": "trellis/image_to_3d_preview"}),
    }, "links": [((2, "model"), (3, "model")), ((1, "IMAGE"), (3, "image")), ((1, "MASK"), (3, "mask")),
                 ((2, "model"), (4, "model")), ((3, "cond"), (4, "cond")),
                 ((2, "model"), (5, "model")), ((3, "cond"), (5, "cond")), ((4, "structure"), (5, "structure")),
                 ((2, "model"), (6, "model")), ((5, "slat"), (6, "slat")),
                 ((6, "asset"), (7, "asset")), ((6, "asset"), (8, "asset")), ((6, "asset"), (9, "asset")),
                 ((9, "images"), (10, "images")), ((7, "model_file"), (11, "model_file")),
                 ((6, "asset"), (12, "asset"))]}


def text_to_3d():
    return {"nodes": {
        1: ("TrellisModelLoader", {"model": TEXT_MODEL}),
        2: ("TrellisTextCondition", {"prompt": "a small wooden cabin with a red roof"}),
        3: ("TrellisStructureSampler", SAMPLER),
        4: ("TrellisLatentSampler", SAMPLER),
        5: ("TrellisDecode", {}),
        6: ("TrellisExportGLB", {"filename_prefix": "trellis/text_to_3d"}),
        7: ("TrellisExportSplat", {"filename_prefix": "trellis/text_to_3d", "format": "ply"}),
        8: ("Preview3D", {"model_file": ""}),
        9: ("SaveGLB", {"filename_prefix": "trellis/text_to_3d_core"}),
    }, "links": [((1, "model"), (2, "model")), ((1, "model"), (3, "model")), ((2, "cond"), (3, "cond")),
                 ((1, "model"), (4, "model")), ((2, "cond"), (4, "cond")), ((3, "structure"), (4, "structure")),
                 ((1, "model"), (5, "model")), ((4, "slat"), (5, "slat")),
                 ((5, "asset"), (6, "asset")), ((5, "asset"), (7, "asset")), ((6, "model_file"), (8, "model_file")),
                 ((6, "mesh"), (9, "mesh"))]}


def multi_image():
    return {"nodes": {
        1: ("LoadImage", {"image": "trellis_example.png"}),
        2: ("LoadImage", {"image": "trellis_example_side.png"}),
        3: ("JoinImageWithAlpha", {}),
        4: ("JoinImageWithAlpha", {}),
        5: ("ImageBatch", {}),
        6: ("TrellisModelLoader", {"model": IMAGE_MODEL}),
        7: ("TrellisImageCondition", {}),
        8: ("TrellisStructureSampler", {**SAMPLER, "multi_image_mode": "multidiffusion"}),
        9: ("TrellisLatentSampler", {**SAMPLER, "multi_image_mode": "multidiffusion"}),
        10: ("TrellisDecode", {}),
        11: ("TrellisExportGLB", {"filename_prefix": "trellis/multi_image"}),
        12: ("Preview3D", {"model_file": ""}),
    }, "links": [((1, "IMAGE"), (3, "image")), ((1, "MASK"), (3, "alpha")), ((2, "IMAGE"), (4, "image")),
                 ((2, "MASK"), (4, "alpha")), ((3, "IMAGE"), (5, "image1")), ((4, "IMAGE"), (5, "image2")),
                 ((6, "model"), (7, "model")), ((5, "IMAGE"), (7, "image")),
                 ((6, "model"), (8, "model")), ((7, "cond"), (8, "cond")),
                 ((6, "model"), (9, "model")), ((7, "cond"), (9, "cond")), ((8, "structure"), (9, "structure")),
                 ((6, "model"), (10, "model")), ((9, "slat"), (10, "slat")), ((10, "asset"), (11, "asset")),
                 ((11, "model_file"), (12, "model_file"))]}


def variant_from_mesh():
    return {"nodes": {
        1: ("TrellisModelLoader", {"model": IMAGE_MODEL}),
        2: ("TrellisMeshToStructure", {"mesh_path": "3d/trellis_example_mesh.obj"}),
        3: ("LoadImage", {"image": "trellis_example.png"}),
        4: ("TrellisImageCondition", {}),
        5: ("TrellisLatentSampler", SAMPLER),
        6: ("TrellisDecode", {}),
        7: ("TrellisExportGLB", {"filename_prefix": "trellis/variant"}),
        8: ("Preview3D", {"model_file": ""}),
    }, "links": [((1, "model"), (2, "model")), ((1, "model"), (4, "model")), ((3, "IMAGE"), (4, "image")),
                 ((3, "MASK"), (4, "mask")), ((1, "model"), (5, "model")), ((4, "cond"), (5, "cond")),
                 ((2, "structure"), (5, "structure")), ((1, "model"), (6, "model")), ((5, "slat"), (6, "slat")),
                 ((6, "asset"), (7, "asset")), ((7, "model_file"), (8, "model_file"))]}


def sdxl_to_3d():
    """A core 2D generator chain into TRELLIS; with no alpha the condition node removes the background
    (background auto: needs rembg)."""
    return {"nodes": {
        1: ("CheckpointLoaderSimple", {"ckpt_name": SDXL_BASE["name"]}),
        2: ("CLIPTextEncode", {"text": "a red toy robot, full body, centered, plain white background, studio light"}),
        3: ("CLIPTextEncode", {"text": "blurry, cropped, text, watermark"}),
        4: ("EmptyLatentImage", {"width": 1024, "height": 1024}),
        5: ("KSampler", {"seed": 7, "steps": 25, "cfg": 7.0, "sampler_name": "dpmpp_2m", "scheduler": "karras"}),
        6: ("VAEDecode", {}),
        7: ("TrellisModelLoader", {"model": IMAGE_MODEL}),
        8: ("TrellisImageCondition", {}),
        9: ("TrellisStructureSampler", SAMPLER),
        10: ("TrellisLatentSampler", SAMPLER),
        11: ("TrellisDecode", {}),
        12: ("TrellisExportGLB", {"filename_prefix": "trellis/sdxl_to_3d"}),
        13: ("Preview3D", {"model_file": ""}),
    }, "links": [((1, "MODEL"), (5, "model")), ((1, "CLIP"), (2, "clip")), ((1, "CLIP"), (3, "clip")),
                 ((2, "CONDITIONING"), (5, "positive")), ((3, "CONDITIONING"), (5, "negative")),
                 ((4, "LATENT"), (5, "latent_image")), ((5, "LATENT"), (6, "samples")), ((1, "VAE"), (6, "vae")),
                 ((7, "model"), (8, "model")), ((6, "IMAGE"), (8, "image")),
                 ((7, "model"), (9, "model")), ((8, "cond"), (9, "cond")),
                 ((7, "model"), (10, "model")), ((8, "cond"), (10, "cond")), ((9, "structure"), (10, "structure")),
                 ((7, "model"), (11, "model")), ((10, "slat"), (11, "slat")), ((11, "asset"), (12, "asset")),
                 ((12, "model_file"), (13, "model_file"))],
        "models": {1: [SDXL_BASE]}}


def _generation(image: str, start: int = 1):
    """Nodes start..start+5 of an image-to-3D generation (loader, image, condition, structure, latent)."""
    a = start
    nodes = {a: ("TrellisModelLoader", {"model": IMAGE_MODEL}), a + 1: ("LoadImage", {"image": image}),
             a + 2: ("TrellisImageCondition", {}), a + 3: ("TrellisStructureSampler", SAMPLER),
             a + 4: ("TrellisLatentSampler", SAMPLER)}
    links = [((a, "model"), (a + 2, "model")), ((a + 1, "IMAGE"), (a + 2, "image")), ((a + 1, "MASK"), (a + 2, "mask")),
             ((a, "model"), (a + 3, "model")), ((a + 2, "cond"), (a + 3, "cond")),
             ((a, "model"), (a + 4, "model")), ((a + 2, "cond"), (a + 4, "cond")),
             ((a + 3, "structure"), (a + 4, "structure"))]
    return nodes, links


def edit_replace_part():
    """Generate an asset, then regenerate its top part from another image (region edit, replace)."""
    nodes, links = _generation("trellis_example.png")
    nodes.update({
        6: ("LoadImage", {"image": "trellis_example_side.png"}),
        7: ("TrellisImageCondition", {}),
        8: ("TrellisEditRegion", {"boxes": "-0.5 0.1 -0.5 0.5 0.5 0.5", "border": 1}),
        9: ("TrellisRegionEdit", {**SAMPLER, "seed": 2, "mode": "replace", "method": "repaint"}),
        10: ("TrellisDecode", {}),
        11: ("TrellisExportGLB", {"filename_prefix": "trellis/edit_replace"}),
        12: ("TrellisPreview", {"filename_prefix": "trellis/edit_replace_preview"}),
    })
    links += [((1, "model"), (7, "model")), ((6, "IMAGE"), (7, "image")), ((6, "MASK"), (7, "mask")),
              ((1, "model"), (8, "model")), ((1, "model"), (9, "model")), ((7, "cond"), (9, "cond")),
              ((4, "structure"), (9, "structure")), ((8, "region"), (9, "region")), ((5, "slat"), (9, "slat")),
              ((3, "cond"), (9, "source_cond")), ((1, "model"), (10, "model")), ((9, "slat"), (10, "slat")),
              ((10, "asset"), (11, "asset")), ((10, "asset"), (12, "asset")), ((8, "region"), (12, "region"))]
    return {"nodes": nodes, "links": links}


def edit_delete_and_fill():
    """Generate an asset, empty a region of it (delete), then grow new structure there (add)."""
    nodes, links = _generation("trellis_example.png")
    nodes.update({
        6: ("TrellisEditRegion", {"boxes": "-0.5 -0.5 0.0 0.5 0.5 0.5", "border": 0}),
        7: ("TrellisRegionEdit", {**SAMPLER, "seed": 3, "mode": "delete", "method": "repaint"}),
        8: ("TrellisRegionEdit", {**SAMPLER, "seed": 4, "mode": "add", "method": "repaint"}),
        9: ("TrellisDecode", {}),
        10: ("TrellisExportGLB", {"filename_prefix": "trellis/edit_fill"}),
        11: ("TrellisPreview", {"filename_prefix": "trellis/edit_fill_preview"}),
    })
    links += [((1, "model"), (6, "model")), ((1, "model"), (7, "model")), ((3, "cond"), (7, "cond")),
              ((4, "structure"), (7, "structure")), ((6, "region"), (7, "region")), ((5, "slat"), (7, "slat")),
              ((1, "model"), (8, "model")), ((3, "cond"), (8, "cond")), ((7, "structure"), (8, "structure")),
              ((6, "region"), (8, "region")), ((7, "slat"), (8, "slat")),
              ((1, "model"), (9, "model")), ((8, "slat"), (9, "slat")), ((9, "asset"), (10, "asset")),
              ((9, "asset"), (11, "asset")), ((6, "region"), (11, "region"))]
    return {"nodes": nodes, "links": links}


WORKFLOWS = {"trellis_image_to_3d": image_to_3d, "trellis_text_to_3d": text_to_3d,
             "trellis_multi_image": multi_image, "trellis_variant_from_mesh": variant_from_mesh,
             "trellis_sdxl_to_3d": sdxl_to_3d, "trellis_edit_replace_part": edit_replace_part,
             "trellis_edit_delete_and_fill": edit_delete_and_fill}


def _outputs(cls):
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    return list(zip(names, cls.RETURN_TYPES))


def node_size(node_type: str, cls, sockets: int, widgets: int) -> list:
    """[width, height] px that shows every socket, widget and preview of the node."""
    height = TITLE + SOCKET_ROW * sockets + WIDGET_ROW * widgets + 10
    if node_type.startswith("Trellis") and getattr(cls, "OUTPUT_NODE", False):
        return [420, height + PACK_PREVIEW]
    if node_type in PREVIEWS:
        return [420 if node_type == "Preview3D" else 340, height + PREVIEWS[node_type]]
    return [340, height]


def layout(sizes: list, columns: int = 5) -> list:
    """Positions of nodes in rows of ``columns``: each column as wide as its widest node, each row
    below the tallest node of the row above, GAP px apart."""
    widths = [max(s[0] for s in sizes[c::columns]) for c in range(min(columns, len(sizes)))]
    positions, y = [], 60
    for row in range(0, len(sizes), columns):
        x = 40
        for c, size in enumerate(sizes[row:row + columns]):
            positions.append([x, y])
            x += widths[c] + GAP
        y += max(s[1] for s in sizes[row:row + columns]) + GAP
    return positions


def build(description: dict, classes: dict) -> dict:
    nodes, links = description["nodes"], description["links"]
    models = description.get("models", {})
    ui_nodes, ui_links = [], []
    inputs = {}
    outputs = {}
    for index, (node_id, (node_type, values)) in enumerate(nodes.items()):
        cls = classes[node_type]
        ins, widget_values = [], []
        defaults = {name: opts.get("default") for name, kind, opts in _inputs_in_order(cls)}
        kinds = {name: (kind, opts) for name, kind, opts in _inputs_in_order(cls)}
        for slot, real in widget_slots(cls):
            if real:
                if slot in values:
                    value = values[slot]
                elif defaults.get(slot) is not None:
                    value = defaults[slot]
                elif choices(*kinds[slot]):
                    value = choices(*kinds[slot])[0]
                else:
                    value = ""
                widget_values.append(value)
            elif slot.endswith(":control"):
                widget_values.append("fixed")
            elif slot.endswith(":filter"):
                widget_values.append("")
            elif slot == "upload":
                widget_values.append("image")
            elif slot == "image":
                widget_values.append(None)
        for name, kind, opts in _inputs_in_order(cls):
            if not is_widget(kind, opts):
                ins.append({"name": name, "type": kind, "link": None})
        outs = _outputs(cls)
        node = {"id": node_id, "type": node_type, "pos": None,
                "size": node_size(node_type, cls, max(len(ins), len(outs)), len(widget_values)), "flags": {},
                "order": index, "mode": 0, "inputs": ins,
                "outputs": [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(outs)],
                "properties": {"Node name for S&R": node_type, **({"models": models[node_id]} if node_id in models else {})},
                "widgets_values": widget_values}
        ui_nodes.append(node)
        inputs[node_id] = node["inputs"]
        outputs[node_id] = node["outputs"]
    for node, position in zip(ui_nodes, layout([node["size"] for node in ui_nodes])):
        node["pos"] = position
    for link_id, ((src, out_name), (dst, in_name)) in enumerate(links, start=1):
        out_slot = next(i for i, o in enumerate(outputs[src]) if o["name"] == out_name)
        out_type = outputs[src][out_slot]["type"]
        targets = inputs[dst]
        slot = next((i for i, s in enumerate(targets) if s["name"] == in_name), None)
        if slot is None:  # a widget input driven by a link: the front end adds a socket with "widget"
            targets.append({"name": in_name, "type": out_type, "link": None, "widget": {"name": in_name}})
            slot = len(targets) - 1
        targets[slot]["link"] = link_id
        outputs[src][out_slot]["links"].append(link_id)
        ui_links.append([link_id, src, out_slot, dst, slot, out_type])
    workflow = {"last_node_id": max(nodes), "last_link_id": len(links), "nodes": ui_nodes, "links": ui_links,
                "groups": [], "config": {}, "extra": {"trellis_note": NOTE}, "version": 0.4}
    if models:
        workflow["models"] = [m for node_models in models.values() for m in node_models]
    return workflow


def build_all() -> dict:
    """Every workflow, {name: UI JSON}, built from the pack's node classes (imported and loaded as
    ComfyUI does, on the in-repo host stand-in, which stays installed while their schemas are read)
    and the core ones."""
    with tempfile.TemporaryDirectory() as tmp:
        host = comfy_host.install(Path(tmp), "2026")
        try:
            classes, _ = comfy_host.load_nodes(comfy_host.import_pack(REPO, host), host)
            classes = {**CORE_NODES, **classes}
            return {name: build(describe(), classes) for name, describe in WORKFLOWS.items()}
        finally:
            comfy_host.uninstall()


def main() -> None:
    out = REPO / "workflows"
    for name, workflow in build_all().items():
        (out / f"{name}.json").write_text(json.dumps(workflow, indent=1) + "\n")
        print(out / f"{name}.json")


if __name__ == "__main__":
    main()
