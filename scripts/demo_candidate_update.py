"""Merge a device call's packed model folder into the committed training state (docs/demo_model.md).

    python scripts/demo_candidate_update.py PARTS_DIR --session 2026-12-08-s7 [--drop ss_flow] \
        [--candidate models/demo_candidate]

PARTS_DIR holds ``demo.tar.partNN`` (``scripts/demo_train.sh pack:NAME``). The packed folder's
weights (``ckpts/``, ``dinov2/``) replace the candidate's files of the same name, its
``pipeline.json`` model entries are added to or replace the candidate's, and its run logs go to
``logs/SESSION/`` (each session's runs count their steps from 0, so logs are kept per session, never
merged). ``--drop RUN`` leaves out what a call trained too briefly to keep (the checkpoints its demo config
exports, their pipeline entries and its log). Nothing is changed unless the whole merge is ready: it is assembled in a
temporary copy, which then replaces the candidate.
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


def merge(packed: Path, candidate: Path, session: str, drop=()) -> None:
    """Merge the packed model folder into ``candidate`` (created when missing); see the module docstring."""
    if not session or "/" in session or session.startswith("."):
        raise ValueError(f"--session must be a plain folder name, got {session!r}")
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
    work = Path(tempfile.mkdtemp(prefix=".merge_", dir=candidate.parent))
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
        if logs:
            target = staged / "logs" / session
            if target.exists():
                raise FileExistsError(f"{candidate}/logs/{session} exists: give this session another name")
            target.mkdir(parents=True)
            for log in logs:
                shutil.copy2(log, target / log.name)
        (staged / "pipeline.json").write_text(json.dumps(merged, indent=4) + "\n")
        if candidate.exists():
            shutil.rmtree(candidate)
        staged.rename(candidate)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", type=Path, help="folder with demo.tar.partNN")
    parser.add_argument("--session", required=True, help="name of this session's log folder, e.g. 2026-12-08-s7")
    parser.add_argument("--drop", nargs="*", default=(), help="runs to leave out (demo config names)")
    parser.add_argument("--candidate", type=Path, default=Path("models/demo_candidate"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        merge(unpack(args.parts, Path(tmp)), args.candidate, args.session, args.drop)
    print(f"{args.candidate}: {', '.join(sorted(json.loads((args.candidate / 'pipeline.json').read_text())['args']['models']))}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, OSError, tarfile.TarError) as error:  # refused or unreadable: nothing was changed
        sys.exit(f"demo_candidate_update: {error}")
