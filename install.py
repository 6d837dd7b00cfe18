"""Run by ComfyUI-Manager after cloning (also by hand: ``python install.py [--no-accelerators]``).

1. Installs requirements.txt line by line with the running interpreter, never a ``torch*`` line
   (ComfyUI owns torch).
2. Installs the optional accelerators for which a prebuilt wheel matches the user's torch/CUDA
   (``--only-binary=:all:``, so nothing is compiled at install time and torch is never touched,
   ``--no-deps`` for packages that would pull a torch):
   - spconv-cuXYZ: the newest spconv CUDA build not newer than torch's CUDA (spconv-cu126 runs
     unchanged with torch 2.11+cu130: checked on an H100, docs/gpu.md);
   - diffrp-nvdiffrast and gsplat: pure wheels whose CUDA kernels build on first use (needs nvcc;
     if that fails at run time the pack logs it once and uses its PyTorch paths);
   - flash-attn-4 on Hopper or newer (compute capability >= 9.0) with CUDA >= 12.8.
   flash-attn 2 has no wheels on PyPI (source only): not installed; torch's built-in
   FlashAttention-2 path serves instead.
Idempotent; every failure is a warning, never an error, so an offline machine keeps working with
what is installed. ``TRELLIS_NO_ACCELERATORS=1`` or ``--no-accelerators`` skips step 2.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

#: CUDA builds of spconv 2.3 on PyPI, newest first.
SPCONV_CUDA_BUILDS = ((12, 6), (12, 4), (12, 1), (12, 0), (11, 8), (11, 7), (11, 4), (11, 3))


def requirements() -> List[str]:
    lines = (Path(__file__).parent / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def is_torch(requirement: str) -> bool:
    name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()
    return name.startswith("torch")


def spconv_package(cuda: Optional[str]) -> Optional[str]:
    """``spconv-cuXYZ`` for torch's CUDA version string (e.g. '12.8' -> spconv-cu126), or None."""
    if not cuda:
        return None
    major, minor = (int(x) for x in cuda.split(".")[:2])
    for build in SPCONV_CUDA_BUILDS:
        if build <= (major, minor):
            return f"spconv-cu{build[0]}{build[1]}"
    return None


def accelerators(cuda: Optional[str], capability: Optional[Tuple[int, int]]) -> List[List[str]]:
    """pip argument lists for the accelerators matching this torch build (empty without CUDA)."""
    if not cuda or capability is None:
        return []
    chosen = []
    spconv = spconv_package(cuda)
    if spconv:
        chosen.append([spconv])
    chosen.append(["diffrp-nvdiffrast", "--no-deps"])
    chosen.append(["gsplat", "--no-deps"])
    major, minor = (int(x) for x in cuda.split(".")[:2])
    if capability >= (9, 0) and (major, minor) >= (12, 8):
        chosen.append(["flash-attn-4", "--pre", "--no-deps"])
    return chosen


def pip_install(args: Sequence[str]) -> bool:
    return subprocess.run([sys.executable, "-m", "pip", "install", *args]).returncode == 0


def torch_cuda() -> Tuple[Optional[str], Optional[Tuple[int, int]]]:
    """(torch's CUDA version string, compute capability of GPU 0), or (None, None)."""
    try:
        import torch
    except ImportError:
        return None, None
    if not torch.version.cuda or not torch.cuda.is_available():
        return None, None
    return torch.version.cuda, tuple(torch.cuda.get_device_capability(0))


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    failed = []
    for requirement in requirements():
        if is_torch(requirement):
            continue
        if not pip_install([requirement]):
            failed.append(requirement)
    if "--no-accelerators" not in argv and os.environ.get("TRELLIS_NO_ACCELERATORS") != "1":
        cuda, capability = torch_cuda()
        if cuda is None:
            print("[trellis] no CUDA torch: optional accelerators skipped (the PyTorch paths are used)")
        for args in accelerators(cuda, capability):
            if not pip_install(["--only-binary=:all:", *args]):
                failed.append(args[0] + " (optional)")
    if failed:
        print(f"[trellis] warning: could not install {', '.join(failed)}; the pack works without the optional "
              "ones; install the others by hand", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
