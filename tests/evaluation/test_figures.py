"""The quality figures of docs/demo_model.md against hand-computed values."""
import math

import pytest
import torch

from trellis_impl.evaluation import (dominant_colour, front_camera, psnr, silhouette_iou, square_crop,
                                     summarise, GenerationScore)


def _disc(size: int, cy: float, cx: float, r: float) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    return (((yy - cy) ** 2 + (xx - cx) ** 2) < r ** 2).float()


def test_psnr_of_a_known_error():
    a = torch.zeros(3, 8, 8)
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-6)  # 0.1 in float32
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(a, torch.zeros(3, 8, 9))


def test_silhouette_iou_ignores_scale_and_position_not_shape():
    small = _disc(256, 60, 80, 30)
    large = _disc(256, 150, 140, 90)
    assert silhouette_iou(small, large) > 0.95
    box = torch.zeros(256, 256)
    box[50:200, 50:200] = 1
    # a disc inscribed in a square: pi / 4 of it
    assert silhouette_iou(large, box) == pytest.approx(math.pi / 4, abs=0.03)
    wide = torch.zeros(256, 256)
    wide[100:140, 20:220] = 1  # 5:1 box against a square: the square crop keeps the aspect
    assert silhouette_iou(wide, box) == pytest.approx(0.2, abs=0.02)
    with pytest.raises(ValueError, match="no object pixel"):
        square_crop(torch.zeros(16, 16))


def test_square_crop_of_an_object_at_the_border():
    alpha = torch.zeros(64, 64)
    alpha[0:10, 0:40] = 1  # the square of side 40 leaves the image: zeros are padded, not stretched
    crop = square_crop(alpha, size=40)
    assert crop.shape == (40, 40) and float(crop.sum()) == pytest.approx(400.0)


def test_dominant_colour_is_the_majority_colour():
    rgb = torch.zeros(3, 10, 10)
    rgb[:, :, :7] = torch.tensor([0.8, 0.2, 0.1])[:, None, None]
    rgb[:, :, 7:] = torch.tensor([0.1, 0.1, 0.9])[:, None, None]
    alpha = torch.ones(10, 10)
    assert torch.allclose(dominant_colour(rgb, alpha), torch.tensor([0.8, 0.2, 0.1]))
    alpha[:, :5] = 0  # now the blue part is the larger share of the object
    assert torch.allclose(dominant_colour(rgb, alpha), torch.tensor([0.1, 0.1, 0.9]))


def test_dominant_colour_does_not_split_at_histogram_cell_boundaries():
    # 60 % brown whose green straddles the 3/8 cell boundary (0.37 / 0.38), 40 % white
    rgb = torch.zeros(3, 10, 10)
    rgb[:, :6] = torch.tensor([0.58, 0.37, 0.14])[:, None, None]
    rgb[1, :6:2] = 0.38
    rgb[:, 6:] = torch.tensor([0.95, 0.9, 0.8])[:, None, None]
    colour = dominant_colour(rgb, torch.ones(10, 10))
    assert torch.allclose(colour, torch.tensor([0.58, 0.375, 0.14]), atol=1e-6)


def test_front_camera_sits_on_minus_y():
    camera = front_camera(pitch=0.0)
    eye = -camera.extrinsics[:3, :3].T @ camera.extrinsics[:3, 3]
    assert torch.allclose(eye.float(), torch.tensor([0.0, -2.0, 0.0]), atol=1e-6)


def test_summary():
    scores = [GenerationScore(0.8, [0, 0, 0], [0, 0, 0.05], 0.05), GenerationScore(0.6, [0, 0, 0], [0.2, 0, 0], 0.2)]
    summary = summarise(scores, [30.0, 26.0])
    assert summary == {"objects": 2, "mean_iou": pytest.approx(0.7), "mean_colour_error": pytest.approx(0.125),
                       "colours_within_0.1": 0.5, "mean_psnr_db": 28.0}


def test_voxel_silhouette_of_a_block_matches_the_box_it_fills():
    from trellis_impl.encoding import TexturedMesh
    from trellis_impl.evaluation import picture_of_mesh, voxel_alpha
    from trellis_impl.pipelines.voxelize import voxelize_mesh
    import trimesh
    box = trimesh.creation.box(extents=(0.5, 0.25, 0.75))
    mesh = TexturedMesh.from_arrays(torch.as_tensor(box.vertices), torch.as_tensor(box.faces),
                                    vertex_colors=torch.full((len(box.vertices), 3), 0.5))
    camera = front_camera(128)
    picture = picture_of_mesh(mesh, camera)
    coords = voxelize_mesh(mesh.vertices, mesh.faces, resolution=32)
    solid = torch.stack(torch.meshgrid(*[torch.arange(int(coords[:, k].min()), int(coords[:, k].max()) + 1)
                                         for k in range(3)], indexing="ij"), -1).reshape(-1, 3)
    alpha = voxel_alpha(solid, 32, camera)
    assert alpha.shape == (128, 128)
    assert silhouette_iou(picture[3], alpha) > 0.95  # within a voxel's rounding of the outline
    # the shell the voxeliser gives has the same silhouette as the filled block
    assert torch.equal(voxel_alpha(coords, 32, camera), alpha)
    # a block of half the depth seen from the front: the same outline, so shape, not size, counts
    assert silhouette_iou(alpha, voxel_alpha(solid[solid[:, 1] == solid[:, 1].min()], 32, camera)) > 0.8


def test_structure_figures_of_a_random_folder(tmp_path):
    from trellis_impl.evaluation import score_structures
    from trellis_impl.pipelines import ImageTo3DPipeline, write_random_model_folder
    pipeline = ImageTo3DPipeline.from_folder(write_random_model_folder(tmp_path / "random"))
    found = score_structures(pipeline, [("cup", 9)], size=96, log=None)
    assert len(found) == 1 and found[0].name.startswith("cup")
    assert found[0].true_voxels > 0 and found[0].ceiling_iou > 0.5  # the object's own voxels
    assert 0.0 <= found[0].iou <= 1.0 and found[0].as_dict()["voxels"] == found[0].voxels
    picture, own, generated = found[0].silhouettes  # the figures' own silhouettes
    assert found[0].silhouettes.shape == (3, 96, 96)
    assert silhouette_iou(picture, own) == pytest.approx(found[0].ceiling_iou)
    assert silhouette_iou(picture, generated) == pytest.approx(found[0].iou) or found[0].voxels == 0


def test_mesh_files_are_scored_as_the_procedural_objects_are(tmp_path):
    """``score_meshes`` (real objects, ``demo_quality.py --meshes``): a file read with its colour and
    turned Z up, pictured from the front, generated and scored under its file's stem; and
    ``score_objects`` is that same scoring on the procedural meshes."""
    import trimesh
    from trellis_impl.encoding.assets import load_textured_mesh
    from trellis_impl.evaluation import score_meshes, score_objects, textured_procedural_object
    from trellis_impl.pipelines import ImageTo3DPipeline, write_random_model_folder
    pipeline = ImageTo3DPipeline.from_folder(write_random_model_folder(tmp_path / "random"))
    box = trimesh.creation.box((0.4, 0.8, 0.2))  # glTF frame: Y up, so 0.8 is its height once Z up
    box.visual.face_colors = [200, 30, 30, 255]
    box.export(tmp_path / "red_box.glb")
    (found,) = score_meshes(pipeline, [("red_box", lambda: load_textured_mesh(tmp_path / "red_box.glb", up="auto"))],
                            size=64, psnr_views=None)
    assert found.name == "red_box" and found.psnr_db is None
    assert found.score.colour_input == pytest.approx([200 / 255, 30 / 255, 30 / 255], abs=0.02)
    alpha = found.picture[3] > 0.5
    rows, cols = alpha.any(1).nonzero(), alpha.any(0).nonzero()
    assert (rows.max() - rows.min()) > 1.5 * (cols.max() - cols.min())  # upright: taller than wide
    (procedural,) = score_objects(pipeline, [("cup", 9)], size=64, psnr_views=None)
    (same,) = score_meshes(pipeline, [("cup_000009", lambda: textured_procedural_object("cup", 9))], size=64,
                           psnr_views=None)
    assert procedural.name == "cup_000009" and procedural.as_dict() | {"seconds": 0} == same.as_dict() | {"seconds": 0}
