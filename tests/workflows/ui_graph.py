"""UI-format workflow JSON -> API prompt, and a small executor, following the host contract
(ComfyUI's workflow format: the front end's graph JSON): widget values map positionally onto the
widget inputs in INPUT_TYPES order (required, then optional); a seed INT (control_after_generate,
or named seed/noise_seed) is followed by its control slot, a COMBO with control_after_generate by
two, an image_upload COMBO by an ``upload`` slot; links become ``[source id, output index]``;
Note/MarkdownNote nodes and muted nodes (mode 2) are dropped, bypassed nodes (mode 4) pass their
first input of the same type through."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
NON_EXECUTING = ("Note", "MarkdownNote", "Reroute", "PrimitiveNode")


def _inputs_in_order(node_class) -> List[Tuple[str, Any, dict]]:
    spec = node_class.INPUT_TYPES()
    out = []
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            kind = entry[0]
            options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            out.append((name, kind, options))
    return out


def is_widget(kind, options: dict) -> bool:
    if options.get("forceInput") or options.get("rawLink"):
        return False
    return isinstance(kind, (list, tuple)) or kind in WIDGET_TYPES or kind == "COMBO"


def widget_slots(node_class) -> List[Tuple[str, bool]]:
    """The widgets_values layout: (input name, is a real input) per slot, in order."""
    slots = []
    for name, kind, options in _inputs_in_order(node_class):
        if not is_widget(kind, options):
            continue
        slots.append((name, True))
        if kind == "INT" and (options.get("control_after_generate") or name in ("seed", "noise_seed")):
            slots.append((f"{name}:control", False))
        elif isinstance(kind, (list, tuple)) and options.get("control_after_generate"):
            slots += [(f"{name}:control", False), (f"{name}:filter", False)]
        if options.get("image_upload"):
            slots.append(("upload", False))
    if getattr(node_class, "_ui_extra_image_slot", False):
        slots.append(("image", False))
    return slots


def ui_to_api(workflow: dict, classes: Dict[str, type]) -> Dict[str, dict]:
    """Convert a UI-format workflow into an API prompt, checking every node type and widget count."""
    nodes = {str(n["id"]): n for n in workflow["nodes"]}
    links = {link[0]: link for link in workflow.get("links", [])}

    def source_of(link_id):
        _, src, src_slot, _, _, _ = links[link_id]
        node = nodes[str(src)]
        while node.get("mode") == 4 or node["type"] == "Reroute":  # bypassed: follow its first linked input
            linked = [i for i in node.get("inputs", []) if i.get("link") is not None]
            if not linked:
                return None
            _, src, src_slot, _, _, _ = links[linked[0]["link"]]
            node = nodes[str(src)]
        if node.get("mode") == 2:
            return None
        return [str(node["id"]), src_slot]

    prompt = {}
    for node_id, node in nodes.items():
        if node["type"] in NON_EXECUTING or node.get("mode") in (2, 4):
            continue
        if node["type"] not in classes:
            raise KeyError(f"node {node_id}: unknown node type {node['type']!r}")
        cls = classes[node["type"]]
        slots = widget_slots(cls)
        values = list(node.get("widgets_values") or [])
        if len(values) != len(slots):
            raise ValueError(f"node {node_id} ({node['type']}): {len(values)} widget values, the node "
                             f"defines {len(slots)} ({[s for s, _ in slots]})")
        inputs = {name: value for (name, real), value in zip(slots, values) if real}
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                src = source_of(slot["link"])
                if src is not None:
                    inputs[slot["name"]] = src
        prompt[node_id] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def execute(prompt: Dict[str, dict], classes: Dict[str, type]) -> Dict[str, Any]:
    """Run the output nodes of ``prompt`` and their ancestors; returns {node id: result tuple or
    ui dict}. Inputs missing from the prompt take the node's defaults (as the host does)."""
    results: Dict[str, Any] = {}

    def run(node_id: str):
        if node_id in results:
            return results[node_id]
        entry = prompt[node_id]
        cls = classes[entry["class_type"]]
        kwargs = {}
        for name, value in entry["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and value[0] in prompt:
                out = run(value[0])
                kwargs[name] = (out["result"] if isinstance(out, dict) else out)[value[1]]
            else:
                kwargs[name] = value
        for name, kind, options in _inputs_in_order(cls):
            if name not in kwargs and "default" in options:
                kwargs[name] = options["default"]
        out = getattr(cls(), cls.FUNCTION)(**kwargs)
        results[node_id] = out
        return out

    outputs = [i for i, e in prompt.items() if getattr(classes[e["class_type"]], "OUTPUT_NODE", False)]
    if not outputs:
        raise ValueError("prompt has no output node")
    for node_id in outputs:
        run(node_id)
    return results
