"""The ``/object_info`` entries of the pack's nodes (what the front end builds its widgets from and
saved workflows bind to), and how they compare between the V1 nodes and the V3 ones:

    python tests/nodes/node_info.py snapshot e013b06
    .comfyui/venv/bin/python tests/nodes/node_info.py check-host .comfyui/0.24.0

``snapshot`` writes what ComfyUI served for the V1 nodes of a git revision: its ``__init__.py``,
``nodes/``, ``trellis_impl/`` and ``assets/`` are extracted into a temporary folder and imported as
ComfyUI imports a pack, on the in-repo host stand-in with no model folders and the example inputs in
its input folder (the choices that list local files then hold only what the pack itself ships).
Each entry is built as ``server.py: node_info`` builds it for a V1 class (ComfyUI 0.24.0;
``python_module`` left out: it names the install folder).

``check-host`` builds the entries of this checkout's V3 nodes with a real ComfyUI tree's own
``comfy_api.latest`` and ``folder_paths`` (docs/comfyui_trial.md says how the tree is set up) and
compares them to the snapshot (tests/nodes/test_node_info.py does the same on the stand-in).
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SNAPSHOT = REPO / "tests" / "fixtures" / "node_info_v1.json"
sys.path.insert(0, str(REPO / "tests"))
import comfy_host  # noqa: E402

PACK_PATHS = ("__init__.py", "nodes", "trellis_impl", "assets")


def served_v1_info(node_id: str, cls, display_names: dict) -> dict:
    """The ``/object_info`` entry of a V1 node class."""
    inputs = cls.INPUT_TYPES()
    info = {
        "input": inputs,
        "input_order": {section: list(entries) for section, entries in inputs.items()},
        "is_input_list": getattr(cls, "INPUT_IS_LIST", False),
        "output": cls.RETURN_TYPES,
        "output_is_list": getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES)),
        "output_name": getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES),
        "name": node_id,
        "display_name": display_names.get(node_id, node_id),
        "description": getattr(cls, "DESCRIPTION", ""),
        "category": getattr(cls, "CATEGORY", "sd"),
        "output_node": getattr(cls, "OUTPUT_NODE", False) is True,
        "has_intermediate_output": getattr(cls, "HAS_INTERMEDIATE_OUTPUT", False) is True,
        "search_aliases": getattr(cls, "SEARCH_ALIASES", []),
    }
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        info["output_tooltips"] = cls.OUTPUT_TOOLTIPS
    for flag, key in (("DEPRECATED", "deprecated"), ("EXPERIMENTAL", "experimental"), ("DEV_ONLY", "dev_only")):
        if getattr(cls, flag, False):
            info[key] = True
    if hasattr(cls, "API_NODE"):
        info["api_node"] = cls.API_NODE
    return info


def as_json(value):
    """``value`` as the server's JSON reply gives it (tuples become lists, str subclasses str)."""
    return json.loads(json.dumps(value))


def _input_view(entry: list) -> list:
    kind, options = entry[0], dict(entry[1]) if len(entry) > 1 else {}
    if isinstance(kind, list):  # a V1 combo: the choices are the type
        kind, options = "COMBO", {**options, "options": kind}
    if kind == "COMBO" and options.get("multiselect") is False:
        del options["multiselect"]
    if kind == "STRING" and options.get("multiline") is False:
        del options["multiline"]
    return [kind, options]


def front_end_view(info: dict) -> dict:
    """What the front end and saved workflows take from an ``/object_info`` entry, in one form for
    V1 and V3 nodes. Entries with equal views differ only in what the front end treats alike: a
    combo's choices as its type (V1) or as "COMBO" with ``options`` (V3, with ``multiselect:
    false``), a STRING input's ``multiline: false`` (V3 serves it), the hidden inputs V3 gives
    output nodes (prompt, workflow), absent flags or tooltips versus false / empty ones, and the
    fields newer hosts add."""
    inputs = {section: {name: _input_view(entry) for name, entry in info["input"][section].items()}
              for section in ("required", "optional") if section in info["input"]}
    return {
        "name": info["name"], "display_name": info["display_name"], "description": info["description"],
        "category": info["category"], "output_node": bool(info["output_node"]),
        "deprecated": bool(info.get("deprecated")), "experimental": bool(info.get("experimental")),
        "is_input_list": bool(info.get("is_input_list")),
        "input": inputs, "input_order": {section: info["input_order"][section] for section in inputs},
        "output": info["output"], "output_is_list": info["output_is_list"], "output_name": info["output_name"],
        "output_tooltips": info.get("output_tooltips") or [],
    }


def differences(served: dict, expected: dict) -> list:
    """One line per node whose view differs from the snapshot's (or that only one side has). Inputs
    appended after the snapshot's are allowed (saved widget values bind by position, so appending
    keeps them where they were); everything the snapshot has must be served as it was."""
    lines = [f"{node_id}: only in the snapshot" for node_id in expected if node_id not in served]
    lines += [f"{node_id}: not in the snapshot" for node_id in served if node_id not in expected]
    for node_id in sorted(set(served) & set(expected)):
        now, before = front_end_view(served[node_id]), front_end_view(expected[node_id])
        for section in list(now["input_order"]):
            order = before["input_order"].get(section, [])
            if now["input_order"][section][:len(order)] == order:  # the snapshot's part; appended inputs may follow
                now["input_order"][section] = order
                now["input"][section] = {name: now["input"][section][name] for name in order}
            if not order and section not in before["input_order"]:  # a section of appended inputs only
                del now["input_order"][section], now["input"][section]
        lines += [f"{node_id}.{key}: {now[key]!r} != {before[key]!r}" for key in before if now[key] != before[key]]
    return lines


def extract(revision: str, target: Path) -> None:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", revision, *PACK_PATHS],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")


def snapshot(revision: str) -> dict:
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", revision], check=True,
                            capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        pack_root = Path(tmp) / "ComfyUI-TRELLIS"
        extract(revision, pack_root)
        host = comfy_host.install(Path(tmp) / "host", "2026")
        try:
            classes, names = comfy_host.load_nodes(comfy_host.import_pack(pack_root, host), host)
            nodes = {node_id: served_v1_info(node_id, cls, names) for node_id, cls in classes.items()}
        finally:
            comfy_host.uninstall()
    return as_json({"revision": commit, "nodes": nodes})


def check_host(comfyui: Path) -> list:
    """Differences between the snapshot and the entries this checkout's nodes get from the real
    ComfyUI tree ``comfyui`` (its ``comfy_api.latest`` builds them, its ``folder_paths`` lists the
    models and inputs), loaded as its ``load_custom_node`` loads a V3 pack."""
    sys.path.insert(0, str(comfyui.resolve()))
    from comfy_api.latest import ComfyExtension

    async def node_list():
        extension = await comfy_host.import_pack(REPO).comfy_entrypoint()
        assert isinstance(extension, ComfyExtension), type(extension)
        return await extension.get_node_list()

    served = {cls.GET_SCHEMA().node_id: as_json(cls.GET_NODE_INFO_V1()) for cls in asyncio.run(node_list())}
    return differences(served, json.loads(SNAPSHOT.read_text())["nodes"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("snapshot").add_argument("revision")
    commands.add_parser("check-host").add_argument("comfyui", type=Path)
    args = parser.parse_args()
    if args.command == "snapshot":
        SNAPSHOT.write_text(json.dumps(snapshot(args.revision), indent=1) + "\n")
        print(SNAPSHOT)
    else:
        lines = check_host(args.comfyui)
        print("\n".join(lines) or f"{args.comfyui}: every node serves what the snapshot holds")
        sys.exit(1 if lines else 0)


if __name__ == "__main__":
    main()
