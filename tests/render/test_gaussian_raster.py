"""Tests of the cameras and the torch Gaussian rasteriser against a brute-force reference."""
from __future__ import annotations

import math

import pytest
import torch

from trellis_impl.render import Camera, orbit_cameras, render_gaussians
from trellis_impl.render.gaussian_raster import gaussian_tensors, pad_gaussians, render_gaussians_batch

SH_C0 = 0.28209479177387814


def _quat_to_rot(q):
    w, x, y, z = (q / q.norm()).tolist()
    return torch.tensor([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ], dtype=torch.float64)


def reference_render(g, cam, background):
    """Brute force in float64: every Gaussian against every pixel, in depth order, no culling
    besides the near/far planes; pixels are vectorised but composited one Gaussian at a time."""
    W, H = cam.width, cam.height
    extr = cam.extrinsics.double()
    Rw, t = extr[:3, :3], extr[:3, 3]
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5,
                            torch.arange(W, dtype=torch.float64) + 0.5, indexing="ij")
    T = torch.ones(H, W, dtype=torch.float64)
    done = torch.zeros(H, W, dtype=torch.bool)
    C = torch.zeros(H, W, 3, dtype=torch.float64)
    D = torch.zeros(H, W, dtype=torch.float64)
    xyz = g["xyz"].double()
    cols = g["colors"].double() if "colors" in g else (0.5 + SH_C0 * g["features"][:, 0].double()).clamp_min(0)
    pc = xyz @ Rw.T + t
    for i in torch.argsort(pc[:, 2], stable=True).tolist():
        x, y, z = pc[i].tolist()
        if not cam.near < z < cam.far:
            continue
        limx, limy = 1.3 * 0.5 * W / cam.fx, 1.3 * 0.5 * H / cam.fy
        tx = min(max(x / z, -limx), limx) * z
        ty = min(max(y / z, -limy), limy) * z
        J = torch.tensor([[cam.fx / z, 0, -cam.fx * tx / z ** 2], [0, cam.fy / z, -cam.fy * ty / z ** 2]],
                         dtype=torch.float64)
        M = _quat_to_rot(g["rotation"][i].double()) @ torch.diag(g["scaling"][i].double())
        cov = J @ Rw @ M @ M.T @ Rw.T @ J.T + 0.3 * torch.eye(2, dtype=torch.float64)
        conic = torch.linalg.inv(cov)
        u, v = cam.fx * x / z + cam.cx, cam.fy * y / z + cam.cy
        dx, dy = xs - u, ys - v
        power = -0.5 * (conic[0, 0] * dx * dx + conic[1, 1] * dy * dy) - conic[0, 1] * dx * dy
        alpha = (float(g["opacity"].reshape(-1)[i]) * torch.exp(power)).clamp_max(0.99)
        alpha = torch.where((power <= 0) & (alpha >= 1 / 255) & ~done, alpha, torch.zeros_like(alpha))
        test_t = T * (1 - alpha)
        stop = test_t < 1e-4
        done |= stop
        alpha = torch.where(stop, torch.zeros_like(alpha), alpha)
        C += (alpha * T)[..., None] * cols[i]
        D += alpha * T * z
        T = T * (1 - alpha)
    bg = torch.tensor(background, dtype=torch.float64)
    return {"color": (C + T[..., None] * bg).clamp(0, 1).permute(2, 0, 1), "alpha": (1 - T)[None], "depth": D[None]}


def _scene(n, seed, features=False):
    gen = torch.Generator().manual_seed(seed)
    g = {
        "xyz": torch.rand(n, 3, generator=gen) - 0.5,
        "scaling": torch.rand(n, 3, generator=gen) * 0.06 + 0.005,
        "rotation": torch.randn(n, 4, generator=gen),
        "opacity": torch.rand(n, 1, generator=gen) * 0.9 + 0.1,
    }
    if features:
        g["features"] = torch.randn(n, 1, 3, generator=gen)
    else:
        g["colors"] = torch.rand(n, 3, generator=gen)
    return g


def _psnr(a, b):
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


@pytest.mark.parametrize("n,seed,yaw,pitch,radius,fov,bg,features", [
    (20, 0, 0.0, 0.0, 2.0, 40.0, (0, 0, 0), False),
    (50, 1, 1.1, 0.5, 1.6, 50.0, (1, 1, 1), True),
    (40, 2, -2.3, -0.4, 1.2, 70.0, (0.2, 0.5, 0.8), False),
    (50, 3, 3.0, 1.2, 0.9, 90.0, (0, 0, 0), True),   # close camera: some Gaussians behind / at the border
])
def test_matches_brute_force(n, seed, yaw, pitch, radius, fov, bg, features):
    g = _scene(n, seed, features)
    cam = Camera.orbit(yaw, pitch, radius, fov, 48, 40)
    out = render_gaussians(g, cam, background=bg)
    ref = reference_render(g, cam, bg)
    assert out["color"].shape == (3, 40, 48) and out["alpha"].shape == (1, 40, 48) and out["depth"].shape == (1, 40, 48)
    p_color = _psnr(out["color"], ref["color"])
    p_alpha = _psnr(out["alpha"], ref["alpha"])
    print(f"PSNR color {p_color:.1f} dB, alpha {p_alpha:.1f} dB")
    assert p_color >= 40.0 and p_alpha >= 40.0
    assert float(ref["alpha"].mean()) > 0.05  # the scene is actually visible
    torch.testing.assert_close(out["depth"].double(), ref["depth"], atol=2e-3 * radius * 2, rtol=1e-3)


def test_small_tiles_and_chunks_agree():
    g = _scene(50, 5)
    cam = Camera.orbit(0.7, 0.3, 1.8, 45.0, 48, 40)
    from trellis_impl.render.gaussian_raster import _render_torch as impl  # one item, tile options
    bg = torch.zeros(3, dtype=torch.float64)
    a = impl(gaussian_tensors(g), cam, bg)
    b = impl(gaussian_tensors(g), cam, bg, tile=5, chunk=3)
    torch.testing.assert_close(a["color"], b["color"], atol=1e-5, rtol=1e-5)


def test_gaussians_object_renders():
    from trellis_impl.representations.gaussians import Gaussians
    g = _scene(30, 7, features=True)
    gs = Gaussians(aabb=[-0.5, -0.5, -0.5, 1.0, 1.0, 1.0])
    gs.from_xyz(g["xyz"])
    gs.from_features(g["features"])
    gs.from_scaling(g["scaling"])
    gs.from_rotation(g["rotation"] / g["rotation"].norm(dim=1, keepdim=True))
    gs.from_opacity(g["opacity"])
    cam = Camera.orbit(0.4, 0.2, 2.0, 40.0, 48, 40)
    out = render_gaussians(gs, cam)
    ref = reference_render(g, cam, (0, 0, 0))
    assert _psnr(out["color"], ref["color"]) >= 40.0


def test_orbit_camera_geometry():
    cam = Camera.orbit(0.8, 0.3, 2.5, 40.0, 64, 64)
    uvz = cam.project(torch.zeros(1, 3))[0]
    assert abs(uvz[0] - 32) < 1e-9 and abs(uvz[1] - 32) < 1e-9 and abs(uvz[2] - 2.5) < 1e-9
    torch.testing.assert_close(cam.position.norm(), torch.tensor(2.5, dtype=torch.float64))
    # off-origin target projects to the centre too
    cam_t = Camera.orbit(-1.0, -0.2, 1.5, 30.0, 40, 30, target=(0.1, -0.2, 0.3))
    uvz = cam_t.project(torch.tensor([[0.1, -0.2, 0.3]], dtype=torch.float64))[0]
    assert abs(uvz[0] - 20) < 1e-9 and abs(uvz[1] - 15) < 1e-9
    # pitch 0: +Z is up in the image (smaller v); yaw 0 camera sits on +Y (TRELLIS)
    cam0 = Camera.orbit(0.0, 0.0, 2.0, 40.0, 64, 64)
    assert float(cam0.project(torch.tensor([[0.0, 0.0, 0.3]]))[0, 1]) < 32
    torch.testing.assert_close(cam0.position, torch.tensor([0.0, 2.0, 0.0], dtype=torch.float64))
    # yaw 0 looking along -Y with +Z up: world +X is image left (x_cam = -X_world)
    assert float(cam0.project(torch.tensor([[0.3, 0.0, 0.0]]))[0, 0]) < 32
    # the rotation is orthonormal with det +1
    r = cam.extrinsics[:3, :3]
    torch.testing.assert_close(r @ r.T, torch.eye(3, dtype=torch.float64))
    assert abs(float(torch.linalg.det(r)) - 1) < 1e-9


def test_intrinsics_from_fov():
    cam = Camera.orbit(0.0, 0.0, 2.0, 40.0, 512, 512)
    f = 256 / math.tan(math.radians(20))
    assert abs(cam.fx - f) < 1e-9 and abs(cam.fy - f) < 1e-9 and cam.cx == 256 and cam.cy == 256
    # TRELLIS normalised intrinsics: fx = 0.5 / tan(fov / 2) in image widths
    assert abs(cam.fx / 512 - 0.5 / math.tan(math.radians(20))) < 1e-12
    k = cam.intrinsics
    assert k.shape == (3, 3) and k[0, 0] == cam.fx and k[1, 2] == 256


def test_orbit_cameras_turntable():
    cams = orbit_cameras(8, pitch=0.25, radius=2.0, fov_degrees=40.0, width=32, height=32)
    assert len(cams) == 8
    pos = torch.stack([c.position for c in cams])
    torch.testing.assert_close(pos.norm(dim=1), torch.full((8,), 2.0, dtype=torch.float64))
    torch.testing.assert_close(pos[:, 2], torch.full((8,), 2.0 * math.sin(0.25), dtype=torch.float64))
    yaws = torch.atan2(pos[:, 0], pos[:, 1])
    diffs = torch.remainder(yaws.roll(-1) - yaws, 2 * math.pi)
    torch.testing.assert_close(diffs, torch.full((8,), 2 * math.pi / 8, dtype=torch.float64))


def test_empty_gives_background():
    g = {"xyz": torch.zeros(0, 3), "scaling": torch.zeros(0, 3), "rotation": torch.zeros(0, 4),
         "opacity": torch.zeros(0, 1), "colors": torch.zeros(0, 3)}
    cam = Camera.orbit(0.0, 0.0, 2.0, 40.0, 20, 10)
    out = render_gaussians(g, cam, background=(0.25, 0.5, 1.0))
    assert out["color"].shape == (3, 10, 20)
    torch.testing.assert_close(out["color"][:, 3, 4], torch.tensor([0.25, 0.5, 1.0]))
    assert float(out["alpha"].abs().max()) == 0 and float(out["depth"].abs().max()) == 0


def test_all_behind_camera_gives_background():
    g = _scene(10, 9)
    cam = Camera.orbit(0.0, 0.0, 5.0, 40.0, 20, 10, near=10.0, far=20.0)
    out = render_gaussians(g, cam, background=(1, 1, 1))
    torch.testing.assert_close(out["color"], torch.ones(3, 10, 20))


@pytest.mark.parametrize("field", ["xyz", "scaling", "rotation", "opacity", "colors"])
def test_nan_raises_naming_field(field):
    g = _scene(10, 4)
    g[field] = g[field].clone()
    g[field].view(-1)[3] = float("nan")
    with pytest.raises(ValueError, match=field):
        render_gaussians(g, Camera.orbit(0.0, 0.0, 2.0, 40.0, 16, 16))


def test_a_batch_names_the_item_with_a_non_finite_field():
    scenes = [_scene(10, 4), _scene(12, 5)]
    scenes[1]["scaling"] = scenes[1]["scaling"].clone()
    scenes[1]["scaling"][2, 1] = float("inf")
    cameras = [Camera.orbit(0.0, 0.0, 2.0, 40.0, 16, 16)] * 2
    with pytest.raises(ValueError, match=r"'scaling' of item 1 has non-finite"):
        render_gaussians_batch(scenes, cameras, [(0, 0, 0)] * 2, backend="torch")


def test_unknown_backend_rejected():
    with pytest.raises(ValueError, match="gaussian_raster"):
        render_gaussians(_scene(3, 0), Camera.orbit(0.0, 0.0, 2.0, 40.0, 8, 8), backend="nope")


def test_a_batch_renders_each_item_as_alone():
    scenes = [_scene(40, 1), _scene(25, 2), _scene(40, 1)]
    cameras = [Camera.orbit(0.2 * k, 0.3, 1.8, 45.0, 32, 24) for k in range(3)]
    backgrounds = [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.2, 0.5, 0.9)]
    out = render_gaussians_batch([scenes[0], scenes[1], scenes[0]], cameras, backgrounds, backend="torch")
    assert out["color"].shape == (3, 3, 24, 32) and out["alpha"].shape == out["depth"].shape == (3, 1, 24, 32)
    for k, item in enumerate([scenes[0], scenes[1], scenes[0]]):
        alone = render_gaussians(item, cameras[k], backgrounds[k], backend="torch")
        for key in ("color", "alpha", "depth"):
            assert torch.equal(out[key][k], alone[key]), (k, key)
    with pytest.raises(ValueError, match="one camera and one background per item"):
        render_gaussians_batch(scenes, cameras[:2], backgrounds)
    with pytest.raises(ValueError, match="cameras of one size"):
        render_gaussians_batch(scenes[:2], [cameras[0], Camera.orbit(0.0, 0.3, 1.8, 45.0, 16, 16)], backgrounds[:2])
    with pytest.raises(ValueError, match=r"backgrounds\[1\] must be 3 finite values"):
        render_gaussians_batch(scenes[:2], cameras[:2], [(0, 0, 0), (0, float("nan"), 0)])


def test_padding_rows_are_transparent_and_keep_the_gradients():
    """What the batched gsplat path adds to shorter items changes no pixel (the PyTorch reference
    renders a padded item and the item alone alike) and passes gradients to the item's rows."""
    small, large = gaussian_tensors(_scene(20, 3)), gaussian_tensors(_scene(45, 4))
    leaf = {k: v.clone().requires_grad_(True) for k, v in small.items()}
    batch = pad_gaussians([leaf, large])
    assert batch["xyz"].shape == (2, 45, 3) and batch["opacity"].shape == (2, 45)
    assert torch.equal(batch["opacity"][0, 20:], torch.zeros(25)) and torch.equal(batch["xyz"][1], large["xyz"])
    camera = Camera.orbit(0.4, 0.3, 1.8, 45.0, 32, 32)
    padded = render_gaussians({k: v[0] for k, v in batch.items()}, camera, backend="torch")
    alone = render_gaussians(leaf, camera, backend="torch")
    torch.testing.assert_close(padded["color"], alone["color"], rtol=0, atol=1e-6)
    padded["color"].sum().backward()
    padded_grads = {k: v.grad.clone() for k, v in leaf.items()}
    for v in leaf.values():
        v.grad = None
    alone["color"].sum().backward()
    for key in ("xyz", "scaling", "opacity", "colors"):
        torch.testing.assert_close(padded_grads[key], leaf[key].grad, rtol=1e-5, atol=1e-7)
