"""A tiny random-weight CLIP text model folder, for tests and example graphs without real weights.

The folder has the Hugging Face layout of ``openai/clip-vit-large-patch14`` (``config.json``,
``model.safetensors``, ``vocab.json`` + ``merges.txt`` + ``tokenizer_config.json`` +
``special_tokens_map.json``), so ``ClipTextEncoder.from_folder`` and ``transformers`` load it like
the real one. The tokenizer is a valid CLIP byte-level BPE with a handful of merges; its vocabulary
is ordered as CLIP's (256 byte symbols, their ``</w>`` forms, merge results, then
``<|startoftext|>`` and ``<|endoftext|>``), so every string tokenizes.

Written with plain torch + safetensors (not transformers' random init), so a seed gives the same
bytes whatever transformers version is installed.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Dict, List, Tuple, Union

import torch
from safetensors.torch import save_file

__all__ = ["write_tiny_clip_folder", "TINY_CLIP_MERGES"]

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
NUM_HEADS = 2
NUM_LAYERS = 2
MAX_POSITIONS = 77

# Enough merges that common test words ("a red chair", "the house") become single tokens.
TINY_CLIP_MERGES: Tuple[Tuple[str, str], ...] = (
    ("t", "h"), ("th", "e</w>"), ("a", "i"), ("ai", "r</w>"), ("c", "h"), ("ch", "air</w>"),
    ("r", "e"), ("re", "d</w>"), ("o", "u"), ("h", "ou"), ("s", "e</w>"), ("hou", "se</w>"),
)


def _bytes_to_unicode() -> Dict[int, str]:
    """CLIP's (and GPT-2's) reversible byte -> printable character map, in CLIP's vocab order."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def _tiny_vocab() -> List[str]:
    symbols = list(_bytes_to_unicode().values())
    return symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in TINY_CLIP_MERGES] + [BOS_TOKEN, EOS_TOKEN]


def _special_token(content: str) -> dict:
    return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


def _random_weights(hidden_size: int, intermediate_size: int, vocab_size: int, seed: int) -> Dict[str, torch.Tensor]:
    """HF ``CLIPTextModel`` state dict; linear weights ~ N(0, 1/fan_in) and unit-variance embeddings so
    attention is far from uniform, layer norms perturbed from identity so that applying them shows."""
    gen = torch.Generator().manual_seed(seed)

    def normal(*shape: int, std: float) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    def linear(prefix: str, n_out: int, n_in: int) -> Dict[str, torch.Tensor]:
        return {f"{prefix}.weight": normal(n_out, n_in, std=1 / math.sqrt(n_in)),
                f"{prefix}.bias": normal(n_out, std=0.1)}

    def layer_norm(prefix: str) -> Dict[str, torch.Tensor]:
        return {f"{prefix}.weight": 1 + normal(hidden_size, std=0.1), f"{prefix}.bias": normal(hidden_size, std=0.1)}

    weights = {
        "text_model.embeddings.token_embedding.weight": normal(vocab_size, hidden_size, std=1.0),
        "text_model.embeddings.position_embedding.weight": normal(MAX_POSITIONS, hidden_size, std=1.0),
    }
    for i in range(NUM_LAYERS):
        p = f"text_model.encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            weights.update(linear(f"{p}.self_attn.{proj}", hidden_size, hidden_size))
        weights.update(layer_norm(f"{p}.layer_norm1"))
        weights.update(linear(f"{p}.mlp.fc1", intermediate_size, hidden_size))
        weights.update(linear(f"{p}.mlp.fc2", hidden_size, intermediate_size))
        weights.update(layer_norm(f"{p}.layer_norm2"))
    weights.update(layer_norm("text_model.final_layer_norm"))
    return {k: v.contiguous() for k, v in weights.items()}


def write_tiny_clip_folder(path: Union[str, os.PathLike], hidden_size: int = 48, seed: int = 0) -> Path:
    """Write a tiny random CLIP text model folder (2 layers, 2 heads, 77 positions, quick-GELU).

    Args:
        path: the folder (created if needed; existing files of the same names are overwritten).
        hidden_size: token width C of the output ``[B, 77, C]`` (even, for 2 heads).
        seed: seed of the random weights; same seed, same files.

    Returns:
        the folder as a Path.
    """
    if hidden_size <= 0 or hidden_size % NUM_HEADS:
        raise ValueError(f"hidden_size must be a positive multiple of {NUM_HEADS} (the head count), got {hidden_size}")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = _tiny_vocab()
    bos_id, eos_id = len(vocab) - 2, len(vocab) - 1
    intermediate_size = 4 * hidden_size  # CLIP's MLP ratio

    config = {
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "vocab_size": len(vocab),
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "projection_dim": hidden_size,
        "num_hidden_layers": NUM_LAYERS,
        "num_attention_heads": NUM_HEADS,
        "max_position_embeddings": MAX_POSITIONS,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": eos_id,
        "torch_dtype": "float32",
    }
    tokenizer_config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_POSITIONS,
        "add_prefix_space": False,
        "do_lower_case": True,
        "errors": "replace",
        "bos_token": _special_token(BOS_TOKEN),
        "eos_token": _special_token(EOS_TOKEN),
        "unk_token": _special_token(EOS_TOKEN),
        "pad_token": EOS_TOKEN,
    }
    special_tokens_map = {k: tokenizer_config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}

    def write_json(name: str, obj: dict) -> None:
        (folder / name).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    write_json("config.json", config)
    write_json("tokenizer_config.json", tokenizer_config)
    write_json("special_tokens_map.json", special_tokens_map)
    write_json("vocab.json", {token: i for i, token in enumerate(vocab)})
    # CLIP's slow tokenizer skips the first line of merges.txt (the version header).
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in TINY_CLIP_MERGES),
                                       encoding="utf-8")
    save_file(_random_weights(hidden_size, intermediate_size, len(vocab), seed), str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    return folder
