"""How far a SLat encoder's latents moved between two states of the demo model (docs/demo_model.md):
the flows learn the latents of a frozen encoder, so before freezing it, compare the encoder of the
candidate with that of an earlier state on the same held-out objects.

    git archive EARLIER_COMMIT trellis_impl/demo_model | tar -x -C /tmp/old
    python scripts/demo_latent_drift.py /tmp/old/trellis_impl/demo_model trellis_impl/demo_model [--objects 4]

For each object, both folders encode it (same views, same image encoder when both have the same
``dinov2/``) and the relative RMS difference of the latents ``|new - old| / |old|`` is printed, with
the mean; 0 means the same latents.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trellis_impl.encoding import encode_asset  # noqa: E402
from trellis_impl.evaluation import textured_procedural_object  # noqa: E402
from trellis_impl.training.procedural import object_name, object_plan  # noqa: E402


def latent_drift(old: Path, new: Path, objects, views: int = 24, resolution: int = 256) -> dict:
    """{object name: relative RMS difference of the two folders' SLat latents}."""
    drift = {}
    for kind, seed in objects:
        mesh = textured_procedural_object(kind, seed)
        a, b = (encode_asset(mesh, folder, num_views=views, resolution=resolution) for folder in (old, new))
        if not torch.equal(a.coords, b.coords):
            raise ValueError(f"{object_name(kind, seed)}: the two folders voxelise it differently (another grid?)")
        drift[object_name(kind, seed)] = float((b.feats - a.feats).norm() / a.feats.norm().clamp_min(1e-12))
    return drift


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--objects", type=int, default=4, help="held-out objects (the kinds in turn)")
    parser.add_argument("--views", type=int, default=24)
    args = parser.parse_args()
    try:
        drift = latent_drift(args.old, args.new, object_plan(args.objects, split="held_out"), args.views)
    except (ValueError, OSError) as err:  # a missing or incomplete folder (ModelFolderError), other grids
        sys.exit(f"demo_latent_drift: {err}")
    for name, value in drift.items():
        print(f"{name}: {value:.4f}")
    print(f"mean relative change of the latents: {sum(drift.values()) / len(drift):.4f}")


if __name__ == "__main__":
    main()
