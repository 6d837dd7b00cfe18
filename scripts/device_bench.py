"""Helpers shared by the device scripts: CUDA-event timing and the sphere-shell test structure."""
from __future__ import annotations

import statistics
from typing import Callable

import torch


def median_ms(fn: Callable[[], object], warmup: int = 3, reps: int = 25) -> float:
    """Median over ``reps`` calls of CUDA-event time (host work between the events included)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def sphere_shell(resolution: int = 64, inner: float = 27.5, outer: float = 29.5, device="cuda") -> torch.Tensor:
    """[N, 4] int32 coords of a one-item sphere shell, in argwhere order: voxel centres at distance
    [inner, outer) from the grid centre (about 20k voxels at 64^3 with the defaults)."""
    axis = torch.arange(resolution, device=device, dtype=torch.float32) - (resolution - 1) / 2
    dist = (axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2).sqrt()
    xyz = torch.argwhere((dist >= inner) & (dist < outer))
    return torch.cat([torch.zeros_like(xyz[:, :1]), xyz], dim=1).int()
