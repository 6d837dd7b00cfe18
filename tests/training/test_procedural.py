"""Procedural objects: every kind builds, fills the unit cube, is light and coloured; (kind, seed) fixes the
file bytes; the split rule; files are never overwritten; the CLI verb; prepare-data takes the files."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from trellis_impl.cli import main, run
from trellis_impl.encoding import load_textured_mesh
from trellis_impl.export.mesh_files import to_gltf_frame
from trellis_impl.encoding.assets import NEUTRAL_GREY
from trellis_impl.training.procedural import (MAX_FACES, OBJECT_KINDS, object_name, object_plan, procedural_object,
                                              split_of, write_procedural_meshes)

SEEDS = (0, 1, 2, 3)


@pytest.mark.parametrize("kind", OBJECT_KINDS)
def test_every_kind_fills_the_unit_cube_is_light_and_coloured(kind):
    for seed in SEEDS:
        mesh = procedural_object(kind, seed)
        vertices, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
        low, high = vertices.min(0), vertices.max(0)
        assert np.abs(vertices).max() <= 0.5 + 1e-12, (kind, seed)
        assert np.isclose((high - low).max(), 1.0, atol=1e-12) and np.allclose((low + high) / 2, 0, atol=1e-12)
        assert 50 <= len(faces) <= MAX_FACES, (kind, seed, len(faces))
        assert faces.min() >= 0 and faces.max() < len(vertices)
        assert (mesh.area_faces > 0).all(), (kind, seed)  # no degenerate triangles
        colours = np.asarray(mesh.visual.vertex_colors)
        assert colours.shape == (len(vertices), 4) and (colours[:, 3] == 255).all()
        assert (np.abs(colours[:, :3].astype(int) - 255 * 0.5).max(1) > 20).any(), (kind, seed)  # not grey


def test_trellis_frame_z_up_front_minus_y():
    for seed in SEEDS:
        car = np.asarray(procedural_object("car", seed).vertices)
        extent = np.ptp(car, axis=0)
        assert extent[1] > extent[0] > extent[2] * 0.9  # long along Y, the wheels on z = min
        chair = np.asarray(procedural_object("chair", seed).vertices)
        top = chair[chair[:, 2] > chair[:, 2].max() - 0.05]
        assert top[:, 1].mean() > 0.1  # the backrest is at +Y: the seat faces -Y
        for kind in ("bottle", "lamp", "rocket", "snowman"):
            extent = np.ptp(np.asarray(procedural_object(kind, seed).vertices), axis=0)
            assert extent.argmax() == 2, (kind, seed)


def test_files_carry_colours_that_load_textured_mesh_reads(tmp_path):
    for fmt in ("glb", "ply"):
        (path,) = write_procedural_meshes(tmp_path / fmt, 1, seed=3, kinds=["house"], file_format=fmt)
        assert path.name == f"house_000003.{fmt}"
        expected = procedural_object("house", 3)
        loaded = load_textured_mesh(path)
        vertices = np.asarray(expected.vertices)
        if fmt == "glb":  # glTF's frame in the file: Y up, front +Z
            vertices = to_gltf_frame(vertices)
        assert torch.equal(loaded.faces, torch.as_tensor(np.asarray(expected.faces)))
        assert torch.allclose(loaded.vertices, torch.as_tensor(vertices), atol=1e-6)
        colours = torch.as_tensor(np.asarray(expected.visual.vertex_colors)[:, :3] / 255.0, dtype=torch.float32)
        assert torch.allclose(loaded.corner_colors, colours[loaded.faces], atol=1e-6), fmt
        assert not torch.allclose(loaded.corner_colors, torch.full_like(loaded.corner_colors, NEUTRAL_GREY))


def test_same_kind_and_seed_same_bytes_other_seeds_other_shapes(tmp_path):
    state = np.random.get_state()
    np.random.seed(123)  # the global generator plays no part and is left alone
    first = write_procedural_meshes(tmp_path / "a", 4, seed=5, kinds=["cup", "tree"])
    np.random.seed(456)
    second = write_procedural_meshes(tmp_path / "b", 4, seed=5, kinds=["cup", "tree"], progress=lambda *a: None)
    assert np.random.randint(1 << 30) == np.random.RandomState(456).randint(1 << 30)
    np.random.set_state(state)
    assert [p.name for p in first] == [p.name for p in second] == ["cup_000005.glb", "tree_000005.glb",
                                                                   "cup_000006.glb", "tree_000006.glb"]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second))
    assert procedural_object("vase", 2).export(file_type="ply") == procedural_object("vase", 2).export(file_type="ply")
    for kind in OBJECT_KINDS:
        a, b = (np.asarray(procedural_object(kind, s).vertices) for s in (0, 1))
        assert a.shape != b.shape or not np.allclose(np.ptp(a, axis=0), np.ptp(b, axis=0), atol=1e-3), kind


def test_split_rule_and_plan():
    for kind in OBJECT_KINDS[:3]:
        assert [split_of(kind, s) for s in range(20)] == ["held_out" if s % 10 == 9 else "train" for s in range(20)]
    plan = object_plan(32, seed=0)
    assert plan[:15] == [(k, 0) for k in OBJECT_KINDS] and plan[15:30] == [(k, 1) for k in OBJECT_KINDS]
    assert plan[30:] == [(OBJECT_KINDS[0], 2), (OBJECT_KINDS[1], 2)]
    train = object_plan(40, seed=5, kinds=["car"])
    assert [s for _, s in train] == [s for s in range(5, 50) if s % 10 != 9][:40]
    held_out = object_plan(4, seed=0, kinds=["car", "cup"], split="held_out")
    assert held_out == [("car", 9), ("cup", 9), ("car", 19), ("cup", 19)]
    assert object_plan(7, seed=3)[:5] == object_plan(5, seed=3)  # more objects extend the same list
    assert object_name("car", 42) == "car_000042"


def test_existing_files_are_kept_and_bad_input_refused(tmp_path):
    out = tmp_path / "meshes"
    paths = write_procedural_meshes(out, 2, kinds=["bench"])
    paths[0].write_bytes(b"not ours")
    again = write_procedural_meshes(out, 3, kinds=["bench"])
    assert again[:2] == paths and again[0].read_bytes() == b"not ours"
    assert sorted(p.name for p in out.iterdir()) == ["bench_000000.glb", "bench_000001.glb", "bench_000002.glb"]
    for options, message in ((dict(count=0), "count"), (dict(count=2, kinds=["cat"]), "kind"),
                             (dict(count=2, kinds=[]), "kinds"), (dict(count=2, kinds=["car", "car"]), "repeat"),
                             (dict(count=2, seed=-1), "seed"), (dict(count=2, split="test"), "split"),
                             (dict(count=2, file_format="obj"), "file_format")):
        with pytest.raises(ValueError, match=message):
            write_procedural_meshes(tmp_path / "refused", **options)
    assert not (tmp_path / "refused").exists()  # refused before anything is written
    with pytest.raises(ValueError, match="kind"):
        procedural_object("spaceship", 0)


def test_cli_writes_files_and_refuses_bad_input(tmp_path, monkeypatch, capsys):
    out = tmp_path / "cli"
    assert run(["procedural-meshes", "--out", str(out), "--count", "3", "--kinds", "car", "cup", "--seed", "8",
                "--format", "ply"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["car_000008.ply", "car_000010.ply", "cup_000008.ply"]
    assert "3 objects written" in capsys.readouterr().out
    assert run(["procedural-meshes", "--out", str(out), "--count", "2", "--kinds", "car", "--split", "held_out",
                "--format", "ply"]) == 0
    assert (out / "car_000009.ply").is_file() and (out / "car_000019.ply").is_file()
    capsys.readouterr()
    for argv, message in ((["--count", "0"], "error: count must be"), (["--count", "2", "--kinds", "spaceship"],
                                                                       "error: kind must be one of"),
                          (["--count", "2", "--split", "test"], "error: argument --split: invalid choice")):
        monkeypatch.setattr(sys, "argv", ["trellis_impl", "procedural-meshes", "--out", str(tmp_path / "bad"), *argv])
        with pytest.raises(SystemExit) as stop:
            main()
        assert stop.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert message in lines[-1] and (len(lines) == 1 or lines[0].startswith("usage:"))  # argparse adds usage
    assert not (tmp_path / "bad").exists()


def test_prepare_data_accepts_generated_meshes(tmp_path):
    from trellis_impl.training.prepare import prepare_data
    meshes = write_procedural_meshes(tmp_path / "meshes", 2, seed=1, kinds=["car", "mushroom"])
    data = prepare_data([tmp_path / "meshes"], tmp_path / "data", resolution=16, num_views=2, cond_views=1,
                        render_size=32, supersample=1, device="cpu")
    assert data.names == sorted(p.stem for p in meshes) and not data.manifest["failed"]
    for name in data.names:
        assert data.tensors(name, "voxels")["coords"].shape[0] > 20
        images = data.tensors(name, "renders")["images"].float()
        covered = images[..., 3] == 255
        assert covered.sum() > 50
        colours = images[..., :3][covered] / 255
        assert (colours - NEUTRAL_GREY).abs().max() > 0.2 and colours.std(0).max() > 0.05  # coloured, several parts
