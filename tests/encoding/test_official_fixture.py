"""The feature-extraction steps against the official code's own outputs (tests/fixtures/encoding,
made by running dataset_toolkits/extract_feature.py's steps and utils.py on CPU; see its README)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from trellis_impl.conditioning.image_preprocess import normalize_imagenet
from trellis_impl.encoding import (FeatureAccumulator, camera_from_frame, camera_to_frame, hammersley_cameras,
                                   hammersley_yaw_pitch, project_to_grid, sample_token_maps, view_pixels,
                                   voxel_centers)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "encoding"


@pytest.fixture(scope="module", name="official")
def official_fixture():
    return load_file(str(FIXTURE / "official_features.safetensors"))


@pytest.fixture(scope="module", name="setup")
def setup_fixture():
    return json.loads((FIXTURE / "frames.json").read_text())


def test_hammersley_yaw_pitch_is_official(official, setup):
    ours = torch.tensor([hammersley_yaw_pitch(i, setup["num_views"], setup["offset"])
                         for i in range(setup["num_views"])], dtype=torch.float64)
    torch.testing.assert_close(ours, official["hammersley_yaw_pitch"], rtol=0, atol=1e-12)


def test_view_pixels_are_official(official, setup):
    rows, cols = official["pixel_index"].unbind(1)
    for k, frame in enumerate(setup["frames"]):
        rgba = np.asarray(Image.open(FIXTURE / frame["file_path"]))
        pixels = view_pixels(rgba)
        assert pixels.shape == (3, 518, 518) and pixels.dtype == torch.float32
        torch.testing.assert_close(pixels[:, rows, cols], official["pixels"][k], rtol=0, atol=1e-7)
        torch.testing.assert_close(normalize_imagenet(pixels)[:, rows, cols], official["pixels_normalised"][k],
                                   rtol=1e-6, atol=1e-6)


def test_cameras_are_official(official, setup):
    cameras = hammersley_cameras(setup["num_views"], setup["offset"], resolution=setup["resolution"])
    for k, (view, frame) in enumerate(zip(setup["view_ids"], setup["frames"])):
        from_frame = camera_from_frame(frame, setup["resolution"])
        for camera in (cameras[view], from_frame):
            torch.testing.assert_close(camera.extrinsics.float(), official["extrinsics"][k], rtol=0, atol=2e-6)
            normalised = camera.intrinsics / torch.tensor([[camera.width], [camera.height], [1.0]], dtype=torch.float64)
            torch.testing.assert_close(normalised.float(), official["intrinsics"][k], rtol=1e-6, atol=1e-6)
        # and back: our camera as a transforms.json frame is the frame the official renderer wrote
        ours = camera_to_frame(cameras[view])
        assert ours["camera_angle_x"] == pytest.approx(frame["camera_angle_x"], abs=1e-12)
        np.testing.assert_allclose(ours["transform_matrix"], frame["transform_matrix"], atol=1e-12)


def test_projection_sampling_and_mean_are_official(official, setup):
    index = official["voxel_index"]
    positions = voxel_centers(index, 64)
    torch.testing.assert_close(positions, official["positions"], rtol=0, atol=0)
    cameras = [camera_from_frame(frame, setup["resolution"]) for frame in setup["frames"]]
    grid = project_to_grid(positions, cameras)
    torch.testing.assert_close(grid, official["uv"], rtol=0, atol=2e-6)
    assert (grid.abs() > 1).any(), "the fixture should cover voxels projecting outside the image (zero padding)"
    samples = sample_token_maps(official["token_maps"], official["uv"])
    torch.testing.assert_close(samples, official["samples"], rtol=1e-6, atol=1e-6)
    accumulator = FeatureAccumulator()
    for k in range(samples.shape[0]):  # view by view: batching does not change the mean
        accumulator.add(samples[k:k + 1])
    torch.testing.assert_close(accumulator.mean(rounded=False), official["features_mean_float32"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(accumulator.mean(), official["features_float16"].float(), rtol=0, atol=0)
    # the whole chain from our cameras (projection in float64, the official in float32: uv differ by
    # < 3e-7, which the random maps' slopes (~30 per unit of uv) turn into < 1e-5): float16 values
    # equal up to one float16 step plus that
    whole = FeatureAccumulator()
    whole.add(sample_token_maps(official["token_maps"], project_to_grid(positions, cameras)))
    expected = official["features_float16"].float()
    step = torch.maximum(whole.mean().abs(), expected.abs()).clamp_min(2 ** -14) * 2 ** -10
    assert ((whole.mean() - expected).abs() <= step + 1e-5).all()
    assert (whole.mean() == expected).float().mean() > 0.95
