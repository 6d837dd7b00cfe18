"""Working memory of the released Gaussian and mesh decoders on a CUDA device, against the
estimates the nodes give the host (``TrellisPipeline.working_memory``): random weights built on
the GPU (float16 torso), random latents on sphere shells of 5k-40k voxels (docs/gpu.md).

    python scripts/gpu_decoder_memory.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from benchmark import SCALING_VOXELS, shell_of, working_bytes  # noqa: E402
from device_bench import random_released_model  # noqa: E402
from trellis_impl.pipelines.memory import working_memory  # noqa: E402
from trellis_impl.sparse import SparseTensor  # noqa: E402

DECODERS = {"gaussian": "ckpts/slat_dec_gs_swin8_B_64l8gs32_fp16", "mesh": "ckpts/slat_dec_mesh_swin8_B_64l8m256c_fp16"}


def main() -> int:
    generator = torch.Generator(device="cuda").manual_seed(0)
    print(torch.cuda.get_device_name(), torch.__version__)
    print(f"{'decoder':<10s} {'voxels':>7s} {'measured GiB':>13s} {'estimate GiB':>13s} {'output':>12s}")
    for fmt, rel in DECODERS.items():
        model = random_released_model(rel, generator)
        for voxels in SCALING_VOXELS:
            coords = shell_of(voxels).cuda()
            latent = SparseTensor(torch.randn(coords.shape[0], 8, device="cuda", generator=generator), coords)
            outputs = []
            with torch.no_grad():
                used = working_bytes(lambda: outputs.append(model(latent)))
            item = outputs[0][0]
            size = item.faces.shape[0] if fmt == "mesh" else item.get_xyz.shape[0]
            print(f"{fmt:<10s} {coords.shape[0]:>7d} {used / 2 ** 30:>13.2f} "
                  f"{working_memory(fmt, coords.shape[0]) / 2 ** 30:>13.2f} {size:>12d}")
            outputs.clear()
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
