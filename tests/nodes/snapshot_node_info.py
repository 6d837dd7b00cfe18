"""Write what ComfyUI's ``/object_info`` served for the pack's V1 nodes at a git revision, so the
V3 port can be checked against it (tests/nodes/test_node_info.py):

    python tests/nodes/snapshot_node_info.py e013b06

The revision's ``__init__.py``, ``nodes/``, ``trellis_impl/`` and ``assets/`` are extracted into a
temporary folder and imported as ComfyUI imports a pack, on the in-repo host stand-in with no model
folders and the example inputs in its input folder (the choices that list local files then hold
only what the pack itself ships). Each entry is built as ``server.py: node_info`` builds it for a
V1 class (ComfyUI 0.24.0; ``python_module`` left out: it names the install folder).
"""
from __future__ import annotations

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
        comfy_host.install(Path(tmp) / "host", "2026")
        try:
            pack = comfy_host.import_pack(pack_root)
            nodes = {node_id: served_v1_info(node_id, cls, pack.NODE_DISPLAY_NAME_MAPPINGS)
                     for node_id, cls in pack.NODE_CLASS_MAPPINGS.items()}
        finally:
            comfy_host.uninstall()
    # tuples become lists, as in the server's JSON reply
    return json.loads(json.dumps({"revision": commit, "nodes": nodes}))


def main() -> None:
    revision = sys.argv[1] if len(sys.argv) > 1 else "HEAD"
    SNAPSHOT.write_text(json.dumps(snapshot(revision), indent=1) + "\n")
    print(SNAPSHOT)


if __name__ == "__main__":
    main()
