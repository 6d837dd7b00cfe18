"""Tests of the torch ray-marching renderer of the Strivec radiance field."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trellis_impl.render.cameras import Camera, look_at_extrinsics
from trellis_impl.render.radiance_field_render import SH_C0, render_radiance_field
from trellis_impl.representations.radiance_field import Strivec

RES = 4
AABB = [-0.5, -0.5, -0.5, 1.0, 1.0, 1.0]
EDGE = 1.0 / RES


def make_field(cells, raw_density, rgb, rank=2, dim=5, density_shift=0.0):
    """Voxels at integer ``cells`` whose CP product is the constant 1 (trivec all ones), so the
    raw density is ``sum_r density_r`` and the SH colour ``sum_r features_dc_r``."""
    cells = torch.tensor(cells, dtype=torch.float32).reshape(-1, 3)
    n = cells.shape[0]
    trivec = torch.ones(n, rank, 3, dim)
    density = torch.full((n, rank), raw_density / rank)
    dc = (torch.tensor(rgb, dtype=torch.float32) - 0.5) / SH_C0
    features_dc = (dc / rank).expand(n, rank, 1, 3).clone()
    return Strivec(RES, AABB, (cells + 0.5) / RES, torch.full((n, 1), 2, dtype=torch.uint8),
                   trivec, density, features_dc, density_shift=density_shift)


def world_centre(cell):
    return [-0.5 + (c + 0.5) * EDGE for c in cell]


def axis_camera(cell, size=9, focal=200.0):
    """Camera 2 units in front of ``cell`` on -Y, looking along +Y, centre pixel on its centre."""
    c = world_centre(cell)
    eye = [c[0], c[1] - 2.0, c[2]]
    extr = look_at_extrinsics(eye, c, [0.0, 0.0, 1.0])
    return Camera(extr, focal, focal, size / 2.0, size / 2.0, size, size)


@pytest.mark.parametrize("step", [None, 0.03])
def test_single_voxel_transmittance_and_colour(step):
    cell = (1, 2, 1)
    raw, rgb = 3.0, (0.9, 0.2, 0.4)
    field = make_field([cell], raw, rgb)
    out = render_radiance_field(field, axis_camera(cell), background=(0, 0, 0), step=step)
    sigma = F.softplus(torch.tensor(raw)).item()
    expected_alpha = 1.0 - math.exp(-sigma * EDGE)
    a = out["alpha"][0, 4, 4].item()
    tol = 1e-5 if step is None else sigma * step * 1.01  # aligned half-voxel steps are exact
    assert abs(a - expected_alpha) <= tol
    col = out["color"][:, 4, 4]
    assert torch.allclose(col, torch.tensor(rgb) * a, atol=1e-5)
    assert out["color"].shape == (3, 9, 9) and out["alpha"].shape == (1, 9, 9)


def test_density_shift_and_activation():
    cell = (2, 1, 2)
    field = make_field([cell], 1.0, (0.5, 0.5, 0.5), density_shift=2.0)
    out = render_radiance_field(field, axis_camera(cell), activation="relu")
    assert abs(out["alpha"][0, 4, 4].item() - (1 - math.exp(-3.0 * EDGE))) < 1e-5
    with pytest.raises(ValueError):
        render_radiance_field(field, axis_camera(cell), activation="nope")


def test_two_voxels_along_ray_compose():
    # Two voxels one behind the other along +Y: optical depth adds.
    field = make_field([(1, 1, 1), (1, 2, 1)], 2.0, (0.3, 0.6, 0.9))
    out = render_radiance_field(field, axis_camera((1, 1, 1)))
    sigma = F.softplus(torch.tensor(2.0)).item()
    assert abs(out["alpha"][0, 4, 4].item() - (1 - math.exp(-sigma * 2 * EDGE))) < 1e-5


def test_empty_field_is_background():
    field = make_field([(1, 1, 1)], 0.0, (1, 1, 1))
    empty = Strivec(RES, AABB, torch.zeros(0, 3), torch.zeros(0, 1, dtype=torch.uint8),
                    torch.zeros(0, 2, 3, 5), torch.zeros(0, 2), torch.zeros(0, 2, 1, 3))
    bg = (0.2, 0.4, 0.6)
    out = render_radiance_field(empty, axis_camera((1, 1, 1)), background=bg)
    assert torch.allclose(out["color"], torch.tensor(bg).view(3, 1, 1).expand(3, 9, 9))
    assert out["alpha"].abs().max() == 0 and out["depth"].abs().max() == 0
    # A ray that misses the only voxel also sees the background.
    out = render_radiance_field(field, axis_camera((2, 2, 2)), background=bg)
    assert torch.allclose(out["color"][:, 4, 4], torch.tensor(bg))


def test_opaque_voxel_depth_is_front_face():
    cell = (1, 1, 2)
    field = make_field([cell], 500.0, (1.0, 1.0, 1.0))
    cam = axis_camera(cell)
    out = render_radiance_field(field, cam, background=(0, 0, 0), step=0.005)
    a = out["alpha"][0, 4, 4].item()
    assert a > 0.999
    front = 2.0 - EDGE / 2  # camera 2 units from the centre, looking along the axis
    assert abs(out["depth"][0, 4, 4].item() / a - front) < 0.01
    # With a wide view, pixels whose rays miss the voxel are transparent.
    wide = render_radiance_field(field, axis_camera(cell, focal=20.0), step=0.005)["alpha"][0]
    assert wide[4, 4].item() > 0.999 and wide[0, 0].item() == 0.0 and wide[4, 0].item() == 0.0


def test_trivec_cp_product_is_used():
    # Rank 1, x-vector linear 0 -> 2 across the voxel: mean density along a ray through the
    # voxel centre parallel to Y is that of u_x = 0.5, i.e. factor 1.
    cell = (1, 1, 1)
    field = make_field([cell], 4.0, (0.5, 0.5, 0.5), rank=1, dim=3)
    field.trivec[0, 0, 0] = torch.tensor([0.0, 1.0, 2.0])
    out = render_radiance_field(field, axis_camera(cell), activation="identity")
    assert abs(out["alpha"][0, 4, 4].item() - (1 - math.exp(-4.0 * EDGE))) < 1e-5
    # Zeroing the z vector kills the density.
    field.trivec[0, 0, 2] = 0.0
    out = render_radiance_field(field, axis_camera(cell), activation="identity")
    assert out["alpha"].abs().max().item() < 1e-7


def test_chunking_and_sample_blocks_do_not_change_result(monkeypatch):
    import trellis_impl.render.radiance_field_render as rfr
    torch.manual_seed(0)
    cells = [(1, 1, 1), (2, 1, 1), (1, 2, 2), (2, 2, 1), (0, 3, 2)]
    field = make_field(cells, 2.0, (0.2, 0.7, 0.4), rank=3, dim=4)
    field.trivec = torch.rand_like(field.trivec) + 0.5
    field.features_dc = torch.randn_like(field.features_dc)
    cam = axis_camera((1, 1, 1), size=17, focal=25.0)
    ref = render_radiance_field(field, cam, background=(0.3, 0.3, 0.3))
    monkeypatch.setattr(rfr, "RAY_CHUNK", 7)
    monkeypatch.setattr(rfr, "SAMPLE_BLOCK", 3)
    out = render_radiance_field(field, cam, background=(0.3, 0.3, 0.3))
    for key in ("color", "alpha", "depth"):
        assert torch.allclose(ref[key], out[key], atol=1e-6), key
    assert ref["alpha"].max() > 0.3


def test_float64_field_and_bad_inputs():
    field = make_field([(1, 1, 1)], 3.0, (0.5, 0.5, 0.5))
    f64 = Strivec(RES, AABB, field.position.double(), field.depth, field.trivec.double(),
                  field.density.double(), field.features_dc.double())
    out = render_radiance_field(f64, axis_camera((1, 1, 1)))
    assert out["color"].dtype == torch.float64
    with pytest.raises(ValueError):
        render_radiance_field(field, axis_camera((1, 1, 1)), background=(0, 0))
    with pytest.raises(ValueError):
        render_radiance_field(field, axis_camera((1, 1, 1)), step=0.0)
