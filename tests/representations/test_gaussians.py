"""Gaussians against the official TRELLIS Gaussian (conformance cases slat_dec_gs*)."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from trellis_impl import files as files_module
from trellis_impl.readers import read_ply
from trellis_impl.representations.gaussians import (
    DEFAULT_PLY_TRANSFORM,
    Gaussian,
    Gaussians,
    gaussian_offset_perturbation,
    gaussians_from_decoder_output,
    matrix_to_quaternion,
    quaternion_to_matrix,
)

CONFORMANCE = Path(__file__).resolve().parents[1] / "fixtures" / "conformance"
CASES = ["slat_dec_gs", "slat_dec_gs_elastic"]
ITEMS = [(name, item) for name in CASES for item in (0, 1)]
RAW_FIELDS = ["_xyz", "_features_dc", "_scaling", "_rotation", "_opacity"]
ACTIVATED_FIELDS = ["get_xyz", "get_features", "get_scaling", "get_rotation", "get_opacity"]
TRELLIS_AABB = [-0.5, -0.5, -0.5, 1.0, 1.0, 1.0]
# Rotations written with a transform pass through float32 matrices (as the official writer does).
ROTATION_TOLERANCE = 1e-3


def load_case(name):
    case = load_file(str(CONFORMANCE / "cases" / f"{name}.safetensors"))
    args = json.loads((CONFORMANCE / "ckpts" / f"{name}.json").read_text())["args"]
    buffers = load_file(str(CONFORMANCE / "ckpts" / f"{name}.safetensors"))
    return case, args, buffers["offset_perturbation"]


def ctor_args(rep_config):
    return dict(
        aabb=TRELLIS_AABB,
        mininum_kernel_size=rep_config["3d_filter_kernel_size"],
        scaling_bias=rep_config["scaling_bias"],
        opacity_bias=rep_config["opacity_bias"],
        scaling_activation=rep_config["scaling_activation"],
    )


def gaussians_from_raw(name, item):
    case, args, _ = load_case(name)
    gaussians = Gaussians(**ctor_args(args["representation_config"]))
    for field in RAW_FIELDS:
        setattr(gaussians, field, case[f"item{item}.{field}"])
    return gaussians, case, args


def assert_close(actual, expected, what, rel=1e-5):
    assert actual.shape == expected.shape, what
    scale = expected.abs().max().item()
    error = (actual - expected).abs().max().item()
    assert error <= rel * scale, f"{what}: max error {error:.3g} > {rel} * {scale:.3g}"


def official_ply(name, item):
    return CONFORMANCE / "cases" / f"{name}.item{item}.ply"


@pytest.mark.parametrize("name", CASES)
def test_offset_perturbation_matches_checkpoint_buffer(name):
    _, args, stored = load_case(name)
    config = args["representation_config"]
    built = gaussian_offset_perturbation(config["num_gaussians"], config["voxel_size"])
    assert built.dtype == torch.float32
    assert_close(built, stored, "offset_perturbation", rel=1e-6)


@pytest.mark.parametrize("name,item", ITEMS)
def test_activated_fields_match_official(name, item):
    gaussians, case, _ = gaussians_from_raw(name, item)
    for field in ACTIVATED_FIELDS:
        assert_close(getattr(gaussians, field), case[f"item{item}.{field}"], field)


@pytest.mark.parametrize("name,item", ITEMS)
def test_decoder_output_to_gaussians_matches_official(name, item):
    case, args, perturbation = load_case(name)
    rows = case["coords"][:, 0] == item
    gaussians = gaussians_from_decoder_output(
        case["coords"][rows, 1:], case["out_layer_feats"][rows], args["resolution"],
        args["representation_config"], perturbation)
    assert gaussians._features_rest is None
    for field in RAW_FIELDS + ACTIVATED_FIELDS:
        assert_close(getattr(gaussians, field), case[f"item{item}.{field}"], field)


def test_decoder_output_rejects_wrong_channel_count():
    case, args, perturbation = load_case("slat_dec_gs")
    with pytest.raises(ValueError, match="feats"):
        gaussians_from_decoder_output(case["coords"][:, 1:], case["out_layer_feats"][:, :-1],
                                      args["resolution"], args["representation_config"], perturbation)


@pytest.mark.parametrize("name,item", ITEMS)
def test_save_ply_matches_official_file(name, item, tmp_path):
    gaussians, _, _ = gaussians_from_raw(name, item)
    path = tmp_path / "out.ply"
    gaussians.save_ply(path)

    header, properties = _vertex_table(path)
    official_header, official_properties = _vertex_table(official_ply(name, item))
    assert header == official_header
    assert path.stat().st_size == official_ply(name, item).stat().st_size
    assert list(properties) == list(official_properties)
    for prop, expected in official_properties.items():
        assert properties[prop].dtype == expected.dtype == np.float32, prop
        error = np.abs(properties[prop] - expected).max()
        assert error <= 1e-5, f"{prop}: max error {error:.3g}"


@pytest.mark.parametrize("name,item", ITEMS)
def test_load_official_ply_recovers_official_values(name, item):
    case, args, _ = load_case(name)
    loaded = Gaussians.load_ply(official_ply(name, item), **ctor_args(args["representation_config"]))
    for field in ["get_xyz", "get_features", "get_scaling", "get_opacity"]:
        assert_close(getattr(loaded, field), case[f"item{item}.{field}"], field)
    # The file holds the sign-canonical quaternion: compare up to sign. The official writer goes
    # through float32 rotation matrices, which costs small components up to ~3e-4.
    expected = case[f"item{item}.get_rotation"]
    rotation = loaded.get_rotation
    sign = torch.sign((rotation * expected).sum(dim=1, keepdim=True))
    assert_close(rotation * sign, expected, "get_rotation", rel=ROTATION_TOLERANCE)


@pytest.mark.parametrize("transform", [DEFAULT_PLY_TRANSFORM, None], ids=["default", "none"])
def test_ply_round_trip(transform, tmp_path):
    gaussians, _, _ = gaussians_from_raw("slat_dec_gs", 0)
    path = tmp_path / "round_trip.ply"
    gaussians.save_ply(path, transform=transform)
    loaded = Gaussians.load_ply(path, transform=transform, **gaussians.init_params)
    for field in ["get_xyz", "get_features", "get_scaling", "get_opacity"]:
        assert_close(getattr(loaded, field), getattr(gaussians, field), field)
    if transform is None:  # stored un-normalised, as held (up to rounding of the +1 bias)
        assert_close(loaded._rotation, gaussians._rotation, "_rotation")
    tolerance = ROTATION_TOLERANCE if transform is not None else 1e-5
    assert_close(quaternion_to_matrix(loaded.get_rotation), quaternion_to_matrix(gaussians.get_rotation),
                 "rotation matrices", rel=tolerance)


def test_save_ply_refuses_to_overwrite(tmp_path):
    gaussians, _, _ = gaussians_from_raw("slat_dec_gs_elastic", 1)
    path = tmp_path / "existing.ply"
    path.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="existing.ply"):
        gaussians.save_ply(path)
    assert path.read_bytes() == b"keep me"
    gaussians.save_ply(path, overwrite=True)
    assert _vertex_table(path)[0].startswith("ply\n")
    assert os.listdir(tmp_path) == ["existing.ply"]


def test_save_ply_leaves_no_partial_file_on_error(tmp_path, monkeypatch):
    gaussians, _, _ = gaussians_from_raw("slat_dec_gs_elastic", 1)

    def failing_rename(source, destination):
        raise OSError("simulated failure while renaming")

    monkeypatch.setattr(files_module.os, "replace", failing_rename)
    monkeypatch.setattr(files_module.os, "link", failing_rename)
    with pytest.raises(OSError, match="simulated"):
        gaussians.save_ply(tmp_path / "new.ply")
    assert os.listdir(tmp_path) == []

    existing = tmp_path / "old.ply"
    existing.write_bytes(b"old")
    with pytest.raises(OSError, match="simulated"):
        gaussians.save_ply(existing, overwrite=True)
    assert existing.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["old.ply"]


@pytest.mark.parametrize("field,value", [("_opacity", float("nan")), ("_xyz", float("inf")),
                                         ("_rotation", float("nan")), ("_scaling", -float("inf"))])
def test_save_ply_rejects_non_finite_parameters(field, value, tmp_path):
    gaussians, _, _ = gaussians_from_raw("slat_dec_gs_elastic", 0)
    broken = getattr(gaussians, field).clone()
    broken[3, 0] = value
    setattr(gaussians, field, broken)
    with pytest.raises(ValueError, match=field):
        gaussians.save_ply(tmp_path / "bad.ply")
    assert os.listdir(tmp_path) == []


def test_save_ply_rejects_missing_field_and_non_rotation_transform(tmp_path):
    gaussians, _, _ = gaussians_from_raw("slat_dec_gs_elastic", 0)
    with pytest.raises(ValueError, match="rotation"):
        gaussians.save_ply(tmp_path / "mirror.ply", transform=[[1, 0, 0], [0, 1, 0], [0, 0, -1]])
    gaussians._opacity = None
    with pytest.raises(ValueError, match="_opacity"):
        gaussians.save_ply(tmp_path / "missing.ply")
    assert os.listdir(tmp_path) == []


def test_saturated_opacity_is_written_finite(tmp_path):
    gaussians, _, _ = gaussians_from_raw("slat_dec_gs_elastic", 0)
    gaussians._opacity = gaussians._opacity.clone()
    gaussians._opacity[0, 0] = 40.0  # sigmoid rounds to exactly 1 in float32
    attributes = gaussians.ply_attributes()
    assert np.isfinite(attributes["opacity"]).all()
    assert attributes["opacity"][0] == pytest.approx(40.0 + np.log(0.1 / 0.9), rel=1e-6)


def test_constructor_arguments():
    assert Gaussian is Gaussians
    spelled = Gaussians(aabb=TRELLIS_AABB, minimum_kernel_size=0.01)
    assert spelled.mininum_kernel_size == 0.01
    assert spelled.init_params["mininum_kernel_size"] == 0.01
    with pytest.raises(TypeError):
        Gaussians(aabb=TRELLIS_AABB, mininum_kernel_size=0.02, minimum_kernel_size=0.01)
    with pytest.raises(ValueError, match="scaling_activation"):
        Gaussians(aabb=TRELLIS_AABB, scaling_activation="relu")
    for activation in ("exp", "softplus"):
        gaussians = Gaussians(aabb=TRELLIS_AABB, scaling_bias=0.02, opacity_bias=0.3, scaling_activation=activation)
        gaussians._scaling = torch.zeros(1, 3)
        gaussians._opacity = torch.zeros(1, 1)
        assert torch.allclose(gaussians.get_scaling, torch.full((1, 3), 0.02))
        assert torch.allclose(gaussians.get_opacity, torch.full((1, 1), 0.3))
        assert gaussians.scale_bias.dtype == gaussians.opacity_logit_bias.dtype == torch.float32


def test_properties_follow_the_data_device():
    gaussians = Gaussians(aabb=TRELLIS_AABB)
    for field, shape in [("_xyz", (5, 3)), ("_features_dc", (5, 1, 3)), ("_scaling", (5, 3)),
                         ("_rotation", (5, 4)), ("_opacity", (5, 1))]:
        setattr(gaussians, field, torch.empty(shape, device="meta"))
    assert gaussians.device.type == "meta"
    for field in ACTIVATED_FIELDS:
        assert getattr(gaussians, field).device.type == "meta"


def test_covariance_is_rotated_scale():
    gaussians, _, _ = gaussians_from_raw("slat_dec_gs_elastic", 0)
    rotations = quaternion_to_matrix(gaussians.get_rotation).double()
    scales = gaussians.get_scaling.double()
    expected = rotations @ torch.diag_embed(scales ** 2) @ rotations.transpose(1, 2)
    rows, cols = torch.triu_indices(3, 3)
    assert_close(gaussians.get_covariance().double(), expected[:, rows, cols], "covariance")


def test_quaternion_matrix_conversions():
    quaternions = torch.nn.functional.normalize(torch.randn(1000, 4, generator=torch.Generator().manual_seed(0),
                                                            dtype=torch.float64), dim=1)
    matrices = quaternion_to_matrix(quaternions)
    assert torch.allclose(matrices @ matrices.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(1000, 3, 3),
                          atol=1e-12)
    recovered = matrix_to_quaternion(matrices)
    sign = torch.sign((recovered * quaternions).sum(dim=1, keepdim=True))
    assert torch.allclose(recovered * sign, quaternions, atol=1e-12)
    # Rotation by +90 degrees about x is the default PLY transform.
    half = 0.5 ** 0.5
    assert torch.allclose(quaternion_to_matrix(torch.tensor([half, half, 0.0, 0.0], dtype=torch.float64)),
                          torch.tensor(DEFAULT_PLY_TRANSFORM, dtype=torch.float64), atol=1e-15)


def _vertex_table(path):
    """(header, {property: values}) of a PLY's vertex element, through the one PLY reader."""
    ply = read_ply(path)
    return ply.header, ply.elements["vertex"]


def test_gaussians_load_from_ascii_and_refuse_a_truncated_file(tmp_path):
    gaussians, _, _ = gaussians_from_raw("slat_dec_gs_elastic", 1)
    binary = tmp_path / "binary.ply"
    gaussians.save_ply(binary)
    header, table = _vertex_table(binary)
    names = list(table)
    lines = ["ply", "format ascii 1.0", f"element vertex {len(table['x'])}"]
    lines += [f"property float {name}" for name in names] + ["end_header"]
    lines += [" ".join(repr(float(table[name][i])) for name in names) for i in range(len(table["x"]))]
    ascii_path = tmp_path / "ascii.ply"
    ascii_path.write_text("\n".join(lines) + "\n")
    ctor = dict(aabb=[-0.5, -0.5, -0.5, 1.0, 1.0, 1.0])
    a, b = Gaussians.load_ply(ascii_path, **ctor), Gaussians.load_ply(binary, **ctor)
    assert torch.equal(a.get_xyz, b.get_xyz) and torch.equal(a.get_opacity, b.get_opacity)
    truncated = tmp_path / "truncated.ply"
    truncated.write_bytes(binary.read_bytes()[:-7])
    with pytest.raises(ValueError, match="truncated.ply"):
        Gaussians.load_ply(truncated, **ctor)
