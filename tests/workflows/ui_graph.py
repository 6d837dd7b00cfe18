"""UI-format workflow JSON -> API prompt, and a small executor, following the host contract
(ComfyUI's workflow format: the front end's graph JSON): widget values map positionally onto the
widget inputs in INPUT_TYPES order (required, then optional); a seed INT (control_after_generate,
or named seed/noise_seed) is followed by its control slot, a COMBO with control_after_generate by
two, an image_upload COMBO by an ``upload`` slot; links become ``[source id, output index]``;
Note/MarkdownNote nodes and muted nodes (mode 2) are dropped, bypassed nodes (mode 4) pass their
first input of the same type through. A combo is served as its list of choices (V1) or as
"COMBO" with ``options`` (V3); the front end treats both alike."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from comfy_host.execution import Ran, check_inputs, fingerprint, is_link, run_node

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


def choices(kind, options: dict) -> Optional[list]:
    """A combo's choices, in either form it is served in; None for other inputs."""
    if isinstance(kind, (list, tuple)):
        return list(kind)
    return list(options.get("options", [])) if kind == "COMBO" else None


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
        elif choices(kind, options) is not None and options.get("control_after_generate"):
            slots += [(f"{name}:control", False), (f"{name}:filter", False)]
        if options.get("image_upload"):
            slots.append(("upload", False))
    if getattr(node_class, "_ui_extra_image_slot", False):
        slots.append(("image", False))
    return slots


def ui_to_api(workflow: dict, classes: Dict[str, type]) -> Dict[str, dict]:
    """Convert a UI-format workflow into an API prompt, checking every node type and that no node
    has more widget values than widgets."""
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
        if len(values) > len(slots):
            raise ValueError(f"node {node_id} ({node['type']}): {len(values)} widget values, the node "
                             f"defines {len(slots)} ({[s for s, _ in slots]})")
        # a workflow saved before an input was appended has fewer values: as the front end's
        # configure() does, the widgets after them keep their defaults
        defaults = {name: options.get("default", (choices(kind, options) or [None])[0])
                    for name, kind, options in _inputs_in_order(cls)}
        values += [defaults.get(name) for name, _ in slots[len(values):]]
        inputs = {name: value for (name, real), value in zip(slots, values) if real}
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                src = source_of(slot["link"])
                if src is not None:
                    inputs[slot["name"]] = src
        prompt[node_id] = {"class_type": node["type"], "inputs": inputs}
    return prompt


class PromptError(Exception):
    """The prompt was refused before anything ran (the host's validation errors, one per line)."""


def execute(prompt: Dict[str, dict], classes: Dict[str, type], variant: str,
            cache: Optional[Dict[tuple, Ran]] = None) -> Dict[str, Ran]:
    """Run the output nodes of ``prompt`` and their ancestors as the host does; returns {node id:
    its outputs and ui}. Every node to run is validated first (``comfy_host.execution.check_inputs``
    for the host ``variant``): one bad input refuses the whole prompt. A node's key is its class, its
    constant inputs, its fingerprint and its inputs' keys; with a ``cache`` shared between calls, a
    node whose key is there is not run again (re-running an unchanged prompt runs nothing)."""
    outputs = [i for i, e in prompt.items() if getattr(classes[e["class_type"]], "OUTPUT_NODE", False)]
    if not outputs:
        raise PromptError("prompt has no output node")
    order: List[str] = []

    def visit(node_id: str):
        if node_id not in order:
            for value in prompt[node_id]["inputs"].values():
                if is_link(value):
                    visit(value[0])
            order.append(node_id)

    for node_id in outputs:
        visit(node_id)
    errors, constants = [], {}
    for node_id in order:
        entry = prompt[node_id]
        received = {name: classes[prompt[value[0]]["class_type"]].RETURN_TYPES[value[1]]
                    for name, value in entry["inputs"].items() if is_link(value)}
        found, constants[node_id] = check_inputs(classes[entry["class_type"]], entry["inputs"], received, variant)
        errors += [f"node {node_id} ({entry['class_type']}): {error}" for error in found]
    if errors:
        raise PromptError("\n".join(errors))

    cache = {} if cache is None else cache
    keys: Dict[str, tuple] = {}
    results: Dict[str, Ran] = {}
    for node_id in order:
        entry = prompt[node_id]
        cls = classes[entry["class_type"]]
        links = {name: value for name, value in entry["inputs"].items() if is_link(value)}
        keys[node_id] = (entry["class_type"], repr(sorted(constants[node_id].items())),
                         fingerprint(cls, constants[node_id], list(links)),
                         tuple((name, keys[value[0]], value[1]) for name, value in sorted(links.items())))
        if keys[node_id] not in cache:
            linked = {name: results[value[0]].outputs[value[1]] for name, value in links.items()}
            cache[keys[node_id]] = run_node(cls, {**constants[node_id], **linked})
        results[node_id] = cache[keys[node_id]]
    return results
