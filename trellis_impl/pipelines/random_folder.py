"""Write a small random-weight model folder in the released layout, so tests, example graphs and
outside checks run without the released weights. Sizes are as small as the conformance
fixtures': a 16^3 structure grid (4^3 latent), SLat at 16^3, meshes at 64^3, a 2-block DINOv2 at
518 px (``dinov2/``, Hugging Face layout) or a 2-layer CLIP text model (``clip/``)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Union

import torch
from safetensors.torch import save_file

from ..models import build_model

__all__ = ["write_random_model_folder", "randomise_weights", "target_occupancy", "RANDOM_COND_CHANNELS"]

RANDOM_COND_CHANNELS = {"image": 48, "text": 48}
_SWIN = {"resolution": 16, "model_channels": 64, "latent_channels": 8, "num_blocks": 2, "num_heads": 4,
         "mlp_ratio": 4, "attn_mode": "swin", "window_size": 4, "use_fp16": True}


def _configs(kind: str) -> Dict[str, dict]:
    cond = RANDOM_COND_CHANNELS[kind]
    return {
        "ss_dec": {"name": "SparseStructureDecoder", "args": {
            "out_channels": 1, "latent_channels": 8, "num_res_blocks": 1, "num_res_blocks_middle": 1,
            "channels": [32, 16, 8], "use_fp16": True}},
        "ss_flow": {"name": "SparseStructureFlowModel", "args": {
            "resolution": 4, "in_channels": 8, "out_channels": 8, "model_channels": 64, "cond_channels": cond,
            "num_blocks": 2, "num_heads": 4, "mlp_ratio": 4, "patch_size": 1, "pe_mode": "ape",
            "qk_rms_norm": True, "use_fp16": True}},
        "slat_flow": {"name": "SLatFlowModel", "args": {
            "resolution": 16, "in_channels": 8, "out_channels": 8, "model_channels": 64, "cond_channels": cond,
            "num_blocks": 2, "num_heads": 4, "mlp_ratio": 4, "patch_size": 2, "num_io_res_blocks": 2,
            "io_block_channels": [16], "pe_mode": "ape", "qk_rms_norm": True, "use_fp16": True}},
        "slat_dec_gs": {"name": "SLatGaussianDecoder", "args": {**_SWIN, "representation_config": {
            "lr": {"_xyz": 1.0, "_features_dc": 1.0, "_opacity": 1.0, "_scaling": 1.0, "_rotation": 0.1},
            "perturb_offset": True, "voxel_size": 1.5, "num_gaussians": 8, "2d_filter_kernel_size": 0.1,
            "3d_filter_kernel_size": 9e-4, "scaling_bias": 4e-3, "opacity_bias": 0.1, "scaling_activation": "softplus"}}},
        "slat_dec_rf": {"name": "SLatRadianceFieldDecoder", "args": {
            **_SWIN, "representation_config": {"rank": 4, "dim": 8}}},
        "slat_dec_mesh": {"name": "SLatMeshDecoder", "args": {
            **_SWIN, "model_channels": 256, "representation_config": {"use_color": True}}},
    }


def randomise_weights(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Every parameter random (not the official zero init, which would make outputs trivial):
    matrices ~ N(0, 1/fan_in), vectors ~ N(0, 0.1^2) around 1 for norm scales, 0 otherwise."""
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            fan_in = p[0].numel()
            value = torch.randn(p.shape, generator=generator, device=generator.device) / math.sqrt(fan_in)
        else:
            centre = 1.0 if name.endswith(("norm1.weight", "norm2.weight", "gamma")) or ".act_layers.0." in name \
                or ".out_layers.1." in name or "out_layer.0." in name else 0.0
            value = centre + 0.1 * torch.randn(p.shape, generator=generator, device=generator.device)
        p.data = value.to(p.dtype)


def target_occupancy(decoder: torch.nn.Module, generator: torch.Generator, fraction: float = 0.08) -> None:
    """Shift the structure decoder's output bias so about ``fraction`` of the grid is occupied
    for unit-normal latents (a sphere-shell-like density instead of half the grid)."""
    z = torch.randn(4, decoder.latent_channels, 4, 4, 4, generator=generator)
    with torch.no_grad():
        decoder.set_compute_dtype(torch.float32)
        logits = decoder(z)
        decoder.out_layer[2].bias -= torch.quantile(logits.flatten(), 1 - fraction)


def _write_tiny_dinov2(folder: Path, width: int, generator: torch.Generator) -> None:
    from ..conditioning.dinov2 import DinoV2, DinoV2Config, save_dinov2
    model = DinoV2(DinoV2Config(embed_dim=width, depth=2, num_heads=2))
    randomise_weights(model, generator)
    folder.mkdir()
    save_dinov2(model, folder)


def write_random_model_folder(path: Union[str, Path], kind: str = "image", seed: int = 0) -> Path:
    """Write ``pipeline.json``, ``ckpts/*.json|.safetensors`` and the condition encoder with
    random weights (the README's model folder layout).

    Args:
        path: the folder to create (must not exist or be empty: nothing is overwritten).
        kind: 'image' or 'text' (the condition width is ``RANDOM_COND_CHANNELS[kind]``).
    """
    if kind not in RANDOM_COND_CHANNELS:
        raise ValueError(f"kind must be 'image' or 'text', got {kind!r}")
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path} exists and is not empty; choose a new folder")
    (path / "ckpts").mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    names = {}
    for short, config in _configs(kind).items():
        model = build_model(config["name"], **config["args"])
        randomise_weights(model, generator)
        if short == "ss_dec":
            target_occupancy(model, generator)
            model.set_compute_dtype(torch.float16)
        name = f"{short}_random"
        (path / "ckpts" / f"{name}.json").write_text(json.dumps(config, indent=4))
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "ckpts" / f"{name}.safetensors"))
        names[short] = f"ckpts/{name}"
    sampler = {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": 1e-5},
               "params": {"steps": 25, "cfg_strength": 5.0, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}}
    pipeline = {
        "name": "TrellisImageTo3DPipeline" if kind == "image" else "TrellisTextTo3DPipeline",
        "args": {
            "models": {
                "sparse_structure_decoder": names["ss_dec"],
                "sparse_structure_flow_model": names["ss_flow"],
                "slat_decoder_gs": names["slat_dec_gs"],
                "slat_decoder_rf": names["slat_dec_rf"],
                "slat_decoder_mesh": names["slat_dec_mesh"],
                "slat_flow_model": names["slat_flow"],
            },
            "sparse_structure_sampler": sampler,
            "slat_sampler": sampler,
            "slat_normalization": {"mean": [0.0] * 8, "std": [1.0] * 8},
        },
    }
    if kind == "image":
        pipeline["args"]["image_cond_model"] = "dinov2_vitl14_reg"
        _write_tiny_dinov2(path / "dinov2", RANDOM_COND_CHANNELS[kind], generator)
    else:
        from ..conditioning.tiny_clip import write_tiny_clip_folder
        pipeline["args"]["text_cond_model"] = "openai/clip-vit-large-patch14"
        write_tiny_clip_folder(path / "clip", hidden_size=RANDOM_COND_CHANNELS[kind], seed=seed)
    (path / "pipeline.json").write_text(json.dumps(pipeline, indent=4))
    _write_random_encoder(path, seed)
    _write_random_slat_encoder(path, seed)
    return path


# The conformance fixtures' ss_enc config: 16^3 occupancy -> 4^3 x 8 latent, mirroring ss_dec.
SS_ENC_CONFIG = {"name": "SparseStructureEncoder", "args": {
    "in_channels": 1, "latent_channels": 8, "num_res_blocks": 1, "num_res_blocks_middle": 1,
    "channels": [8, 16, 32], "use_fp16": True}}


def _write_random_encoder(path: Path, seed: int) -> None:
    """``ckpts/ss_enc_random``: the structure encoder (found by ModelFolder beside ss_dec, not
    listed in pipeline.json, as released). Its own generator, so the other files are unchanged."""
    model = build_model(SS_ENC_CONFIG["name"], **SS_ENC_CONFIG["args"])
    randomise_weights(model, torch.Generator().manual_seed(seed + 1_000_003))
    (path / "ckpts" / "ss_enc_random.json").write_text(json.dumps(SS_ENC_CONFIG, indent=4))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "ckpts" / "ss_enc_random.safetensors"))


# The SLat encoder: the random DINOv2's width in, the random decoders' swin torso, 8 latent channels.
SLAT_ENC_CONFIG = {"name": "SLatEncoder", "args": {**_SWIN, "in_channels": RANDOM_COND_CHANNELS["image"]}}


def _write_random_slat_encoder(path: Path, seed: int) -> None:
    """``ckpts/slat_enc_random`` (found by ModelFolder as the single ckpts/slat_enc*, not listed in
    pipeline.json, as released). Its own generator, so the other files are unchanged."""
    model = build_model(SLAT_ENC_CONFIG["name"], **SLAT_ENC_CONFIG["args"])
    randomise_weights(model, torch.Generator().manual_seed(seed + 2_000_003))
    (path / "ckpts" / "slat_enc_random.json").write_text(json.dumps(SLAT_ENC_CONFIG, indent=4))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(path / "ckpts" / "slat_enc_random.safetensors"))
