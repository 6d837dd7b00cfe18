"""install.py: requirements without torch, accelerators matched to torch/CUDA, failures are warnings."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def install(monkeypatch):
    spec = importlib.util.spec_from_file_location("trellis_install", ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls = []
    monkeypatch.setattr(module, "pip_install", lambda args: calls.append(list(args)) or not any("bad" in a for a in args))
    module.calls = calls
    return module


def test_torch_lines_are_never_installed(install, monkeypatch):
    monkeypatch.setattr(install, "requirements", lambda: ["numpy", "torch==2.5", "torchvision", "Torch>=2", "scipy"])
    monkeypatch.setattr(install, "torch_cuda", lambda: (None, None))
    assert install.main([]) == 0
    assert install.calls == [["numpy"], ["scipy"]]


@pytest.mark.parametrize("cuda, expected", [("12.8", "spconv-cu126"), ("12.4", "spconv-cu124"),
                                            ("12.2", "spconv-cu121"), ("13.0", "spconv-cu126"),
                                            ("11.8", "spconv-cu118"), ("11.1", None), (None, None)])
def test_spconv_build_matches_torch_cuda(install, cuda, expected):
    assert install.spconv_package(cuda) == expected


def test_accelerators_follow_the_gpu(install):
    assert install.accelerators(None, None) == []
    ampere = [a[0] for a in install.accelerators("12.4", (8, 6))]
    assert ampere == ["spconv-cu124", "diffrp-nvdiffrast", "gsplat"]
    hopper = [a[0] for a in install.accelerators("12.8", (9, 0))]
    assert hopper == ["spconv-cu126", "diffrp-nvdiffrast", "gsplat", "flash-attn-4"]
    for args in install.accelerators("12.8", (9, 0))[1:]:
        assert "--no-deps" in args                      # nothing that could pull a torch


def test_binary_only_and_failures_are_warnings(install, monkeypatch, capsys):
    monkeypatch.setattr(install, "requirements", lambda: ["numpy", "bad-package"])
    monkeypatch.setattr(install, "torch_cuda", lambda: ("12.4", (8, 9)))
    monkeypatch.setattr(install, "accelerators", lambda cuda, cap: [["spconv-cu124"], ["bad-accelerator", "--no-deps"]])
    assert install.main([]) == 0
    assert ["--only-binary=:all:", "spconv-cu124"] in install.calls
    err = capsys.readouterr().err
    assert "bad-package" in err and "bad-accelerator (optional)" in err


def test_accelerators_can_be_skipped(install, monkeypatch):
    monkeypatch.setattr(install, "requirements", lambda: ["numpy"])
    monkeypatch.setattr(install, "torch_cuda", lambda: pytest.fail("must not look at CUDA"))
    assert install.main(["--no-accelerators"]) == 0
    monkeypatch.setenv("TRELLIS_NO_ACCELERATORS", "1")
    assert install.main([]) == 0
    assert install.calls == [["numpy"], ["numpy"]]


def test_pip_builds_the_library_and_cli(tmp_path):
    """`pip install .` carries the library and the `trellis-3d` command, not the tests or nodes."""
    import subprocess
    import sys
    import zipfile
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
                    str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "trellis_impl/cli.py" in names and "trellis_impl/training/stages/encoder_distill.py" in names
    assert not any(n.startswith(("tests/", "nodes/", "web/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "trellis-3d = trellis_impl.__main__:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
