"""CLIP text conditioning equals transformers' CLIPTextModel as the official text pipeline calls it.

Runs on the tiny random CLIP folder (write_tiny_clip_folder); the reference is computed here
directly with transformers, so the wrapper is checked to add nothing.
"""
from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

transformers = pytest.importorskip("transformers")

from trellis_impl.conditioning.clip_text import CLIP_MAX_TOKENS, ClipTextEncoder  # noqa: E402
from trellis_impl.conditioning.tiny_clip import write_tiny_clip_folder  # noqa: E402
from trellis_impl.models.registry import CheckpointError  # noqa: E402

WIDTH = 48
PROMPTS = ["a red chair", "The   HOUSE!"]
LONG_PROMPT = " ".join(["chair"] * 100)  # "chair" is one token: 100 + start + end = 102 tokens


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_clip_folder(tmp_path_factory.mktemp("tiny_clip"), hidden_size=WIDTH)


@pytest.fixture(scope="module")
def reference(folder):
    """(model, tokenizer) loaded straight from transformers, as ``_init_text_cond_model`` does."""
    model = transformers.CLIPTextModel.from_pretrained(folder, local_files_only=True).eval()
    return model, transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)


@pytest.fixture(scope="module")
def encoder(folder):
    return ClipTextEncoder.from_folder(folder)


def official_ids(tokenizer, prompts):
    return tokenizer(prompts, max_length=77, padding="max_length", truncation=True, return_tensors="pt")["input_ids"]


def official_encode(reference, prompts):
    model, tokenizer = reference
    with torch.no_grad():
        return model(input_ids=official_ids(tokenizer, prompts)).last_hidden_state


def test_shapes(encoder):
    cond = encoder.get_cond(PROMPTS)
    assert encoder.width == WIDTH
    assert cond["cond"].shape == (2, CLIP_MAX_TOKENS, WIDTH) and cond["cond"].dtype == torch.float32
    assert cond["neg_cond"].shape == (1, CLIP_MAX_TOKENS, WIDTH)


def test_equals_transformers_directly(encoder, reference):
    assert torch.equal(encoder.tokenize(PROMPTS), official_ids(reference[1], PROMPTS))
    torch.testing.assert_close(encoder.encode(PROMPTS), official_encode(reference, PROMPTS), rtol=0, atol=1e-6)


def test_pads_with_end_token_without_attention_mask(encoder, reference):
    ids = encoder.tokenize(["a red chair"])[0]
    eos = reference[1].eos_token_id
    assert ids[0] == reference[1].bos_token_id
    n_real = 5  # start, a, red, chair, end
    assert ids[n_real - 1] == eos and (ids[n_real:] == eos).all(), "padding must be <|endoftext|>"

    # A mask would change the padded positions (only): the official no-mask call matters.
    model = reference[0]
    with torch.no_grad():
        masked = model(input_ids=ids[None], attention_mask=(torch.arange(77) < n_real).long()[None]).last_hidden_state
    cond = encoder.encode(["a red chair"])
    torch.testing.assert_close(cond[:, :n_real], masked[:, :n_real], rtol=0, atol=1e-5)
    assert (cond[:, n_real:] - masked[:, n_real:]).abs().amax() > 1e-2


def test_neg_cond_is_empty_prompt_encoding(encoder, reference):
    neg = encoder.get_cond(["a red chair"])["neg_cond"]
    assert neg is encoder.null_cond, "computed once at load"
    torch.testing.assert_close(neg, official_encode(reference, [""]), rtol=0, atol=1e-6)
    assert neg.abs().amax() > 0.1, "not zeros"


def test_long_prompt_truncated_with_one_warning(folder, reference, caplog):
    encoder = ClipTextEncoder.from_folder(folder)  # its own: the warning is once per encoder
    with caplog.at_level(logging.WARNING, logger="trellis_impl"):
        first = encoder.encode([LONG_PROMPT])
        second = encoder.encode(["a red chair", LONG_PROMPT])
    warnings = [r for r in caplog.records if r.name == "trellis_impl"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "102" in warnings[0].getMessage() and "last 25 tokens" in warnings[0].getMessage()

    ids = encoder.tokenize([LONG_PROMPT])[0]
    assert ids[-1] == reference[1].eos_token_id, "truncation keeps the end token"
    ref = official_encode(reference, [LONG_PROMPT])
    torch.testing.assert_close(first, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(second[1:], ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("prompt", ["", "   ", " \n\t "])
def test_empty_prompt_raises(encoder, prompt):
    with pytest.raises(ValueError, match="prompt is empty"):
        encoder.encode(["a red chair", prompt])


@pytest.mark.parametrize("prompts", [["a chair", 3], "a chair", None, [None]])
def test_non_string_raises(encoder, prompts):
    with pytest.raises(TypeError):
        encoder.encode(prompts)


def test_no_prompts_raises(encoder):
    with pytest.raises(ValueError, match="no prompts"):
        encoder.encode([])


def test_missing_files_named(folder, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(folder, partial)
    (partial / "model.safetensors").rename(partial / "pytorch_model.bin")
    (partial / "merges.txt").unlink()
    with pytest.raises(CheckpointError) as err:
        ClipTextEncoder.from_folder(partial)
    message = str(err.value)
    assert str(partial) in message and "model.safetensors" in message and "merges.txt" in message
    assert "pytorch_model.bin is not loaded" in message
    with pytest.raises(CheckpointError, match="not found"):
        ClipTextEncoder.from_folder(tmp_path / "absent")


def drop_final_norm_bias(folder):
    from safetensors.torch import load_file, save_file
    weights = load_file(folder / "model.safetensors")
    del weights["text_model.final_layer_norm.bias"]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def widen_config(folder):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": 64}))


def truncate_weights(folder):
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage, expected", [(drop_final_norm_bias, "missing .*final_layer_norm.bias"),
                                              (widen_config, "mis-shaped"),
                                              (truncate_weights, "could not load")])
def test_bad_weights_raise_instead_of_random_init(folder, tmp_path, damage, expected):
    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged)
    damage(damaged)
    with pytest.raises(CheckpointError, match=expected):
        ClipTextEncoder.from_folder(damaged)


def test_full_clip_checkpoint_layout(folder, tmp_path):
    """openai/clip-vit-large-patch14 ships a CLIPConfig and the whole CLIP (vision too) in one file."""
    text_config = json.loads((folder / "config.json").read_text())
    vision_config = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         image_size=28, patch_size=14)
    full = transformers.CLIPModel(transformers.CLIPConfig(text_config=text_config, vision_config=vision_config,
                                                          projection_dim=WIDTH)).eval()
    full_folder = tmp_path / "full"
    shutil.copytree(folder, full_folder)
    full.save_pretrained(full_folder)
    encoder = ClipTextEncoder.from_folder(full_folder)
    ids = official_ids(encoder.tokenizer, PROMPTS)
    with torch.no_grad():
        ref = full.text_model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(encoder.encode(PROMPTS), ref, rtol=0, atol=1e-6)


def test_tiny_folder_deterministic_and_sized(tmp_path):
    a = write_tiny_clip_folder(tmp_path / "a", hidden_size=32, seed=3)
    b = write_tiny_clip_folder(tmp_path / "b", hidden_size=32, seed=3)
    for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert ClipTextEncoder.from_folder(a).encode(["the house"]).shape == (1, 77, 32)
    with pytest.raises(ValueError, match="multiple of 2"):
        write_tiny_clip_folder(tmp_path / "c", hidden_size=33)


@pytest.mark.parametrize("use_fast", [True, False])
def test_tiny_tokenizer_loads_slow_and_fast(folder, use_fast):
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, use_fast=use_fast, local_files_only=True)
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(["The red chair, the house."])["input_ids"][0])
    assert tokens == ["<|startoftext|>", "the</w>", "red</w>", "chair</w>", ",</w>", "the</w>", "house</w>", ".</w>",
                      "<|endoftext|>"]
    assert tokenizer.pad_token == "<|endoftext|>"
