"""The SLat VAE's first-step loss and gradient under each Gaussian rasteriser (device diagnosis).

The demo VAE's first device run went transparent at a gradient norm of about 120, while the same
initialisation on CPU (the PyTorch rasteriser) gave about 0.1 (docs/demo_model.md). This runs one
batch of the training data through a fresh VAE at the config's settings and prints, per backend
(gsplat and the PyTorch reference): the loss terms, the total gradient norm and the norms of the
decoder's output layer and of the rendered-image gradient:

    python scripts/demo_vae_grad_check.py CONFIG --data DATA [--batch 4] [--size 128]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trellis_impl.backends.registry import set_backend  # noqa: E402
from trellis_impl.training.config import load_config  # noqa: E402
from trellis_impl.training.trainer import Trainer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--data", required=True)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=128, help="render size (px)")
    args = parser.parse_args()
    config = load_config(args.config)
    config.trainer["batch_size_per_gpu"] = args.batch
    config.data["image_size"] = args.size
    config.init = {}
    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(config, args.data, Path(run) / "run", log=None)
        batch = trainer.micro_batches(0)[0]
        for backend in ("gsplat", "torch"):
            set_backend("gaussian_raster", backend)
            for model in trainer.models.values():
                model.zero_grad(set_to_none=True)
            terms = trainer.stage.losses(trainer.models, batch)
            terms["loss"].backward()
            norm = torch.nn.utils.clip_grad_norm_(trainer.params, float("inf"))
            out = trainer.models["decoder"].out_layer
            out_norm = float(sum(p.grad.norm() ** 2 for p in out.parameters() if p.grad is not None) ** 0.5)
            values = ", ".join(f"{k} {float(v.detach()):.5f}" for k, v in terms.items())
            print(f"{backend:>7}: {values}; grad norm {float(norm):.4f}, output layer {out_norm:.4f}", flush=True)


if __name__ == "__main__":
    main()
