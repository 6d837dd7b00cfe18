"""gsplat against the PyTorch Gaussian rasteriser on one scene, on a CUDA device (docs/gpu.md).

A TRELLIS-like scene (100k Gaussians in the unit cube, scales 2-15 mm, random colours and
opacities) is rendered at 512 x 512 from 4 orbit cameras by both backends; prints PSNR of colour
and alpha and median times (CUDA events).

    python scripts/gpu_render_check.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device_bench import median_ms  # noqa: E402
from trellis_impl.render import orbit_cameras, render_gaussians  # noqa: E402


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else -10.0 * torch.log10(torch.tensor(mse)).item()


def main() -> int:
    g = torch.Generator(device="cuda").manual_seed(0)
    n = 100_000
    scene = {
        "xyz": (torch.rand(n, 3, generator=g, device="cuda") - 0.5) * 0.8,
        "scaling": 0.002 + 0.013 * torch.rand(n, 3, generator=g, device="cuda"),
        "rotation": torch.nn.functional.normalize(torch.randn(n, 4, generator=g, device="cuda"), dim=-1),
        "opacity": torch.rand(n, 1, generator=g, device="cuda"),
        "colors": torch.rand(n, 3, generator=g, device="cuda"),
    }
    worst = float("inf")
    for i, camera in enumerate(orbit_cameras(4, pitch=0.3, radius=2.0, fov_degrees=40.0, width=512, height=512)):
        ref = render_gaussians(scene, camera, backend="torch")
        fast = render_gaussians(scene, camera, backend="gsplat")
        p_color, p_alpha = psnr(fast["color"], ref["color"]), psnr(fast["alpha"], ref["alpha"])
        worst = min(worst, p_color, p_alpha)
        t_torch = median_ms(lambda: render_gaussians(scene, camera, backend="torch"), warmup=1, reps=3)
        t_gsplat = median_ms(lambda: render_gaussians(scene, camera, backend="gsplat"), warmup=1, reps=10)
        print(f"view {i}: PSNR colour {p_color:.1f} dB, alpha {p_alpha:.1f} dB; torch {t_torch:.1f} ms, "
              f"gsplat {t_gsplat:.2f} ms")
    print(f"worst PSNR {worst:.1f} dB ({'pass' if worst >= 40 else 'FAIL'} at 40 dB)")
    return 0 if worst >= 40 else 1


if __name__ == "__main__":
    sys.exit(main())
