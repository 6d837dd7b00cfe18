"""Fixtures of the node tests (imported by the test modules; not a conftest.py, whose name the
other test folders import as ``from conftest import ...``): the fake host (2025 / 2026 variants), the pack imported the way
ComfyUI imports it (once per host variant) with its nodes as the host's loader takes them, small
random model folders (written once per session), and ``run``, which runs a node as the host does."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
import comfy_host  # noqa: E402
from comfy_host.execution import Ran, run_node  # noqa: E402


def import_pack_isolated(host):
    """Import the pack and its nodes (the entry point imports them) with the repo root hidden from
    sys.path and no top-level trellis_impl, as inside ComfyUI (the pack folder is not on sys.path
    there); once per host variant."""
    name = comfy_host.pack_module_name(REPO, host)
    if name in sys.modules:
        return sys.modules[name]
    saved_path = list(sys.path)
    saved_modules = {k: v for k, v in sys.modules.items() if k == "trellis_impl" or k.startswith("trellis_impl.")}
    for k in saved_modules:
        del sys.modules[k]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO]
    try:
        pack = comfy_host.import_pack(REPO, host)
        comfy_host.load_nodes(pack, host)
        return pack
    finally:
        sys.path[:] = saved_path
        sys.modules.update(saved_modules)


def _test_host(request):
    """The host the test installs (its ``host`` or ``host2026`` fixture), which the pack is imported on."""
    return request.getfixturevalue("host2026" if "host2026" in request.fixturenames else "host")


def _inputs(node_cls, values: tuple, named: dict) -> dict:
    """Positional values bound to the node's inputs in their order (required, then optional), as
    widget values are bound, then the named ones."""
    ids = [name for section in ("required", "optional") for name in node_cls.INPUT_TYPES().get(section, {})]
    if len(values) > len(ids):
        raise TypeError(f"{len(values)} values for the {len(ids)} inputs {ids}")
    bound = dict(zip(ids, values))
    if bound.keys() & named.keys():
        raise TypeError(f"inputs given twice: {sorted(bound.keys() & named.keys())}")
    return {**bound, **named}


def run_with_ui(node_cls, *values, **inputs) -> Ran:
    """Run a node as the host runs it (V3: ``execute`` on a locked copy of the class, its NodeOutput
    taken apart); its outputs and ui."""
    return run_node(node_cls, _inputs(node_cls, values, inputs))


def run(node_cls, *values, **inputs) -> tuple:
    """The outputs of ``run_with_ui``."""
    return run_with_ui(node_cls, *values, **inputs).outputs


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
def pack_fixture(request):
    return import_pack_isolated(_test_host(request))


@pytest.fixture(name="nodes")
def nodes_fixture(request, pack):
    """The node classes by id, as the host's loader takes them from the pack."""
    return comfy_host.load_nodes(pack, _test_host(request))[0]
