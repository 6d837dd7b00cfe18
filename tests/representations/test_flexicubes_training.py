"""FlexiCubes training path (features_to_mesh(..., training=True)): regularisers against a direct
re-computation on a tiny dense grid (python loops over cubes and edges), the training
triangulation against the inference mesh, and gradients reaching every decoder channel."""
from __future__ import annotations

import math
from collections import defaultdict

import pytest
import torch

from trellis_impl.representations.flexicubes import CUBE_CORNER_OFFSETS, CUBE_EDGES
from trellis_impl.representations.flexicubes_tables import AMBIGUOUS_CASES, DMC_EDGE_GROUPS
from trellis_impl.representations.mesh import features_to_mesh, mesh_feature_layout

RES = 4


def tiny_features(use_color: bool, seed: int = 0, dtype=torch.float64):
    """Every cube of a RES^3 grid active; corner SDFs of a tilted plane (no ambiguous cubes) with
    per-voxel noise, random deformations, FlexiCubes weights and colours."""
    g = torch.Generator().manual_seed(seed)
    coords = torch.stack(torch.meshgrid(*[torch.arange(RES)] * 3, indexing="ij"), -1).reshape(-1, 3)
    layout = mesh_feature_layout(use_color)
    feats = torch.randn(coords.shape[0], sum(v["size"] for v in layout.values()), generator=g, dtype=dtype) * 0.5
    corners = coords[:, None, :] + torch.tensor(CUBE_CORNER_OFFSETS)
    plane = (corners[..., 2] + 0.3 * corners[..., 0] - 0.2 * corners[..., 1] - 1.6).to(dtype) / RES
    noise = 0.01 * torch.randn(plane.shape, generator=g, dtype=dtype)
    start, end = layout["sdf"]["range"]
    feats[:, start:end] = plane + noise
    return coords.long(), feats, layout


def reference(coords, feats, layout, use_color):
    """Official cube2mesh + FlexiCubes(training=True) regularisers, by direct loops."""
    def group(name):
        start, end = layout[name]["range"]
        return feats[:, start:end].reshape(-1, *layout[name]["shape"])

    corner_attrs = torch.cat([group("sdf") - 1.0 / RES, group("deform")] + ([group("color")] if use_color else []), -1)
    sums, counts = defaultdict(lambda: 0), defaultdict(int)
    for n, c in enumerate(coords.tolist()):
        for k, off in enumerate(CUBE_CORNER_OFFSETS):
            key = tuple(a + b for a, b in zip(c, off))
            sums[key] = sums[key] + corner_attrs[n, k]
            counts[key] += 1
    vertex = {key: sums[key] / counts[key] for key in sums}
    consistency = sum(float(((corner_attrs[n, k] - vertex[tuple(a + b for a, b in zip(c, off))]) ** 2).sum())
                      for n, c in enumerate(coords.tolist()) for k, off in enumerate(CUBE_CORNER_OFFSETS))
    consistency /= corner_attrs.numel()

    def position(key):
        return torch.tensor(key, dtype=feats.dtype) / RES - 0.5 + (1 - 1e-8) / (RES * 2) * torch.tanh(vertex[key][1:4])

    def vertex_id(key):  # dense vertex index
        return (key[0] * (RES + 1) + key[1]) * (RES + 1) + key[2]

    weights = group("weights")
    dual_vertices, deviations = [], []
    for n, c in enumerate(coords.tolist()):
        keys = [tuple(a + b for a, b in zip(c, off)) for off in CUBE_CORNER_OFFSETS]
        inside = [float(vertex[k][0]) < 0 for k in keys]
        if not 0 < sum(inside) < 8:
            continue
        case = sum(1 << i for i, flag in enumerate(inside) if flag)
        assert case not in AMBIGUOUS_CASES  # the plane keeps the reference free of ambiguity resolution
        beta = torch.tanh(weights[n, :12]) * 0.99 + 1
        alpha = torch.tanh(weights[n, 12:20]) * 0.99 + 1
        for edges in DMC_EDGE_GROUPS[case]:
            crossings, plain, betas = [], [], []
            for e in edges:
                ends = keys[CUBE_EDGES[e][0]], keys[CUBE_EDGES[e][1]]
                s0, s1 = float(vertex[ends[0]][0]), float(vertex[ends[1]][0])
                x0, x1 = position(ends[0]), position(ends[1])
                a0, a1 = float(alpha[CUBE_EDGES[e][0]]), float(alpha[CUBE_EDGES[e][1]])
                crossings.append((x0 * s1 * a1 - x1 * s0 * a0) / (s1 * a1 - s0 * a0))
                plain.append((x0 * s1 - x1 * s0) / (s1 - s0))
                betas.append(float(beta[e]))
            v = sum(b * u for b, u in zip(betas, crossings)) / sum(betas)
            dist = [float((u - v).norm()) for u in plain]
            mean = sum(dist) / len(dist)
            dual_vertices.append(v)
            deviations.extend(abs(d - mean) for d in dist)
    weight_term = float(weights[:, :20].abs().mean())
    reg = consistency + 0.2 * weight_term + 0.5 * sum(deviations) / len(deviations)
    tsdf = sorted((vertex_id(k), position(k), float(vertex[k][0])) for k in vertex)
    return reg, torch.stack(dual_vertices), tsdf


@pytest.mark.parametrize("use_color", [True, False])
def test_regularisers_and_dual_vertices_match_direct_recomputation(use_color):
    coords, feats, layout = tiny_features(use_color)
    mesh = features_to_mesh(coords, feats, RES, use_color, training=True)
    reg, dual_vertices, tsdf = reference(coords, feats, layout, use_color)
    assert mesh.success and mesh.reg_loss.dtype == torch.float64
    assert abs(float(mesh.reg_loss) - reg) < 1e-12
    # the training mesh starts with the dual vertices (any order in the reference)
    ours = mesh.vertices[:dual_vertices.shape[0]]
    order = lambda v: v[torch.argsort(v[:, 0] * 1e6 + v[:, 1] * 1e3 + v[:, 2])]
    torch.testing.assert_close(order(ours), order(dual_vertices), rtol=0, atol=1e-12)
    assert torch.allclose(mesh.tsdf_v, torch.stack([p for _, p, _ in tsdf]), rtol=0, atol=1e-15)
    assert torch.allclose(mesh.tsdf_s, torch.tensor([s for _, _, s in tsdf], dtype=torch.float64), rtol=0, atol=1e-15)
    assert features_to_mesh(coords, feats, RES, use_color).reg_loss is None


def test_training_triangulation_fans_each_inference_quad_around_its_centre():
    coords, feats, layout = tiny_features(True, seed=1, dtype=torch.float32)
    inference = features_to_mesh(coords, feats, RES, True)
    training = features_to_mesh(coords, feats, RES, True, training=True)
    num_dual = inference.vertices.shape[0]
    assert torch.equal(training.vertices[:num_dual], inference.vertices)
    assert torch.equal(training.vertex_attrs[:num_dual], inference.vertex_attrs)
    num_quads = inference.faces.shape[0] // 2
    assert training.vertices.shape[0] == num_dual + num_quads and training.faces.shape[0] == 4 * num_quads
    fans = training.faces.reshape(num_quads, 4, 3)
    assert torch.equal(fans[:, :, 2], (torch.arange(num_quads) + num_dual)[:, None].expand(-1, 4))
    rim = fans[:, :, 0]
    assert torch.equal(fans[:, :, 1], rim.roll(-1, dims=1))
    # each inference quad's two triangles use exactly the 4 rim vertices of its fan
    inference_quads = torch.stack([quad.unique() for quad in inference.faces.reshape(num_quads, 6)])
    assert torch.equal(inference_quads, rim.sort(1).values)
    # centres lie inside their quad's bounding box
    corners = training.vertices[rim]
    centres = training.vertices[num_dual:]
    assert bool(((centres >= corners.min(1).values - 1e-6) & (centres <= corners.max(1).values + 1e-6)).all())


def test_gradients_of_a_mesh_loss_reach_every_feature_group_and_match_finite_differences():
    coords, feats, layout = tiny_features(True, seed=2)
    feats.requires_grad_(True)
    g = torch.Generator().manual_seed(3)
    mesh = features_to_mesh(coords, feats, RES, True, training=True)
    w_vertices = torch.randn(mesh.vertices.shape, generator=g, dtype=torch.float64)
    w_colors = torch.randn(mesh.vertex_attrs.shape, generator=g, dtype=torch.float64)
    w_tsdf = torch.randn(mesh.tsdf_s.shape, generator=g, dtype=torch.float64)

    def loss_of(f):
        m = features_to_mesh(coords, f, RES, True, training=True)
        assert m.vertices.shape == w_vertices.shape  # connectivity fixed under the small steps
        return ((m.vertices * w_vertices).sum() + (m.vertex_attrs * w_colors).sum() + m.reg_loss
                + (m.tsdf_s * w_tsdf).sum() + m.tsdf_v.sum())

    (grad,) = torch.autograd.grad(loss_of(feats), [feats])
    for name, group in layout.items():
        start, end = group["range"]
        assert float(grad[:, start:end].abs().sum()) > 0, name
        direction = torch.randn(grad[:, start:end].shape, generator=g, dtype=torch.float64)
        step = torch.zeros_like(feats)
        step[:, start:end] = direction / direction.norm()
        eps = 1e-6
        with torch.no_grad():
            numeric = (float(loss_of(feats + eps * step)) - float(loss_of(feats - eps * step))) / (2 * eps)
        analytic = float((grad * step).sum())
        assert math.isclose(analytic, numeric, rel_tol=1e-5, abs_tol=1e-7), (name, analytic, numeric)


def test_empty_training_meshes():
    coords, feats, _ = tiny_features(False)
    outside = feats.clone().requires_grad_(True)
    with torch.no_grad():
        outside[:, :8] = 1.0  # every corner outside: no surface, no L_dev term
    mesh = features_to_mesh(coords, outside, RES, False, training=True)
    assert not mesh.success and mesh.faces.shape == (0, 3)
    assert torch.isfinite(mesh.reg_loss)
    mesh.reg_loss.backward()
    assert outside.grad is not None
    empty = features_to_mesh(coords[:0], feats[:0], RES, False, training=True)
    assert float(empty.reg_loss) == 0.0 and empty.tsdf_v.shape == (0, 3)
