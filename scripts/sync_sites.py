"""Where code makes the host wait for the GPU: CUDA's synchronisation debug mode warns at every
call that synchronises the host with the device; each warning is counted at the innermost frame of
the ``trellis_impl`` package. What such a site makes the host wait for is everything queued before
it, so a forward with sites cannot run ahead of the GPU, nor be captured in a CUDA graph.
Used by ``demo_step_profile.py --syncs`` (training steps) and ``benchmark.py --syncs`` (a job)."""
from __future__ import annotations

import traceback
import warnings
from collections import Counter
from pathlib import Path
from typing import Callable

import torch

PACKAGE = Path(__file__).resolve().parents[1] / "trellis_impl"


def sync_sites(step: Callable[[], object], steps: int, device: torch.device, root: Path = PACKAGE, top: int = 15) -> dict:
    """{'file:line': synchronisations per step} over ``steps`` calls of ``step()``, at the innermost
    frame under ``root``, most frequent first. Every warning the steps raise is counted; on CUDA the
    synchronisation debug mode raises one per host-device synchronisation."""
    counts: Counter = Counter()

    def record(message, category, filename, lineno, file=None, line=None):
        frames = [f for f in traceback.extract_stack()[:-1] if Path(f.filename).is_relative_to(root)]
        where = (Path(frames[-1].filename).relative_to(root.parent), frames[-1].lineno) if frames else (filename, lineno)
        counts[f"{where[0]}:{where[1]}"] += 1

    cuda = device.type == "cuda"
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                step()
            if cuda:
                torch.cuda.synchronize(device)
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
    return {site: count / steps for site, count in counts.most_common(top)}
