"""scripts/demo_latent_drift.py: zero for one folder against itself, large for unrelated weights."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
from demo_latent_drift import latent_drift  # noqa: E402


def test_latent_drift_of_a_folder_against_itself_and_another(tmp_path):
    from trellis_impl.pipelines import write_random_model_folder
    first = write_random_model_folder(tmp_path / "first", seed=0)
    second = write_random_model_folder(tmp_path / "second", seed=1)
    same = latent_drift(first, first, [("cup", 9)], views=2, resolution=48)
    assert list(same) == ["cup_000009"] and same["cup_000009"] == 0.0
    other = latent_drift(first, second, [("cup", 9)], views=2, resolution=48)
    assert other["cup_000009"] > 0.1


def test_a_missing_folder_is_refused_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "demo_latent_drift.py"), str(tmp_path / "old"),
                           str(tmp_path / "new"), "--objects", "1"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode != 0 and done.stderr.startswith("demo_latent_drift: ") and \
        done.stderr.strip().count("\n") == 0, done.stderr
