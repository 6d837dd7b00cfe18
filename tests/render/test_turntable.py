"""Tests of the turntable renderer (ComfyUI IMAGE batches)."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from trellis_impl.render.cameras import orbit_cameras
from trellis_impl.render.gaussian_raster import render_gaussians
from trellis_impl.render.turntable import turntable

HAS_MESH = importlib.util.find_spec("trellis_impl.render.mesh_raster") is not None


def scene():
    """Asymmetric Gaussians: red on +X, green on +Y, blue above."""
    return {
        "xyz": torch.tensor([[0.3, 0.0, 0.0], [0.0, 0.25, 0.0], [-0.1, -0.1, 0.2]]),
        "scaling": torch.full((3, 3), 0.08),
        "rotation": torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(3, 1),
        "opacity": torch.tensor([0.9, 0.9, 0.9]),
        "colors": torch.eye(3),
    }


def tetra():
    v = torch.tensor([[0.3, 0.0, -0.2], [-0.2, 0.25, -0.2], [-0.2, -0.25, -0.2], [0.0, 0.0, 0.3]])
    f = torch.tensor([[0, 2, 1], [0, 1, 3], [1, 2, 3], [2, 0, 3]])
    return v, f


def test_gaussian_batch_shape_range_and_motion():
    out = turntable(gaussians=scene(), frames=4, size=24, pitch=0.3)
    assert out.shape == (4, 24, 24, 3) and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # Something is drawn over the white background, and the views differ as the camera turns.
    assert float((out < 0.99).any(-1).float().mean()) > 0.01
    for k in range(1, 4):
        assert (out[k] - out[0]).abs().max() > 0.05


def test_frame0_matches_direct_render():
    out = turntable(gaussians=scene(), frames=3, size=20, pitch=0.25, background=(0.1, 0.2, 0.3))
    cam = orbit_cameras(3, pitch=0.25, radius=2.0, fov_degrees=40.0, width=20, height=20)[0]
    ref = render_gaussians(scene(), cam, background=(0.1, 0.2, 0.3))["color"].permute(1, 2, 0)
    assert torch.allclose(out[0], ref.clamp(0, 1).float(), atol=1e-6)


def test_single_frame():
    assert turntable(gaussians=scene(), frames=1, size=8).shape == (1, 8, 8, 3)


@pytest.mark.parametrize("kwargs", [
    dict(frames=0), dict(frames=2.5), dict(size=0), dict(size=100000), dict(mode="video"),
    dict(radius=0.0), dict(fov_degrees=180.0), dict(background=(1, 1)),
])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        turntable(gaussians=scene(), **{"size": 8, **kwargs})


def test_mode_needs_its_inputs():
    with pytest.raises(ValueError):
        turntable(frames=2, size=8)                           # gaussian mode without gaussians
    with pytest.raises(ValueError):
        turntable(gaussians=scene(), frames=2, size=8, mode="side_by_side")  # no mesh
    with pytest.raises(ValueError):
        turntable(mesh=tetra(), frames=2, size=8, mode="side_by_side")       # no gaussians
    with pytest.raises(ValueError):
        turntable(gaussians=scene(), frames=2, size=8, mode="mesh_normals")  # no mesh


@pytest.mark.skipif(not HAS_MESH, reason="mesh_raster not available")
def test_mesh_normals_and_side_by_side():
    normals = turntable(mesh=tetra(), frames=3, size=24, mode="mesh_normals", background=(1, 1, 1))
    assert normals.shape == (3, 24, 24, 3) and normals.dtype == torch.float32
    assert float(normals.min()) >= 0.0 and float(normals.max()) <= 1.0
    assert float((normals < 0.99).any(-1).float().mean()) > 0.01
    assert (normals[1] - normals[0]).abs().max() > 0.05
    both = turntable(gaussians=scene(), mesh=tetra(), frames=2, size=16, mode="side_by_side")
    assert both.shape == (2, 16, 32, 3)
    gs = turntable(gaussians=scene(), frames=2, size=16)
    nm = turntable(mesh=tetra(), frames=2, size=16, mode="mesh_normals")
    assert torch.allclose(both[:, :, :16], gs) and torch.allclose(both[:, :, 16:], nm)


def test_progress_after_each_frame_can_stop_the_render():
    seen = []

    def progress(frame, frames):
        seen.append((frame, frames))
        if frame == 2:
            raise KeyboardInterrupt  # a UI's Cancel
    with pytest.raises(KeyboardInterrupt):
        turntable(gaussians=scene(), frames=5, size=8, progress=progress)
    assert seen == [(1, 5), (2, 5)]
