"""DINOv2 image encoder: checkpoint layouts, forward vs an independent reference (and vs
transformers when installed), token layout, positional-embedding interpolation, ``cond``."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from trellis_impl.conditioning import (DINOV2_VITL14_REG4, DinoV2, DinoV2Config, config_to_hf, encode_image,
                                       hf_to_hub_state_dict, hub_to_hf_state_dict, load_dinov2, normalize_imagenet)
from trellis_impl.models import CheckpointError

TINY = DinoV2Config(embed_dim=32, depth=2, num_heads=2, patch_size=14, num_register_tokens=4, img_size=70)


class NotATensor:
    """A pickled object that ``torch.load(weights_only=True)`` must refuse."""


def random_hub_weights(config: DinoV2Config, seed: int = 0) -> dict:
    """Random weights in the hub layout, scaled so every block changes the tokens visibly."""
    generator = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in DinoV2(config).state_dict().items()}
    weights = {}
    for key, shape in shapes.items():
        value = torch.randn(shape, generator=generator)
        if key.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
            value = 1 + 0.1 * value
        elif key.endswith(".weight") and len(shape) > 1:
            value = value / math.sqrt(shape[1:].numel())
        elif key.endswith(".gamma"):
            value = 0.5 * value
        weights[key] = value
    return weights


@pytest.fixture
def tiny_checkpoints(tmp_path):
    """The same random weights written as a hub ``.pth`` and as a Hugging Face directory."""
    weights = random_hub_weights(TINY)
    hub_path = tmp_path / "dinov2_tiny_reg4_pretrain.pth"
    torch.save(weights, hub_path)
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    save_file(hub_to_hf_state_dict(weights), str(hf_dir / "model.safetensors"))
    (hf_dir / "config.json").write_text(json.dumps(config_to_hf(TINY)))
    return weights, hub_path, hf_dir


def reference_prenorm(weights: dict, config: DinoV2Config, pixels: torch.Tensor) -> torch.Tensor:
    """Straightforward DINOv2 forward from the hub state dict: einsum attention, explicit norms."""
    p, C, heads = config.patch_size, config.embed_dim, config.num_heads
    B, _, H, W = pixels.shape
    gh, gw = H // p, W // p

    def layer_norm(x, prefix):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        normalized = (x - mean) / torch.sqrt(var + config.layer_norm_eps)
        return normalized * weights[prefix + ".weight"] + weights[prefix + ".bias"]

    def linear(x, prefix):
        return x @ weights[prefix + ".weight"].T + weights[prefix + ".bias"]

    # Patches as explicit flattened 14x14x3 pixel blocks, row-major over the grid.
    blocks = pixels.reshape(B, 3, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(B, gh * gw, 3 * p * p)
    patches = blocks @ weights["patch_embed.proj.weight"].reshape(C, -1).T + weights["patch_embed.proj.bias"]
    M = config.grid_size
    grid = weights["pos_embed"][0, 1:].reshape(M, M, C)
    if (gh, gw) != (M, M):
        grid = F.interpolate(grid.permute(2, 0, 1)[None], size=(gh, gw), mode="bicubic",
                             antialias=True)[0].permute(1, 2, 0)
    cls = weights["cls_token"][0] + weights["pos_embed"][0, :1]
    x = torch.cat([cls.expand(B, 1, C), weights["register_tokens"].expand(B, -1, C),
                   patches + grid.reshape(gh * gw, C)], dim=1)
    for i in range(config.depth):
        b = f"blocks.{i}."
        q, k, v = linear(layer_norm(x, b + "norm1"), b + "attn.qkv").reshape(B, -1, 3, heads, C // heads).unbind(2)
        logits = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(C // heads)
        attn = torch.einsum("bhqk,bkhd->bqhd", logits.softmax(-1), v).reshape(B, -1, C)
        x = x + linear(attn, b + "attn.proj") * weights[b + "ls1.gamma"]
        hidden = F.gelu(linear(layer_norm(x, b + "norm2"), b + "mlp.fc1"))
        x = x + linear(hidden, b + "mlp.fc2") * weights[b + "ls2.gamma"]
    return x


def test_hub_and_hf_layouts_load_identically(tiny_checkpoints):
    weights, hub_path, hf_dir = tiny_checkpoints
    hub_model = load_dinov2(str(hub_path), config=TINY)
    hf_model = load_dinov2(str(hf_dir))
    assert hf_model.config == TINY
    assert not hub_model.training and not any(p.requires_grad for p in hub_model.parameters())
    for key, value in weights.items():
        assert torch.equal(hub_model.state_dict()[key], value), key
        assert torch.equal(hf_model.state_dict()[key], value), key
    pixels = torch.randn(2, 3, 70, 70)
    assert torch.equal(hub_model(pixels), hf_model(pixels))
    # The safetensors file itself (config.json beside it) is accepted too.
    assert torch.equal(load_dinov2(str(hf_dir / "model.safetensors"))(pixels), hub_model(pixels))


def test_state_dict_converters_round_trip(tiny_checkpoints):
    weights, _, _ = tiny_checkpoints
    hf = hub_to_hf_state_dict(weights)
    C = TINY.embed_dim
    assert torch.equal(hf["encoder.layer.1.attention.attention.key.weight"],
                       weights["blocks.1.attn.qkv.weight"][C:2 * C])
    assert torch.equal(hf["encoder.layer.0.layer_scale2.lambda1"], weights["blocks.0.ls2.gamma"])
    back = hf_to_hub_state_dict(hf)
    assert back.keys() == weights.keys() and all(torch.equal(back[k], weights[k]) for k in weights)


@pytest.mark.parametrize("size", [(70, 70), (98, 56), (42, 42)])
def test_forward_matches_reference(tiny_checkpoints, size):
    weights, hub_path, _ = tiny_checkpoints
    model = load_dinov2(str(hub_path), config=TINY)
    pixels = torch.randn(2, 3, *size)
    ours = model(pixels)
    ref = reference_prenorm(weights, TINY, pixels)
    assert ours.shape == ref.shape == (2, model.num_tokens(*size), TINY.embed_dim)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(70, 70), (98, 56)])
def test_matches_transformers(tiny_checkpoints, size):
    transformers = pytest.importorskip("transformers")
    weights, hub_path, hf_dir = tiny_checkpoints
    hf = transformers.Dinov2WithRegistersModel.from_pretrained(str(hf_dir)).eval()
    pixels = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = hf(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(load_dinov2(str(hf_dir))(pixels), expected, rtol=1e-5, atol=1e-5)


def test_token_layout_at_518():
    assert DinoV2(TINY).num_tokens(518, 518) == 1 + 4 + 37 * 37 == 1374
    with torch.device("meta"):
        full = DinoV2(DINOV2_VITL14_REG4)
        assert full(torch.empty(1, 3, 518, 518)).shape == (1, 1374, 1024)
    assert full.pos_embed.shape == (1, 37 * 37 + 1, 1024) and full.register_tokens.shape == (1, 4, 1024)

    config = DinoV2Config(embed_dim=32, depth=1, num_heads=2, img_size=518)
    model = DinoV2(config).eval()
    model.load_state_dict(random_hub_weights(config))
    # At the native size the stored positional embedding is used as is (no resampling).
    assert model.positional_embedding(37, 37) is model.pos_embed
    pixels = torch.randn(1, 3, 518, 518)
    # Same first-block input as the reference: [CLS, 4 registers, 1369 patches].
    with torch.no_grad():
        torch.testing.assert_close(model(pixels), reference_prenorm(model.state_dict(), config, pixels),
                                   rtol=1e-5, atol=1e-5)


def test_positional_embedding_interpolation():
    model = DinoV2(TINY)
    M, C = TINY.grid_size, TINY.embed_dim
    with torch.no_grad():
        # A grid varying along rows only stays row-only (orientation), a constant stays constant.
        rows = torch.linspace(-1, 1, M)[:, None, None].expand(M, M, C)
        model.pos_embed[0, 1:] = rows.reshape(M * M, C)
        model.pos_embed[0, 0] = 7.0
    pos = model.positional_embedding(7, 3)
    assert pos.shape == (1, 1 + 21, C)
    assert torch.equal(pos[0, 0], model.pos_embed[0, 0])
    grid = pos[0, 1:].reshape(7, 3, C)
    assert torch.allclose(grid, grid[:, :1], atol=1e-6)
    assert grid[0, 0, 0] < grid[3, 0, 0] < grid[6, 0, 0]
    expected = F.interpolate(rows.permute(2, 0, 1)[None], size=(7, 3), mode="bicubic", antialias=True)
    torch.testing.assert_close(grid, expected[0].permute(1, 2, 0))
    # The hub's scale-factor path (offset > 0) yields the same grid size.
    offset_model = DinoV2(DinoV2Config(32, 1, 2, img_size=70, interpolate_offset=0.1))
    assert offset_model.positional_embedding(8, 6).shape == (1, 49, 32)


def test_encode_image_cond():
    config = DinoV2Config(embed_dim=32, depth=1, num_heads=2, img_size=518)
    model = DinoV2(config).eval()
    model.load_state_dict(random_hub_weights(config))
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (518, 518, 3), dtype=np.uint8)) for _ in range(2)]
    cond = encode_image(model, images)
    assert cond.shape == (2, 1374, 32) and cond.dtype == torch.float32
    pixels = torch.stack([torch.from_numpy(np.asarray(i).astype(np.float32) / 255).permute(2, 0, 1) for i in images])
    prenorm = reference_prenorm(model.state_dict(), config, normalize_imagenet(pixels))
    mean, var = prenorm.mean(-1, keepdim=True), prenorm.var(-1, unbiased=False, keepdim=True)
    torch.testing.assert_close(cond, (prenorm - mean) / torch.sqrt(var + 1e-5), rtol=1e-4, atol=1e-4)
    # A tensor input is taken as given.
    torch.testing.assert_close(encode_image(model, pixels), cond)


def test_load_errors_name_file_and_keys(tiny_checkpoints, tmp_path):
    weights, hub_path, hf_dir = tiny_checkpoints
    with pytest.raises(CheckpointError, match=r"\.pth does not match .*embed 1024.*mis-shaped: cls_token"):
        load_dinov2(str(hub_path))  # ViT-L default config vs tiny weights
    broken = dict(weights)
    del broken["blocks.1.ls1.gamma"]
    broken["head.weight"] = torch.zeros(3)
    broken["cls_token"] = torch.zeros(1, 2, 32)
    bad_path = tmp_path / "broken.pth"
    torch.save(broken, bad_path)
    with pytest.raises(CheckpointError) as error:
        load_dinov2(str(bad_path), config=TINY)
    message = str(error.value)
    assert "broken.pth" in message and "missing keys: blocks.1.ls1.gamma" in message
    assert "unexpected keys: head.weight" in message and "cls_token [1, 2, 32]" in message

    hf = hub_to_hf_state_dict(weights)
    del hf["encoder.layer.0.attention.attention.value.bias"]
    save_file(hf, str(hf_dir / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*missing keys: encoder\.layer\.0\.attention"):
        load_dinov2(str(hf_dir))
    (hf_dir / "config.json").write_text(json.dumps({**config_to_hf(TINY), "use_swiglu_ffn": True}))
    with pytest.raises(CheckpointError, match=r"config\.json: .*unsupported DINOv2 options \{'use_swiglu_ffn'"):
        load_dinov2(str(hf_dir))
    with pytest.raises(ValueError, match="carries its own config.json"):
        load_dinov2(str(hf_dir), config=TINY)
    with pytest.raises(CheckpointError, match="not found"):
        load_dinov2(str(tmp_path / "absent.pth"))

    pickled = tmp_path / "pickled.pth"
    torch.save({"cls_token": NotATensor()}, pickled)
    with pytest.raises(CheckpointError, match="pickled.pth: not a readable tensor-only"):
        load_dinov2(str(pickled), config=TINY)


def test_bad_pixels():
    model = DinoV2(TINY)
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        model(torch.zeros(1, 3, 70, 71))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.zeros(1, 4, 70, 70))
