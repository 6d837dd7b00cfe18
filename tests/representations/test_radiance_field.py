"""Strivec against the official TRELLIS Strivec fields (conformance cases slat_dec_rf*)."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trellis_impl.representations.radiance_field import Strivec, strivec_from_decoder_output

CONFORMANCE = Path(__file__).resolve().parents[1] / "fixtures" / "conformance"
CASES = ["slat_dec_rf", "slat_dec_rf_elastic"]
ITEMS = [(name, item) for name in CASES for item in (0, 1)]
FIELDS = ["position", "depth", "trivec", "density", "features_dc"]
TRELLIS_AABB = [-0.5, -0.5, -0.5, 1.0, 1.0, 1.0]


def load_case(name):
    case = load_file(str(CONFORMANCE / "cases" / f"{name}.safetensors"))
    args = json.loads((CONFORMANCE / "ckpts" / f"{name}.json").read_text())["args"]
    return case, args


def case_fields(name, item):
    case, args = load_case(name)
    return {field: case[f"item{item}.{field}"] for field in FIELDS}, args


@pytest.mark.parametrize("name,item", ITEMS)
def test_decoder_output_to_strivec_matches_official(name, item):
    case, args = load_case(name)
    rows = case["coords"][:, 0] == item
    strivec = strivec_from_decoder_output(case["coords"][rows, 1:], case["out_layer_feats"][rows],
                                          args["resolution"], args["representation_config"])
    for field in FIELDS:
        expected = case[f"item{item}.{field}"]
        actual = getattr(strivec, field)
        assert actual.dtype == expected.dtype, field
        assert actual.shape == expected.shape, field
        if field == "depth":
            assert torch.equal(actual, expected)
        else:
            error = (actual - expected).abs().max().item()
            assert error <= 1e-5 * expected.abs().max().item(), f"{field}: max error {error:.3g}"
    assert strivec.density_shift == 0.0
    assert strivec.rank == args["representation_config"]["rank"]
    assert strivec.dim == args["representation_config"]["dim"]
    assert torch.equal(strivec.aabb, torch.tensor(TRELLIS_AABB))


@pytest.mark.parametrize("name,item", ITEMS)
def test_construct_from_case_fields(name, item):
    fields, args = case_fields(name, item)
    strivec = Strivec(args["resolution"], TRELLIS_AABB, **fields)
    count = fields["position"].shape[0]
    config = args["representation_config"]
    assert (strivec.rank, strivec.dim, strivec.resolution) == (config["rank"], config["dim"], args["resolution"])
    assert 2 ** strivec.max_depth == args["resolution"]
    assert strivec.features_ac.shape == (count, config["rank"], 0, 3)
    assert strivec.get_xyz is fields["position"]
    assert strivec.get_depth is fields["depth"]
    assert strivec.get_trivec is fields["trivec"]
    assert strivec.get_density is fields["density"]
    assert strivec.get_features is fields["features_dc"]
    assert strivec.primitive == "trivec"


@pytest.mark.parametrize("resolution", [0, -4, 3, 12, 2.5, True])
def test_resolution_must_be_power_of_two(resolution):
    fields, _ = case_fields("slat_dec_rf", 0)
    with pytest.raises(ValueError, match="power of 2"):
        Strivec(resolution, TRELLIS_AABB, **fields)


def test_resolution_one_and_float_powers_of_two_are_accepted():
    fields, _ = case_fields("slat_dec_rf", 0)
    assert Strivec(1, TRELLIS_AABB, **fields).max_depth == 0
    assert Strivec(64.0, TRELLIS_AABB, **fields).resolution == 64


@pytest.mark.parametrize("field,replacement,message", [
    ("depth", lambda t: t.long(), "uint8"),
    ("position", lambda t: t.long(), "floating point"),
    ("trivec", lambda t: t.to(torch.int32), "floating point"),
    ("density", lambda t: t[:, :-1], "density"),
    ("features_dc", lambda t: t[:-1], "features_dc"),
    ("position", lambda t: t[:, :2], "position"),
    ("trivec", lambda t: t[:, :, :2], "trivec"),
    ("depth", lambda t: t[:, 0], "depth"),
])
def test_field_validation(field, replacement, message):
    fields, _ = case_fields("slat_dec_rf", 1)
    fields[field] = replacement(fields[field])
    with pytest.raises(ValueError, match=message):
        Strivec(16, TRELLIS_AABB, **fields)


def test_higher_sh_degree_needs_matching_features_ac():
    fields, _ = case_fields("slat_dec_rf_elastic", 0)
    count, rank = fields["density"].shape
    strivec = Strivec(8, TRELLIS_AABB, **fields, sh_degree=1)
    assert strivec.get_features.shape == (count, rank, 4, 3)
    with pytest.raises(ValueError, match="features_ac"):
        Strivec(8, TRELLIS_AABB, **fields, sh_degree=1, features_ac=torch.zeros(count, rank, 8, 3))


def test_device_comes_from_the_data():
    fields = {
        "position": torch.empty(4, 3, device="meta"),
        "depth": torch.empty(4, 1, dtype=torch.uint8, device="meta"),
        "trivec": torch.empty(4, 2, 3, 5, device="meta"),
        "density": torch.empty(4, 2, device="meta"),
        "features_dc": torch.empty(4, 2, 1, 3, device="meta"),
    }
    strivec = Strivec(32, TRELLIS_AABB, **fields)
    assert strivec.device.type == "meta" and strivec.aabb.device.type == "meta"
    assert strivec.features_ac.device.type == "meta"
    fields["density"] = torch.empty(4, 2)
    with pytest.raises(ValueError, match="devices"):
        Strivec(32, TRELLIS_AABB, **fields)


def test_decoder_output_validation():
    case, args = load_case("slat_dec_rf")
    coords, feats = case["coords"][:, 1:], case["out_layer_feats"]
    with pytest.raises(ValueError, match="power of 2"):
        strivec_from_decoder_output(coords, feats, 12, args["representation_config"])
    with pytest.raises(ValueError, match="feats"):
        strivec_from_decoder_output(coords, feats[:, 1:], 16, args["representation_config"])
    with pytest.raises(ValueError, match="coords_xyz"):
        strivec_from_decoder_output(case["coords"], feats, 16, args["representation_config"])
