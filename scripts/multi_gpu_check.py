"""One process against several (torchrun, DDP) on the same global batch (issue 15, docs/training.md).

For each training CONFIG, three runs of ``--steps`` steps on DATA, one after the other:
``one`` (one process, batch B = ``--global-batch``), ``seed`` (the same with another seed: the
run-to-run noise) and ``many`` (``--gpus`` processes under torchrun, B / gpus each). Printed and
written to OUT/summary.json: the logged losses of the three, the mean relative gap of ``many`` to
``one`` beside that of ``seed`` to ``one`` (the curves match when the first is within the second),
and the training throughput of ``many`` over ``one`` (steps per second from the runs' logs). Then the
``many`` run is exported and, with ``--base-folder`` (a complete model folder: the demo model by
default), put in a copy of it and sampled there by the image command on each ``--sample-devices``
entry (the checkpoint written by several GPUs loads and samples on one GPU and on the CPU).

    python scripts/multi_gpu_check.py configs/training/demo/slat_vae_gs.json configs/training/demo/slat_flow.json \
        --data /tmp/demo/data --image-encoder /tmp/demo/vit/dinov2 --out $OUT/multi_gpu --steps 300 \
        --global-batch 16 [--gpus 2]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trellis_impl.pipelines.model_folder import DEMO_MODEL_PATH  # noqa: E402
from trellis_impl.training.config import load_config  # noqa: E402


def run_training(config: dict, name: str, data: Path, out: Path, processes: int, device: str) -> Path:
    path = out / f"{name}.json"
    path.write_text(json.dumps(config, indent=2))
    run = out / name
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
                if processes > 1 else [sys.executable])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if device == "cpu":
        env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(launcher + ["-m", "trellis_impl", "train", str(path), "--data", str(data), "--out", str(run),
                                      "--device", device], cwd=REPO, env=env, capture_output=True, text=True)
    (out / f"{name}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"{name}: training failed ({done.returncode}); see {out / f'{name}.log'}")
    return run


def logged(run: Path) -> list:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def relative_gap(a: list, b: list) -> float:
    """Mean |a - b| / |a| of the losses logged at the same steps."""
    losses_b = {entry["step"]: entry["loss"] for entry in b}
    pairs = [(entry["loss"], losses_b[entry["step"]]) for entry in a if entry["step"] in losses_b]
    if not pairs:
        raise ValueError("the runs logged no common step")
    return sum(abs(x - y) / max(abs(x), 1e-12) for x, y in pairs) / len(pairs)


def steps_per_second(log: list) -> float:
    return log[-1]["step"] / log[-1]["seconds"]


def sample_with(run: Path, base: Path, out: Path, devices, picture: Path) -> dict:
    """The run exported into a copy of ``base``, then one image-to-3D job per device."""
    exported = out / f"{run.name}_folder"
    subprocess.run([sys.executable, "-m", "trellis_impl", "export-folder", str(run), "--out", str(exported),
                    "--weights", "raw"], cwd=REPO, check=True, capture_output=True)
    folder = out / f"{run.name}_in_base"
    shutil.copytree(base, folder)
    models = json.loads((folder / "pipeline.json").read_text())
    for entry in (exported / "ckpts").iterdir():
        shutil.copy2(entry, folder / "ckpts" / entry.name)
    models["args"]["models"].update(json.loads((exported / "pipeline.json").read_text())["args"]["models"])
    (folder / "pipeline.json").write_text(json.dumps(models, indent=4))
    results = {}
    for device in devices:
        target = out / f"{run.name}_sample_{device}"
        done = subprocess.run([sys.executable, "-m", "trellis_impl", "image", str(picture), "--model", str(folder),
                               "--out", str(target), "--device", device, "--formats", "gaussian"],
                              cwd=REPO, capture_output=True, text=True)
        written = sorted(p.name for p in target.glob("*")) if target.is_dir() else []
        results[device] = {"returncode": done.returncode, "files": written, "tail": (done.stdout + done.stderr)[-400:]}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--global-batch", type=int, required=True)
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--base-folder", type=Path, default=DEMO_MODEL_PATH)
    parser.add_argument("--sample-devices", nargs="*", default=["cuda", "cpu"])
    parser.add_argument("--picture", type=Path, default=REPO / "assets" / "example.png")
    parser.add_argument("--image-encoder", type=Path, default=None,
                        help="fills the configs' frozen.image_encoder (the flows' condition ViT, e.g. /tmp/demo/vit/dinov2)")
    args = parser.parse_args()
    if args.global_batch % args.gpus:
        sys.exit(f"multi_gpu_check: --global-batch {args.global_batch} is not a multiple of --gpus {args.gpus}")
    if args.out.exists():
        sys.exit(f"multi_gpu_check: --out {args.out} exists; name a new folder")
    for path in (*args.configs, args.data / "dataset.json"):
        if not path.is_file():
            sys.exit(f"multi_gpu_check: no such file {path} (a training config, or --data's dataset.json)")
    args.out.mkdir(parents=True)
    summary = {}
    for path in args.configs:
        base = load_config(path).to_json()
        base.pop("init", None)  # all three start from the same fresh weights
        if args.image_encoder is not None and "image_encoder" in base.get("frozen", {}):
            base["frozen"]["image_encoder"] = str(args.image_encoder)
        trainer = {**base["trainer"], "max_steps": args.steps, "i_log": args.log_every, "i_save": args.steps}
        runs = {}
        for name, processes, seed in (("one", 1, 0), ("seed", 1, 1), ("many", args.gpus, 0)):
            config = {**base, "trainer": {**trainer, "seed": seed, "batch_size_per_gpu": args.global_batch // processes}}
            runs[name] = run_training(config, f"{path.stem}_{name}", args.data, args.out, processes, args.device)
        logs = {name: logged(run) for name, run in runs.items()}
        entry = {"losses": {name: [(e["step"], e["loss"]) for e in log] for name, log in logs.items()},
                 "gap_many_to_one": relative_gap(logs["one"], logs["many"]),
                 "gap_seed_to_one": relative_gap(logs["one"], logs["seed"]),
                 "steps_per_s": {name: steps_per_second(log) for name, log in logs.items()}}
        entry["throughput_ratio"] = entry["steps_per_s"]["many"] / entry["steps_per_s"]["one"]
        if (args.base_folder / "pipeline.json").is_file():
            entry["sampling"] = sample_with(runs["many"], args.base_folder, args.out, args.sample_devices, args.picture)
        else:
            entry["sampling"] = f"skipped: no model folder at {args.base_folder}"
        summary[path.stem] = entry
        print(f"{path.stem}: loss gap {entry['gap_many_to_one']:.4f} ({args.gpus} processes against one), "
              f"run-to-run {entry['gap_seed_to_one']:.4f}; throughput {entry['throughput_ratio']:.2f}x", flush=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
