"""Merge a device call's packed model folder into a training candidate (docs/demo_model.md).

    python scripts/demo_candidate_update.py PARTS_DIR --session 2026-12-08-s7 --candidate /tmp/candidate \
        [--drop ss_flow] [--logs docs/demo_logs]

PARTS_DIR holds ``demo.tar.partNN`` (``scripts/demo_train.sh pack:NAME``). The packed folder's
weights (``ckpts/``, ``dinov2/``) replace the candidate's files of the same name, its
``pipeline.json`` model entries are added to or replace the candidate's, and its run logs go to
``LOGS/SESSION/`` (each session's runs count their steps from 0, so logs are kept per session, never
merged; they are committed under ``docs/demo_logs``, the weights only once shipped). ``--drop RUN``
leaves out what a call trained too briefly to keep (the checkpoints its demo config exports, their
pipeline entries and its log). Nothing is changed unless the whole merge is ready: it is assembled in
a temporary copy, which then replaces the candidate.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "training" / "demo"


def exported_names(run: str) -> list:
    """The checkpoint names a demo run exports (its config's ``export`` section)."""
    for path in (CONFIGS / f"{run}.json", CONFIGS / "variants" / f"{run}.json"):
        if path.is_file():
            return list(json.loads(path.read_text()).get("export", {}).values())
    raise ValueError(f"--drop names a run without a demo config: {run!r} (configs/training/demo)")


def unpack(parts_dir: Path, into: Path) -> Path:
    """Join and extract ``demo.tar.partNN``; the packed folder (``demo/``) inside ``into``."""
    parts = sorted(parts_dir.glob("demo.tar.part*"))
    if not parts:
        raise FileNotFoundError(f"{parts_dir}: no demo.tar.partNN files")
    joined = into / "demo.tar"
    with joined.open("wb") as out:
        for part in parts:
            out.write(part.read_bytes())
    with tarfile.open(joined) as tar:
        tar.extractall(into, filter="data")
    folder = into / "demo"
    if not (folder / "pipeline.json").is_file():
        raise FileNotFoundError(f"{parts_dir}: the packed folder has no pipeline.json")
    return folder


def merge(packed: Path, candidate: Path, session: str, logs_root: Path, drop=()) -> None:
    """Merge the packed model folder into ``candidate`` (created when missing) and its run logs into
    ``logs_root/session``; see the module docstring."""
    if not session or "/" in session or session.startswith("."):
        raise ValueError(f"--session must be a plain folder name, got {session!r}")
    if (logs_root / session).exists():
        raise FileExistsError(f"{logs_root / session} exists: give this session another name")
    fresh = json.loads((packed / "pipeline.json").read_text())
    models = fresh["args"]["models"]
    for run in drop:
        for name in exported_names(run):
            for file in (packed / "ckpts").glob(f"{name}.*"):
                file.unlink()
            for key in [k for k, v in models.items() if v == f"ckpts/{name}"]:
                del models[key]
        log = packed / "logs" / f"{run}.jsonl"
        if log.exists():
            log.unlink()
    candidate.parent.mkdir(parents=True, exist_ok=True)
    logs_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".merge_", dir=candidate.parent))
    logs_work = Path(tempfile.mkdtemp(prefix=".merge_", dir=logs_root))
    try:
        staged = work / candidate.name
        if candidate.exists():
            shutil.copytree(candidate, staged)
            merged = json.loads((staged / "pipeline.json").read_text())
            merged["args"]["models"].update(models)
            for key, value in fresh["args"].items():
                if key != "models":
                    merged["args"][key] = value
        else:
            staged.mkdir()
            merged = fresh
        for sub in ("ckpts", "dinov2"):
            if (packed / sub).is_dir():
                (staged / sub).mkdir(exist_ok=True)
                for file in (packed / sub).iterdir():
                    shutil.copy2(file, staged / sub / file.name)
        logs = sorted((packed / "logs").glob("*.jsonl")) if (packed / "logs").is_dir() else []
        for log in logs:
            shutil.copy2(log, logs_work / log.name)
        (staged / "pipeline.json").write_text(json.dumps(merged, indent=4) + "\n")
        if candidate.exists():
            shutil.rmtree(candidate)
        staged.rename(candidate)
        if logs:
            logs_work.rename(logs_root / session)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(logs_work, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", type=Path, help="folder with demo.tar.partNN")
    parser.add_argument("--session", required=True, help="name of this session's log folder, e.g. 2026-12-08-s7")
    parser.add_argument("--drop", nargs="*", default=(), help="runs to leave out (demo config names)")
    parser.add_argument("--candidate", type=Path, required=True,
                        help="the model folder to merge into (a copy of trellis_impl/demo_model, or a new one)")
    parser.add_argument("--logs", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "demo_logs",
                        help="where each session's run logs go (LOGS/SESSION/RUN.jsonl)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        merge(unpack(args.parts, Path(tmp)), args.candidate, args.session, args.logs, args.drop)
    print(f"{args.candidate}: {', '.join(sorted(json.loads((args.candidate / 'pipeline.json').read_text())['args']['models']))}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, OSError, tarfile.TarError) as error:  # refused or unreadable: nothing was changed
        sys.exit(f"demo_candidate_update: {error}")
