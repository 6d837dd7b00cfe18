"""CLIP text encoder of the TRELLIS text-to-3D pipelines (tests/fixtures/conformance/dinov2.md, "Text pipeline (CLIP)").

As the official ``TrellisTextTo3DPipeline`` (``_init_text_cond_model``, ``encode_text``, ``get_cond``):
``transformers.CLIPTextModel`` + ``AutoTokenizer`` of ``openai/clip-vit-large-patch14`` in float32,
eval; prompts tokenized with ``max_length=77, padding='max_length', truncation=True`` (padding with
``<|endoftext|>``); only ``input_ids`` go into the model, so padded positions see CLIP's causal mask
and no attention mask; ``cond`` is ``last_hidden_state`` ``[B, 77, C]`` (after the final LayerNorm,
all 77 positions); ``neg_cond`` is the encoding of ``['']`` computed once at load, not zeros.

Deliberate differences from the official code, both on inputs it accepts silently:
    * an empty (or whitespace-only) prompt raises ValueError; the official pipeline would encode it
      to exactly the null condition and generate unconditionally;
    * a prompt longer than 77 tokens is truncated as official, but a warning (once per encoder)
      says how many tokens were dropped.

Loading reads a local folder only (never downloads) and only ``model.safetensors``: a pickled
``pytorch_model.bin`` is refused, since unpickling can run code.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List, Sequence, Union

import torch
from safetensors import SafetensorError

from ..models.registry import CheckpointError

__all__ = ["ClipTextEncoder", "CLIP_MAX_TOKENS", "OFFICIAL_TEXT_COND_MODEL"]

CLIP_MAX_TOKENS = 77  # CLIP's context length, start and end tokens included
OFFICIAL_TEXT_COND_MODEL = "openai/clip-vit-large-patch14"

log = logging.getLogger("trellis_impl")


def _missing_files(folder: Path) -> List[str]:
    """Names of the files a Hugging Face CLIP text folder lacks (empty: complete)."""
    missing = [name for name in ("config.json", "model.safetensors", "tokenizer_config.json")
               if not (folder / name).is_file()]
    if not (folder / "tokenizer.json").is_file():
        missing += [name for name in ("vocab.json", "merges.txt") if not (folder / name).is_file()]
    return missing


@contextmanager
def _transformers_errors_only():
    """Loading the full CLIP checkpoint makes transformers list all its vision weights as unused;
    silence that (missing and mis-shaped weights are checked by the caller instead)."""
    from transformers.utils import logging as hf_logging
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


class ClipTextEncoder(torch.nn.Module):
    """Prompts -> CLIP ``last_hidden_state`` conditions, as the official text pipeline computes them.

    A module (the CLIP model its child, the empty prompt's encoding a buffer), so a host moves and
    offloads it as one.

    Args:
        model: a ``transformers.CLIPTextModel`` (put in eval mode, gradients off).
        tokenizer: its CLIP tokenizer (pads with ``<|endoftext|>``).

    Attributes:
        null_cond: encoding of the empty prompt ``['']``, ``[1, 77, C]``; the official ``neg_cond``.
    """

    def __init__(self, model: torch.nn.Module, tokenizer):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self._truncation_reported = False
        self.register_buffer("null_cond", self._encode_ids(self._pad_and_truncate([""])), persistent=False)

    @classmethod
    def from_folder(cls, path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu",
                    dtype: torch.dtype = torch.float32) -> "ClipTextEncoder":
        """Load a local folder in the Hugging Face layout of ``openai/clip-vit-large-patch14``.

        The folder needs ``config.json`` (a CLIPConfig, or a CLIPTextConfig), ``model.safetensors``
        (the full CLIP checkpoint works: its vision weights are ignored), ``tokenizer_config.json``
        and ``vocab.json`` + ``merges.txt`` (or ``tokenizer.json``).

        Raises:
            CheckpointError (a ValueError) naming the folder and the files it lacks, or why
            transformers could not load them.
        """
        from transformers import AutoTokenizer, CLIPTextModel

        folder = Path(path)
        if not folder.is_dir():
            raise CheckpointError(f"{folder}: CLIP text model folder not found (expected the Hugging Face layout "
                                  f"of {OFFICIAL_TEXT_COND_MODEL})")
        missing = _missing_files(folder)
        if missing:
            hint = ""
            if "model.safetensors" in missing and (folder / "pytorch_model.bin").is_file():
                hint = ("; pytorch_model.bin is not loaded (unpickling can run code): download model.safetensors "
                        f"of {OFFICIAL_TEXT_COND_MODEL} instead")
            raise CheckpointError(f"CLIP text model folder {folder} is incomplete: missing {', '.join(missing)}{hint}")
        try:
            with _transformers_errors_only():
                model, info = CLIPTextModel.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                                            output_loading_info=True, ignore_mismatched_sizes=True)
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, RuntimeError, SafetensorError) as e:
            raise CheckpointError(f"CLIP text model folder {folder}: transformers could not load it "
                                  f"({type(e).__name__}: {e})") from e
        # transformers would leave these randomly initialised with only a log line.
        problems = [f"missing {key}" for key in sorted(info["missing_keys"])]
        problems += [f"mis-shaped {key}" for key, *_ in sorted(info["mismatched_keys"])]
        if problems:
            more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
            raise CheckpointError(f"{folder / 'model.safetensors'} does not match {folder / 'config.json'}: "
                                  + "; ".join(problems[:5]) + more)
        return cls(model.to(device=device, dtype=dtype), tokenizer)

    @property
    def width(self) -> int:
        """Token width C of the conditions (768 for CLIP ViT-L/14)."""
        return self.model.config.hidden_size

    @property
    def device(self) -> torch.device:
        """Where the weights are."""
        return self.model.device

    @device.setter
    def device(self, value) -> None:
        torch.device(value)  # a host's record of where it moved the model (TrellisModel.device)

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """Token ids as the official pipeline feeds them, ``[B, 77]`` int64 on CPU.

        Raises:
            TypeError: ``prompts`` is not a list/tuple of strings.
            ValueError: no prompts, or a prompt without any token (empty or whitespace only).
        """
        if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
            raise TypeError(f"prompts must be a list of strings, got {type(prompts).__name__}"
                            + (" (wrap a single prompt in a list)" if isinstance(prompts, str) else ""))
        if not prompts:
            raise ValueError("no prompts given")
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise TypeError(f"prompt {i} is a {type(prompt).__name__}, not a string")
        # Full lengths, start and end tokens included; verbose=False silences transformers' own
        # too-long warning, which we replace by one that says what is dropped.
        lengths = [len(ids) for ids in self.tokenizer(list(prompts), verbose=False)["input_ids"]]
        for i, n in enumerate(lengths):
            if n <= 2:
                raise ValueError(f"prompt is empty; prompt {i} ({prompts[i]!r}) has no tokens. The official pipeline "
                                 "would silently generate from the null (unconditional) condition; give a description")
        too_long = [n for n in lengths if n > CLIP_MAX_TOKENS]
        if too_long and not self._truncation_reported:
            self._truncation_reported = True
            log.warning("text prompt of %d CLIP tokens truncated to %d (start and end tokens included): its last %d "
                        "tokens are ignored, as in the official pipeline (reported once)",
                        too_long[0], CLIP_MAX_TOKENS, too_long[0] - CLIP_MAX_TOKENS)
        return self._pad_and_truncate(list(prompts))

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """Conditions of ``prompts``: ``[B, 77, C]`` (``last_hidden_state``), the model's dtype and device."""
        return self._encode_ids(self.tokenize(prompts))

    def get_cond(self, prompts: Sequence[str]) -> Dict[str, torch.Tensor]:
        """``{'cond': [B, 77, C], 'neg_cond': null_cond [1, 77, C]}``, as official ``get_cond``."""
        return {"cond": self.encode(prompts), "neg_cond": self.null_cond}

    def _pad_and_truncate(self, prompts: List[str]) -> torch.Tensor:
        return self.tokenizer(prompts, max_length=CLIP_MAX_TOKENS, padding="max_length", truncation=True,
                              return_tensors="pt")["input_ids"]

    @torch.no_grad()
    def _encode_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        # No attention_mask, as official: padding tokens are attended to under the causal mask.
        return self.model(input_ids=input_ids.to(self.device)).last_hidden_state
