"""Fixtures of the node tests (imported by the test modules; not a conftest.py, whose name the
other test folders import as ``from conftest import ...``): the fake host (2025 / 2026 variants), the pack imported the way
ComfyUI imports it, and small random model folders (written once per session)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
import comfy_host  # noqa: E402

_PACK = {}


def _import_pack_isolated():
    """Import with the repo root hidden from sys.path and no top-level trellis_impl, as inside
    ComfyUI (the pack folder is not on sys.path there)."""
    if "pack" in _PACK:
        return _PACK["pack"]
    saved_path = list(sys.path)
    saved_modules = {k: v for k, v in sys.modules.items() if k == "trellis_impl" or k.startswith("trellis_impl.")}
    for k in saved_modules:
        del sys.modules[k]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO]
    try:
        _PACK["pack"] = comfy_host.import_pack(REPO)
    finally:
        sys.path[:] = saved_path
        sys.modules.update(saved_modules)
    return _PACK["pack"]


@pytest.fixture(scope="session", name="model_root")
def model_root_fixture(tmp_path_factory):
    from trellis_impl.pipelines.random_folder import write_random_model_folder
    root = tmp_path_factory.mktemp("extra_models") / "trellis"
    write_random_model_folder(root / "random-image", kind="image")
    write_random_model_folder(root / "random-text", kind="text")
    return root


def _host(tmp_path, variant, model_root):
    host = comfy_host.install(tmp_path, variant)
    # as extra_model_paths.yaml would, before the pack registers models/trellis
    host.folder_paths.add_model_folder_path("trellis", str(model_root))
    return host


@pytest.fixture(params=["2025", "2026"], name="host")
def host_fixture(request, tmp_path, model_root):
    h = _host(tmp_path, request.param, model_root)
    yield h
    comfy_host.uninstall()


@pytest.fixture(name="host2026")
def host2026_fixture(tmp_path, model_root):
    h = _host(tmp_path, "2026", model_root)
    yield h
    comfy_host.uninstall()


@pytest.fixture(name="pack")
def pack_fixture():
    return _import_pack_isolated()


@pytest.fixture(name="nodes")
def nodes_fixture(pack):
    return {k: cls() for k, cls in pack.NODE_CLASS_MAPPINGS.items()}
