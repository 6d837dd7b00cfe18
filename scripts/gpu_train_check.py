"""Device check of training (issue 11): a few optimisation steps of every stage at the released model
sizes and the official per-GPU batch sizes, with the GPU backends (attention and rasterisers chosen
automatically: FlashAttention varlen, gsplat, nvdiffrast when installed), bf16 autocast. Reports per
stage the median step time of the steps after the first and the peak GPU memory.

The data is synthetic and made here (no transfer): sphere shells of about 20k voxels at 64^3, random
1024-d features, random latents, disc renders at 512 px, a UV-sphere mesh; DINOv2 ViT-L/14 reg4 with
random weights for the flows' conditions. Numbers are speed and memory only.

    python scripts/gpu_train_check.py --out $OUT/train_check.json [--stages ss_vae ...] [--steps 3]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from device_bench import sphere_shell  # noqa: E402
from trellis_impl.render.cameras import Camera  # noqa: E402
from trellis_impl.training import STAGES, Trainer, load_config  # noqa: E402
from trellis_impl.training.dataset import (ASSET_KINDS, camera_tensors, new_dataset_manifest,  # noqa: E402
                                           write_asset_tensors, write_json_atomic)

CONFIGS = {"ss_vae": "ss_vae.json", "slat_vae_gs": "slat_vae_gs.json", "slat_dec_rf": "slat_dec_rf.json",
           "slat_dec_mesh": "slat_dec_mesh.json", "ss_flow": "ss_flow_img.json", "slat_flow": "slat_flow_img.json"}


def uv_sphere(radius: float = 0.4, rings: int = 96, segments: int = 192):
    """A closed UV sphere: vertices float32 [V, 3], faces int32 [F, 3]."""
    theta = torch.linspace(0, math.pi, rings + 1)[1:-1]
    phi = torch.linspace(0, 2 * math.pi, segments + 1)[:-1]
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    ring = torch.stack([t.sin() * p.cos(), t.sin() * p.sin(), t.cos()], -1).reshape(-1, 3)
    vertices = torch.cat([torch.tensor([[0, 0, 1.0]]), ring, torch.tensor([[0, 0, -1.0]])]) * radius
    faces = []
    for s in range(segments):
        n = (s + 1) % segments
        faces.append([0, 1 + s, 1 + n])
        last = 1 + (rings - 2) * segments
        faces.append([len(vertices) - 1, last + n, last + s])
    for r in range(rings - 2):
        for s in range(segments):
            n = (s + 1) % segments
            a, b, c, d = 1 + r * segments + s, 1 + r * segments + n, 1 + (r + 1) * segments + s, 1 + (r + 1) * segments + n
            faces += [[a, c, b], [b, c, d]]
    return vertices.float(), torch.tensor(faces, dtype=torch.int32)


def synthetic_data(folder: Path, assets: int = 2, views: int = 8, size: int = 512) -> Path:
    (folder / "assets").mkdir(parents=True)
    manifest = new_dataset_manifest(64, {"synthetic": True})
    generator = torch.Generator().manual_seed(0)
    vertices, faces = uv_sphere()
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) <= (size * 0.3) ** 2
    for i in range(assets):
        name, out = f"shell{i}", folder / "assets" / f"shell{i}"
        out.mkdir()
        coords = sphere_shell(64, 27.5 - i, 29.5 - i, device="cpu")[:, 1:].int()
        n = coords.shape[0]
        write_asset_tensors(out / ASSET_KINDS["voxels"], {"coords": coords})
        write_asset_tensors(out / ASSET_KINDS["mesh"], {"vertices": vertices, "faces": faces})
        write_asset_tensors(out / ASSET_KINDS["features"], {"patchtokens": torch.randn(n, 1024, generator=generator).half()})
        write_asset_tensors(out / ASSET_KINDS["ss_latent"], {"latent": torch.randn(8, 16, 16, 16, generator=generator)})
        write_asset_tensors(out / ASSET_KINDS["slat"], {"feats": torch.randn(n, 8, generator=generator)})
        for kind, count in (("renders", views), ("cond", 2)):
            images = torch.zeros(count, size, size, 4, dtype=torch.uint8)
            images[:, disc] = torch.tensor([200, 120, 40, 255], dtype=torch.uint8)
            cameras = [Camera.orbit(2 * math.pi * k / count, 0.3, 2.0, 40.0, size, size) for k in range(count)]
            write_asset_tensors(out / ASSET_KINDS[kind], {"images": images, **camera_tensors(cameras)})
        manifest["assets"][name] = {"source": "synthetic", "num_voxels": n}
    write_json_atomic(folder / "dataset.json", manifest)
    return folder


def random_dinov2_folder(folder: Path) -> Path:
    from safetensors.torch import save_file

    from trellis_impl.conditioning import DINOV2_VITL14_REG4, DinoV2, config_to_hf, hub_to_hf_state_dict
    from trellis_impl.pipelines.random_folder import randomise_weights
    model = DinoV2(DINOV2_VITL14_REG4)
    randomise_weights(model, torch.Generator().manual_seed(1))
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config_to_hf(model.config)))
    save_file({k: v.contiguous() for k, v in hub_to_hf_state_dict(model.state_dict()).items()},
              str(folder / "model.safetensors"))
    return folder


def run_stage(stage: str, data: Path, work: Path, dinov2: Path, steps: int, grad_checkpoint: bool) -> dict:
    config = load_config(REPO / "configs" / "training" / CONFIGS[stage])
    raw = config.to_json()
    raw["trainer"].update({"max_steps": steps, "i_log": 1, "i_save": 10 ** 6, "grad_checkpoint": grad_checkpoint})
    raw.get("loss", {}).pop("perceptual", None)  # no LPIPS weights on the device
    raw.get("loss", {})["lambda_lpips"] = 0.0
    if "image_encoder" in raw.get("frozen", {}):
        raw["frozen"]["image_encoder"] = str(dinov2)
    from trellis_impl.training.config import TrainConfig
    config = TrainConfig(raw, source=str(CONFIGS[stage]), base_dir=REPO)
    torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(config, data, work / f"run_{stage}_{int(grad_checkpoint)}", device="cuda", log=print)
    params = sum(p.numel() for p in trainer.params)
    times, losses = [], []
    for _ in range(steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        logged = trainer.train_step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        losses.append(logged["loss"])
    t = config.trainer
    return {"stage": stage, "parameters": params, "batch_per_gpu": t["batch_size_per_gpu"],
            "batch_split": t["batch_split"], "grad_checkpoint": grad_checkpoint,
            "first_step_s": round(times[0], 3), "step_s_median": round(statistics.median(times[1:]), 3),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 2),
            "losses": [round(x, 5) for x in losses], "finite": all(math.isfinite(x) for x in losses)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--stages", nargs="+", default=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--grad-checkpoint", action="store_true")
    args = parser.parse_args()
    from trellis_impl.backends.registry import available_backends
    work = Path(tempfile.mkdtemp())
    data = synthetic_data(work / "data")
    dinov2 = random_dinov2_folder(work / "dinov2") if {"ss_flow", "slat_flow"} & set(args.stages) else None
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "backends": available_backends(torch.device("cuda"), torch.bfloat16), "stages": []}
    for stage in args.stages:
        if stage not in STAGES:
            results["stages"].append({"stage": stage, "error": "not registered"})
            continue
        try:
            result = run_stage(stage, data, work, dinov2, args.steps, args.grad_checkpoint)
        except Exception as error:  # record and go on with the other stages
            import traceback
            traceback.print_exc()
            result = {"stage": stage, "error": f"{type(error).__name__}: {error}"}
        print(json.dumps(result), flush=True)
        results["stages"].append(result)
        torch.cuda.empty_cache()
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
