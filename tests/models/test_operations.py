"""A host's layer classes (``operations=``, as ComfyUI passes ``comfy.ops.*``): every layer of
every released model class is built through them, the checkpoints load key for key, and the
outputs are those of the default build."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

from conftest import assert_rel_close, ckpt_path, load_case
from trellis_impl.conditioning import DinoV2, DinoV2Config
from trellis_impl.conditioning.dinov2 import LayerScale
from trellis_impl.models import MODEL_CLASSES, build_model, load_model
from trellis_impl.models.base import _TORSO_LAYERS
from trellis_impl.modules.norm import MultiHeadRMSNorm
from trellis_impl.modules.ops import REQUIRED_LAYERS, SPARSE_LAYERS, TrellisOps, resolve_operations
from trellis_impl.sparse import SparseConv3d, SparseGroupNorm32, SparseTensor
from trellis_impl.sparse.conv import ConvWeights

CKPTS = ["ss_enc", "ss_dec", "ss_flow", "slat_flow", "slat_enc", "slat_dec_gs", "slat_dec_rf", "slat_dec_mesh",
         "slat_flow_elastic", "slat_enc_elastic", "slat_dec_gs_elastic", "slat_dec_rf_elastic",
         "slat_dec_mesh_elastic"]

BUILT = []  # every layer the recording namespace constructed


class _Recorded:
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        BUILT.append(self)


class Recording:
    """Subclasses of the torch layers (plain torch forward) and of the sparse layers, counting
    their constructions."""
    class Linear(_Recorded, nn.Linear):
        pass

    class Conv2d(_Recorded, nn.Conv2d):
        pass

    class Conv3d(_Recorded, nn.Conv3d):
        pass

    class LayerNorm(_Recorded, nn.LayerNorm):
        pass

    class GroupNorm(_Recorded, nn.GroupNorm):
        pass

    class SparseConv3d(_Recorded, SparseConv3d):
        pass

    class SparseGroupNorm32(_Recorded, SparseGroupNorm32):
        pass


RECORDED = tuple(getattr(Recording, name) for name in REQUIRED_LAYERS + SPARSE_LAYERS)


def _cast(p, x):
    return None if p is None else p.to(x)


class ManualCast:
    """Like ``comfy.ops.manual_cast``: weights cast to the input's dtype and device in forward;
    no sparse layers (the library's defaults fill in)."""
    class Linear(nn.Linear):
        def forward(self, x):
            return F.linear(x, _cast(self.weight, x), _cast(self.bias, x))

    class Conv2d(nn.Conv2d):
        def forward(self, x):
            return self._conv_forward(x, _cast(self.weight, x), _cast(self.bias, x))

    class Conv3d(nn.Conv3d):
        def forward(self, x):
            return self._conv_forward(x, _cast(self.weight, x), _cast(self.bias, x))

    class LayerNorm(nn.LayerNorm):
        def forward(self, x):
            return F.layer_norm(x, self.normalized_shape, _cast(self.weight, x), _cast(self.bias, x), self.eps)

    class GroupNorm(nn.GroupNorm):
        def forward(self, x):
            return F.group_norm(x, self.num_groups, _cast(self.weight, x), _cast(self.bias, x), self.eps)


@pytest.fixture(autouse=True)
def _fresh():
    BUILT.clear()
    with torch.no_grad():
        yield


def run(name, model):
    """The network output of conformance case ``name`` (decoders: before ``to_representation``)."""
    t, _ = load_case(name)
    if name == "ss_enc":
        return model(t["x"], sample_posterior=False)
    if name == "ss_dec":
        return model(t["z"])
    if name == "ss_flow":
        return model(t["x"], t["t"], t["cond"])
    x = SparseTensor(t["feats"], t["coords"])
    if name.startswith("slat_flow"):
        return model(x, t["t"], t["cond"]).feats
    if name.startswith("slat_enc"):
        return model(x, sample_posterior=False).feats
    return model.forward_features(x).feats


def assert_built_through(model, layer_classes):
    """Every module holding parameters of its own is one of ``layer_classes`` (or a parameter
    holder that is no layer: QK-norm gamma, a sparse conv's weights, DINOv2's tokens), and every
    layer the namespace built is in the model."""
    holders = (MultiHeadRMSNorm, ConvWeights, DinoV2, LayerScale, *layer_classes)
    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)) and not isinstance(module, holders):
            raise AssertionError(f"{name}: {type(module).__qualname__} not built through the namespace")
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.Conv3d, nn.LayerNorm, nn.GroupNorm,
                               SparseConv3d, SparseGroupNorm32)):
            assert isinstance(module, layer_classes), f"{name}: {type(module).__qualname__}"
    layers = [m for m in model.modules() if isinstance(m, RECORDED)]
    assert len(layers) == len(BUILT) and {id(m) for m in layers} == {id(m) for m in BUILT}


def test_the_fixtures_cover_every_released_model_class():
    names = {json.loads(Path(ckpt_path(c) + ".json").read_text())["name"] for c in CKPTS}
    assert names == set(MODEL_CLASSES)


@pytest.mark.parametrize("name", CKPTS)
def test_recording_namespace_builds_every_layer_and_loads_key_for_key(name):
    model = load_model(ckpt_path(name), operations=Recording)
    assert_built_through(model, RECORDED)
    default = load_model(ckpt_path(name))
    stored = load_file(ckpt_path(name) + ".safetensors")
    state = model.state_dict()
    assert list(state) == list(default.state_dict()) and set(state) == set(stored)
    for key, value in stored.items():
        assert torch.equal(state[key], value.float()), key
    assert torch.equal(run(name, model), run(name, default))


@pytest.mark.parametrize("name", ["ss_dec", "ss_flow", "slat_flow", "slat_dec_mesh"])
def test_manual_cast_namespace(name):
    """ComfyUI-like casting layers, sparse layers from the defaults: float32 weights give the
    default output exactly; a float16 torso (cast up to the float32 activations in forward)
    within 3e-3 of it, relative to its largest value (float16 rounding of the float32 fixture
    weights: up to 8e-4; exact for the fixtures stored with a float16 torso, ss_*)."""
    reference = run(name, load_model(ckpt_path(name)))
    model = load_model(ckpt_path(name), operations=ManualCast)
    dense = (ManualCast.Linear, ManualCast.Conv3d, ManualCast.LayerNorm, ManualCast.GroupNorm)
    assert_built_through(model, dense + (SparseConv3d, SparseGroupNorm32))
    assert all(type(m) in (SparseConv3d, SparseGroupNorm32) for m in model.modules()
               if isinstance(m, (SparseConv3d, SparseGroupNorm32)))
    assert torch.equal(run(name, model), reference)
    half = load_model(ckpt_path(name), operations=ManualCast, dtype=torch.float16)
    torso = [m for part in half.torso() for m in part.modules() if isinstance(m, _TORSO_LAYERS)]
    assert torso and all(p.dtype == torch.float16 for m in torso for p in m.parameters())
    assert half.state_dict().keys() == model.state_dict().keys()
    assert_rel_close(run(name, half), reference, 3e-3, name)


def test_dinov2_builds_through_the_namespace():
    config = DinoV2Config(embed_dim=32, depth=2, num_heads=2, patch_size=14, img_size=70)
    default = DinoV2(config)
    for p in default.parameters():
        p.data.normal_(0, 0.3)
    model = DinoV2(config, operations=Recording)
    assert_built_through(model, RECORDED)
    model.load_state_dict(default.state_dict(), strict=True)
    pixels = torch.randn(2, 3, 70, 70)
    assert torch.equal(model(pixels), default(pixels))


def test_build_model_passes_dtype_device_and_operations():
    args = {"in_channels": 8, "model_channels": 32, "latent_channels": 8, "num_blocks": 1, "num_heads": 2,
            "resolution": 8, "window_size": 4, "use_fp16": True}
    model = build_model("SLatEncoder", dtype=torch.bfloat16, device="meta", operations=Recording, **args)
    assert_built_through(model, RECORDED)
    assert all(p.device.type == "meta" for p in model.parameters())
    assert model.dtype == torch.bfloat16 and model.blocks[0].attn.to_qkv.weight.dtype == torch.bfloat16
    assert model.input_layer.weight.dtype == torch.float32 and model.blocks[0].norm1.weight is None


def test_a_namespace_without_a_required_layer_is_refused():
    class NoConv3d:
        Linear, Conv2d, LayerNorm, GroupNorm = nn.Linear, nn.Conv2d, nn.LayerNorm, nn.GroupNorm
    with pytest.raises(TypeError, match="has no Conv3d"):
        resolve_operations(NoConv3d)
    with pytest.raises(ValueError, match="SparseStructureDecoder: operations .* has no Conv3d"):
        build_model("SparseStructureDecoder", operations=NoConv3d, out_channels=1, latent_channels=8,
                    num_res_blocks=1, channels=[32, 32])
    assert resolve_operations(None) is TrellisOps and resolve_operations(Recording) is Recording
