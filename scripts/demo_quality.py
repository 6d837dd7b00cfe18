"""Quality of a model folder on held-out procedural objects (docs/demo_model.md, "Quality").

For each held-out object (seed % 10 == 9, never trained on): its front picture (unlit base colour,
RGBA) goes through the image pipeline; the generated asset is scored against the picture
(silhouette IoU, dominant colour: ``trellis_impl.evaluation``), and the object's mesh is encoded
and decoded for the reconstruction PSNR. Writes ``quality.json`` and ``turntables.png`` (per row:
the input picture, then the generated asset from the front and at 90, 180, 270 degrees).

    python scripts/demo_quality.py --model FOLDER --out DIR [--objects 15] [--views 150] [--device cuda]
        [--split train] [--no-psnr]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trellis_impl.encoding import TexturedMesh  # noqa: E402
from trellis_impl.evaluation import (front_camera, picture_of_mesh, reconstruction_psnr, score_generation,  # noqa: E402
                                     summarise)
from trellis_impl.pipelines import ImageTo3DPipeline  # noqa: E402
from trellis_impl.render import orbit_cameras, render_gaussians  # noqa: E402
from trellis_impl.render.cameras import Camera  # noqa: E402
from trellis_impl.training.procedural import object_plan, procedural_object  # noqa: E402


def textured(kind: str, seed: int) -> TexturedMesh:
    mesh = procedural_object(kind, seed)
    colours = torch.as_tensor(np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0, dtype=torch.float32)
    return TexturedMesh.from_arrays(torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float64),
                                    torch.as_tensor(np.asarray(mesh.faces)), vertex_colors=colours)


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
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipeline = ImageTo3DPipeline.from_folder(args.model, device=args.device)
    camera = front_camera(args.size)
    compare = orbit_cameras(8, pitch=0.3, width=args.size, height=args.size)
    rows, records, scores, psnrs = [], [], [], []
    for kind, seed in object_plan(args.objects, split=args.split):
        mesh = textured(kind, seed)
        picture = picture_of_mesh(mesh, camera, device=args.device)
        pil = Image.fromarray((picture.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy(), "RGBA")
        result = pipeline.run(pil, seed=args.seed, formats=["gaussian"])
        gaussians = result.decoded["gaussian"][0]
        score = score_generation(picture, gaussians, camera)
        value = None if args.no_psnr else reconstruction_psnr(pipeline, mesh, compare, views=args.views)
        scores.append(score)
        psnrs.append(value)
        records.append({"object": f"{kind}_{seed:06d}", **score.as_dict(), "psnr_db": value,
                        "seconds": result.timings})
        shown_psnr = "" if value is None else f", PSNR {value:.2f} dB"
        print(f"{kind}_{seed:06d}: IoU {score.iou:.3f}, colour error {score.colour_error:.3f}{shown_psnr}")
        turntable = [Camera.orbit(math.pi + k * math.pi / 2, 0.35, 2.0, 40.0, args.size, args.size) for k in range(4)]
        views = [render_gaussians(gaussians, c)["color"].cpu() for c in turntable]
        shown = picture[:3] * picture[3:]
        rows.append(torch.cat([shown] + views, dim=2))
    summary = summarise(scores, None if args.no_psnr else psnrs)
    (out / "quality.json").write_text(json.dumps({"model": str(args.model), "summary": summary, "objects": records},
                                                 indent=2))
    sheet = (torch.cat(rows, dim=1).permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
    Image.fromarray(sheet).save(out / "turntables.png")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
