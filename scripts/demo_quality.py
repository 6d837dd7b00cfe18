"""Quality of a model folder on held-out procedural objects (docs/demo_model.md, "Quality").

For each held-out object (seed % 10 == 9, never trained on): its front picture (unlit base colour,
RGBA) goes through the image pipeline; the generated asset is scored against the picture
(silhouette IoU, dominant colour: ``trellis_impl.evaluation``), and the object's mesh is encoded
and decoded for the reconstruction PSNR. Writes ``quality.json`` and ``turntables.png`` (per row:
the input picture, then the generated asset from the front and at 90, 180, 270 degrees).

    python scripts/demo_quality.py --model FOLDER --out DIR [--objects 15] [--views 150] [--device cuda]
        [--split train] [--no-psnr] [--ceiling VIEWS]
    python scripts/demo_quality.py --model FOLDER --out DIR --structure [--objects 15]
    python scripts/demo_quality.py --model FOLDER --out DIR --meshes FILE [FILE ...] [--up auto|y|z]

``--structure`` scores the structure flow alone (a folder whose later stages are not trained yet):
the silhouette IoU of the sampled voxels against the picture, beside that of the object's own voxels
(``structure.json``), and ``structures.png`` (per row: the picture's alpha, the object's own voxels,
the sampled voxels, seen from the picture's camera).

``--meshes`` scores mesh files instead of procedural objects (real objects, never trained on; split
``meshes`` in ``quality.json``, named by file stem), read with their base colours and turned into the
TRELLIS frame as ``--up`` says (``load_textured_mesh``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trellis_impl.encoding.assets import load_textured_mesh  # noqa: E402
from trellis_impl.evaluation import score_meshes, score_objects, score_structures, summarise  # noqa: E402
from trellis_impl.pipelines import ImageTo3DPipeline  # noqa: E402
from trellis_impl.readers import check_mesh_path  # noqa: E402
from trellis_impl.render import render_gaussians  # noqa: E402
from trellis_impl.render.cameras import Camera  # noqa: E402
from trellis_impl.training.procedural import object_plan  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="image model folder")
    parser.add_argument("--out", required=True, help="folder for quality.json and turntables.png")
    parser.add_argument("--objects", type=int, default=15, help="held-out objects (the kinds in turn)")
    parser.add_argument("--views", type=int, default=150, help="encoder views for the reconstruction figure")
    parser.add_argument("--size", type=int, default=256, help="picture and render size in px")
    parser.add_argument("--seed", type=int, default=42, help="generation seed")
    parser.add_argument("--split", default="held_out", choices=("held_out", "train"),
                        help="objects never trained on (the figures), or training ones (to tell under- from overfitting)")
    parser.add_argument("--no-psnr", action="store_true", help="generation figures only (no encode -> decode)")
    parser.add_argument("--ceiling", type=int, default=None, metavar="VIEWS",
                        help="score each object's own encoding from VIEWS views instead of a generation")
    parser.add_argument("--structure", action="store_true",
                        help="the structure flow alone: voxel silhouettes against the pictures (structure.json)")
    parser.add_argument("--meshes", nargs="+", default=None, metavar="FILE",
                        help="score these mesh files (real objects) instead of procedural ones")
    parser.add_argument("--up", default="auto", choices=("auto", "y", "z"),
                        help="the meshes' up axis (auto: Y for .glb/.gltf/.obj, Z for .ply/.stl)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    out = Path(args.out)
    # refused in one line before any model loads; earlier figures are never overwritten
    written = ("structure.json", "structures.png") if args.structure else ("quality.json", "turntables.png")
    existing = [name for name in written if (out / name).exists()]
    if existing:
        sys.exit(f"demo_quality: {out} already holds {', '.join(existing)}; name a new --out")
    if not Path(args.model).is_dir():
        sys.exit(f"demo_quality: --model {args.model} is not a model folder")
    for name in ("objects", "views", "size", "ceiling"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            sys.exit(f"demo_quality: --{name} must be >= 1, got {getattr(args, name)}")
    if args.meshes and args.structure:
        sys.exit("demo_quality: --meshes scores generations or encodings, not --structure")
    for mesh in args.meshes or ():
        try:
            check_mesh_path(mesh)  # the readers' own check: an existing file of a mesh format they read
        except ValueError as error:
            sys.exit(f"demo_quality: --meshes: {error}")
    out.mkdir(parents=True, exist_ok=True)
    pipeline = ImageTo3DPipeline.from_folder(args.model, device=args.device)
    if args.structure:
        found = score_structures(pipeline, object_plan(args.objects, split=args.split), size=args.size, seed=args.seed,
                                 log=print)
        summary = {"objects": len(found), "mean_iou": sum(f.iou for f in found) / len(found),
                   "mean_ceiling_iou": sum(f.ceiling_iou for f in found) / len(found)}
        (out / "structure.json").write_text(json.dumps({"model": str(args.model), "summary": summary,
                                                        "objects": [f.as_dict() for f in found]}, indent=2))
        sheet = torch.cat([torch.cat(list(f.silhouettes), dim=1) for f in found], dim=0)
        Image.fromarray((sheet.clamp(0, 1) * 255).round().byte().numpy()).save(out / "structures.png")
        print(json.dumps(summary, indent=2))
        return
    scoring = dict(size=args.size, seed=args.seed, psnr_views=None if args.no_psnr else args.views,
                   encode_views=args.ceiling, log=print)
    if args.meshes:
        split = "meshes"
        figures = score_meshes(pipeline, [(Path(m).stem, lambda m=m: load_textured_mesh(m, up=args.up))
                                          for m in args.meshes], **scoring)
    else:
        split = args.split
        figures = score_objects(pipeline, object_plan(args.objects, split=args.split), **scoring)
    rows = []
    for item in figures:
        turntable = [Camera.orbit(math.pi + k * math.pi / 2, 0.35, 2.0, 40.0, args.size, args.size) for k in range(4)]
        views = [render_gaussians(item.gaussians, c)["color"].cpu() for c in turntable]
        rows.append(torch.cat([item.picture[:3] * item.picture[3:]] + views, dim=2))
    scores, psnrs, records = [f.score for f in figures], [f.psnr_db for f in figures], [f.as_dict() for f in figures]
    summary = summarise(scores, None if args.no_psnr else psnrs)
    mode = "generation" if args.ceiling is None else "ceiling"
    (out / "quality.json").write_text(json.dumps({"model": str(args.model), "mode": mode, "split": split,
                                                  "seed": args.seed, "size": args.size,
                                                  "psnr_views": None if args.no_psnr else args.views,
                                                  "summary": summary, "objects": records}, indent=2))
    sheet = (torch.cat(rows, dim=1).permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
    Image.fromarray(sheet).save(out / "turntables.png")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
