#!/usr/bin/env bash
# The speed issue's memory checks on the device, in one call (docs/gpu.md, "Speed and memory"):
# decoders' working memory, host syncs of the flows, the GPU tests of the low-VRAM mode, the
# backends (sparse convolution with repeated rows) and the rasterisers, then the whole job under
# memory caps, then the GLB export's phases on the bench asset. Carry the rasteriser and mesh wheels:
#   carry: [".whl/gsplat-1.5.3-py3-none-any.whl", ".whl/diffrp_nvdiffrast-0.3.3.1-py3-none-any.whl",
#           ".whl/trimesh-5.2.0-py3-none-any.whl",
#           ".whl/fast_simplification-0.2.0-cp312-cp312-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
#           ".whl/xatlas-0.0.11-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"]
set -uo pipefail
out=${OUT:-out}
mkdir -p "$out" /tmp/site
export PYTHONUNBUFFERED=1
pip install --no-index --no-deps --target /tmp/site .whl/*.whl > /dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD
timeout 120 python3 scripts/gpu_decoder_memory.py 2>&1 | tee "$out/decoder_memory.txt"
timeout 90 python3 scripts/gpu_sync_check.py 2>&1 | tee "$out/sync_check.txt"
# gsplat and nvdiffrast build on first use (about 80 s and 25 s); the GLB export then rasterises with them
timeout 150 python3 -c "import torch; from trellis_impl.render.mesh_raster import _nvdiffrast_context as n; \
n(torch.device('cuda')); from trellis_impl.render.gaussian_raster import _gsplat_available as g; \
print('gsplat', g(torch.device('cuda'), torch.float32))" > "$out/builds.txt" 2>&1
timeout 150 python3 -m pytest -q -rs -p no:cacheprovider -m gpu tests/pipelines/test_low_vram.py \
  tests/backends/test_gpu_backends.py tests/render > "$out/gpu_tests.txt" 2>&1; tail -30 "$out/gpu_tests.txt"
timeout 200 python3 scripts/memory_cap.py 2>&1 | tee "$out/memory_cap.txt"
timeout 240 python3 scripts/gpu_glb_check.py --out "$out/glb" 2>&1 | tail -40 | tee "$out/glb_check.txt"
