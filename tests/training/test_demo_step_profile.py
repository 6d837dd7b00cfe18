"""scripts/demo_step_profile.py: --apply writes a saved profile's fastest variant into the config only
when it beats the config's own setting by the required gain; scripts/sync_sites.py (its --syncs)
counts the warnings of a step (on CUDA, its synchronisations) per site."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
from demo_step_profile import fastest_variant  # noqa: E402
from sync_sites import sync_sites  # noqa: E402

ROWS = [{"precision": "none", "batch": 16, "samples_per_s": 40.0},
        {"precision": "tf32", "batch": 16, "samples_per_s": 44.0},
        {"precision": "none", "batch": 32, "samples_per_s": 60.0}]


def test_fastest_variant_needs_the_gain():
    assert fastest_variant(ROWS, 1.15)["batch"] == 32
    assert fastest_variant(ROWS, 1.6) is ROWS[0]  # 1.5x is not enough: the config stays


def test_apply_writes_the_choice_into_the_config(tmp_path):
    config = tmp_path / "slat_vae_gs.json"
    shutil.copy(REPO / "configs" / "training" / "demo" / "slat_vae_gs.json", config)
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"config": str(config), "rows": ROWS[:2] + [dict(ROWS[2], precision="tf32")]}))
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "demo_step_profile.py"), str(config),
                           "--apply", str(profile)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    trainer = json.loads(config.read_text())["trainer"]
    assert (trainer["mixed_precision"], trainer["batch_size_per_gpu"]) == ("tf32", 32)
    assert "tf32:32" in done.stdout


def _waits_twice_then_once():
    import warnings
    for _ in range(2):
        warnings.warn("synchronizing the host with the device")  # the site counted twice a step
    _wait_once()


def _wait_once():
    import warnings
    warnings.warn("synchronizing the host with the device")


def test_sync_sites_counts_each_site_per_step_at_its_innermost_frame():
    import torch
    sites = sync_sites(_waits_twice_then_once, 3, torch.device("cpu"), root=REPO / "tests")
    assert sorted(sites.values()) == [1.0, 2.0]
    assert all(site.startswith("tests/training/test_demo_step_profile.py:") for site in sites)
    twice = next(site for site, n in sites.items() if n == 2.0)
    assert int(twice.rsplit(":", 1)[1]) == _waits_twice_then_once.__code__.co_firstlineno + 3
