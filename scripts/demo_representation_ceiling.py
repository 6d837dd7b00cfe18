"""How far the Gaussian decoder's representation can go on one held-out object (docs/demo_model.md).

The object is encoded and decoded by a model folder; then the Gaussian decoder's per-voxel outputs
(feats [N, 14 G] before ``to_representation``) are optimised directly, without the network, against
renders of the object's base colour from Hammersley views (L1 + 0.2 D-SSIM on random black or white
backgrounds, as the VAE trains). The PSNR on orbit views that are never fitted says whether the
voxel grid and Gaussian count can reach a figure, and so whether the network can.

    python scripts/demo_representation_ceiling.py --model FOLDER [--kind table --seed 9]
        [--steps 200 --lr 5e-3 --views 48 --size 256 --device cpu]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trellis_impl.encoding import encode_asset  # noqa: E402
from trellis_impl.encoding.albedo import render_albedo  # noqa: E402
from trellis_impl.encoding.views import hammersley_cameras  # noqa: E402
from trellis_impl.evaluation import psnr, textured_procedural_object  # noqa: E402
from trellis_impl.pipelines import ImageTo3DPipeline  # noqa: E402
from trellis_impl.render import orbit_cameras, render_gaussians  # noqa: E402
from trellis_impl.training.losses import dssim  # noqa: E402
from trellis_impl.training.procedural import object_name  # noqa: E402


def premultiplied(mesh, cameras, device):
    """Base-colour renders on black [V, 3, S, S] and their alpha [V, S, S]."""
    views = render_albedo(mesh, list(cameras), 2, device)
    return (torch.stack([(v[..., :3] * v[..., 3:]).permute(2, 0, 1) for v in views]),
            torch.stack([v[..., 3] for v in views]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="image model folder")
    parser.add_argument("--kind", default="table", help="procedural object kind")
    parser.add_argument("--seed", type=int, default=9, help="object seed (seed %% 10 == 9: held out)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--views", type=int, default=48, help="fitted views")
    parser.add_argument("--size", type=int, default=256, help="render size in px")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    pipeline = ImageTo3DPipeline.from_folder(args.model, device=args.device)
    mesh = textured_procedural_object(args.kind, args.seed)
    slat = encode_asset(mesh, pipeline.folder, 40, dinov2=pipeline.encoder, device=args.device).slat(args.device)
    decoder = pipeline.folder.model("slat_decoder_gs").float()
    with torch.no_grad():
        outputs = decoder.forward_features(slat)
    feats = torch.nn.Parameter(outputs.feats.float().clone())
    held = orbit_cameras(4, pitch=0.3, width=args.size, height=args.size)
    fitted = hammersley_cameras(args.views, seed=1, resolution=args.size)
    held_truth, _ = premultiplied(mesh.normalized(), held, args.device)
    truth, alpha = premultiplied(mesh.normalized(), fitted, args.device)

    def held_psnr() -> float:
        with torch.no_grad():
            gaussians = decoder.to_representation(outputs.replace(feats))[0]
            renders = torch.stack([render_gaussians(gaussians, c)["color"].clamp(0, 1) for c in held])
        return float(psnr(renders, held_truth))

    print(f"{object_name(args.kind, args.seed)}: {slat.coords.shape[0]} voxels, held-out PSNR {held_psnr():.2f} dB "
          "(the VAE's decoding)", flush=True)
    optimiser = torch.optim.Adam([feats], lr=args.lr)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        gaussians = decoder.to_representation(outputs.replace(feats))[0]
        background = torch.full((3,), float(step % 2), device=args.device)
        loss = 0.0
        for i in torch.randint(0, len(fitted), (4,)).tolist():
            render = render_gaussians(gaussians, fitted[i], background, clamp=False)["color"]
            target = truth[i] + (1 - alpha[i])[None] * background[:, None, None]
            loss = loss + (render - target).abs().mean() + 0.2 * dssim(render[None], target[None])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 25 == 0 or step == args.steps:
            print(f"step {step}: loss {float(loss.detach()) / 4:.4f}, held-out PSNR {held_psnr():.2f} dB "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
