"""Finding (and, when online, downloading) the condition encoders a model folder needs.

Where they are looked for, in order (the README's "Model folders"):

* image (DINOv2 ViT-L/14 with registers): ``<model folder>/dinov2/`` (Hugging Face layout or a
  hub ``.pth`` inside), then beside the model folder ``dinov2-with-registers-large/`` (Hugging
  Face ``facebook/dinov2-with-registers-large``), then ``dinov2_vitl14_reg4_pretrain.pth``
  (the torch-hub file);
* text (CLIP ViT-L/14): ``<model folder>/clip/``, then ``clip-vit-large-patch14/`` beside the
  model folder (Hugging Face ``openai/clip-vit-large-patch14``).
"""
from __future__ import annotations

from pathlib import Path
from typing import List

from .model_folder import ModelFolder, ModelFolderError

__all__ = ["image_encoder_path", "text_encoder_path", "ENCODER_REPOSITORIES"]

ENCODER_REPOSITORIES = {
    "image": ("facebook/dinov2-with-registers-large", "dinov2-with-registers-large",
              ["config.json", "model.safetensors"]),
    "text": ("openai/clip-vit-large-patch14", "clip-vit-large-patch14",
             ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.json",
              "merges.txt", "special_tokens_map.json"]),
}
_HUB_DINOV2 = "dinov2_vitl14_reg4_pretrain.pth"


def _image_candidates(folder: ModelFolder) -> List[Path]:
    inside = folder.path / "dinov2"
    return [inside / "model.safetensors", inside / _HUB_DINOV2,
            folder.path.parent / ENCODER_REPOSITORIES["image"][1] / "model.safetensors",
            folder.path.parent / _HUB_DINOV2]


def _text_candidates(folder: ModelFolder) -> List[Path]:
    return [folder.path / "clip", folder.path.parent / ENCODER_REPOSITORIES["text"][1]]


def _download(kind: str, folder: ModelFolder) -> Path:
    repo_id, name, files = ENCODER_REPOSITORIES[kind]
    target = folder.path.parent / name
    try:
        from huggingface_hub import snapshot_download
        snapshot_download(repo_id, local_dir=str(target), allow_patterns=files)
    except Exception as e:  # no package, offline, ...: say where the files go
        raise ModelFolderError(f"the {kind} encoder is missing and could not be downloaded "
                               f"({type(e).__name__}: {e}); put {repo_id} ({', '.join(files)}) in {target}") from None
    return target


def image_encoder_path(folder: ModelFolder, download: bool = False) -> Path:
    """Path to give ``load_dinov2`` for this model folder."""
    for candidate in _image_candidates(folder):
        if candidate.is_file():
            return candidate.parent if candidate.name == "model.safetensors" else candidate
    if download:
        return _download("image", folder)
    raise ModelFolderError("DINOv2 weights not found; looked for " + ", ".join(map(str, _image_candidates(folder)))
                           + f" (download {ENCODER_REPOSITORIES['image'][0]} there)")


def text_encoder_path(folder: ModelFolder, download: bool = False) -> Path:
    """Folder to give ``ClipTextEncoder.from_folder`` for this model folder."""
    for candidate in _text_candidates(folder):
        if (candidate / "config.json").is_file():
            return candidate
    if download:
        return _download("text", folder)
    raise ModelFolderError("CLIP text encoder not found; looked for " + ", ".join(map(str, _text_candidates(folder)))
                           + f" (download {ENCODER_REPOSITORIES['text'][0]} there)")


