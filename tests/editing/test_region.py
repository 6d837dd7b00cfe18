"""Edit regions: boxes in glTF axes, mesh insides, dilation, latent cells, errors."""
from __future__ import annotations

import pytest
import torch

from trellis_impl.editing import (box_region, check_region, coords_in_region, dilate_region, latent_region,
                                  mesh_region, points_region)


def cube_mesh(half):
    v = torch.tensor([[x, y, z] for x in (-half, half) for y in (-half, half) for z in (-half, half)],
                     dtype=torch.float64)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = torch.tensor([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))])
    return v, faces


def test_gltf_top_box_selects_high_trellis_z():
    region = box_region([[-0.5, 0.25, -0.5], [0.5, 0.5, 0.5]], resolution=16)  # glTF +Y = up
    assert region[:, :, 12:].all() and not region[:, :, :12].any()
    front = box_region([[-0.5, -0.5, 0.25], [0.5, 0.5, 0.5]], resolution=16)  # glTF +Z = TRELLIS -y
    assert front[:, :4, :].all() and not front[:, 4:, :].any()
    trellis = box_region([[-0.5, -0.5, 0.25], [0.5, 0.5, 0.5]], resolution=16, frame="trellis")
    assert torch.equal(trellis, region)


def test_several_boxes_and_partial_overlap():
    region = box_region([[-0.5, -0.5, -0.5, -0.45, -0.45, -0.45], [0.4, 0.4, 0.4, 0.9, 0.9, 0.9]], resolution=16,
                        frame="trellis")
    assert region[0, 0, 0] and region[15, 15, 15] and region[14, 14, 14]
    assert int(region.sum()) == 1 + 8  # [0.4, 0.5] overlaps voxels 14 (0.375..0.4375) and 15
    assert region.shape == (16, 16, 16) and region.dtype == torch.bool


@pytest.mark.parametrize("boxes, message", [
    ([[0.6, 0.6, 0.6], [0.9, 0.9, 0.9]], "outside"),
    ([[0.2, 0.0, 0.0], [0.1, 0.3, 0.3]], "min"),
    ([[float("nan"), 0, 0], [0.1, 0.1, 0.1]], "NaN"),
    ([], "boxes must be"),
])
def test_box_errors(boxes, message):
    with pytest.raises(ValueError, match=message):
        box_region(boxes, resolution=16)


def test_empty_region_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        check_region(torch.zeros(16, 16, 16, dtype=torch.bool))


def test_mesh_inside_of_a_closed_cube_is_the_voxel_block():
    v, f = cube_mesh(0.22)  # -0.22 + 0.5 = 0.28 * 16 = 4.48 -> voxel 4; 0.72 * 16 -> voxel 11
    region = mesh_region(v, f, resolution=16)
    expected = torch.zeros(16, 16, 16, dtype=torch.bool)
    expected[4:12, 4:12, 4:12] = True
    assert torch.equal(region, expected)
    side = torch.linspace(-0.22, 0.22, 45, dtype=torch.float64)
    shell = torch.cartesian_prod(side, side, side)
    shell = shell[(shell.abs() > 0.215).any(1)]  # points on the cube's surface only, inside filled
    assert torch.equal(points_region(shell, resolution=16), expected)


def test_mesh_region_in_gltf_axes_is_moved_like_boxes():
    v, f = cube_mesh(0.1)
    v = v + torch.tensor([0.0, 0.3, 0.0], dtype=torch.float64)  # glTF up
    region = mesh_region(v, f, resolution=16)
    z = region.nonzero()[:, 2]
    assert int(z.min()) >= 11
    with pytest.raises(ValueError, match="outside"):
        mesh_region(v + 2.0, f, resolution=16)


def test_dilation_latent_cells_and_membership():
    region = torch.zeros(16, 16, 16, dtype=torch.bool)
    region[5, 5, 5] = True
    grown = dilate_region(region, 1)
    assert int(grown.sum()) == 27 and grown[4:7, 4:7, 4:7].all()
    cells = latent_region(region, 4)
    assert cells.shape == (4, 4, 4) and int(cells.sum()) == 1 and cells[1, 1, 1]
    corner = torch.zeros(16, 16, 16, dtype=torch.bool)
    corner[4, 4, 4] = True
    assert int(latent_region(dilate_region(corner, 1), 4).sum()) == 8  # voxels 3..5 span cells 0 and 1
    coords = torch.tensor([[0, 5, 5, 5], [0, 5, 5, 6]], dtype=torch.int32)
    assert coords_in_region(coords, region).tolist() == [True, False]
    assert coords_in_region(coords[:, 1:], grown).tolist() == [True, True]


def test_edit_region_is_the_union_of_boxes_and_mesh():
    from trellis_impl.editing import edit_region
    boxes = [[-0.5, 0.1, -0.5, 0.5, 0.5, 0.5]]
    cube = torch.tensor([[x, y, z] for x in (-0.4, -0.2) for y in (-0.4, -0.2) for z in (-0.4, -0.2)],
                        dtype=torch.float64)
    import trimesh
    faces = torch.as_tensor(trimesh.convex.convex_hull(cube.numpy()).faces)
    only_boxes = edit_region(16, boxes=boxes, border=1)
    only_mesh = edit_region(16, mesh=(cube, faces), border=1)
    assert torch.equal(only_boxes, box_region(boxes, resolution=16, dilate=1))
    assert torch.equal(only_mesh, mesh_region(cube, faces, resolution=16, dilate=1))
    assert torch.equal(edit_region(16, boxes=boxes, mesh=(cube, faces), border=1), only_boxes | only_mesh)
    with pytest.raises(ValueError, match="region: give at least one box"):
        edit_region(16)
