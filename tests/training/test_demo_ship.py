"""scripts/demo_ship.py on a random-weight folder standing in for a trained candidate: what it
ships, the README's figures, and what it refuses (nothing written then)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
from demo_ship import ship  # noqa: E402


def _quality(folder: Path, iou: float = 0.8, colour: float = 0.05, psnr: float = 29.0, mode: str = "generation",
             count: int = 2, colours: Optional[list] = None) -> Path:
    """A quality.json of ``count`` objects with these figures (``colours``: each object's colour error)."""
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    colours = colours or [colour] * count
    names = [f"{kind}_{seed:06d}" for seed in range(9, 10 * count, 10) for kind in ("mushroom", "snowman")][:count]
    objects = [{"object": name, "iou": iou, "colour_error": error, "psnr_db": psnr} for name, error in zip(names, colours)]
    summary = {"objects": count, "mean_iou": iou, "mean_colour_error": sum(colours) / count,
               "colours_within_0.1": sum(error <= 0.1 for error in colours) / count, "mean_psnr_db": psnr}
    (folder / "quality.json").write_text(json.dumps({"model": "c", "mode": mode, "split": "held_out", "seed": 42,
                                                     "size": 256, "psnr_views": 150, "summary": summary, "objects": objects}))
    sheet = Image.new("RGB", (20, 4 * count))
    for i in range(count):  # one row per object, told by its red
        sheet.paste((10 * i, 0, 0), (0, 4 * i, 20, 4 * i + 4))
    sheet.save(folder / "turntables.png")
    return folder


@pytest.fixture(scope="module")
def candidate(tmp_path_factory):
    from trellis_impl.pipelines import write_random_model_folder
    folder = write_random_model_folder(tmp_path_factory.mktemp("candidate") / "demo_candidate")
    (folder / "logs" / "s1").mkdir(parents=True)
    (folder / "logs" / "s1" / "run.jsonl").write_text("{}\n")
    return folder


def test_ships_what_the_pipeline_reads_with_its_figures(candidate, tmp_path):
    out = ship(candidate, _quality(tmp_path / "q"), tmp_path / "pkg" / "demo_model")
    shipped = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert "pipeline.json" in shipped and "dinov2/model.safetensors" in shipped and "turntables.png" in shipped
    assert json.loads((out / "quality.json").read_text())["objects"][0]["object"] == "mushroom_000009"
    assert {"ckpts/ss_enc_random.json", "ckpts/slat_enc_random.safetensors", "ckpts/slat_dec_mesh_random.json"} <= shipped
    assert not any(name.startswith("logs") for name in shipped)
    assert "slat_dec_rf_random.json" not in {Path(name).name for name in shipped}  # not read by the image path
    assert "slat_decoder_rf" not in json.loads((out / "pipeline.json").read_text())["args"]["models"]
    text = (out / "README.md").read_text()
    assert "| mushroom_000009 | 0.800 | 0.050 | 29.00 |" in text and "Below its targets" not in text
    from trellis_impl.pipelines import ImageTo3DPipeline
    ImageTo3DPipeline.from_folder(out)  # loads as a model folder
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_a_long_turntable_sheet_ships_its_first_rows(candidate, tmp_path):
    from PIL import Image
    from demo_ship import SHEET_OBJECTS
    out = ship(candidate, _quality(tmp_path / "q", count=SHEET_OBJECTS + 3), tmp_path / "pkg" / "demo_model")
    with Image.open(out / "turntables.png") as sheet:
        assert sheet.size == (20, 4 * SHEET_OBJECTS)
        assert [sheet.getpixel((0, 4 * i))[0] for i in range(SHEET_OBJECTS)] == [10 * i for i in range(SHEET_OBJECTS)]
    assert len(json.loads((out / "quality.json").read_text())["objects"]) == SHEET_OBJECTS + 3  # the figures stay whole
    assert f"(the first\n{SHEET_OBJECTS} objects;" in (out / "README.md").read_text()


def test_refusals_write_nothing(candidate, tmp_path):
    out = tmp_path / "demo_model"
    with pytest.raises(ValueError, match="misses its targets: mean_iou 0.600"):
        ship(candidate, _quality(tmp_path / "low", iou=0.6), out)
    # every object's colour within 0.1, not their mean: one miss of three is a shortfall
    with pytest.raises(ValueError, match="misses its targets: dominant colour within 0.1 for 2 of 3 objects"):
        ship(candidate, _quality(tmp_path / "one_colour_off", count=3, colours=[0.01, 0.01, 0.2]), out)
    with pytest.raises(ValueError, match="generation run on held-out objects"):
        ship(candidate, _quality(tmp_path / "ceiling", mode="ceiling"), out)
    with pytest.raises(ValueError, match="no quality.json"):
        ship(candidate, tmp_path / "nothing", out)
    empty = _quality(tmp_path / "empty")
    (empty / "quality.json").write_text(json.dumps({**json.loads((empty / "quality.json").read_text()), "objects": []}))
    with pytest.raises(ValueError, match="no objects scored"):
        ship(candidate, empty, out)
    from PIL import Image
    Image.new("RGB", (20, 7)).save(_quality(tmp_path / "odd_sheet") / "turntables.png")
    with pytest.raises(ValueError, match="not one row per object for 2 objects"):
        ship(candidate, tmp_path / "odd_sheet", out)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    ship(candidate, _quality(tmp_path / "low", iou=0.6), out, below_targets=True)
    assert "**Below its targets:** mean_iou 0.600 (target >= 0.75)" in (out / "README.md").read_text()
    with pytest.raises(FileExistsError, match="--replace"):
        ship(candidate, _quality(tmp_path / "good"), out)
    ship(candidate, _quality(tmp_path / "good"), out, replace=True)
    assert "Below its targets" not in (out / "README.md").read_text()


def test_command_line_refusal_is_one_line(candidate, tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "demo_ship.py"), str(candidate),
                           str(_quality(tmp_path / "q", psnr=20.0)), "--out", str(tmp_path / "m")],
                          capture_output=True, text=True)
    assert done.returncode != 0 and done.stderr.strip().count("\n") == 0
    assert "mean_psnr_db 20.000 (target >= 28.0)" in done.stderr and not (tmp_path / "m").exists()
