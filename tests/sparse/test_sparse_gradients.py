"""Backward passes of the sparse ops (PyTorch paths): float64 gradcheck at tiny sizes, and gradients
against dense / per-item references written out here; whole blocks and small models against
central finite differences along random directions."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable, List, Sequence

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd import gradcheck

from trellis_impl.backends.sparse_conv import build_neighbour_map, submanifold_conv3d
from trellis_impl.models.slat_flow import SLatFlowModel, SparseResBlock3d
from trellis_impl.models.slat_vae import SLatEncoder, SparseSubdivideBlock3d
from trellis_impl.sparse import (SparseConv3d, SparseGroupNorm32, SparseTensor, downsample, sparse_cross_attention,
                                 sparse_self_attention, sparse_windowed_self_attention, subdivide, upsample)

F64 = torch.float64


def random_sparse(sizes: Sequence[int], res: int, channels: int, seed: int = 0, dtype=F64) -> SparseTensor:
    """Items of ``sizes[i]`` distinct voxels each, rows sorted by (batch, x, y, z)."""
    g = torch.Generator().manual_seed(seed)
    coords = []
    for b, n in enumerate(sizes):
        flat = torch.randperm(res ** 3, generator=g)[:n].sort().values
        coords.append(torch.stack([torch.full((n,), b), flat // res ** 2, flat // res % res, flat % res], dim=1))
    coords = torch.cat(coords).int()
    return SparseTensor(torch.randn(coords.shape[0], channels, generator=g, dtype=dtype), coords,
                        batch_size=len(sizes))


def grads_of(loss: torch.Tensor, tensors: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    return list(torch.autograd.grad(loss, tensors))


def leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


def assert_matches_finite_differences(loss_fn: Callable[[], torch.Tensor], tensors: Sequence[torch.Tensor],
                                      eps: float = 1e-2, rtol: float = 1e-2, atol: float = 1e-4, seed: int = 0) -> None:
    """For each tensor t: the autograd directional derivative of ``loss_fn`` along the unit
    gradient direction and along a random unit direction equals the central difference with step
    ``eps`` (t is restored afterwards). Default step and tolerances suit float32 models: a wrong
    or missing gradient shows along its own direction."""
    grads = grads_of(loss_fn(), tensors)
    g = torch.Generator().manual_seed(seed)
    for i, (t, grad) in enumerate(zip(tensors, grads)):
        random_dir = torch.randn(t.shape, generator=g, dtype=t.dtype)
        for d in (grad, random_dir):
            if float(d.norm()) == 0.0:
                continue
            d = d / d.norm()
            analytic = float((grad * d).sum())
            with torch.no_grad():
                t.add_(eps * d)
                plus = float(loss_fn())
                t.sub_(2 * eps * d)
                minus = float(loss_fn())
                t.add_(eps * d)
            numeric = (plus - minus) / (2 * eps)
            # float32 rounding of the loss is ~1e-3 of |grad| along a random direction at a 1e-2 step
            tolerance = rtol * abs(analytic) + 0.1 * eps * float(grad.norm()) + atol
            assert abs(analytic - numeric) <= tolerance, (i, tuple(t.shape), analytic, numeric)


def scatter_dense(feats: torch.Tensor, coords: torch.Tensor, batch: int, res: int) -> torch.Tensor:
    """[N, C] features at [N, 4] coords -> [B, C, res, res, res], zeros elsewhere (differentiable)."""
    c = coords.long()
    out = feats.new_zeros(batch, res, res, res, feats.shape[1]).index_put((c[:, 0], c[:, 1], c[:, 2], c[:, 3]), feats)
    return out.permute(0, 4, 1, 2, 3)


def module_gradcheck(fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor], module: nn.Module) -> bool:
    """gradcheck of ``fn(*inputs)`` w.r.t. the inputs and every parameter of ``module`` (which
    ``fn`` uses directly: gradcheck perturbs the tensors in place)."""
    params = tuple(module.parameters())
    return gradcheck(lambda *args: fn(*args[:len(inputs)]), tuple(inputs) + params)


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q [L, H, C], k/v [M, H, C] -> [L, H, C]: softmax(q k^T / sqrt(C)) v per head, float64."""
    logits = torch.einsum("lhc,mhc->hlm", q, k) / math.sqrt(q.shape[-1])
    return torch.einsum("hlm,mhc->lhc", logits.softmax(-1), v)


# ----------------------------------------------------------------------------------- convolution
def test_conv3x3_gradients_match_dense_conv3d_on_the_masked_grid():
    res = 6
    x = random_sparse([25, 9], res, 3)
    conv = SparseConv3d(3, 4, 3, dtype=F64)
    nn.init.normal_(conv.conv.weight)
    nn.init.normal_(conv.conv.bias)
    feats = leaf(x.feats)
    out = conv(x.replace(feats)).feats
    upstream = torch.randn_like(out)
    g_sparse = grads_of((out * upstream).sum(), [feats, conv.conv.weight, conv.conv.bias])

    feats_d, weight_d, bias_d = leaf(x.feats), leaf(conv.conv.weight), leaf(conv.conv.bias)
    dense = F.conv3d(scatter_dense(feats_d, x.coords.long(), 2, res), weight_d.permute(0, 4, 1, 2, 3), bias_d, padding=1)
    c = x.coords.long()
    ref = dense[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]]
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g_dense = grads_of((ref * upstream).sum(), [feats_d, weight_d, bias_d])
    for a, b in zip(g_sparse, g_dense):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_conv_gradcheck_3x3_and_1x1():
    x = random_sparse([7, 4], 4, 2)
    nmap = build_neighbour_map(x.coords, 3)
    w, b = torch.randn(1, 3, 3, 3, 2, dtype=F64, requires_grad=True), torch.randn(1, dtype=F64, requires_grad=True)
    assert gradcheck(lambda f, w_, b_: submanifold_conv3d(f, x.coords, nmap, w_, b_), (leaf(x.feats), w, b))
    conv1 = SparseConv3d(2, 3, 1, dtype=F64)
    nn.init.normal_(conv1.conv.weight)
    nn.init.normal_(conv1.conv.bias)
    feats = leaf(x.feats)
    out = conv1(x.replace(feats)).feats
    # the 1x1 path multiplies by the weight's memory read as [C_in, C_out]
    torch.testing.assert_close(out, feats @ conv1.conv.weight.reshape(2, 3) + conv1.conv.bias)
    assert module_gradcheck(lambda f: conv1(x.replace(f)).feats, [leaf(x.feats)], conv1)


# ------------------------------------------------------------------------------ resolution changes
def test_downsample_gradients_match_dense_pooling_and_upsample_subdivide_gradcheck():
    res = 6
    x = random_sparse([30, 11], res, 2)
    feats = leaf(x.feats)
    down = downsample(x.replace(feats))
    upstream = torch.randn_like(down.feats)
    (g_sparse,) = grads_of((down.feats * upstream).sum(), [feats])
    # dense reference: cell sum / (occupied children + 1), read at the coarse voxels
    feats_d = leaf(x.feats)
    ones = scatter_dense(torch.ones(x.coords.shape[0], 1, dtype=F64), x.coords, 2, res)
    sums = F.avg_pool3d(scatter_dense(feats_d, x.coords, 2, res), 2) * 8
    counts = F.avg_pool3d(ones, 2) * 8
    c = down.coords.long()
    ref = (sums / (counts + 1))[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]]
    torch.testing.assert_close(down.feats, ref, rtol=1e-12, atol=1e-12)
    (g_dense,) = grads_of((ref * upstream).sum(), [feats_d])
    torch.testing.assert_close(g_sparse, g_dense, rtol=1e-12, atol=1e-12)

    small = random_sparse([6, 3], 4, 2)
    assert gradcheck(lambda f: downsample(small.replace(f)).feats, (leaf(small.feats),))
    assert gradcheck(lambda f: upsample(downsample(small.replace(f))).feats, (leaf(small.feats),))
    feats = leaf(small.feats)
    assert gradcheck(lambda f: subdivide(small.replace(f)).feats, (feats,))
    # each parent receives the sum of its 8 children's gradients
    upstream = torch.randn(small.coords.shape[0] * 8, 2, dtype=F64)
    (g,) = grads_of((subdivide(small.replace(feats)).feats * upstream).sum(), [feats])
    torch.testing.assert_close(g, upstream.reshape(-1, 8, 2).sum(1))


# ------------------------------------------------------------------------------------ group norm
def test_group_norm_gradients_match_per_item_group_norm():
    x = random_sparse([9, 5], 4, 4)
    norm = SparseGroupNorm32(2, 4, dtype=F64)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    feats = leaf(x.feats)
    out = norm(x.replace(feats)).feats
    assert out.dtype == F64
    upstream = torch.randn_like(out)
    g_sparse = grads_of((out * upstream).sum(), [feats, norm.weight, norm.bias])
    feats_d, w_d, b_d = leaf(x.feats), leaf(norm.weight), leaf(norm.bias)
    ref = torch.cat([F.group_norm(feats_d[rows].t()[None], 2, w_d, b_d, 1e-5)[0].t() for rows in x.layout])
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(g_sparse, grads_of((ref * upstream).sum(), [feats_d, w_d, b_d])):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert module_gradcheck(lambda f: norm(x.replace(f)).feats, [leaf(x.feats)], norm)


# ------------------------------------------------------------------------------------- attention
def windows_reference(coords: torch.Tensor, window: int, shift: int) -> List[List[int]]:
    """Row lists of the non-empty windows (batch, floor((xyz + shift) / window)), by a dict."""
    groups = defaultdict(list)
    for row, (b, x, y, z) in enumerate(coords.tolist()):
        groups[(b, (x + shift) // window, (y + shift) // window, (z + shift) // window)].append(row)
    return list(groups.values())


def per_group_attention(qkv: torch.Tensor, groups: List[List[int]]) -> torch.Tensor:
    out = torch.zeros_like(qkv[:, 0])
    for rows in groups:
        q, k, v = qkv[rows].unbind(1)
        out = out.index_put((torch.tensor(rows),), attention_reference(q, k, v))
    return out


@pytest.mark.parametrize("window,shift", [(8, 0), (4, 2), (2, 1)])  # 1 window per item / few / many (> 8: padded batch)
def test_self_attention_gradients_match_per_window_reference(window, shift):
    x = random_sparse([14, 6], 8, 3 * 2 * 3, seed=window)
    qkv = leaf(x.feats.reshape(-1, 3, 2, 3))
    if window == 8 and shift == 0:
        out = sparse_self_attention(x.replace(qkv)).feats
        groups = [list(range(rows.start, rows.stop)) for rows in x.layout]
    else:
        out = sparse_windowed_self_attention(x.replace(qkv), window, shift).feats
        groups = windows_reference(x.coords, window, shift)
    qkv_ref = leaf(qkv)
    ref = per_group_attention(qkv_ref, groups)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    upstream = torch.randn_like(out)
    (g,) = grads_of((out * upstream).sum(), [qkv])
    (g_ref,) = grads_of((ref * upstream).sum(), [qkv_ref])
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


def test_attention_gradcheck_full_windowed_and_cross():
    x = random_sparse([5, 4], 4, 3 * 1 * 2, seed=3)
    qkv = leaf(x.feats.reshape(-1, 3, 1, 2))
    assert gradcheck(lambda t: sparse_self_attention(x.replace(t)).feats, (qkv,))
    assert gradcheck(lambda t: sparse_windowed_self_attention(x.replace(t), 2, 1).feats, (qkv,))
    q = leaf(torch.randn(9, 1, 2, dtype=F64))
    k, v = leaf(torch.randn(2, 3, 1, 2, dtype=F64)), leaf(torch.randn(2, 3, 1, 2, dtype=F64))
    assert gradcheck(lambda q_, k_, v_: sparse_cross_attention(x.replace(q_), k_, v_).feats, (q, k, v))


def test_cross_attention_gradients_match_per_item_reference():
    x = random_sparse([6, 3], 4, 2 * 4, seed=5)
    q = leaf(x.feats.reshape(-1, 2, 4))
    k, v = leaf(torch.randn(2, 5, 2, 4, dtype=F64)), leaf(torch.randn(2, 5, 2, 4, dtype=F64))
    out = sparse_cross_attention(x.replace(q), k, v).feats
    q_r, k_r, v_r = leaf(q), leaf(k), leaf(v)
    ref = torch.cat([attention_reference(q_r[rows], k_r[b], v_r[b]) for b, rows in enumerate(x.layout)])
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    upstream = torch.randn_like(out)
    for a, b in zip(grads_of((out * upstream).sum(), [q, k, v]), grads_of((ref * upstream).sum(), [q_r, k_r, v_r])):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------- blocks and models
def init_parameters(module: nn.Module, std: float = 0.3, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return module


def test_subdivide_block_gradients_float64():
    # GroupNorm, SiLU, subdivide, 3x3 and 1x1 (skip) convolutions, all in float64
    block = init_parameters(SparseSubdivideBlock3d(4, 2, num_groups=2).double())
    x = random_sparse([3, 2], 4, 4, seed=7)
    assert gradcheck(lambda f: block(x.replace(f)).feats, (leaf(x.feats),))
    upstream = torch.randn(x.coords.shape[0] * 8, 2, dtype=F64)
    assert_matches_finite_differences(lambda: (block(x).feats * upstream).sum(), list(block.parameters()),
                                      eps=1e-6, rtol=1e-6, atol=1e-7)


def test_res_block_with_pooling_matches_finite_differences():
    # LayerNorm32 computes in float32: float32 block, central differences with a larger step
    x = random_sparse([20, 9], 6, 4, seed=8, dtype=torch.float32)
    emb = leaf(torch.randn(2, 6))
    for kwargs in ({}, {"downsample": True}):
        block = init_parameters(SparseResBlock3d(4, 6, 5, **kwargs))
        feats = leaf(x.feats)
        n_out = downsample(x).coords.shape[0] if kwargs else x.coords.shape[0]
        upstream = torch.randn(n_out, 5)
        assert_matches_finite_differences(lambda: (block(x.replace(feats), emb).feats.double() * upstream).sum(),
                                          [feats, emb] + list(block.parameters()))


def test_small_slat_models_forward_backward_match_finite_differences():
    x = random_sparse([12, 7], 8, 4, seed=9, dtype=torch.float32)
    feats = leaf(x.feats)
    upstream = torch.randn(x.coords.shape[0], 3, dtype=F64)
    # encoder: two shifted-window transformer blocks
    encoder = init_parameters(SLatEncoder(8, 4, 16, 3, num_blocks=2, num_heads=2, mlp_ratio=2, window_size=4), 0.2)

    def encoder_loss():
        _, mean, logvar = encoder(x.replace(feats), sample_posterior=False, return_raw=True)
        return (mean.double() * upstream).sum() + 0.1 * logvar.double().sum()

    assert_matches_finite_differences(encoder_loss, [feats] + list(encoder.parameters()))
    # flow model: residual blocks with pooling / unpooling, full self-attention, cross-attention
    flow = init_parameters(SLatFlowModel(8, 4, 16, 8, 4, num_blocks=1, num_heads=2, mlp_ratio=2, patch_size=2,
                                         num_io_res_blocks=2, io_block_channels=[8]), 0.2)
    cond = leaf(torch.randn(2, 3, 8))
    t = torch.tensor([300.0, 700.0])
    assert_matches_finite_differences(lambda: (flow(x.replace(feats), t, cond).feats.double() * upstream[:, :1]).sum(),
                                      [feats, cond] + list(flow.parameters()))
