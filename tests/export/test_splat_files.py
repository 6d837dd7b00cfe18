"""Round trips and byte layout of the .spz / .splat writers (trellis_impl.export.splat_files)."""
import gzip
import math
import os
import struct

import numpy as np
import pytest
import torch

from trellis_impl.export.splat_files import (
    SH_C0, SPZ_COLOR_SCALE, SPZ_FRACTIONAL_BITS, SPZ_MAGIC, load_spz, load_splat, save_spz, save_splat)
from trellis_impl.representations.gaussians import DEFAULT_PLY_TRANSFORM, Gaussians


def random_gaussians(n=200, seed=0, sh_degree=0):
    g = torch.Generator().manual_seed(seed)
    gaussians = Gaussians(aabb=[-0.5, -0.5, -0.5, 1.0, 1.0, 1.0], sh_degree=sh_degree,
                          mininum_kernel_size=0.0009)
    gaussians._xyz = torch.rand(n, 3, generator=g)
    gaussians._features_dc = torch.randn(n, 1, 3, generator=g) * 0.8
    if sh_degree:
        gaussians._features_rest = (torch.rand(n, (sh_degree + 1) ** 2 - 1, 3, generator=g) - 0.5) * 1.5
    gaussians._scaling = torch.randn(n, 3, generator=g)
    gaussians._rotation = torch.randn(n, 4, generator=g) * 0.7
    gaussians._opacity = torch.randn(n, 1, generator=g) * 2
    return gaussians


def _quat_angle_ok(a, b, tol):
    """|dot| of unit quaternions (sign-free) >= cos(tol/2)-ish: compare q and -q."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    diff = np.minimum(np.abs(a - b).max(axis=1), np.abs(a + b).max(axis=1))
    return diff.max() <= tol, diff.max()


def _sigmoid(x):
    return 1 / (1 + np.exp(-np.asarray(x, np.float64)))


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("sh_degree", [0, 2])
def test_spz_round_trip(tmp_path, version, sh_degree):
    gaussians = random_gaussians(sh_degree=sh_degree)
    ref = gaussians.ply_attributes(DEFAULT_PLY_TRANSFORM)
    path = tmp_path / "a.spz"
    assert save_spz(gaussians, path, version=version) == os.fspath(path)
    out = load_spz(path)
    assert set(out) == set(ref) - {"nx", "ny", "nz"}
    # positions: round to 1/2^12 -> error <= 2^-13 (+ float32 slack)
    for k in "xyz":
        assert np.abs(out[k] - ref[k]).max() <= 2.0 ** -(SPZ_FRACTIONAL_BITS + 1) + 1e-6
    # colours: one half uint8 step in (dc * 0.15 * 255 + 127.5)
    for i in range(3):
        assert np.abs(out[f"f_dc_{i}"] - ref[f"f_dc_{i}"]).max() <= 0.5 / (SPZ_COLOR_SCALE * 255) + 1e-5
    # alpha: half a step of sigmoid * 255 (inputs chosen away from the clamp)
    assert np.abs(_sigmoid(out["opacity"]) - _sigmoid(ref["opacity"])).max() <= 0.5 / 255 + 1e-6
    # log scales: (log s + 10) * 16 -> half step 1/32 (inside [-10, 5.9])
    for i in range(3):
        assert np.abs(out[f"scale_{i}"] - ref[f"scale_{i}"]).max() <= 1 / 32 + 1e-5
    # rotations, v3: each small component quantised to sqrt(1/2)/511/2 ~ 7e-4, largest rebuilt,
    # assert 3e-3; v2: xyz step 1/127.5 (half step 3.9e-3), w rebuilt: assert 0.03
    rot_ref = np.stack([ref[f"rot_{i}"] for i in range(4)], 1)
    rot_out = np.stack([out[f"rot_{i}"] for i in range(4)], 1)
    if version == 3:
        ok, err = _quat_angle_ok(rot_out, rot_ref, 3e-3)
        assert ok, err
    else:
        # v2 keeps x, y, z (w >= 0) at half a step of 1/127.5 and rebuilds w = sqrt(1 - |xyz|^2),
        # which is only well-conditioned away from w = 0: check xyz, and w where w > 0.3
        rot_ref = rot_ref * np.where(rot_ref[:, :1] < 0, -1, 1)
        assert np.abs(rot_out[:, 1:] - rot_ref[:, 1:]).max() <= 0.5 / 127.5 + 1e-5
        big = rot_ref[:, 0] > 0.3
        assert np.abs(rot_out[big, 0] - rot_ref[big, 0]).max() <= 0.03
    # SH rest: round(v*128+128) -> half step 1/256
    for name in ref:
        if name.startswith("f_rest_"):
            assert np.abs(out[name] - ref[name]).max() <= 1 / 256 + 1e-6, name


def test_spz_header_and_layout(tmp_path):
    gaussians = random_gaussians(n=37)
    path = tmp_path / "h.spz"
    save_spz(gaussians, path)
    raw = path.read_bytes()
    assert raw[:2] == b"\x1f\x8b"  # gzip
    data = gzip.decompress(raw)
    magic, version, count, degree, frac, flags, reserved = struct.unpack_from("<IIIBBBB", data)
    assert data[:4] == b"NGSP" and magic == SPZ_MAGIC
    assert (version, count, degree, frac, flags, reserved) == (3, 37, 0, 12, 0, 0)
    assert len(data) == 16 + 37 * (9 + 1 + 3 + 3 + 4)
    # first point's position, decoded by hand: RDF -> RUB flips y and z
    ref = gaussians.ply_attributes(DEFAULT_PLY_TRANSFORM)
    p = data[16:25]
    vals = [int.from_bytes(p[3 * i:3 * i + 3], "little", signed=True) / 4096 for i in range(3)]
    expected = [ref["x"][0], -ref["y"][0], -ref["z"][0]]
    assert np.allclose(vals, expected, atol=2 ** -13 + 1e-6)
    # first alpha byte
    assert data[16 + 37 * 9] == round(float(_sigmoid(ref["opacity"][0])) * 255)


def test_spz_rotation_frame(tmp_path):
    """A Gaussian rotated 90 deg about PLY-y must be stored rotated about spz's (flipped) y."""
    g = Gaussians(aabb=[0, 0, 0, 1, 1, 1])
    g._xyz = torch.tensor([[0.25, 0.5, 0.75]])
    g._features_dc = torch.zeros(1, 1, 3)
    g._scaling = torch.zeros(1, 3)
    g._opacity = torch.zeros(1, 1)
    ref_rot = np.array([math.cos(math.pi / 8), 0.3, math.sin(math.pi / 8), 0.1])
    ref_rot /= np.linalg.norm(ref_rot)
    # set the rotation so that the PLY quaternion is ref_rot (invert the default transform)
    R = torch.tensor(DEFAULT_PLY_TRANSFORM, dtype=torch.float64)
    from trellis_impl.representations.gaussians import matrix_to_quaternion, quaternion_to_matrix
    m = R.T @ quaternion_to_matrix(torch.tensor(ref_rot)[None])[0] @ R
    g._rotation = matrix_to_quaternion(m[None]).float() - torch.tensor([[1.0, 0, 0, 0]])
    ply = g.ply_attributes(DEFAULT_PLY_TRANSFORM)
    q = np.array([ply[f"rot_{i}"][0] for i in range(4)], np.float64)
    path = tmp_path / "r.spz"
    save_spz(g, path)
    data = gzip.decompress(path.read_bytes())
    comp = int.from_bytes(data[16 + 9 + 1 + 3 + 3:16 + 9 + 1 + 3 + 3 + 4], "little")
    largest = comp >> 30
    # stored quaternion xyzw = (x, -y, -z, w), sign made so the largest is positive
    stored = np.array([q[1], -q[2], -q[3], q[0]])
    stored = stored * np.sign(stored[largest])
    assert largest == int(np.argmax(np.abs(stored)))
    vals, c = [], comp
    for i in range(3, -1, -1):
        if i == largest:
            continue
        mag, neg = c & 511, (c >> 9) & 1
        c >>= 10
        vals.append((i, (-1 if neg else 1) * math.sqrt(0.5) * mag / 511))
    for i, v in vals:
        assert abs(v - stored[i]) < 1e-3


def test_splat_round_trip_and_layout(tmp_path):
    gaussians = random_gaussians(n=123, seed=3)
    ref = gaussians.ply_attributes(DEFAULT_PLY_TRANSFORM)
    path = tmp_path / "a.splat"
    save_splat(gaussians, path)
    raw = path.read_bytes()
    assert len(raw) == 123 * 32
    first = struct.unpack_from("<6f4B4B", raw)
    assert np.allclose(first[:3], [ref["x"][0], ref["y"][0], ref["z"][0]], atol=1e-6)  # same frame as PLY
    out = load_splat(path)
    for k in "xyz":
        np.testing.assert_array_equal(out[k], ref[k])  # float32 exact
    for i in range(3):
        # log(exp(s)) through float32: relative 1e-6
        assert np.abs(out[f"scale_{i}"] - ref[f"scale_{i}"]).max() <= 1e-5
        # colour: half uint8 step of (0.5 + SH_C0 dc) * 255, where not clipped
        c = 0.5 + SH_C0 * ref[f"f_dc_{i}"]
        inside = (c > 0) & (c < 1)
        err = np.abs(out[f"f_dc_{i}"] - ref[f"f_dc_{i}"])[inside]
        assert err.max() <= 0.5 / 255 / SH_C0 + 1e-5
        # clipped colours decode to the clipped value (0 or 1 after the SH mapping)
        clipped = (np.clip(c[~inside], 0, 1) - 0.5) / SH_C0
        assert np.abs(out[f"f_dc_{i}"][~inside] - clipped).max(initial=0) <= 1e-5
    assert np.abs(_sigmoid(out["opacity"]) - _sigmoid(ref["opacity"])).max() <= 0.5 / 255 + 1e-6
    # rotations: components round(q*128+128) -> half step 1/256 each, then renormalised: assert 1e-2
    rot_ref = np.stack([ref[f"rot_{i}"] for i in range(4)], 1)
    rot_out = np.stack([out[f"rot_{i}"] for i in range(4)], 1)
    ok, err = _quat_angle_ok(rot_out, rot_ref, 1e-2)
    assert ok, err


@pytest.mark.parametrize("save", [save_spz, save_splat])
def test_refuses_overwrite_and_bad_input(tmp_path, save):
    gaussians = random_gaussians(n=5)
    path = tmp_path / "x.out"
    path.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        save(gaussians, path)
    assert path.read_bytes() == b"keep"
    save(gaussians, path, overwrite=True)
    assert path.read_bytes() != b"keep"

    bad = random_gaussians(n=5)
    bad._opacity[2, 0] = float("nan")
    target = tmp_path / "bad.out"
    with pytest.raises(ValueError, match="_opacity|opacity"):
        save(bad, target)
    assert not target.exists()
    assert sorted(os.listdir(tmp_path)) == ["x.out"]  # no temporary left behind

    empty = random_gaussians(n=0)
    with pytest.raises(ValueError):
        save(empty, tmp_path / "empty.out")
    assert sorted(os.listdir(tmp_path)) == ["x.out"]


def test_load_rejects_garbage(tmp_path):
    p = tmp_path / "g.spz"
    p.write_bytes(gzip.compress(b"XXXX" + b"\0" * 40))
    with pytest.raises(ValueError, match="magic"):
        load_spz(p)
    q = tmp_path / "g.splat"
    q.write_bytes(b"\0" * 33)
    with pytest.raises(ValueError):
        load_splat(q)
