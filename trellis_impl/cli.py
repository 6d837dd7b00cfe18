"""Command line: ``python -m trellis_impl {image,text,variant,edit,vary,encode,prepare-data,procedural-meshes,train,export-folder,distilled-folder,random-folder} ...``.

Examples::

    python -m trellis_impl image photo.png --model microsoft/TRELLIS-image-large --download --out out/
    python -m trellis_impl image front.png back.png --multi-image-mode multidiffusion --model FOLDER
    python -m trellis_impl text "a wooden chair" --model microsoft/TRELLIS-text-large --download
    python -m trellis_impl variant chair.obj --prompt "a golden chair" --model FOLDER
    python -m trellis_impl edit out/chair_slat.safetensors --image legs.png --box -0.5 -0.5 -0.5 0.5 -0.1 0.5 --model FOLDER
    python -m trellis_impl vary out/chair_slat.safetensors --prompt "a golden chair" --strength 0.6 --model FOLDER
    python -m trellis_impl encode chair.glb --model microsoft/TRELLIS-image-large --out out/
    python -m trellis_impl prepare-data meshes/ --out DATA [--model FOLDER]
    python -m trellis_impl procedural-meshes --out meshes/ --count 3000 [--split held_out]
    python -m trellis_impl train configs/training/ss_vae.json --data DATA --out runs/ss_vae
    torchrun --nproc_per_node 2 -m trellis_impl train configs/training/ss_flow_img.json --data DATA --out runs/ss_flow
    python -m trellis_impl export-folder runs/ss_vae runs/ss_flow ... --out models/MY-TRELLIS
    python -m trellis_impl distilled-folder models/TRELLIS-image-large --download --out models/TRELLIS-image-large-mdt-dist
    python -m trellis_impl random-folder models/TRELLIS-random --kind image
"""
from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch

from .export.asset_files import DEFAULT_FILE_KINDS, FILE_KINDS
from .export.glb_export import BAKE_MODES, UNWRAP_METHODS
from .editing import EDIT_METHODS, EDIT_MODES
from .pipelines import FORMATS, MULTI_IMAGE_MODES, ImageTo3DPipeline, TextTo3DPipeline, write_random_model_folder
from .pipelines.generation import structure_from_mesh_file
from .pipelines.model_folder import DEMO_MODEL, demo_model_path

# Commands that run a model folder (``--model``, default: the embedded demo model).
_MODEL_COMMANDS = ("image", "text", "variant", "edit", "vary", "encode")

_DTYPES = {"auto": None, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _sampler_overrides(args, stage: str) -> dict:
    """The sampler parameters the options set (None: the model folder's), with a fresh step cache
    when ``--step-cache`` asks for one."""
    from .sampling import StepCache
    interval = getattr(args, "step_cache", 1)
    return {"steps": getattr(args, f"{stage}_steps"), "cfg_strength": getattr(args, f"{stage}_cfg"),
            "cfg_interval": getattr(args, f"{stage}_cfg_interval"), "rescale_t": getattr(args, f"{stage}_rescale_t"),
            "step_cache": StepCache(interval=interval) if interval > 1 else None}


def _add_common(parser: argparse.ArgumentParser, structure: bool = True) -> None:
    parser.add_argument("--model", default=None,
                        help="model folder (with pipeline.json) or a known repository id, e.g. microsoft/TRELLIS-image-large "
                             "(default: the embedded demo model TRELLIS-demo, image-conditioned)")
    parser.add_argument("--models-dir", default="models",
                        help="where repositories are looked up and downloaded (default: ./models)")
    parser.add_argument("--download", action="store_true", help="download missing models with huggingface_hub")
    parser.add_argument("--out", default="out", help="output folder (files are never overwritten)")
    parser.add_argument("--name", default=None, help="file name stem (default: from the input)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--formats", nargs="+", default=["gaussian", "mesh"], choices=FORMATS)
    parser.add_argument("--files", nargs="+", default=None, choices=FILE_KINDS,
                        help="files to write per asset (default: those of glb ply spz slat that --formats can make)")
    parser.add_argument("--simplify", type=float, default=0.95, help="GLB: fraction of faces removed (0.95)")
    parser.add_argument("--texture-size", type=int, default=1024, help="GLB texture side, 512-4096")
    parser.add_argument("--bake", default="fast", choices=BAKE_MODES,
                        help="GLB colour: fast (project renders), opt (official optimisation), vertex_colors, none")
    parser.add_argument("--bake-steps", type=int, default=2500, help="steps of --bake opt")
    parser.add_argument("--unwrap", default="fast", choices=UNWRAP_METHODS, help="UV atlas method")
    parser.add_argument("--origin", default="center", choices=["center", "base", "none"],
                        help="GLB origin: bounding-box centre, base (lowest point at y = 0), or none (TRELLIS unit-cube position)")
    parser.add_argument("--no-fill-holes", action="store_true",
                        help="GLB: skip the visibility clean-up (interior faces, small holes)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto", choices=list(_DTYPES),
                        help="torso compute dtype (auto: float32 on CPU, float16 on GPU)")
    parser.add_argument("--low-vram", action="store_true",
                        help="GPU: keep the models on the CPU and move each to the GPU only for its stage "
                             "(a few GiB less at the peak, about a second more per asset)")
    stages = ("structure", "latent") if structure else ("latent",)
    for stage in stages:
        parser.add_argument(f"--{stage}-steps", type=int, default=None, help=f"{stage} sampler steps (released: 25)")
        parser.add_argument(f"--{stage}-cfg", type=float, default=None, help="CFG strength (released: 5.0)")
        parser.add_argument(f"--{stage}-cfg-interval", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                            help="t range where CFG applies (released: 0.5 1.0)")
        parser.add_argument(f"--{stage}-rescale-t", type=float, default=None, help="time rescale (released: 3.0)")


def _add_step_cache(parser) -> None:
    parser.add_argument("--step-cache", type=int, default=1, metavar="N",
                        help="run the flows' models at one step in N (and the first two and the last), forecasting "
                             "the velocity at the others (1: off, the official sampler; 2: 15 of 25 model runs, "
                             "shapes close to the official; 3: 11 of 25, faster, shapes differ more: docs/gpu.md)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trellis_impl", description="TRELLIS 3D generation")
    sub = parser.add_subparsers(dest="command", required=True)
    image = sub.add_parser("image", help="image(s) of one object -> 3D asset files")
    image.add_argument("images", nargs="+", help="image files (RGBA with transparency, or give --mask / install rembg)")
    image.add_argument("--mask", nargs="+", default=None, help="one mask image per input image (white = object)")
    image.add_argument("--multi-image-mode", default="stochastic", choices=MULTI_IMAGE_MODES)
    image.add_argument("--view-weights", type=float, nargs="+", default=None, help="one weight per view")
    _add_common(image)
    _add_step_cache(image)
    text = sub.add_parser("text", help="prompt -> 3D asset files")
    text.add_argument("prompt")
    _add_common(text)
    _add_step_cache(text)
    variant = sub.add_parser("variant", help="mesh + prompt or image -> new appearance on the same structure")
    variant.add_argument("mesh", help=".obj .ply .stl .glb .gltf (.glb/.gltf/.obj read as Y up, .ply/.stl as Z up, "
                         "as the official toolkit; .glb needs trimesh)")
    group = variant.add_mutually_exclusive_group(required=True)
    group.add_argument("--prompt")
    group.add_argument("--image")
    _add_common(variant, structure=False)
    _add_step_cache(variant)
    edit = sub.add_parser("edit", help="asset + region: regenerate (replace), grow (add) or empty (delete) the region; "
                                       "everything outside stays the asset's")
    _add_asset_inputs(edit, condition_required=False)
    edit.add_argument("--mode", default="replace", choices=EDIT_MODES,
                      help="replace: new structure and latents inside; add: new structure grows inside, the "
                           "original voxels all stay; delete: the region becomes empty (no condition needed)")
    edit.add_argument("--method", default="repaint", choices=EDIT_METHODS,
                      help="outside during sampling: the original noised to each step (repaint) or its "
                           "Euler-inverted trajectory (inversion, one extra pass per stage)")
    source = edit.add_mutually_exclusive_group()
    source.add_argument("--source-image", help="inversion: the image the asset was generated from (default: --image)")
    source.add_argument("--source-prompt", help="inversion: the prompt the asset was generated from")
    _add_common(edit)
    vary = sub.add_parser("vary", help="asset + new condition: new latents on the same structure (detail variation)")
    _add_asset_inputs(vary, condition_required=True)
    vary.add_argument("--strength", type=float, default=1.0,
                      help="flow time to start from: 1 new latents from noise, s < 1 the asset's latents noised to s "
                           "(needs a slat file), 0 the asset back")
    _add_common(vary, structure=False)
    encode = sub.add_parser("encode", help="textured mesh -> STEM_slat.safetensors (structure and latents from the "
                                           "model's encoders, no sampling), the input of edit and vary")
    encode.add_argument("mesh", help=".glb .gltf .obj .ply .stl (UV texture, vertex or face colours; else grey; "
                        ".glb/.gltf/.obj read as Y up, .ply/.stl as Z up, as the official toolkit)")
    encode.add_argument("--model", default=None,
                        help="model folder (with pipeline.json and a ckpts/slat_enc* SLat encoder) or a known "
                             "repository id, e.g. microsoft/TRELLIS-image-large (default: the embedded TRELLIS-demo)")
    encode.add_argument("--models-dir", default="models", help="where repositories are looked up and downloaded")
    encode.add_argument("--download", action="store_true", help="download missing models with huggingface_hub")
    encode.add_argument("--out", default="out", help="output folder (files are never overwritten)")
    encode.add_argument("--name", default=None, help="file name stem (default: the mesh file's)")
    encode.add_argument("--views", type=int, default=150, help="rendered views (official: 150)")
    encode.add_argument("--batch-size", type=int, default=16, help="views rendered and encoded together")
    encode.add_argument("--seed", type=int, default=0, help="seed of the cameras' Hammersley offset")
    encode.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    encode.add_argument("--dtype", default="auto", choices=list(_DTYPES),
                        help="torso compute dtype (auto: float32 on CPU, float16 on GPU)")
    prepare = sub.add_parser("prepare-data", help="meshes -> a training-data folder (voxels, renders, features, and "
                                                  "with --model the latents); resumes an unfinished folder")
    prepare.add_argument("meshes", nargs="+", help="mesh files and folders (.obj .ply .stl .glb .gltf, recursive)")
    prepare.add_argument("--out", required=True, help="the training-data folder")
    prepare.add_argument("--resolution", type=int, default=64, help="SLat grid (released: 64)")
    prepare.add_argument("--views", type=int, default=150, help="views per asset (official: 150)")
    prepare.add_argument("--cond-views", type=int, default=24, help="conditioning views per asset (random FoV)")
    prepare.add_argument("--render-size", type=int, default=512, help="render side in px (official: 512)")
    prepare.add_argument("--supersample", type=int, default=2, help="render samples per pixel side")
    prepare.add_argument("--seed", type=int, default=0, help="seed of the cameras")
    prepare.add_argument("--up", default="auto", choices=["auto", "y", "z"],
                         help="up axis of the files: auto = glTF/OBJ Y up, PLY/STL Z up (as the official toolkit)")
    prepare.add_argument("--batch-size", type=int, default=16, help="views rendered / encoded together")
    prepare.add_argument("--dinov2", default=None, help="DINOv2 folder or .pth for the features (default: --model's, when its SLat latents are computed)")
    prepare.add_argument("--model", default=None, help="model folder with the structure and SLat encoders: adds "
                                                        "the latents the flows and the decoder stages train on")
    prepare.add_argument("--latents", nargs="+", default=None, choices=["ss_latent", "slat"],
                         help="with --model: only these latents (default: every kind its encoders give)")
    prepare.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    procedural = sub.add_parser("procedural-meshes", help="write procedural coloured objects (KIND_SEED.glb) for "
                                                          "prepare-data; files already there are kept")
    procedural.add_argument("--out", required=True, help="folder of the mesh files (created; files never overwritten)")
    procedural.add_argument("--count", type=int, required=True, help="number of objects, the kinds taken in turn")
    procedural.add_argument("--seed", type=int, default=0, help="first seed of every kind")
    procedural.add_argument("--kinds", nargs="+", default=None, help="object kinds (default: all)")
    procedural.add_argument("--split", default="train", choices=["train", "held_out"],
                            help="seeds of this split only (held_out: seed %% 10 == 9)")
    procedural.add_argument("--format", default="glb", choices=["glb", "ply"], help="mesh file format")
    train = sub.add_parser("train", help="train the models of one stage (the config's 'stage'); resumes a run folder; "
                                         "several GPUs: torchrun --nproc_per_node K -m trellis_impl train ...")
    train.add_argument("config", help="training config JSON (configs/training/*.json)")
    train.add_argument("--data", required=True, help="training-data folder from prepare-data")
    train.add_argument("--out", required=True, help="run folder (an existing run with the same config is resumed)")
    train.add_argument("--steps", type=int, default=None, help="stop after this many more steps (default: max_steps)")
    train.add_argument("--minutes", type=float, default=None,
                       help="stop (with a checkpoint) after the step that ends past this many minutes of training")
    train.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    export = sub.add_parser("export-folder", help="training runs -> a model folder in the released layout")
    export.add_argument("runs", nargs="+", help="run folders, one per stage")
    export.add_argument("--out", required=True, help="the model folder to write (must not exist)")
    export.add_argument("--weights", default="ema", choices=["ema", "raw"], help="EMA (default) or raw weights")
    export.add_argument("--torso-dtype", default="float16", choices=["float16", "float32"],
                        help="float16: the released layout; float32: the weights exactly as trained")
    export.add_argument("--condition-encoder", default=None,
                        help="DINOv2 / CLIP folder copied into the model folder (default: the flow runs' encoder)")
    distilled = sub.add_parser("distilled-folder", help="TRELLIS-image-large + MDT-dist few-step flows -> a model "
                                                        "folder sampling in 1-4 steps per stage")
    distilled.add_argument("base", help="the TRELLIS-image-large model folder (its decoders and DINOv2 are used)")
    distilled.add_argument("weights", nargs="*",
                           help="the distilled flows: a folder or files (.safetensors/.pt), told apart by their keys; "
                                "with --download, fetched from Zanwei/mdt-dist into --models-dir/mdt-dist")
    distilled.add_argument("--out", required=True, help="the model folder to write (must not exist)")
    distilled.add_argument("--steps", type=int, default=2, choices=[1, 2, 3, 4],
                           help="sampler steps per stage (the authors': 1 or 2)")
    distilled.add_argument("--download", action="store_true", help="download the weights with huggingface_hub")
    distilled.add_argument("--models-dir", default="models", help="where --download puts them (default: ./models)")
    random = sub.add_parser("random-folder", help="write a small random-weight model folder (for tests and demos)")
    random.add_argument("path")
    random.add_argument("--kind", default="image", choices=["image", "text"])
    random.add_argument("--seed", type=int, default=0)
    return parser


def _add_asset_inputs(parser: argparse.ArgumentParser, condition_required: bool) -> None:
    parser.add_argument("asset", help="STEM_slat.safetensors written by this tool (structure and latents), or a "
                                      "mesh file (.obj .ply .glb .gltf .stl: structure only, all latents new)")
    group = parser.add_mutually_exclusive_group(required=condition_required)
    group.add_argument("--prompt", help="the new condition, for a text model")
    group.add_argument("--image", help="the new condition, for an image model")
    parser.add_argument("--box", type=float, nargs=6, action="append", default=None,
                        metavar=("XMIN", "YMIN", "ZMIN", "XMAX", "YMAX", "ZMAX"),
                        help="region box in the exported GLB's axes (Y up, front +Z) of the asset's unit cube "
                             "[-0.5, 0.5]^3; repeat for several boxes")
    parser.add_argument("--region-mesh", help="region: the inside of this closed mesh (GLB axes, unit cube)")
    parser.add_argument("--border", type=int, default=0, help="grow the region by this many voxels")


def _check_run_args(args) -> dict:
    """Every option and input of a model command, checked before any model loads (one-line
    ValueErrors naming the option); returns the decoded input images by option name."""
    from .export import check_file_kinds
    from .export.asset_files import NEEDED_FORMATS
    from .export.glb_export import check_glb_options
    from .readers import check_mesh_path
    from .validation import (check_count, check_device, check_output_folder, check_sampler_options, check_seed,
                             read_image)
    images = {}
    if args.command == "image":
        images["images"] = [read_image(p, "image") for p in args.images]
        if args.mask is not None:
            images["mask"] = [read_image(p, "--mask") for p in args.mask]
    for option in ("image", "source_image"):
        if getattr(args, option, None) is not None:
            images[option] = read_image(getattr(args, option), "--" + option.replace("_", "-"))
    for option in ("mesh", "region_mesh"):
        if getattr(args, option, None) is not None:
            check_mesh_path(getattr(args, option))
    if getattr(args, "asset", None) is not None and not Path(args.asset).is_file():
        raise ValueError(f"asset {args.asset}: no such file")
    check_output_folder(args.out)
    check_seed(args.seed, "--seed")
    check_device(args.device, "--device")
    if args.command == "encode":
        return images
    check_count(args.num_samples, "--num-samples", 1, 64)
    if hasattr(args, "step_cache"):
        check_count(args.step_cache, "--step-cache", 1, 50)
    if args.command in ("edit", "vary") and args.num_samples != 1:
        raise ValueError("--num-samples: edits make one asset; give 1 (and other --seed values for alternatives)")
    if args.command == "edit":
        if not args.box and not args.region_mesh:
            raise ValueError("edit needs a region: --box XMIN YMIN ZMIN XMAX YMAX ZMAX (GLB axes) or --region-mesh")
        if args.image is None and args.prompt is None and args.mode != "delete":
            raise ValueError(f"mode {args.mode} needs the new condition: --image or --prompt")
    if args.files is None:  # the default set, as far as the decoded formats allow
        args.files = [k for k in DEFAULT_FILE_KINDS if k not in NEEDED_FORMATS or NEEDED_FORMATS[k] in args.formats]
    for stage in ("structure", "latent"):
        if hasattr(args, f"{stage}_steps"):
            options = _sampler_overrides(args, stage)
            check_sampler_options(f"--{stage}", *(options[k] for k in ("steps", "cfg_strength", "cfg_interval",
                                                                       "rescale_t")))
    check_file_kinds(args.files, args.formats)
    if {"glb", "obj", "mesh_ply"} & set(args.files):
        check_glb_options(args.simplify, args.texture_size, args.bake, args.bake_steps, args.unwrap, args.origin)
    return images


def _load(cls, args):
    return cls.from_folder(args.model, models_dir=args.models_dir, device=args.device, dtype=_DTYPES[args.dtype],
                           download=args.download, offload=args.low_vram)


def _print_timings(timings: dict, export_seconds: float) -> None:
    for stage, seconds in {**timings, "export (all files)": export_seconds}.items():
        print(f"  {stage:<24s} {seconds:8.2f} s")


def _condition(pipeline, image, prompt: Optional[str]) -> Optional[dict]:
    """The condition of a prompt, or of an image already read (``_check_run_args``), or None."""
    if prompt is not None:
        return pipeline.get_cond([prompt])
    if image is None:
        return None
    from .conditioning import preprocess_image
    return pipeline.get_cond([preprocess_image(image, remover=pipeline.background_remover)])


def _read_asset(pipeline, path: str):
    """(Structure, SLat or None) of a slat file or a mesh (its existence checked by ``_check_run_args``)."""
    from .sparse import SparseTensor
    from .pipelines.generation import structure_from_voxels
    if not path.endswith(".safetensors"):
        return structure_from_mesh_file(path, pipeline.resolution), None
    from .export import load_slat_file
    xyz, feats, latent = load_slat_file(path)
    channels = pipeline.folder.model("slat_flow_model").in_channels
    if feats.shape[1] != channels:
        raise ValueError(f"asset: {path} has {feats.shape[1]} latent channels, this model {channels}")
    structure = structure_from_voxels(xyz, pipeline.resolution)
    structure.latent = latent
    return structure, SparseTensor(feats.to(pipeline.device), structure.coords.to(pipeline.device), batch_size=1)


def _region(args, resolution: int):
    """The union of --box and --region-mesh, or None when neither is given."""
    from .editing import edit_region
    from .readers import load_mesh
    mesh = None if not args.region_mesh else load_mesh(args.region_mesh)
    if not args.box and mesh is None:
        return None
    return edit_region(resolution, boxes=args.box, mesh=mesh, border=args.border)


def _edit(args, images: dict):
    """``edit`` / ``vary``: (GenerationResult of the edited asset, file stem, a summary line)."""
    from .editing import detail_variation, region_edit
    from .pipelines import GenerationResult, TrellisPipeline
    from .pipelines.image_and_text import open_model_folder
    from .pipelines.generation import stage_timer
    source_prompt, source_image = getattr(args, "source_prompt", None), getattr(args, "source_image", None)
    if args.prompt is not None or source_prompt is not None:
        pipeline = _load(TextTo3DPipeline, args)
    elif args.image is not None or source_image is not None:
        pipeline = _load(ImageTo3DPipeline, args)
    else:  # delete: no condition, no condition encoder
        pipeline = TrellisPipeline(open_model_folder(args.model, args.models_dir, args.device, _DTYPES[args.dtype],
                                                     args.download, args.low_vram))
    cond = _condition(pipeline, images.get("image"), args.prompt)
    structure, slat = _read_asset(pipeline, args.asset)
    coords, latent = structure.coords.to(pipeline.device), structure.latent
    region = _region(args, pipeline.resolution)
    base = Path(args.asset).stem.removesuffix("_slat")
    if args.command == "vary":
        out = detail_variation(pipeline, cond, coords, slat, strength=args.strength, region=region, seed=args.seed,
                               params=_sampler_overrides(args, "latent"))
        stem = args.name or f"{base}_variation"
    else:
        source = _condition(pipeline, images.get("source_image"), source_prompt)
        out = region_edit(pipeline, cond or {}, coords, slat, region, mode=args.mode, method=args.method,
                          seed=args.seed, structure_params=_sampler_overrides(args, "structure"),
                          slat_params=_sampler_overrides(args, "latent"), structure_latent=latent,
                          source_cond=source)
        latent = out.structure_latent
        stem = args.name or f"{base}_edit"
    timings = dict(out.timings)
    with stage_timer(timings, "decode", pipeline.device):
        decoded = pipeline.decode(out.slat, args.formats)
    regenerated = int(out.regenerated.sum())
    summary = (f"{len(out.coords) - regenerated} voxels kept with their latents, {regenerated} with new latents "
               f"({int(out.added.sum())} new voxels), {len(out.removed)} original voxels removed")
    return (GenerationResult(coords=out.coords, slat=out.slat, decoded=decoded, timings=timings,
                             structure_latent=latent), stem, summary)


def _encode(args) -> None:
    """``encode``: the mesh's latents from the model's encoders, written as STEM_slat.safetensors."""
    from .encoding import encode_asset, load_textured_mesh, save_encoded
    from .pipelines.image_and_text import open_model_folder
    if args.views < 1:
        raise ValueError(f"--views must be >= 1, got {args.views}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    mesh = load_textured_mesh(args.mesh, up="auto")
    folder = open_model_folder(args.model, args.models_dir, args.device, _DTYPES[args.dtype], args.download)
    asset = encode_asset(mesh, folder, args.views, seed=args.seed, batch_size=args.batch_size, download=args.download)
    (path,) = save_encoded(asset, args.out, args.name or Path(args.mesh).stem)
    print(f"{asset.coords.shape[0]} voxels from {args.views} views; phase timings:")
    for phase, seconds in asset.timings.items():
        print(f"  {phase:<24s} {seconds:8.2f} s")
    print(path)


def _phase_bars():
    """A progress callback (phase, done, total) drawing one bar per phase (tqdm), or None without tqdm."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    bars = {}

    def progress(phase: str, done: int, total: int) -> None:
        if phase not in bars:
            bars[phase] = tqdm(total=total, desc=phase, unit="asset")
        bars[phase].update(done - bars[phase].n)
        if done == total:
            bars[phase].close()
    return progress


def run(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    images = _check_run_args(args) if args.command in _MODEL_COMMANDS else {}
    if args.command in _MODEL_COMMANDS and args.model is None:
        if args.command == "text":
            raise ValueError(f"text: give --model (the embedded demo model {DEMO_MODEL} is image-conditioned), "
                             f"e.g. microsoft/TRELLIS-text-large")
        args.model = DEMO_MODEL
        print(f"no --model given: using the embedded demo model {DEMO_MODEL} ({demo_model_path()}), trained on simple "
              f"procedural objects; for real assets use --model microsoft/TRELLIS-image-large")
    if args.command == "random-folder":
        print(write_random_model_folder(args.path, kind=args.kind, seed=args.seed))
        return 0
    if args.command == "encode":
        _encode(args)
        return 0
    if args.command == "prepare-data":
        from .training.prepare import prepare_data
        data = prepare_data(args.meshes, args.out, resolution=args.resolution, num_views=args.views,
                            cond_views=args.cond_views, render_size=args.render_size, supersample=args.supersample,
                            seed=args.seed, batch_size=args.batch_size, up=args.up, dinov2=args.dinov2, model=args.model,
                            latents=args.latents, device=args.device, progress=_phase_bars())
        print(f"{data.path}: {len(data.names)} assets prepared, {len(data.manifest['failed'])} skipped")
        for name, reason in data.manifest["failed"].items():
            print(f"  skipped {name}: {reason}")
        return 0
    if args.command == "procedural-meshes":
        from .training.procedural import OBJECT_KINDS, write_procedural_meshes
        before = {p.name for p in Path(args.out).glob("*")} if Path(args.out).is_dir() else set()
        paths = write_procedural_meshes(args.out, args.count, seed=args.seed, kinds=args.kinds or OBJECT_KINDS,
                                        split=args.split, file_format=args.format, progress=_phase_bars())
        kept = sum(p.name in before for p in paths)
        print(f"{args.out}: {len(paths) - kept} objects written, {kept} already there (kept)")
        return 0
    if args.command == "train":
        from .training import Trainer, load_config
        if args.steps is not None and args.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {args.steps}")
        if args.minutes is not None and not args.minutes > 0:
            raise ValueError(f"--minutes must be > 0, got {args.minutes}")
        trainer = Trainer(load_config(args.config), args.data, args.out, device=args.device)
        step = trainer.run(steps=args.steps, max_seconds=None if args.minutes is None else 60.0 * args.minutes)
        if trainer.context.is_main:
            print(f"{args.out}: step {step} of {trainer.max_steps}")
        context = trainer.context
        # DDP's reducer goes before its process group: a gloo group destroyed under a live reducer
        # aborted one process in several at exit ("terminate called without an active exception")
        del trainer
        gc.collect()
        context.close()
        return 0
    if args.command == "distilled-folder":
        from .pipelines.distilled import download_mdt_dist, write_distilled_folder
        if not args.weights and not args.download:
            raise ValueError("distilled-folder: give the distilled weights (a folder or files) or --download")
        weights = args.weights or download_mdt_dist(args.models_dir)
        print(write_distilled_folder(args.base, weights, args.out, steps=args.steps))
        return 0
    if args.command == "export-folder":
        from .training import export_model_folder
        print(export_model_folder(args.runs, args.out, weights=args.weights, torso_dtype=args.torso_dtype,
                                  condition_encoder=args.condition_encoder))
        return 0
    from .export import save_generation
    common = dict(seed=args.seed, num_samples=args.num_samples, formats=args.formats)
    summary = None
    if args.command in ("edit", "vary"):
        result, stem, summary = _edit(args, images)
    elif args.command == "image":
        pipeline = _load(ImageTo3DPipeline, args)
        masks = None if args.mask is None else [m.convert("L") for m in images["mask"]]
        result = pipeline.run(images["images"], masks=masks, multi_image_mode=args.multi_image_mode,
                              view_weights=args.view_weights, structure_params=_sampler_overrides(args, "structure"),
                              slat_params=_sampler_overrides(args, "latent"), **common)
        stem = args.name or Path(args.images[0]).stem
    elif args.command == "text":
        pipeline = _load(TextTo3DPipeline, args)
        result = pipeline.run(args.prompt, structure_params=_sampler_overrides(args, "structure"),
                              slat_params=_sampler_overrides(args, "latent"), **common)
        stem = args.name or "_".join(args.prompt.split()[:4]) or "text"
    else:
        pipeline = _load(TextTo3DPipeline if args.prompt is not None else ImageTo3DPipeline, args)
        structure = structure_from_mesh_file(args.mesh, pipeline.resolution, args.num_samples)
        condition = args.prompt if args.prompt is not None else images["image"]
        result = pipeline.run_variant(structure, condition, seed=args.seed, formats=args.formats,
                                      slat_params=_sampler_overrides(args, "latent"))
        stem = args.name or f"{Path(args.mesh).stem}_variant"
    start = time.perf_counter()
    glb_options = dict(simplify=args.simplify, texture_size=args.texture_size, bake=args.bake,
                       bake_steps=args.bake_steps, unwrap_method=args.unwrap, origin=args.origin,
                       fill_holes=not args.no_fill_holes)
    export_timings: dict = {}
    written = save_generation(result, args.out, stem, files=args.files, glb_options=glb_options,
                              timings=export_timings)
    print(f"{result.coords.shape[0]} voxels; stage timings:")
    if summary is not None:
        print(f"  {summary}")
    _print_timings({**result.timings, **export_timings}, time.perf_counter() - start)
    for path in written:
        print(path)
    return 0


def main() -> None:
    try:
        sys.exit(run())
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as e:  # bad input: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # files are written whole or not at all, so nothing partial is left
        print("interrupted", file=sys.stderr)
        sys.exit(130)
