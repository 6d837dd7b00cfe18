"""Sparse operations against dense references, and the edge cases of sparse inputs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trellis_impl.backends.attention import SeqLens, varlen_attention
from trellis_impl.sparse import (SparseConv3d, SparseGroupNorm32, SparseTensor, downsample, sparse_cat,
                                 sparse_cross_attention, sparse_self_attention, sparse_windowed_self_attention,
                                 subdivide, upsample, window_partition)


def random_sparse(sizes, res=16, channels=8, seed=0) -> SparseTensor:
    """Items with ``sizes[i]`` distinct voxels each, sorted like argwhere output."""
    g = torch.Generator().manual_seed(seed)
    coords = []
    for b, n in enumerate(sizes):
        flat = torch.randperm(res ** 3, generator=g)[:n].sort().values
        xyz = torch.stack([flat // res ** 2, flat // res % res, flat % res], dim=1)
        coords.append(torch.cat([torch.full((n, 1), b), xyz], dim=1))
    coords = torch.cat(coords).int()
    return SparseTensor(torch.randn(coords.shape[0], channels, generator=g), coords, batch_size=len(sizes))


def dense_of(x: SparseTensor, res: int) -> torch.Tensor:
    out = torch.zeros(x.batch_size, x.feats.shape[1], res, res, res, dtype=x.dtype)
    c = x.coords.long()
    out[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]] = x.feats
    return out


def test_submanifold_conv_matches_masked_dense_conv():
    res = 12
    x = random_sparse([300, 40, 1], res=res, channels=5)
    conv = SparseConv3d(5, 7, 3)
    torch.nn.init.normal_(conv.conv.weight)
    torch.nn.init.normal_(conv.conv.bias)
    out = conv(x)
    dense_w = conv.conv.weight.permute(0, 4, 1, 2, 3)  # spconv layout -> [Cout, Cin, k, k, k]
    ref = F.conv3d(dense_of(x, res), dense_w, conv.conv.bias, padding=1)
    c = x.coords.long()
    torch.testing.assert_close(out.feats, ref[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]], rtol=1e-5, atol=1e-5)
    assert torch.equal(out.coords, x.coords)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_both_pytorch_conv_algorithms_match_the_dense_conv(dtype):
    """The torch backend's two algorithms (gathered GEMM on GPUs, tap by tap on the CPU) are both
    run here on the CPU, on whole and on subdivided (``repeat``) inputs, with their gradients."""
    from trellis_impl.backends.sparse_conv import _conv_gathered, _conv_tap_pairs, build_neighbour_map
    res = 10
    x = random_sparse([260, 50], res=res, channels=6, seed=4)
    g = torch.Generator().manual_seed(5)
    weight, bias = torch.randn(7, 3, 3, 3, 6, generator=g), torch.randn(7, generator=g)
    ref = F.conv3d(dense_of(x, res), weight.permute(0, 4, 1, 2, 3), bias, padding=1)
    c = x.coords.long()
    ref = ref[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]]
    neighbours = build_neighbour_map(x.coords, 3)
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 3e-2, "atol": 0.15}
    grads = []
    for conv in (_conv_gathered, _conv_tap_pairs):
        feats, w = x.feats.to(dtype).requires_grad_(True), weight.to(dtype).requires_grad_(True)
        out = conv(feats, neighbours, w, bias.to(dtype))
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), ref, **tolerance)
        out.float().pow(2).sum().backward()
        grads.append((feats.grad.float(), w.grad.float()))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4 if dtype == torch.float32 else 5e-2,
                                   atol=1e-3 if dtype == torch.float32 else 1.0)
    # repeat: voxel i reads feats[i // 8], as for a subdivided tensor's children
    fine = subdivide(x)
    fine_neighbours = build_neighbour_map(fine.coords, 3)
    outs = [conv(x.feats, fine_neighbours, weight, bias, repeat=8) for conv in (_conv_gathered, _conv_tap_pairs)]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", [3, 1])
def test_convolving_a_subdivided_tensor_without_building_it(kernel):
    """``forward_subdivided`` (the mesh decoder's upsampling) equals the convolution of the
    subdivided tensor, and hands its neighbour map to the next convolution."""
    x = random_sparse([120, 30], res=8, channels=6, seed=3)
    conv = SparseConv3d(6, 4, kernel)
    torch.nn.init.normal_(conv.conv.weight)
    torch.nn.init.normal_(conv.conv.bias)
    fine = subdivide(x)
    out, ref = conv.forward_subdivided(x), conv(fine)
    assert torch.equal(out.coords, fine.coords) and out.batch_size == x.batch_size
    torch.testing.assert_close(out.feats, ref.feats, rtol=1e-6, atol=1e-6)
    if kernel == 3:
        assert "neighbours_k3_d1" in out.cache
        assert SparseConv3d(4, 4, 3)(out).feats.shape == (fine.feats.shape[0], 4)


def test_border_voxels_see_no_wraparound():
    # voxels at both grid borders: neighbours across the border must not exist
    coords = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 15], [0, 15, 15, 15], [1, 0, 0, 0]], dtype=torch.int32)
    x = SparseTensor(torch.ones(4, 1), coords)
    conv = SparseConv3d(1, 1, 3, bias=False)
    torch.nn.init.ones_(conv.conv.weight)
    assert conv(x).feats.squeeze(1).tolist() == [1.0, 1.0, 1.0, 1.0]


def test_conv_1x1_reinterprets_weight_memory_like_spconv():
    x = random_sparse([10], channels=3)
    conv = SparseConv3d(3, 4, 1)
    torch.nn.init.normal_(conv.conv.weight)
    torch.nn.init.normal_(conv.conv.bias)
    expected = x.feats @ conv.conv.weight.reshape(3, 4) + conv.conv.bias
    torch.testing.assert_close(conv(x).feats, expected)


def test_downsample_mean_counts_the_zero_initial_value_and_upsample_inverts_the_map():
    coords = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1], [0, 3, 3, 3], [1, 1, 1, 1]], dtype=torch.int32)
    x = SparseTensor(torch.tensor([[2.0], [4.0], [9.0], [5.0]]), coords)
    down = downsample(x)
    assert down.coords.tolist() == [[0, 0, 0, 0], [0, 1, 1, 1], [1, 0, 0, 0]]
    # official scatter_reduce(zeros, 'mean') includes the zero: sum / (count + 1)
    assert down.feats.squeeze(1).tolist() == [2.0, 4.5, 2.5]
    up = upsample(down)
    assert torch.equal(up.coords, coords)
    assert up.feats.squeeze(1).tolist() == [2.0, 2.0, 4.5, 2.5]
    with pytest.raises(ValueError, match="downsample"):
        upsample(x)


def test_subdivide_children_order():
    x = SparseTensor(torch.tensor([[1.0], [2.0]]), torch.tensor([[0, 1, 2, 3], [1, 0, 0, 0]], dtype=torch.int32))
    y = subdivide(x)
    assert y.coords[:8].tolist() == [[0, 2 + dx, 4 + dy, 6 + dz] for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)]
    assert y.feats.squeeze(1).tolist() == [1.0] * 8 + [2.0] * 8
    assert y.layout == [slice(0, 8), slice(8, 16)]


def test_group_norm_is_per_item():
    x = random_sparse([50, 7], channels=64)
    norm = SparseGroupNorm32(32, 64)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    out = norm(x)
    for rows in x.layout:
        ref = F.group_norm(x.feats[rows].t()[None], 32, norm.weight, norm.bias)[0].t()
        torch.testing.assert_close(out.feats[rows], ref)


@pytest.mark.parametrize("num_sequences", [2, 40])
def test_varlen_sdpa_matches_naive(num_sequences):
    g = torch.Generator().manual_seed(1)
    lens = SeqLens(torch.randint(1, 30, (num_sequences,), generator=g).tolist())
    q, k, v = (torch.randn(lens.total, 4, 16, generator=g) for _ in range(3))
    fast = varlen_attention(q, k, v, lens, backend="sdpa")
    ref = varlen_attention(q, k, v, lens, backend="naive")
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)


def test_varlen_sdpa_buckets_match_naive_with_gradients_keys_of_other_lengths_and_empty_sequences():
    """Many sequences of lengths 0-200 (the padded buckets), keys of other lengths than the queries
    (cross-attention): values and gradients equal the per-sequence float64 reference; each bucket
    pads its sequences to at most 1.5x their own lengths."""
    g = torch.Generator().manual_seed(2)
    q_lens = SeqLens([0] + torch.randint(1, 200, (30,), generator=g).tolist())
    kv_lens = SeqLens([5] + torch.randint(1, 60, (30,), generator=g).tolist())
    q = torch.randn(q_lens.total, 2, 8, generator=g, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(kv_lens.total, 2, 8, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    out = varlen_attention(q, k, v, q_lens, kv_lens, backend="sdpa")
    def per_sequence(qi, ki, vi):  # float64 softmax(q k^T / sqrt(d)) v
        return torch.einsum("lhm,mhc->lhc", torch.einsum("lhc,mhc->lhm", qi, ki).div(8 ** 0.5).softmax(dim=-1), vi)
    ref = torch.cat([per_sequence(qi, ki, vi) for qi, ki, vi in zip(
        q.split(q_lens.lengths), k.split(kv_lens.lengths), v.split(kv_lens.lengths))])
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    upstream = torch.randn(out.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((out * upstream).sum(), (q, k, v))
    grads_ref = torch.autograd.grad((ref * upstream).sum(), (q, k, v))
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    q_pad, kv_pad, _ = q_lens.paddings(kv_lens, q.device)
    assert len(q_pad.shapes) > 4
    for pad in (q_pad, kv_pad):  # every sequence is longer than its bucket's width / 1.5
        assert all(sequences * width < 1.5 * tokens for tokens, (sequences, width) in zip(pad.counts, pad.shapes))
    # every non-empty query sequence is in one bucket, every query row in one slot
    assert sum(sequences for sequences, _ in q_pad.shapes) == sum(n > 0 for n in q_lens.lengths)
    assert sorted(q_pad.order.tolist()) == list(range(q_lens.total))
    assert q_lens.paddings(kv_lens, q.device)[0] is q_pad  # built once


def test_window_partition_groups_voxels_by_shifted_window():
    x = random_sparse([200, 60], res=16)
    order, inverse, lens = window_partition(x.coords, 4, 2)
    c = x.coords[order].long()
    wid = torch.cat([c[:, :1], (c[:, 1:] + 2) // 4], dim=1)
    starts = [0]
    for n in lens.lengths:
        starts.append(starts[-1] + n)
    for a, b in zip(starts[:-1], starts[1:]):
        assert (wid[a:b] == wid[a]).all()
    assert len({tuple(w) for w in wid.tolist()}) == len(lens.lengths)
    assert torch.equal(order[inverse], torch.arange(x.coords.shape[0]))


def test_windowed_attention_equals_full_attention_when_one_window_holds_everything():
    x = random_sparse([30, 5], res=8, channels=3 * 2 * 4)
    qkv = x.reshape(3, 2, 4)
    full = sparse_self_attention(qkv)
    windowed = sparse_windowed_self_attention(qkv, 8, 0)
    torch.testing.assert_close(windowed.feats, full.feats)


def test_items_of_very_different_sizes_do_not_attend_to_each_other():
    x = random_sparse([500, 2], res=16, channels=3 * 2 * 4)
    qkv = x.reshape(3, 2, 4)
    both = sparse_self_attention(qkv)
    alone = sparse_self_attention(qkv[1])
    torch.testing.assert_close(both.feats[x.layout[1]], alone.feats)


def test_cross_attention_attends_to_its_own_item_and_reuses_the_context_offsets():
    x = random_sparse([40, 7], res=8, channels=2 * 4)
    q = x.reshape(2, 4)
    g = torch.Generator().manual_seed(1)
    k, v = torch.randn(2, 5, 2, 4, generator=g), torch.randn(2, 5, 2, 4, generator=g)
    out = sparse_cross_attention(q, k, v)
    for b in range(2):
        rows = q.feats[x.layout[b]]
        expected = F.scaled_dot_product_attention(rows.transpose(0, 1)[None], k[b].transpose(0, 1)[None],
                                                  v[b].transpose(0, 1)[None])[0].transpose(0, 1)
        torch.testing.assert_close(out.feats[x.layout[b]], expected)
    # the context offsets are built once per voxel set (each build is a host-to-device copy)
    offsets = [v for key, v in q.cache.items() if key.startswith("context_seqlens")]
    again = q.replace(q.feats * 2)
    sparse_cross_attention(again, k, v)
    assert len(offsets) == 1 and [v for key, v in again.cache.items() if key.startswith("context_seqlens")] == offsets


@pytest.mark.parametrize("sizes", [[5, 5, 5], [3, 6], [4]])
def test_per_item_operands_equal_the_gathered_ones(sizes):
    """Per-item [B, C] operands: items of one size broadcast over a view, others are gathered;
    both give exactly the per-voxel result, for every operator in both orders."""
    import operator
    x = random_sparse(sizes, channels=3, seed=2)
    per_item = torch.rand(len(sizes), 3, generator=torch.Generator().manual_seed(1)) + 0.5
    gathered = per_item[x.batch_index()]
    for op in (operator.add, operator.sub, operator.mul, operator.truediv):
        assert torch.equal(op(x, per_item).feats, op(x.feats, gathered))
        assert torch.equal(op(per_item, x).feats, op(gathered, x.feats))
    assert torch.equal((x * 2.0 + x).feats, x.feats * 2.0 + x.feats)


def test_sparse_tensor_validation_and_batch_ops():
    with pytest.raises(ValueError, match="batch_size"):
        SparseTensor(torch.zeros(0, 3), torch.zeros(0, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="increasing order"):
        SparseTensor(torch.zeros(2, 3), torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        SparseTensor(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="rows"):
        SparseTensor(torch.zeros(3, 3), torch.zeros(2, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match=">= 0"):
        SparseTensor(torch.zeros(1, 3), torch.tensor([[0, -1, 0, 0]]))
    x = random_sparse([3, 4], channels=2)
    scaled = x * torch.tensor([[1.0, 1.0], [2.0, 2.0]])  # per-item broadcast
    torch.testing.assert_close(scaled.feats[x.layout[1]], 2 * x.feats[x.layout[1]])
    torch.testing.assert_close(scaled.feats[x.layout[0]], x.feats[x.layout[0]])
    both = sparse_cat([x, x[1]])
    assert both.batch_size == 3 and both.coords[-1, 0] == 2
    empty = SparseTensor(torch.zeros(0, 2), torch.zeros(0, 4, dtype=torch.int32), batch_size=2)
    assert empty.layout == [slice(0, 0), slice(0, 0)] and empty.shape == (2, 2)
