"""Run by ComfyUI-Manager after cloning: installs requirements.txt line by line with the
running interpreter. Never installs or changes torch (ComfyUI owns it). Idempotent; a failure
is reported, not raised, so an offline machine keeps working with what is installed."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def requirements() -> list:
    lines = (Path(__file__).parent / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def main() -> int:
    failed = []
    for requirement in requirements():
        if requirement.split("=")[0].split("<")[0].split(">")[0].strip().lower().startswith("torch"):
            continue
        done = subprocess.run([sys.executable, "-m", "pip", "install", requirement])
        if done.returncode != 0:
            failed.append(requirement)
    if failed:
        print(f"[trellis] warning: could not install {', '.join(failed)}; install them by hand", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
