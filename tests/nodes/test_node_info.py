"""The V3 port changes nothing a saved workflow or the front end depends on: what ``/object_info``
serves for every node, built by the host's V3 API (the stand-in's, both variants), is what the V1
nodes served (tests/fixtures/node_info_v1.json, written by node_info.py from the last V1 revision):
the same nodes, inputs in the same order with the same types, defaults, ranges, tooltips and
advanced flags (inputs appended after them allowed), the same outputs. ``node_info.py check-host`` runs the same comparison on a real
ComfyUI tree (docs/comfyui_trial.md)."""
from __future__ import annotations

import json

import pytest

from node_fixtures import import_pack_isolated
from node_info import SNAPSHOT, as_json, differences, front_end_view
import comfy_host  # noqa: E402  (on sys.path via node_fixtures)

SNAPSHOT_NODES = json.loads(SNAPSHOT.read_text())["nodes"]


@pytest.fixture(params=comfy_host.VARIANTS, name="bare_host")
def bare_host_fixture(request, tmp_path):
    """A host with no model folders and the example inputs, as the snapshot was taken on."""
    host = comfy_host.install(tmp_path, request.param)
    pack = import_pack_isolated(host)
    pack.nodes.host.install_example_inputs(pack.nodes.EXAMPLE_INPUTS)
    yield host, pack
    comfy_host.uninstall()


def test_every_node_serves_what_the_v1_node_served(bare_host, monkeypatch, tmp_path):
    """Compared as the snapshot was taken, before the pack shipped its demo model; with the model,
    the loader's choices differ only by TRELLIS-demo listed first (a choice, not a widget)."""
    import sys
    host, pack = bare_host
    classes, _ = comfy_host.load_nodes(pack, host)
    model_folder = sys.modules[pack.__name__ + ".trellis_impl.pipelines.model_folder"]
    shipped = (model_folder.DEMO_MODEL_PATH / "pipeline.json").is_file()
    choices_shipped = as_json(classes["TrellisModelLoader"].GET_NODE_INFO_V1())["input"]["required"]["model"][1]
    monkeypatch.setattr(model_folder, "DEMO_MODEL_PATH", tmp_path / "no_demo_model")
    served = {node_id: as_json(cls.GET_NODE_INFO_V1()) for node_id, cls in classes.items()}
    assert differences(served, SNAPSHOT_NODES) == []
    choices = served["TrellisModelLoader"]["input"]["required"]["model"][1]
    assert choices_shipped["options"] == ["TRELLIS-demo"] * shipped + choices["options"]
    assert {k: v for k, v in choices_shipped.items() if k != "options"} == {k: v for k, v in choices.items() if k != "options"}


def test_the_comparison_sees_what_the_front_end_sees():
    """Only forms the front end treats alike compare equal: a reordered, retyped or unflagged input
    or a renamed output does not; an input appended after the snapshot's does."""
    loader = SNAPSHOT_NODES["TrellisModelLoader"]
    v3_form = json.loads(json.dumps(loader))
    kind, options = v3_form["input"]["required"]["dtype"]
    v3_form["input"]["required"]["dtype"] = ["COMBO", {**options, "options": kind, "multiselect": False}]
    assert front_end_view(v3_form) == front_end_view(loader)
    changes = {
        "reordered": lambda info: info["input_order"]["required"].reverse(),
        "retyped": lambda info: info["input"]["required"]["download"].__setitem__(0, "INT"),
        "unflagged": lambda info: info["input"]["required"]["dtype"][1].pop("advanced"),
        "new default": lambda info: info["input"]["required"]["download"][1].__setitem__("default", True),
        "renamed output": lambda info: info["output_name"].__setitem__(0, "MODEL"),
    }
    for change, apply in changes.items():
        changed = json.loads(json.dumps(loader))
        apply(changed)
        assert differences({"TrellisModelLoader": changed}, {"TrellisModelLoader": loader}), change
    appended = json.loads(json.dumps(loader))
    appended["input"]["required"]["extra"] = ["INT", {"default": 1}]
    appended["input_order"]["required"].append("extra")
    assert differences({"TrellisModelLoader": appended}, {"TrellisModelLoader": loader}) == []
    inserted = json.loads(json.dumps(appended))
    inserted["input_order"]["required"].insert(0, inserted["input_order"]["required"].pop())
    assert differences({"TrellisModelLoader": inserted}, {"TrellisModelLoader": loader})
