"""load_model: the released layout, dtype choice, and clear errors for bad files."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import CONFORMANCE, ckpt_path
from trellis_impl.models import CheckpointError, build_model, load_model


def copy_ckpt(tmp_path, name="ss_flow"):
    for ext in (".json", ".safetensors"):
        shutil.copy(ckpt_path(name) + ext, tmp_path / f"{name}{ext}")
    return str(tmp_path / name)


def test_loads_eval_mode_float32_on_cpu_with_fp16_file_tensors_upcast():
    model = load_model(ckpt_path("ss_flow"))
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not any(p.requires_grad for p in model.parameters())
    stored = load_file(ckpt_path("ss_flow") + ".safetensors")
    assert stored["blocks.0.self_attn.to_qkv.weight"].dtype == torch.float16  # released layout
    assert torch.equal(model.state_dict()["blocks.0.self_attn.to_qkv.weight"],
                       stored["blocks.0.self_attn.to_qkv.weight"].float())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_compute_dtype_applies_to_the_torso_only(dtype):
    model = load_model(ckpt_path("slat_flow"), dtype=dtype)
    state = model.state_dict()
    assert state["blocks.0.self_attn.to_qkv.weight"].dtype == dtype
    assert state["input_blocks.0.conv1.conv.weight"].dtype == dtype
    assert state["blocks.0.norm2.weight"].dtype == torch.float32
    assert state["input_layer.weight"].dtype == torch.float32
    assert state["t_embedder.mlp.0.weight"].dtype == torch.float32


def test_path_with_extension_is_accepted():
    assert type(load_model(ckpt_path("ss_dec") + ".json")).__name__ == "SparseStructureDecoder"


def test_missing_files_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"nothing\.json: config file not found"):
        load_model(str(tmp_path / "nothing"))
    path = copy_ckpt(tmp_path)
    (tmp_path / "ss_flow.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"ss_flow\.safetensors: weights file not found"):
        load_model(path)


def test_truncated_weights_name_the_file(tmp_path):
    path = copy_ckpt(tmp_path)
    data = (tmp_path / "ss_flow.safetensors").read_bytes()
    (tmp_path / "ss_flow.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"ss_flow\.safetensors: not a readable safetensors file"):
        load_model(path)


def test_bad_config_json(tmp_path):
    path = copy_ckpt(tmp_path)
    (tmp_path / "ss_flow.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read the config"):
        load_model(path)
    (tmp_path / "ss_flow.json").write_text(json.dumps({"name": "NoSuchModel", "args": {}}))
    with pytest.raises(ValueError, match="unknown model class 'NoSuchModel'"):
        load_model(path)


def test_mismatched_weights_list_the_first_bad_keys(tmp_path):
    path = copy_ckpt(tmp_path)
    weights = load_file(path + ".safetensors")
    del weights["blocks.0.self_attn.to_qkv.weight"]
    weights["extra.weight"] = torch.zeros(1)
    weights["out_layer.bias"] = torch.zeros(3)
    save_file(weights, path + ".safetensors")
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    message = str(err.value)
    assert "ss_flow.safetensors does not match SparseStructureFlowModel" in message
    assert "missing keys: blocks.0.self_attn.to_qkv.weight" in message
    assert "unexpected keys: extra.weight" in message
    assert "mis-shaped: out_layer.bias [3] (expected [8])" in message


def test_weights_of_another_model_are_rejected(tmp_path):
    path = copy_ckpt(tmp_path, "ss_dec")
    shutil.copy(ckpt_path("ss_enc") + ".safetensors", path + ".safetensors")
    with pytest.raises(CheckpointError, match="does not match SparseStructureDecoder"):
        load_model(path)


def test_build_model_rejects_bad_arguments():
    with pytest.raises(ValueError, match="bad arguments for SparseStructureFlowModel"):
        build_model("SparseStructureFlowModel", resolution=8, not_an_arg=1)
    index = json.loads((CONFORMANCE / "index.json").read_text())
    with pytest.raises(ValueError, match="pe_mode"):
        build_model("SLatFlowModel", **{**index["models"]["slat_flow"]["args"], "pe_mode": "rope"})
