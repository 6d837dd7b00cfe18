"""build_model on the meta device reproduces every full-size manifest: keys, shapes, dtypes."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import CONFORMANCE
from trellis_impl.models import build_model

MANIFESTS = sorted(p for p in (CONFORMANCE / "manifests").glob("*.json") if p.name != "index.json")


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.stem for p in MANIFESTS])
def test_manifest(path):
    manifest = json.loads(path.read_text())
    with torch.device("meta"):
        model = build_model(manifest["name"], **manifest["args"])
    state = model.state_dict()
    assert set(state) == set(manifest["params"]), (
        f"missing {sorted(set(manifest['params']) - set(state))[:5]}, "
        f"unexpected {sorted(set(state) - set(manifest['params']))[:5]}")
    for key, shape in manifest["params"].items():
        assert list(state[key].shape) == shape, f"{key}: {list(state[key].shape)} != {shape}"
        assert str(state[key].dtype).replace("torch.", "") == manifest["dtypes"][key], key
    assert all(t.device.type == "meta" for t in state.values())


def test_manifest_sizes_match_released_payloads():
    """The dtype layout gives the exact released safetensors byte counts (index.json)."""
    index = json.loads((CONFORMANCE / "manifests" / "index.json").read_text())
    for name, entry in index.items():
        manifest = json.loads((CONFORMANCE / "manifests" / f"{name}.json").read_text())
        with torch.device("meta"):
            state = build_model(manifest["name"], **manifest["args"]).state_dict()
        assert len(state) == entry["tensors"], name
        assert sum(t.numel() for t in state.values()) == entry["numel"], name
