"""Where a training step's time goes, and what precision and batch size buy (device diagnosis).

For each variant PRECISION:BATCH (``mixed_precision`` and ``batch_size_per_gpu`` of CONFIG), a
fresh trainer on DATA runs ``--warmup`` steps, then ``--steps`` timed steps (the GPU synchronised
around them): steps/s and samples/s, side by side in one process. The first variant is also
profiled over ``--profiled`` steps: the share of the wall time the GPU spent in kernels (low: the
step is bound by the host's launches, so a larger batch costs little; high: by the GPU's work) and
the operators with the most GPU and host time.

    python scripts/demo_step_profile.py configs/training/demo/slat_vae_gs.json --data /tmp/demo/data \
        [--variants none:16,tf32:16,none:32] [--steps 10] [--out $OUT/step_profile.json]

With ``--syncs N`` the first variant also runs N steps in CUDA's synchronisation debug mode, which
warns at every call that makes the host wait for the GPU: the sites, counted per step at their
innermost frame in this package, are what keeps the host from running ahead.

With ``--apply PROFILE`` it measures nothing: the fastest variant of a saved PROFILE (by samples/s)
is written into CONFIG when it beats the first variant by ``--min-gain``, so a later call on the
device trains at the measured setting without a round trip through this machine.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trellis_impl.training.config import MIXED_PRECISION, load_config  # noqa: E402
from trellis_impl.training.trainer import Trainer  # noqa: E402

from sync_sites import sync_sites  # noqa: E402  (this folder)


def parse_variants(text: str):
    variants = []
    for item in text.split(","):
        precision, _, batch = item.partition(":")
        if precision not in MIXED_PRECISION or not batch.isdigit() or int(batch) < 1:
            raise SystemExit(f"--variants: {item!r} is not PRECISION:BATCH with PRECISION one of {MIXED_PRECISION}")
        variants.append((precision, int(batch)))
    return variants


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fastest_variant(rows: list[dict], min_gain: float) -> dict:
    """The row with the most samples/s if it beats the first row (the config as is) by ``min_gain``
    (a ratio), else the first row: small gains are within the measurement's noise."""
    best = max(rows, key=lambda row: row["samples_per_s"])
    return best if best["samples_per_s"] >= min_gain * rows[0]["samples_per_s"] else rows[0]


def apply_profile(config_path: str, profile_path: str, min_gain: float) -> None:
    try:
        rows = json.loads(Path(profile_path).read_text())["rows"]
        config = json.loads(Path(config_path).read_text())
    except (OSError, ValueError, KeyError) as error:  # nothing is written
        sys.exit(f"demo_step_profile: --apply needs a profile this script wrote and a JSON config ({error})")
    if not rows:
        sys.exit(f"demo_step_profile: {profile_path} holds no measured variant")
    chosen = fastest_variant(rows, min_gain)
    config["trainer"]["mixed_precision"], config["trainer"]["batch_size_per_gpu"] = chosen["precision"], chosen["batch"]
    Path(config_path).write_text(json.dumps(config, indent=2) + "\n")
    print(f"{config_path}: {chosen['precision']}:{chosen['batch']} ({chosen['samples_per_s']:.1f} samples/s; "
          f"the first variant {rows[0]['samples_per_s']:.1f})")


def profile_steps(trainer: Trainer, steps: int, top: int = 12) -> dict:
    """GPU busy share and the top operators of ``steps`` steps."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])
    synchronize(trainer.device)
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            trainer.train_step()
        synchronize(trainer.device)
    wall = time.perf_counter() - start
    events = prof.key_averages()
    kernel_us = sum(e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    by_gpu = sorted(events, key=lambda e: e.self_device_time_total, reverse=True)[:top]
    by_host = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {"wall_s": wall, "gpu_busy_share": kernel_us / 1e6 / wall,
            "top_gpu_ms": {e.key: e.self_device_time_total / 1e3 / steps for e in by_gpu if e.self_device_time_total > 0},
            "top_host_ms": {e.key: e.self_cpu_time_total / 1e3 / steps for e in by_host}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--data")
    parser.add_argument("--apply", metavar="PROFILE", help="write PROFILE's fastest variant into CONFIG; measure nothing")
    parser.add_argument("--min-gain", type=float, default=1.15, help="with --apply: the speed-up a variant needs")
    parser.add_argument("--variants", default="none:16,tf32:16,none:32,tf32:32", help="PRECISION:BATCH,...")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--profiled", type=int, default=3, help="steps profiled for the first variant (0: none)")
    parser.add_argument("--image-encoder", help="a flow config's frozen.image_encoder (the configs hold a placeholder)")
    parser.add_argument("--syncs", type=int, default=0, help="steps of the first variant in CUDA's sync debug mode")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="JSON file for the figures")
    args = parser.parse_args()
    if args.apply:
        if not args.min_gain > 0:
            sys.exit(f"demo_step_profile: --min-gain must be > 0, got {args.min_gain}")
        return apply_profile(args.config, args.apply, args.min_gain)
    if not args.data:
        parser.error("--data is required unless --apply is given")
    rows = []
    for k, (precision, batch) in enumerate(parse_variants(args.variants)):
        config = load_config(args.config)
        config.trainer["mixed_precision"], config.trainer["batch_size_per_gpu"] = precision, batch
        config.init = {}  # speed only: fresh weights
        if args.image_encoder:
            config.frozen["image_encoder"] = args.image_encoder
        with tempfile.TemporaryDirectory() as run:
            trainer = Trainer(config, args.data, Path(run) / "run", device=args.device, log=None)
            for _ in range(args.warmup):
                trainer.train_step()
            synchronize(trainer.device)
            start = time.perf_counter()
            for _ in range(args.steps):
                logged = trainer.train_step()
            synchronize(trainer.device)
            seconds = (time.perf_counter() - start) / args.steps
            row = {"precision": precision, "batch": batch, "step_s": seconds, "steps_per_s": 1 / seconds,
                   "samples_per_s": batch / seconds, "loss": logged["loss"], "gpu_peak_gib": logged.get("gpu_peak_gib")}
            if k == 0 and args.profiled > 0:
                row["profile"] = profile_steps(trainer, args.profiled)
            if k == 0 and args.syncs > 0:
                row["syncs_per_step"] = sync_sites(trainer.train_step, args.syncs, trainer.device)
        rows.append(row)
        print(f"{precision}:{batch}: {row['step_s'] * 1e3:.1f} ms/step, {row['samples_per_s']:.1f} samples/s, "
              f"peak {row['gpu_peak_gib'] or 0:.2f} GiB", flush=True)
        if "profile" in row:
            p = row["profile"]
            print(f"  GPU busy {p['gpu_busy_share']:.0%} of the wall time; per step, GPU ms: "
                  + ", ".join(f"{name} {ms:.1f}" for name, ms in p["top_gpu_ms"].items()), flush=True)
            print("  host ms: " + ", ".join(f"{name} {ms:.1f}" for name, ms in p["top_host_ms"].items()), flush=True)
        if "syncs_per_step" in row:
            print("  host waits per step: " + ", ".join(f"{site} {n:g}" for site, n in row["syncs_per_step"].items()),
                  flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"config": args.config, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
