"""Tests of the plain-PyTorch triangle-mesh rasteriser against analytic ray casting."""
import math

import pytest
import torch

from trellis_impl.backends.registry import available_backends
from trellis_impl.render.cameras import Camera
from trellis_impl.render.mesh_raster import MESH_RASTER, interpolate, rasterize, render_mesh, texture

RES = 128
N_LON, N_LAT = 64, 32
RADIUS = 0.5


def uv_sphere(radius=RADIUS, n_lon=N_LON, n_lat=N_LAT):
    """Grid UV sphere (outward winding), vertices on the sphere; pole triangles are degenerate."""
    pol = torch.linspace(0, math.pi, n_lat + 1, dtype=torch.float64)
    azi = torch.linspace(0, 2 * math.pi, n_lon + 1, dtype=torch.float64)
    p, a = torch.meshgrid(pol, azi, indexing="ij")
    verts = radius * torch.stack([p.sin() * a.cos(), p.sin() * a.sin(), p.cos()], -1).reshape(-1, 3)
    i, j = torch.meshgrid(torch.arange(n_lat), torch.arange(n_lon), indexing="ij")
    a_ = (i * (n_lon + 1) + j).reshape(-1)
    b_ = a_ + n_lon + 1
    faces = torch.cat([torch.stack([a_, b_, b_ + 1], 1), torch.stack([a_, b_ + 1, a_ + 1], 1)])
    return verts, faces


def cube(half=0.3):
    corners = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=torch.float64) * half
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = []
    for q in quads:
        faces += [(q[0], q[1], q[2]), (q[0], q[2], q[3])]
    faces = torch.tensor(faces)
    # make every face point away from the centre
    v = corners[faces]
    n = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    flip = (n * v.mean(1)).sum(1) < 0
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return corners, faces


def camera(yaw=0.7, pitch=0.4, res=RES):
    return Camera.orbit(yaw, pitch, 2.0, 40.0, res, res)


def rays(cam):
    """Per-pixel world ray origin [3] and directions [H, W, 3] scaled so camera z = 1."""
    j, i = torch.meshgrid(torch.arange(cam.height, dtype=torch.float64) + 0.5,
                          torch.arange(cam.width, dtype=torch.float64) + 0.5, indexing="ij")
    d_cam = torch.stack([(i - cam.cx) / cam.fx, (j - cam.cy) / cam.fy, torch.ones_like(i)], -1)
    return cam.position, d_cam @ cam.extrinsics[:3, :3]


def test_family_registered():
    assert "torch" in MESH_RASTER.names()
    assert "torch" in available_backends(torch.device("cpu"))["mesh_raster"]


def test_sphere_depth_normals_mask_barycentrics():
    verts, faces = uv_sphere()
    cam = camera()
    r = rasterize(verts, faces, cam)
    o, d = rays(cam)
    # analytic ray-sphere: |o + t d|^2 = R^2, t is the camera depth
    a = (d * d).sum(-1)
    b = 2 * (d * o).sum(-1)
    c = (o * o).sum() - RADIUS ** 2
    disc = b * b - 4 * a * c
    hit_true = disc > 0
    t_true = (-b - disc.clamp_min(0).sqrt()) / (2 * a)
    hit = r["triangle_id"] >= 0
    # the inscribed polyhedron is inside the sphere: its silhouette is inside the analytic one
    assert not bool((hit & ~hit_true).any())
    radius_px = cam.fx * math.tan(math.asin(RADIUS / 2.0))
    mismatches = int((hit != hit_true).sum())
    assert mismatches <= 2 * math.pi * radius_px, mismatches
    assert int(hit.sum()) > 4000
    # the surface point lies between the sphere and the facet depth (sagitta)
    facet = 2 * math.pi / N_LON
    sagitta = RADIUS * (1 - math.cos(facet))
    p = o + r["depth"][..., None] * d
    rad = p[hit].norm(dim=-1)
    assert float((RADIUS - rad).min()) > -1e-9
    assert float((RADIUS - rad).max()) <= sagitta
    # depth vs analytic where the ray meets the sphere at incidence cos > 0.5
    n_true = (o + t_true[..., None] * d)
    n_true = n_true / n_true.norm(dim=-1, keepdim=True)
    cos_inc = -(n_true * d / d.norm(dim=-1, keepdim=True)).sum(-1)
    good = hit & (cos_inc > 0.5)
    err = (r["depth"][good] - t_true[good])
    assert float(err.min()) > -1e-9 and float(err.max()) <= sagitta / 0.5
    # flat normals vs analytic, within the facet angle
    out = render_mesh((verts, faces), cam)
    nrm = out["normal"].permute(1, 2, 0)
    cosang = (nrm[hit] * n_true[hit]).sum(-1)
    assert float(cosang.min()) >= math.cos(facet)
    assert torch.equal(out["mask"][0] > 0, hit)
    assert torch.allclose(out["depth"][0][hit], r["depth"][hit])
    assert float(out["depth"][0][~hit].abs().max()) == 0.0
    # barycentrics: sum to 1, interpolated positions are the ray points
    bary = r["barycentrics"][hit]
    assert torch.allclose(bary.sum(-1), torch.ones_like(bary[:, 0]), atol=1e-12)
    assert float(bary.min()) >= 0
    pos = interpolate(verts, r)
    assert float((pos[hit] - p[hit]).abs().max()) < 1e-9
    assert float(pos[~hit].abs().max()) == 0.0
    assert torch.isinf(r["depth"][~hit]).all()


def test_cube_exact():
    verts, faces = cube()
    cam = camera(yaw=0.5, pitch=0.5)
    r = rasterize(verts, faces, cam)
    o, d = rays(cam)
    # analytic ray-box (slab) intersection
    t1 = (-0.3 - o) / d
    t2 = (0.3 - o) / d
    tmin, tmax = torch.minimum(t1, t2), torch.maximum(t1, t2)
    t_near, axis = tmin.max(-1)
    t_far = tmax.min(-1).values
    hit_true = t_near < t_far
    hit = r["triangle_id"] >= 0
    assert int(hit.sum()) > 1000
    assert int((hit != hit_true).sum()) <= 4 * RES  # only pixel centres on the silhouette edges
    both = hit & hit_true
    assert float((r["depth"][both] - t_near[both]).abs().max()) < 1e-4
    n_true = torch.zeros(RES, RES, 3, dtype=torch.float64)
    n_true.scatter_(-1, axis[..., None], -torch.sign(d).gather(-1, axis[..., None]))
    out = render_mesh((verts, faces), cam)
    nrm = out["normal"].permute(1, 2, 0)
    # pixels whose centre is within 1e-9 of a cube edge may pick either face
    top2 = tmin.topk(2, dim=-1).values
    interior = both & ((top2[..., 0] - top2[..., 1]) > 1e-9)
    assert float((nrm[interior] - n_true[interior]).abs().max()) < 1e-12
    assert torch.allclose(interpolate(verts, r)[both], (o + r["depth"][..., None] * d)[both], atol=1e-12)


def test_chunking_invariant_and_float32():
    verts, faces = uv_sphere(n_lon=24, n_lat=12)
    cam = camera(res=64)
    from trellis_impl.render.mesh_raster import _rasterize_torch_view
    a = _rasterize_torch_view(verts, faces, cam)
    b = _rasterize_torch_view(verts, faces, cam, pair_chunk=50)
    assert torch.equal(a["triangle_id"], b["triangle_id"])
    assert torch.equal(a["depth"], b["depth"])
    c = rasterize(verts.float(), faces, cam)
    assert c["depth"].dtype == torch.float32
    agree = (c["triangle_id"] == a["triangle_id"]).float().mean()
    assert float(agree) > 0.99
    both = (c["triangle_id"] >= 0) & (a["triangle_id"] >= 0)
    assert float((c["depth"][both].double() - a["depth"][both]).abs().max()) < 1e-3


def test_attributes_and_mesh_object():
    from trellis_impl.representations.mesh import Mesh
    verts, faces = uv_sphere(n_lon=16, n_lat=8)
    attrs = torch.rand(verts.shape[0], 6, dtype=torch.float64)
    mesh = Mesh(verts.float(), faces, attrs.float())
    out = render_mesh(mesh, camera(res=48), attributes=mesh.vertex_attrs)
    assert out["attrs"].shape == (6, 48, 48)
    m = out["mask"][0] > 0
    assert float(out["attrs"][:, m].min()) >= 0 and float(out["attrs"][:, m].max()) <= 1
    assert float(out["attrs"][:, ~m].abs().max()) == 0


def test_texture_checkerboard():
    t = 8
    rr, cc = torch.meshgrid(torch.arange(t), torch.arange(t), indexing="ij")
    img = torch.stack([((rr + cc) % 2).double(), rr.double() / t, cc.double() / t], -1)  # [T, T, 3]
    # texel centres (glTF: u along columns, v down the rows, (0, 0) the top-left corner)
    uv = torch.stack([(cc.double() + 0.5) / t, (rr.double() + 0.5) / t], -1)
    assert torch.allclose(texture(img, uv), img, atol=1e-12)
    # halfway between texel (0, 0) and (0, 1): the average; corners clamp to edge texels
    uv2 = torch.tensor([[[1.0 / t, 0.5 / t], [0.0, 0.0], [1.0, 1.0]]], dtype=torch.float64)
    out = texture(img, uv2)
    assert torch.allclose(out[0, 0], (img[0, 0] + img[0, 1]) / 2)
    assert torch.allclose(out[0, 1], img[0, 0])
    assert torch.allclose(out[0, 2], img[-1, -1])


def test_empty_nan_behind():
    cam = camera(res=32)
    r = rasterize(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long), cam)
    assert (r["triangle_id"] == -1).all() and torch.isinf(r["depth"]).all()
    out = render_mesh((torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long)), cam)
    assert float(out["mask"].sum()) == 0
    verts, faces = cube()
    bad = verts.clone()
    bad[5, 1] = float("nan")
    with pytest.raises(ValueError, match=r"vertices.*5"):
        rasterize(bad, faces, cam)
    with pytest.raises(ValueError, match="face indices"):
        rasterize(verts, faces + 100, cam)
    # the cube moved behind the camera: background
    back = cam.position - 3.0 * (torch.zeros(3, dtype=torch.float64) - cam.position) / cam.position.norm()
    r = rasterize(verts + back, faces, cam)
    assert (r["triangle_id"] == -1).all()
    # a triangle straddling the near plane is culled whole (no clipping)
    z_axis = cam.extrinsics[2, :3]
    tri = torch.stack([cam.position + 0.1 * z_axis, cam.position + z_axis + torch.tensor([0.5, 0, 0.5], dtype=torch.float64),
                       cam.position + z_axis - torch.tensor([0.5, 0, 0.5], dtype=torch.float64)])
    r = rasterize(tri, torch.tensor([[0, 1, 2]]), cam)
    assert (r["triangle_id"] == -1).all()
