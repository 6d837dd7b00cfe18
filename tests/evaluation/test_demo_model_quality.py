"""The embedded demo model on CPU, on the first held-out procedural objects generated from their front
pictures (and the first one encoded and decoded):

- it reproduces the figures recorded when it shipped (its ``quality.json``, written by
  ``scripts/demo_quality.py``): silhouette IoU, dominant-colour error and reconstruction PSNR;
- its recorded figures, over all the held-out objects they were taken on, meet what issue 12 asks
  (mean silhouette IoU >= 0.75, every dominant colour within 0.1, mean render PSNR >= 28 dB); the
  first test ties them to this model. A model shipped below them (``scripts/demo_ship.py
  --below-targets``, which its README says at the top) is an expected failure here, reported as
  such with its figures.

Runs on the embedded model (``trellis_impl/demo_model``) once this copy of the package has it, or
on the folder named by ``TRELLIS_DEMO_QUALITY_FOLDER`` (to check a candidate before shipping it)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from trellis_impl.pipelines.model_folder import DEMO_MODEL_PATH

FOLDER = os.environ.get("TRELLIS_DEMO_QUALITY_FOLDER") or (
    str(DEMO_MODEL_PATH) if (DEMO_MODEL_PATH / "pipeline.json").is_file() else None)
RECORDED_PATH = Path(FOLDER) / "quality.json" if FOLDER else None
RECORDED = json.loads(RECORDED_PATH.read_text()) if RECORDED_PATH and RECORDED_PATH.is_file() else None

pytestmark = pytest.mark.skipif(FOLDER is None, reason="no embedded demo model in this copy yet (issue 12 ships it)")

OBJECTS = 3          # the first held-out objects: mushroom, snowman, table
MIN_MEAN_IOU = 0.75
MAX_COLOUR_ERROR = 0.1
MIN_PSNR_DB = 28.0
# how far a rerun may drift from the recorded figures: another CPU's float rounding can move a
# voxel or a Gaussian across a threshold; a changed model or pipeline moves them much further
IOU_TOLERANCE = 0.02
COLOUR_TOLERANCE = 0.02
PSNR_TOLERANCE_DB = 0.3


def _recorded_shortfalls() -> list:
    if RECORDED is None:
        return []
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from demo_ship import shortfalls
    return shortfalls(RECORDED["summary"])


SHORTFALLS = _recorded_shortfalls()


@pytest.fixture(scope="module")
def figures():
    """The first held-out objects generated as demo_quality.py did (its picture size and seed), and
    the first one's reconstruction PSNR from as many encoder views."""
    from trellis_impl.evaluation import reconstruction_psnr, score_objects, textured_procedural_object
    from trellis_impl.pipelines import ImageTo3DPipeline
    from trellis_impl.render import orbit_cameras
    from trellis_impl.training.procedural import object_name, object_plan
    size, seed = (RECORDED["size"], RECORDED["seed"]) if RECORDED else (256, 42)
    views = RECORDED["psnr_views"] if RECORDED else 40
    pipeline = ImageTo3DPipeline.from_folder(Path(FOLDER), device="cpu")
    objects = object_plan(OBJECTS, split="held_out")
    generated = score_objects(pipeline, objects, size=size, seed=seed, psnr_views=None)
    kind, object_seed = objects[0]
    psnr_db = reconstruction_psnr(pipeline, textured_procedural_object(kind, object_seed),
                                  orbit_cameras(8, pitch=0.3, width=size, height=size), views=views)
    return {"objects": {f.name: (f.score.iou, f.score.colour_error) for f in generated},
            "psnr": (object_name(kind, object_seed), psnr_db)}


@pytest.mark.skipif(RECORDED is None, reason="the folder has no recorded figures (quality.json): a candidate")
def test_demo_model_reproduces_its_recorded_figures(figures):
    recorded = {o["object"]: o for o in RECORDED["objects"]}
    for name, (iou, colour_error) in figures["objects"].items():
        assert abs(iou - recorded[name]["iou"]) <= IOU_TOLERANCE, (name, iou, recorded[name]["iou"])
        assert abs(colour_error - recorded[name]["colour_error"]) <= COLOUR_TOLERANCE, \
            (name, colour_error, recorded[name]["colour_error"])
    name, psnr_db = figures["psnr"]
    assert abs(psnr_db - recorded[name]["psnr_db"]) <= PSNR_TOLERANCE_DB, (name, psnr_db, recorded[name]["psnr_db"])


@pytest.mark.skipif(RECORDED is None, reason="the folder has no recorded figures (quality.json): a candidate")
@pytest.mark.xfail(bool(SHORTFALLS), strict=False,
                   reason="shipped below its targets: " + "; ".join(SHORTFALLS) + " (its README, docs/demo_model.md)")
def test_demo_model_meets_its_quality_figures():
    """The targets hold over all the recorded objects (two of each of the 15 kinds): mean IoU, every
    colour, mean PSNR. The three objects the first test reruns say little of a mean: the first, a
    mushroom whose two caps merge, scored 23-24 dB and an IoU of 0.33-0.41 in the last three models."""
    objects = RECORDED["objects"]
    mean_iou = sum(o["iou"] for o in objects) / len(objects)
    assert mean_iou >= MIN_MEAN_IOU, f"mean silhouette IoU {mean_iou:.3f} < {MIN_MEAN_IOU} over {len(objects)} objects"
    off = {o["object"]: round(o["colour_error"], 3) for o in objects if o["colour_error"] > MAX_COLOUR_ERROR}
    assert not off, f"dominant colour error > {MAX_COLOUR_ERROR} for {len(off)} of {len(objects)} objects: {off}"
    mean_psnr = sum(o["psnr_db"] for o in objects) / len(objects)
    assert mean_psnr >= MIN_PSNR_DB, \
        f"mean reconstruction PSNR {mean_psnr:.2f} dB < {MIN_PSNR_DB} over {len(objects)} objects ({RECORDED['psnr_views']} views)"
