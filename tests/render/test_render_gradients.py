"""Gradients of the PyTorch renderers (float64 gradcheck on tiny scenes): Gaussians, the training
mesh render, the Strivec ray marcher; the training mesh render's values against the inference one."""
from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from trellis_impl.render.cameras import Camera, look_at_extrinsics
from trellis_impl.render.gaussian_raster import render_gaussians
from trellis_impl.render.mesh_raster import face_camera_normals, rasterize, render_mesh, render_mesh_training
from trellis_impl.render.radiance_field_render import render_radiance_field
from trellis_impl.representations.radiance_field import Strivec

F64 = torch.float64


def camera(size: int, eye=(0.3, -2.0, 0.4), focal: float = None) -> Camera:
    focal = focal or size * 1.6
    return Camera(look_at_extrinsics(eye, [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]), focal, focal, size / 2, size / 2, size, size)


# ------------------------------------------------------------------------------------- Gaussians
def test_gaussian_torch_render_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(0)
    n = 3
    tensors = {
        "xyz": (torch.rand(n, 3, generator=g, dtype=F64) - 0.5) * 0.3,
        "scaling": torch.rand(n, 3, generator=g, dtype=F64) * 0.1 + 0.08,
        "rotation": torch.randn(n, 4, generator=g, dtype=F64),
        "opacity": torch.rand(n, 1, generator=g, dtype=F64) * 0.5 + 0.3,
        "colors": torch.rand(n, 3, generator=g, dtype=F64) * 0.6 + 0.1,
    }
    cam = camera(6)
    names = list(tensors)
    inputs = tuple(t.requires_grad_(True) for t in tensors.values())

    def render(*values):
        out = render_gaussians(dict(zip(names, values)), cam, background=(0.2, 0.3, 0.4), backend="torch")
        return out["color"], out["alpha"], out["depth"]

    color = render(*inputs)[0].detach()
    assert 0.0 < float(color.min()) and float(color.max()) < 1.0  # the output clamp is inactive
    assert gradcheck(render, inputs)
    # training renders unclamped, as the official rasteriser: over-bright pixels keep a gradient
    bright = tensors["colors"].detach().mul(4).requires_grad_(True)
    values = {**{k: tensors[k].detach() for k in names[:4]}, "colors": bright}
    unclamped = render_gaussians(values, cam, backend="torch", clamp=False)["color"]
    assert float(unclamped.detach().max()) > 1.0
    torch.testing.assert_close(unclamped.clamp(0, 1), render_gaussians(values, cam, backend="torch")["color"])
    (grad,) = torch.autograd.grad(unclamped.sum(), [bright])
    assert bool((grad > 0).all())
    # and through the SH colour path
    features = ((tensors["colors"].detach() - 0.5) / 0.28209479177387814)[:, None, :].requires_grad_(True)
    assert gradcheck(lambda f: render_gaussians({**{k: tensors[k].detach() for k in names[:4]}, "features": f}, cam,
                                                backend="torch")["color"], (features,))


# ------------------------------------------------------------------------------------------ mesh
def tiny_mesh():
    """Two triangles of a tilted quad and one small triangle in front of them (occlusion)."""
    vertices = torch.tensor([[-0.4, 0.1, -0.35], [0.45, -0.05, -0.3], [0.4, 0.15, 0.4], [-0.35, 0.0, 0.38],
                             [-0.1, -0.3, -0.1], [0.2, -0.35, 0.0], [0.0, -0.28, 0.2]], dtype=F64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6]])
    attrs = torch.rand(7, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    return vertices, faces, attrs


def test_mesh_training_render_values_match_the_inference_renderer():
    vertices, faces, attrs = tiny_mesh()
    cams = [camera(12), camera(12, eye=(1.5, -1.2, 0.8))]
    out = render_mesh_training(vertices, faces, cams, attrs, backend="torch")
    assert out["mask"].shape == (2, 1, 12, 12) and out["attrs"].shape == (2, 2, 12, 12)
    for view, cam in enumerate(cams):
        ref = render_mesh((vertices, faces), cam, attrs, backend="torch")
        hit = ref["mask"][0] > 0
        # anti-aliasing touches only pixels next to a change of visible face (or to the background)
        tid = rasterize(vertices, faces, cam, backend="torch")["triangle_id"]
        edge = torch.zeros_like(hit)
        edge[:, :-1] |= tid[:, :-1] != tid[:, 1:]
        edge[:, 1:] |= tid[:, :-1] != tid[:, 1:]
        edge[:-1] |= tid[:-1] != tid[1:]
        edge[1:] |= tid[:-1] != tid[1:]
        keep = ~edge
        assert 0 < int(keep.sum()) and 0 < int((hit & keep).sum())
        assert torch.equal(out["mask"][view][:, keep], ref["mask"][:, keep])
        assert bool((out["mask"][view] != ref["mask"]).any())  # the silhouette is softened
        torch.testing.assert_close(out["depth"][view][:, keep], ref["depth"][:, keep], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out["attrs"][view][:, keep], ref["attrs"][:, keep], rtol=1e-12, atol=1e-12)
        inside = hit & keep
        torch.testing.assert_close(out["normal"][view][:, inside], (ref["normal"][:, inside] + 1) / 2,
                                   rtol=1e-12, atol=1e-12)
        assert bool((out["normal"][view][:, ~hit & keep] == 0.5).all())


def test_mesh_training_render_gradients_match_finite_differences():
    vertices, faces, attrs = tiny_mesh()
    cams = [camera(8), camera(8, eye=(1.5, -1.2, 0.8))]

    def render(v, a):
        out = render_mesh_training(v, faces, cams, a, backend="torch")
        return out["depth"], out["normal"], out["attrs"]

    inputs = (vertices.clone().requires_grad_(True), attrs.clone().requires_grad_(True))
    assert gradcheck(render, inputs)
    # gradients reach every visible vertex's position
    depth = render(*inputs)[0]
    (grad,) = torch.autograd.grad(depth.sum(), [inputs[0]])
    assert bool((grad.abs().sum(1) > 0).all())


def test_face_camera_normals_flip_normals_pointing_away():
    cam = camera(4)
    towards = -cam.extrinsics[2, :3]  # world direction from the scene to the camera (minus the optical axis)
    normal = torch.full((1, 3, 4, 4), 0.5, dtype=F64)
    normal[0, :, 0, 0] = (towards + 1) / 2
    normal[0, :, 1, 1] = (-towards + 1) / 2
    out = face_camera_normals(normal, [cam])
    torch.testing.assert_close(out[0, :, 0, 0], (towards + 1) / 2)
    torch.testing.assert_close(out[0, :, 1, 1], (towards + 1) / 2)
    assert bool((out[0, :, 2:, 2:] == 0.5).all())
    with pytest.raises(ValueError, match="normal"):
        face_camera_normals(normal[0], [cam])


# ------------------------------------------------------------------------------ radiance field
def test_radiance_field_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(2)
    cells = torch.tensor([[0, 1, 1], [1, 1, 1], [1, 0, 1]], dtype=F64)
    n, rank, dim = 3, 2, 3
    trivec = (torch.rand(n, rank, 3, dim, generator=g, dtype=F64) + 0.5).requires_grad_(True)
    density = (torch.rand(n, rank, generator=g, dtype=F64) * 4 + 1).requires_grad_(True)
    features_dc = (torch.randn(n, rank, 1, 3, generator=g, dtype=F64) * 0.3).requires_grad_(True)
    cam = camera(5, eye=(0.4, -2.0, 0.5), focal=12.0)

    def render(t, d, f):
        field = Strivec(2, [-0.5, -0.5, -0.5, 1.0, 1.0, 1.0], (cells + 0.5) / 2, torch.ones(n, 1, dtype=torch.uint8),
                        t, d, f)
        out = render_radiance_field(field, cam, background=(0.1, 0.2, 0.3))
        return out["color"], out["alpha"], out["depth"]

    alpha = render(trivec, density, features_dc)[1].detach()
    assert float(alpha.max()) > 0.1  # the voxels are seen
    assert gradcheck(render, (trivec, density, features_dc))
