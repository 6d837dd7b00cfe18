"""Command line: ``python -m trellis_impl {image,text,variant,random-folder} ...``.

Examples::

    python -m trellis_impl image photo.png --model microsoft/TRELLIS-image-large --download --out out/
    python -m trellis_impl image front.png back.png --multi-image-mode multidiffusion --model FOLDER
    python -m trellis_impl text "a wooden chair" --model microsoft/TRELLIS-text-large --download
    python -m trellis_impl variant chair.obj --prompt "a golden chair" --model FOLDER
    python -m trellis_impl random-folder models/TRELLIS-random --kind image
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch

from .export.asset_files import DEFAULT_FILE_KINDS, FILE_KINDS
from .export.glb_export import BAKE_MODES, UNWRAP_METHODS
from .pipelines import FORMATS, MULTI_IMAGE_MODES, ImageTo3DPipeline, TextTo3DPipeline, write_random_model_folder

_DTYPES = {"auto": None, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _sampler_overrides(args, stage: str) -> dict:
    return {"steps": getattr(args, f"{stage}_steps"), "cfg_strength": getattr(args, f"{stage}_cfg"),
            "cfg_interval": getattr(args, f"{stage}_cfg_interval"), "rescale_t": getattr(args, f"{stage}_rescale_t")}


def _add_common(parser: argparse.ArgumentParser, structure: bool = True) -> None:
    parser.add_argument("--model", required=True,
                        help="model folder (with pipeline.json) or a known repository id, e.g. microsoft/TRELLIS-image-large")
    parser.add_argument("--models-dir", default="models",
                        help="where repositories are looked up and downloaded (default: ./models)")
    parser.add_argument("--download", action="store_true", help="download missing models with huggingface_hub")
    parser.add_argument("--out", default="out", help="output folder (files are never overwritten)")
    parser.add_argument("--name", default=None, help="file name stem (default: from the input)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--formats", nargs="+", default=["gaussian", "mesh"], choices=FORMATS)
    parser.add_argument("--files", nargs="+", default=list(DEFAULT_FILE_KINDS), choices=FILE_KINDS,
                        help="files to write per asset (default: glb ply spz slat)")
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
    stages = ("structure", "latent") if structure else ("latent",)
    for stage in stages:
        parser.add_argument(f"--{stage}-steps", type=int, default=None, help=f"{stage} sampler steps (released: 25)")
        parser.add_argument(f"--{stage}-cfg", type=float, default=None, help="CFG strength (released: 5.0)")
        parser.add_argument(f"--{stage}-cfg-interval", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                            help="t range where CFG applies (released: 0.5 1.0)")
        parser.add_argument(f"--{stage}-rescale-t", type=float, default=None, help="time rescale (released: 3.0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trellis_impl", description="TRELLIS 3D generation")
    sub = parser.add_subparsers(dest="command", required=True)
    image = sub.add_parser("image", help="image(s) of one object -> 3D asset files")
    image.add_argument("images", nargs="+", help="image files (RGBA with transparency, or give --mask / install rembg)")
    image.add_argument("--mask", nargs="+", default=None, help="one mask image per input image (white = object)")
    image.add_argument("--multi-image-mode", default="stochastic", choices=MULTI_IMAGE_MODES)
    image.add_argument("--view-weights", type=float, nargs="+", default=None, help="one weight per view")
    _add_common(image)
    text = sub.add_parser("text", help="prompt -> 3D asset files")
    text.add_argument("prompt")
    _add_common(text)
    variant = sub.add_parser("variant", help="mesh + prompt or image -> new appearance on the same structure")
    variant.add_argument("mesh", help=".obj, .ply, .glb (glb needs trimesh)")
    group = variant.add_mutually_exclusive_group(required=True)
    group.add_argument("--prompt")
    group.add_argument("--image")
    _add_common(variant, structure=False)
    random = sub.add_parser("random-folder", help="write a small random-weight model folder (for tests and demos)")
    random.add_argument("path")
    random.add_argument("--kind", default="image", choices=["image", "text"])
    random.add_argument("--seed", type=int, default=0)
    return parser


def _load(cls, args):
    return cls.from_folder(args.model, models_dir=args.models_dir, device=args.device, dtype=_DTYPES[args.dtype],
                           download=args.download)


def _print_timings(timings: dict, export_seconds: float) -> None:
    for stage, seconds in {**timings, "export (all files)": export_seconds}.items():
        print(f"  {stage:<24s} {seconds:8.2f} s")


def run(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "random-folder":
        print(write_random_model_folder(args.path, kind=args.kind, seed=args.seed))
        return 0
    from PIL import Image

    from .export import save_generation
    common = dict(seed=args.seed, num_samples=args.num_samples, formats=args.formats)
    if args.command == "image":
        pipeline = _load(ImageTo3DPipeline, args)
        images = [Image.open(p) for p in args.images]
        masks = None if args.mask is None else [Image.open(p).convert("L") for p in args.mask]
        result = pipeline.run(images, masks=masks, multi_image_mode=args.multi_image_mode,
                              view_weights=args.view_weights, structure_params=_sampler_overrides(args, "structure"),
                              slat_params=_sampler_overrides(args, "latent"), **common)
        stem = args.name or Path(args.images[0]).stem
    elif args.command == "text":
        pipeline = _load(TextTo3DPipeline, args)
        result = pipeline.run(args.prompt, structure_params=_sampler_overrides(args, "structure"),
                              slat_params=_sampler_overrides(args, "latent"), **common)
        stem = args.name or "_".join(args.prompt.split()[:4]) or "text"
    else:
        from .pipelines.conditioned import structure_from_mesh
        from .pipelines.voxelize import load_mesh
        vertices, faces = load_mesh(args.mesh)
        pipeline = _load(TextTo3DPipeline if args.prompt is not None else ImageTo3DPipeline, args)
        coords = structure_from_mesh(pipeline, vertices, faces)
        condition = args.prompt if args.prompt is not None else Image.open(args.image)
        result = pipeline.run_variant(coords, condition, slat_params=_sampler_overrides(args, "latent"), **common)
        stem = args.name or f"{Path(args.mesh).stem}_variant"
    start = time.perf_counter()
    glb_options = dict(simplify=args.simplify, texture_size=args.texture_size, bake=args.bake,
                       bake_steps=args.bake_steps, unwrap_method=args.unwrap, origin=args.origin,
                       fill_holes=not args.no_fill_holes)
    export_timings: dict = {}
    written = save_generation(result, args.out, stem, files=args.files, glb_options=glb_options,
                              timings=export_timings)
    print(f"{result.coords.shape[0]} voxels; stage timings:")
    _print_timings({**result.timings, **export_timings}, time.perf_counter() - start)
    for path in written:
        print(path)
    return 0


def main() -> None:
    try:
        sys.exit(run())
    except (ValueError, FileNotFoundError, ImportError) as e:  # bad input: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
