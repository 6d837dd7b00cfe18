"""The image-to-3D and text-to-3D pipelines: a model folder plus its condition encoder."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch

from ..conditioning import BackgroundRemover, encode_image, load_dinov2, preprocess_image
from .encoders import image_encoder_path, text_encoder_path
from .model_folder import (DEMO_MODEL, KNOWN_REPOSITORIES, ModelFolder, ModelFolderError, demo_model_path,
                           download_model_folder)
from .generation import FORMATS, GenerationResult, ProgressCallback, Structure, TrellisPipeline, stage_timer, views_options

__all__ = ["ImageTo3DPipeline", "TextTo3DPipeline", "open_model_folder", "MULTI_IMAGE_MODES"]

MULTI_IMAGE_MODES = ("stochastic", "multidiffusion")


def open_model_folder(model: Union[str, Path], models_dir: Union[str, Path, Sequence[Union[str, Path]], None] = None,
                      device="cpu", dtype: Optional[torch.dtype] = None, download: bool = False,
                      offload: bool = False) -> ModelFolder:
    """The one way a model name becomes a verified model folder (command line, library and nodes).

    ``model`` is, in this order: the embedded demo model (``DEMO_MODEL``); a folder holding
    pipeline.json; a folder name under one of ``models_dir`` (a folder or several, searched in
    order; default the working directory); or a known repository id (``microsoft/TRELLIS-image-large``)
    found complete under one of them as its last path part, or with ``download`` fetched into the
    first one. Every checkpoint is checked (``ModelFolder.verify``) before it is returned.
    ``offload``: the low-VRAM mode (``ModelFolder``).
    """
    roots = [Path(models_dir)] if isinstance(models_dir, (str, Path)) else [Path(r) for r in (models_dir or ["."])]
    path = demo_model_path() if str(model) == DEMO_MODEL else Path(model)
    if not (path / "pipeline.json").is_file():
        path = next((root / str(model) for root in roots if (root / str(model) / "pipeline.json").is_file()), None)
    if path is None:
        if str(model) not in KNOWN_REPOSITORIES:
            raise ModelFolderError(f"{model}: not a model folder (no pipeline.json), not a folder under "
                                   f"{', '.join(map(str, roots))} and not a known repository "
                                   f"({', '.join(KNOWN_REPOSITORIES)})")
        name = str(model).split("/")[1]
        path = next((root / name for root in roots
                     if (root / name / "pipeline.json").is_file() and not ModelFolder(root / name).missing_files()),
                    None)
        if path is None:
            if not download:
                raise ModelFolderError(f"{model} is not in {roots[0] / name} (or is incomplete); download it there "
                                       f"(--download, download=True or the loader's 'download', when online)")
            path = download_model_folder(str(model), roots[0])
    folder = ModelFolder(path, dtype=dtype, device=device, offload=offload)
    folder.verify()  # a damaged late-stage checkpoint fails now, not after sampling
    return folder


def _require_kind(folder: ModelFolder, kind: str) -> None:
    if folder.kind != kind:
        article = "an" if kind == "image" else "a"
        raise ModelFolderError(f"{folder.path} is a {folder.kind}-to-3D model folder; {article} {kind} one is needed")


class ImageTo3DPipeline(TrellisPipeline):
    """Image(s) -> 3D asset, as the official ``TrellisImageTo3DPipeline``.

    Args:
        folder: an image model folder.
        encoder: the DINOv2 model (``load_dinov2``), on the folder's device.
    """

    def __init__(self, folder: ModelFolder, encoder: torch.nn.Module, batch_cfg: bool = False):
        _require_kind(folder, "image")
        super().__init__(folder, batch_cfg)
        self.encoder = encoder
        self.background_remover = BackgroundRemover()

    @classmethod
    def from_folder(cls, model: Union[str, Path], models_dir=None, device="cpu", dtype=None,
                    download: bool = False, batch_cfg: Optional[bool] = None,
                    offload: bool = False) -> "ImageTo3DPipeline":
        folder = open_model_folder(model, models_dir, device, dtype, download, offload)
        _require_kind(folder, "image")
        encoder = load_dinov2(str(image_encoder_path(folder, download)), device="cpu" if folder.offload else device)
        return cls(folder, encoder, batch_cfg=folder.device.type == "cuda" if batch_cfg is None else batch_cfg)

    def get_cond(self, images) -> dict:
        """Prepared images (PIL list, or a float tensor [N, 3, H, W] in [0, 1]) ->
        {'cond': [N, T, C], 'neg_cond': zeros [1, T, C]}."""
        encoder = self.folder.activate(self.encoder)
        cond = encode_image(encoder, images if isinstance(images, torch.Tensor) else list(images)).to(self.device)
        return {"cond": cond, "neg_cond": torch.zeros_like(cond[:1])}

    def run(self, images, masks: Optional[Sequence] = None, seed: int = 42, num_samples: int = 1,
            formats: Sequence[str] = FORMATS, preprocess: bool = True, multi_image_mode: str = "stochastic",
            view_weights: Optional[List[float]] = None, structure_params: Optional[dict] = None,
            slat_params: Optional[dict] = None, progress: Optional[ProgressCallback] = None) -> GenerationResult:
        """Generate from one image or several views of one object.

        Args:
            images: a PIL image / array, or a list of them (several views -> ``multi_image_mode``).
            masks: optional object mask per image (see ``preprocess_image``).
            multi_image_mode: 'stochastic' or 'multidiffusion' (official semantics) for several views;
                ``view_weights`` extends both (equal weights = the official result).
            structure_params / slat_params: sampler overrides (steps, cfg_strength, cfg_interval,
                rescale_t) on top of the folder's released values.
        """
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        if not images:
            raise ValueError("no input image: give at least one")
        if masks is not None and len(masks) != len(images):
            raise ValueError(f"got {len(masks)} masks for {len(images)} images; give one mask per image or none")
        if multi_image_mode not in MULTI_IMAGE_MODES:
            raise ValueError(f"multi_image_mode must be one of {MULTI_IMAGE_MODES}, got {multi_image_mode!r}")
        timings = {}
        with stage_timer(timings, "condition", self.device):
            if preprocess:
                images = [preprocess_image(im, None if masks is None else masks[i], self.background_remover)
                          for i, im in enumerate(images)]
            cond = self.get_cond(images)
        views = views_options(multi_image_mode, view_weights) if len(images) > 1 else None
        result = self.generate(cond, seed, num_samples, formats, structure_params, slat_params, progress, views)
        result.timings = {**timings, **result.timings}
        return result

    def run_variant(self, structure: Structure, image, seed: int = 42, formats: Sequence[str] = FORMATS,
                    preprocess: bool = True, slat_params: Optional[dict] = None,
                    progress: Optional[ProgressCallback] = None) -> GenerationResult:
        """New latents on a given structure (``structure_from_mesh``, ``structure_from_voxels``) from
        one image (official ``run_variant``)."""
        if preprocess:
            image = preprocess_image(image, remover=self.background_remover)
        return self.variant(self.get_cond([image]), structure, seed, formats, slat_params, progress)


class TextTo3DPipeline(TrellisPipeline):
    """Prompt -> 3D asset, as the official ``TrellisTextTo3DPipeline``.

    Args:
        folder: a text model folder.
        encoder: a ``ClipTextEncoder``.
    """

    def __init__(self, folder: ModelFolder, encoder, batch_cfg: bool = False):
        _require_kind(folder, "text")
        super().__init__(folder, batch_cfg)
        self.encoder = encoder

    @classmethod
    def from_folder(cls, model: Union[str, Path], models_dir=None, device="cpu", dtype=None,
                    download: bool = False, batch_cfg: Optional[bool] = None,
                    offload: bool = False) -> "TextTo3DPipeline":
        from ..conditioning.clip_text import ClipTextEncoder
        folder = open_model_folder(model, models_dir, device, dtype, download, offload)
        _require_kind(folder, "text")
        encoder = ClipTextEncoder.from_folder(text_encoder_path(folder, download),
                                              device="cpu" if folder.offload else device)
        return cls(folder, encoder, batch_cfg=folder.device.type == "cuda" if batch_cfg is None else batch_cfg)

    def get_cond(self, prompts: Sequence[str]) -> dict:
        cond = self.folder.activate(self.encoder).get_cond(list(prompts))
        return {k: v.to(self.device) for k, v in cond.items()}

    def run(self, prompt: str, seed: int = 42, num_samples: int = 1, formats: Sequence[str] = FORMATS,
            structure_params: Optional[dict] = None, slat_params: Optional[dict] = None,
            progress: Optional[ProgressCallback] = None) -> GenerationResult:
        timings = {}
        with stage_timer(timings, "condition", self.device):
            cond = self.get_cond([prompt])
        result = self.generate(cond, seed, num_samples, formats, structure_params, slat_params, progress)
        result.timings = {**timings, **result.timings}
        return result

    def run_variant(self, structure: Structure, prompt: str, seed: int = 42, formats: Sequence[str] = FORMATS,
                    slat_params: Optional[dict] = None, progress: Optional[ProgressCallback] = None) -> GenerationResult:
        """New latents on a given structure from a prompt (official ``run_variant``)."""
        return self.variant(self.get_cond([prompt]), structure, seed, formats, slat_params, progress)
