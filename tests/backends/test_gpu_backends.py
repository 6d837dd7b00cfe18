"""Every attention and sparse-convolution backend available on the CUDA device against the float32
references (naive attention; the torch convolution on CPU), on fresh random inputs.
Skipped without CUDA; scripts/gpu_check.py runs the conformance cases (docs/gpu.md)."""
from __future__ import annotations

import pytest
import torch

from trellis_impl.backends.attention import ATTENTION, SeqLens, attention, varlen_attention
from trellis_impl.backends.sparse_conv import SPARSE_CONV, build_neighbour_map, submanifold_conv3d

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TOL = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 1e-2}
CUDA = torch.device("cuda")


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    got, ref = got.double().cpu(), ref.double().cpu()
    assert torch.isfinite(got).all()
    return float((got - ref).abs().max() / ref.abs().max())


def require(family, name: str, dtype: torch.dtype) -> None:
    if not family.backends[name].available(CUDA, dtype):
        pytest.skip(f"{family.name} backend {name} cannot run on cuda/{dtype} here")


# (query lengths, key lengths): shifted windows (many short sequences, some of one token),
# full self-attention over two items, and cross-attention to a 77-token context.
PACKINGS = {
    "windows": ([1, 179, 64, 3, 120] * 12, None),
    "two_items": ([1500, 333], None),
    "cross": ([700, 41], [77, 77]),
}


@pytest.mark.parametrize("head_dim", [16, 64])
@pytest.mark.parametrize("packing", list(PACKINGS))
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("name", [n for n in ATTENTION.names() if n != "naive"])
def test_varlen_attention_matches_naive(name, dtype_name, packing, head_dim):
    dtype = DTYPES[dtype_name]
    require(ATTENTION, name, dtype)
    q_lens = SeqLens(PACKINGS[packing][0])
    kv_lens = SeqLens(PACKINGS[packing][1] or PACKINGS[packing][0])
    heads = 4
    q = torch.randn(q_lens.total, heads, head_dim, device=CUDA, dtype=dtype)
    k, v = (torch.randn(kv_lens.total, heads, head_dim, device=CUDA, dtype=dtype) for _ in range(2))
    ref = varlen_attention(q, k, v, q_lens, kv_lens, backend="naive")
    out = varlen_attention(q, k, v, q_lens, kv_lens, backend=name)
    assert out.dtype == dtype and out.shape == ref.shape
    assert rel_err(out, ref) <= TOL[dtype_name]


@pytest.mark.parametrize("dtype_name", list(DTYPES))
def test_dense_attention_matches_naive(dtype_name):
    dtype = DTYPES[dtype_name]
    q = torch.randn(2, 512, 4, 64, device=CUDA, dtype=dtype)
    k, v = (torch.randn(2, 300, 4, 64, device=CUDA, dtype=dtype) for _ in range(2))
    assert rel_err(attention(q, k, v), attention(q, k, v, backend="naive")) <= TOL[dtype_name]


def random_coords(sizes, res: int, generator: torch.Generator) -> torch.Tensor:
    """[N, 4] int32 distinct voxels per item, sorted like argwhere output."""
    coords = []
    for b, n in enumerate(sizes):
        flat = torch.randperm(res ** 3, generator=generator)[:n].sort().values
        xyz = torch.stack([flat // res ** 2, flat // res % res, flat % res], dim=1)
        coords.append(torch.cat([torch.full((n, 1), b), xyz], dim=1))
    return torch.cat(coords).int()


@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("name", SPARSE_CONV.names())
def test_sparse_conv_matches_the_cpu_reference(name, dtype_name, dilation):
    dtype = DTYPES[dtype_name]
    require(SPARSE_CONV, name, dtype)
    g = torch.Generator().manual_seed(1)
    coords = random_coords([5000, 700], res=24, generator=g)
    feats = torch.randn(coords.shape[0], 32, generator=g)
    weight = torch.randn(48, 3, 3, 3, 32, generator=g) / (27 * 32) ** 0.5
    bias = torch.randn(48, generator=g)
    # Round the inputs to the tested dtype so the reference sees the same numbers.
    feats, weight, bias = (t.to(dtype).float() for t in (feats, weight, bias))
    ref = submanifold_conv3d(feats, coords, build_neighbour_map(coords, 3, dilation), weight, bias, backend="torch")
    coords_cuda = coords.to(CUDA)
    neighbours = build_neighbour_map(coords_cuda, 3, dilation)
    for _ in range(2):  # the second call reuses the map built by the first
        out = submanifold_conv3d(feats.to(CUDA, dtype), coords_cuda, neighbours, weight.to(CUDA, dtype),
                                 bias.to(CUDA, dtype), backend=name)
        assert out.dtype == dtype and out.shape == ref.shape
        assert rel_err(out, ref) <= TOL[dtype_name]
    # repeated rows (a subdivided tensor's input, read from the parents' rows)
    parents = feats[::2][: coords.shape[0] // 2]
    ref = submanifold_conv3d(parents.repeat_interleave(2, 0), coords[: 2 * parents.shape[0]],
                             build_neighbour_map(coords[: 2 * parents.shape[0]], 3, dilation), weight, bias,
                             backend="torch")
    coords_cuda = coords[: 2 * parents.shape[0]].to(CUDA)
    out = submanifold_conv3d(parents.to(CUDA, dtype), coords_cuda, build_neighbour_map(coords_cuda, 3, dilation),
                             weight.to(CUDA, dtype), bias.to(CUDA, dtype), backend=name, repeat=2)
    assert rel_err(out, ref) <= TOL[dtype_name]


def test_small_copies_and_bucketed_windows_never_make_the_host_wait():
    """``to_device`` and the sdpa path's windows (layout built and used) run without one host-device
    synchronisation: CUDA's sync debug mode raises at any; a plain ``torch.tensor(..., device=cuda)``
    is the control that it does."""
    import numpy as np
    from trellis_impl.backends.transfer import to_device
    g = torch.Generator().manual_seed(3)
    lens = SeqLens(torch.randint(1, 200, (40,), generator=g).tolist())
    q, k, v = (torch.randn(lens.total, 4, 32, generator=g).to(CUDA) for _ in range(3))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with pytest.raises(RuntimeError):
            torch.tensor([1.0, 2.0], device=CUDA)
        values = [to_device(0.25, CUDA, torch.float32), to_device([1, 2, 3], CUDA, torch.long),
                  to_device(np.arange(5), CUDA)]
        out = varlen_attention(q, k, v, lens, backend="sdpa")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert [t.tolist() for t in values] == [0.25, [1, 2, 3], [0, 1, 2, 3, 4]]
    assert rel_err(out, varlen_attention(q, k, v, lens, backend="naive")) < TOL["fp32"]
