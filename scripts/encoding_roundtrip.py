"""Round trip of the encoder: decode an asset, encode its decoded mesh (vertex colours), decode
again, and report the PSNR of renders of the re-decoded Gaussians against the original's.

The asset is a ``STEM_slat.safetensors`` (``--slat``) or, without one, an asset generated from
``assets/example.png`` with few steps. The encoder normalises the mesh into the unit cube, so the
original Gaussians are brought into the same frame before rendering. With random weights
(default: a fresh random folder) the number is only a smoke test; with the released
TRELLIS-image-large folder it measures how well encoding reproduces an asset.

    python scripts/encoding_roundtrip.py [--model FOLDER] [--slat FILE] [--views 150] [--device cuda]
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trellis_impl.encoding import TexturedMesh, encode_asset  # noqa: E402
from trellis_impl.export import load_slat_file  # noqa: E402
from trellis_impl.pipelines import ImageTo3DPipeline, write_random_model_folder  # noqa: E402
from trellis_impl.render import gaussian_tensors, orbit_cameras, render_gaussians  # noqa: E402
from trellis_impl.sparse import SparseTensor  # noqa: E402


def _normalised(gaussians, low: torch.Tensor, high: torch.Tensor) -> dict:
    """The Gaussians' tensors in the frame ``normalize_vertices`` gives a mesh with bounding box [low, high]."""
    tensors = gaussian_tensors(gaussians)
    scale = float((high - low).max())
    tensors["xyz"] = (tensors["xyz"] - (low + high).to(tensors["xyz"]) / 2) / scale
    tensors["scaling"] = tensors["scaling"] / scale
    return tensors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="image model folder (default: a new random one)")
    parser.add_argument("--slat", default=None, help="a STEM_slat.safetensors to start from")
    parser.add_argument("--views", type=int, default=150, help="encoder views")
    parser.add_argument("--render-views", type=int, default=8, help="views compared")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    model = args.model or str(write_random_model_folder(Path(tempfile.mkdtemp()) / "random"))
    pipeline = ImageTo3DPipeline.from_folder(model, device=args.device)
    if args.slat:
        asset = load_slat_file(args.slat)
        coords = torch.cat([torch.zeros_like(asset.coords[:, :1]), asset.coords], 1).int()
        slat = SparseTensor(asset.feats.to(args.device), coords.to(args.device), batch_size=1)
    else:
        from PIL import Image
        slat = pipeline.run(Image.open(REPO / "assets" / "example.png"), formats=[],
                            structure_params={"steps": 5}, slat_params={"steps": 5}).slat
    original = pipeline.decode(slat, ["gaussian", "mesh"])
    mesh = original["mesh"][0]
    if not mesh.success:
        raise SystemExit("the decoded mesh is empty; nothing to encode")
    textured = TexturedMesh.from_arrays(mesh.vertices.double().cpu(), mesh.faces.cpu(),
                                        vertex_colors=mesh.vertex_attrs[:, :3].clamp(0, 1).cpu())
    encoded = encode_asset(textured, pipeline.folder, args.views, dinov2=pipeline.encoder, device=args.device)
    again = pipeline.decode(encoded.slat(args.device), ["gaussian"])["gaussian"][0]
    low, high = mesh.vertices.double().min(0).values, mesh.vertices.double().max(0).values
    reference = _normalised(original["gaussian"][0], low.cpu(), high.cpu())
    errors = []
    for camera in orbit_cameras(args.render_views, pitch=0.3, width=256, height=256):
        a = render_gaussians({k: v.to(args.device) for k, v in reference.items()}, camera)["color"]
        b = render_gaussians(again, camera)["color"]
        errors.append(float(((a - b.to(a)) ** 2).mean()))
    mse = sum(errors) / len(errors)
    print(f"{slat.feats.shape[0]} voxels -> {encoded.coords.shape[0]} voxels after encoding the decoded mesh")
    print(f"render PSNR re-decoded vs original over {args.render_views} views: "
          f"{10 * math.log10(1.0 / max(mse, 1e-12)):.2f} dB")
    print("phases: " + ", ".join(f"{k} {v:.2f} s" for k, v in encoded.timings.items()))


if __name__ == "__main__":
    main()
