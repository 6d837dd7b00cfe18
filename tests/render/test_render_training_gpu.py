"""The training renders' accelerated paths against the PyTorch references on a CUDA device:
nvdiffrast's differentiable mesh render (values and gradients, its anti-aliasing against the
PyTorch one, silhouette gradients included) and gsplat's gradients. Skipped without CUDA or the package;
the device run is recorded in docs/training.md."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trellis_impl.render import orbit_cameras, render_gaussians
from trellis_impl.render.gaussian_raster import GAUSSIAN_RASTER
from trellis_impl.render.mesh_raster import MESH_RASTER, render_mesh_training

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")


def _sphere(subdivisions: int = 3):
    import trimesh
    s = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.4)
    vertices = torch.tensor(np.asarray(s.vertices), dtype=torch.float32, device=CUDA)
    return vertices, torch.tensor(np.asarray(s.faces), device=CUDA)


def _interior(mask: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W] pixels whose 3 x 3 neighbourhood is covered: anti-aliasing leaves them alone."""
    return -torch.nn.functional.max_pool2d(-mask, 3, stride=1, padding=1) == 1


def _grads(backend: str, vertices, faces, attrs, cameras, weight):
    vertices = vertices.clone().requires_grad_(True)
    attrs = attrs.clone().requires_grad_(True)
    out = render_mesh_training(vertices, faces, cameras, attrs, backend=backend)
    loss = (weight * (out["depth"] * 2 + out["attrs"].pow(2).sum(1, keepdim=True) + out["normal"].sum(1, keepdim=True))).sum()
    loss.backward()
    return out, vertices.grad, attrs.grad


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def test_nvdiffrast_training_render_matches_torch():
    if not MESH_RASTER.backends["nvdiffrast"].available(CUDA, torch.float32):
        pytest.skip("nvdiffrast not installed or its plugin cannot be built here")
    vertices, faces = _sphere()
    attrs = torch.rand(vertices.shape[0], 6, generator=torch.Generator().manual_seed(0)).to(CUDA)
    cameras = orbit_cameras(2, pitch=0.4, radius=2.0, fov_degrees=40.0, width=128, height=128)
    with torch.no_grad():
        inside = _interior(render_mesh_training(vertices, faces, cameras, backend="torch")["mask"])
    assert float(inside.float().mean()) > 0.2
    weight = torch.rand(inside.shape, generator=torch.Generator().manual_seed(1)).to(CUDA)
    ref, ref_vgrad, ref_agrad = _grads("torch", vertices, faces, attrs, cameras, weight)
    got, got_vgrad, got_agrad = _grads("nvdiffrast", vertices, faces, attrs, cameras, weight)
    # whole images, anti-aliased silhouettes included (the two differ where the rasterisers' tie
    # rules give a pixel another face: about 1 % of the covered pixels, docs/gpu.md)
    for key in ("mask", "depth", "attrs", "normal"):
        diff = (ref[key] - got[key]).abs().amax(1)
        assert float((diff < 1e-3).float().mean()) > 0.98, key
    cosine = {"attrs": _cosine(ref_agrad, got_agrad), "vertices": _cosine(ref_vgrad, got_vgrad)}
    # the vertex gradient in parts, all measured before any bound is checked (the device run of
    # 2026-12-07 gave 0.974 for the whole against the 0.98 bound, docs/gpu.md): the interior
    # pixels alone (barycentrics, no anti-aliasing) and the silhouette alone (the mask)
    parts = {"interior": lambda out: weight * inside * (out["depth"] * 2 + out["normal"].sum(1, keepdim=True)),
             "silhouette": lambda out: weight * out["mask"]}
    for part, loss_of in parts.items():
        grads = []
        for backend in ("torch", "nvdiffrast"):
            leaf = vertices.clone().requires_grad_(True)
            loss_of(render_mesh_training(leaf, faces, cameras, backend=backend)).sum().backward()
            grads.append(leaf.grad)
        assert float(grads[0].abs().sum()) > 0, part
        cosine[part] = _cosine(*grads)
    print("gradient cosines, torch against nvdiffrast:", {k: round(v, 5) for k, v in cosine.items()})
    assert cosine["attrs"] > 0.98 and cosine["vertices"] > 0.98 and cosine["interior"] > 0.98 \
        and cosine["silhouette"] > 0.95, cosine


def test_gsplat_gradients_match_torch():
    if not GAUSSIAN_RASTER.backends["gsplat"].available(CUDA, torch.float32):
        pytest.skip("gsplat not installed or its CUDA extension cannot be built here")
    g = torch.Generator().manual_seed(1)
    n = 400
    fields = {"xyz": (torch.rand(n, 3, generator=g) - 0.5) * 0.6, "scaling": torch.full((n, 3), 0.03),
              "rotation": torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=1),
              "opacity": torch.rand(n, 1, generator=g) * 0.8 + 0.1, "colors": torch.rand(n, 3, generator=g)}
    camera = orbit_cameras(1, pitch=0.3, radius=2.0, fov_degrees=40.0, width=64, height=64)[0]
    grads = {}
    for backend in ("torch", "gsplat"):
        leaves = {k: v.to(CUDA).clone().requires_grad_(True) for k, v in fields.items()}
        image = render_gaussians(leaves, camera, background=(1.0, 1.0, 1.0), backend=backend, clamp=False)["color"]
        (image * torch.linspace(0, 1, image.numel(), device=CUDA).reshape(image.shape)).sum().backward()
        grads[backend] = {k: v.grad for k, v in leaves.items()}
    for key in ("colors", "opacity", "xyz", "scaling"):
        cos = torch.nn.functional.cosine_similarity(grads["torch"][key].flatten(), grads["gsplat"][key].flatten(), dim=0)
        assert float(cos) > 0.95, (key, float(cos))
