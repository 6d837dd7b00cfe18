"""The backend registry's contract, on CPU: argument > set_backend > environment > automatic
choice; unknown names rejected with the allowed ones listed; a requested backend that cannot run
falls back with one warning; every choice logged once."""
from __future__ import annotations

import logging

import pytest
import torch

from trellis_impl.backends.attention import ATTENTION, SeqLens, varlen_attention
from trellis_impl.backends.registry import available_backends, backends_in_scope, set_backend
from trellis_impl.backends.sparse_conv import SPARSE_CONV, build_neighbour_map, submanifold_conv3d

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _clean_registry(monkeypatch, caplog):
    """No forced backend, no environment choice, no remembered choice (so logs repeat per test)."""
    monkeypatch.delenv("TRELLIS_ATTN_BACKEND", raising=False)
    monkeypatch.delenv("TRELLIS_CONV_BACKEND", raising=False)
    set_backend("attention", None)
    set_backend("sparse_conv", None)
    caplog.set_level(logging.INFO, logger="trellis_impl")
    yield
    set_backend("attention", None)
    set_backend("sparse_conv", None)


def chosen(requested=None, dtype=torch.float32) -> str:
    return ATTENTION.resolve(CPU, dtype, requested).name


def records(caplog, level):
    return [r for r in caplog.records if r.name == "trellis_impl" and r.levelno == level]


def test_automatic_choice_on_cpu():
    assert chosen() == "sdpa"
    assert SPARSE_CONV.resolve(CPU, torch.float32).name == "torch"
    available = available_backends(CPU, torch.float16)  # other families may be registered too
    assert available["attention"] == ["sdpa", "naive"] and available["sparse_conv"] == ["torch"]


def test_precedence_argument_then_set_backend_then_environment(monkeypatch):
    monkeypatch.setenv("TRELLIS_ATTN_BACKEND", "naive")
    assert chosen() == "naive"
    set_backend("attention", "sdpa")
    assert chosen() == "sdpa"
    assert chosen("naive") == "naive"
    set_backend("attention", "auto")
    assert chosen() == "naive"
    monkeypatch.setenv("TRELLIS_ATTN_BACKEND", "auto")
    assert chosen() == "sdpa"


def test_a_models_choice_comes_after_the_argument_and_before_the_process(monkeypatch):
    monkeypatch.setenv("TRELLIS_ATTN_BACKEND", "sdpa")
    set_backend("attention", "sdpa")
    with backends_in_scope({"attention": "naive", "sparse_conv": "auto"}):
        assert chosen() == "naive" and chosen("sdpa") == "sdpa"
        with backends_in_scope({"sparse_conv": "torch"}):  # nested: adds to the outer choices
            assert chosen() == "naive"
    assert chosen() == "sdpa"
    with pytest.raises(ValueError, match="attention backend: unknown attention backend 'fast'; allowed"):
        with backends_in_scope({"attention": "fast"}):
            pass
    with pytest.raises(RuntimeError), backends_in_scope({"attention": "naive"}):
        raise RuntimeError  # an error inside leaves no choice behind
    assert chosen() == "sdpa"


def test_a_model_runs_with_its_own_backends():
    from trellis_impl.models.base import TrellisModel

    class Probe(TrellisModel):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def torso(self):
            return []

        def forward(self):
            return ATTENTION.resolve(CPU, torch.float32).name

    chosen_by, default = Probe(), Probe()
    chosen_by.backends = {"attention": "naive"}
    assert chosen_by() == "naive" and default() == "sdpa" and chosen() == "sdpa"


def test_the_argument_reaches_the_kernel(caplog):
    q, k, v = torch.randn(3, 7, 2, 8).unbind(0)
    lens = SeqLens([3, 4])
    naive = varlen_attention(q, k, v, lens, backend="naive")
    assert [r.getMessage() for r in records(caplog, logging.INFO)] == [
        "[trellis] attention backend: naive (from argument) on cpu/float32"]
    torch.testing.assert_close(varlen_attention(q, k, v, lens, backend="sdpa"), naive, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("how", ["argument", "set_backend", "environment"])
def test_unknown_names_list_the_allowed_ones(how, monkeypatch):
    allowed = "'auto', 'sdpa', 'naive', 'torch_varlen', 'flash_attn', 'flash_attn_4'"
    with pytest.raises(ValueError, match="unknown attention backend 'nope'") as error:
        if how == "argument":
            chosen("nope")
        elif how == "set_backend":
            set_backend("attention", "nope")
        else:
            monkeypatch.setenv("TRELLIS_ATTN_BACKEND", "nope")
            chosen()
    assert allowed in str(error.value)
    with pytest.raises(ValueError, match="'torch', 'spconv'"):
        SPARSE_CONV.resolve(CPU, torch.float32, "nope")
    with pytest.raises(ValueError, match="unknown backend family 'nope'; allowed: .*attention"):
        set_backend("nope", "sdpa")


def test_backend_that_cannot_run_here_falls_back_with_one_warning(caplog):
    for _ in range(3):
        assert chosen("torch_varlen") == "sdpa"
    warnings = records(caplog, logging.WARNING)
    assert len(warnings) == 1
    assert "'torch_varlen' (from argument) cannot run on cpu/float32" in warnings[0].getMessage()


def test_fallback_from_the_environment_for_sparse_conv(monkeypatch, caplog):
    monkeypatch.setenv("TRELLIS_CONV_BACKEND", "spconv")
    coords = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.int32)
    neighbours = build_neighbour_map(coords, 3)
    weight = torch.ones(1, 3, 3, 3, 1)
    for _ in range(2):
        assert submanifold_conv3d(torch.ones(2, 1), coords, neighbours, weight).squeeze(1).tolist() == [2.0, 2.0]
    warnings = records(caplog, logging.WARNING)
    assert len(warnings) == 1 and "'spconv' (from TRELLIS_CONV_BACKEND)" in warnings[0].getMessage()


def test_each_choice_is_logged_once(caplog):
    for _ in range(3):
        chosen()
        chosen("naive")
        chosen(dtype=torch.float16)
    messages = [r.getMessage() for r in records(caplog, logging.INFO)]
    assert sorted(messages) == sorted([
        "[trellis] attention backend: sdpa (auto) on cpu/float32",
        "[trellis] attention backend: naive (from argument) on cpu/float32",
        "[trellis] attention backend: sdpa (auto) on cpu/float16",
    ])


def test_every_declared_family_is_settable_in_a_fresh_process():
    """set_backend imports the family's implementation on first use: no other import needed."""
    import subprocess
    import sys
    from pathlib import Path
    from trellis_impl.backends.registry import FAMILIES
    code = ("from trellis_impl.backends.registry import FAMILIES, set_backend, family\n"
            "for name in FAMILIES:\n"
            "    set_backend(name, 'torch' if name not in ('attention',) else 'sdpa')\n"
            "    assert family(name).forced is not None, name\n"
            "    set_backend(name, 'auto')\n"
            "print(sorted(FAMILIES))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == str(sorted(FAMILIES))
    assert set(FAMILIES) == {"attention", "sparse_conv", "gaussian_raster", "mesh_raster", "radiance_field_render"}
