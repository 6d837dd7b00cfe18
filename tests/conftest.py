"""Shared test helpers: conformance fixtures and tolerance checks."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
CONFORMANCE = FIXTURES / "conformance"


def load_case(name: str):
    """Tensors and metadata of conformance case ``name`` (JSON metadata values decoded)."""
    from safetensors import safe_open
    path = CONFORMANCE / "cases" / f"{name}.safetensors"
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = dict(f.metadata() or {})
    for key in ("sampler_args", "params"):
        if key in meta:
            meta[key] = json.loads(meta[key])
    return tensors, meta


def ckpt_path(name: str) -> str:
    return str(CONFORMANCE / "ckpts" / name)


def assert_rel_close(actual: torch.Tensor, ref: torch.Tensor, tol: float, what: str = "") -> float:
    """max|actual - ref| <= tol * max|ref|; returns the relative error."""
    assert actual.shape == ref.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(ref.shape)}"
    actual, ref = actual.detach().double().cpu(), ref.detach().double().cpu()
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    scale = ref.abs().max().clamp_min(1e-12)
    err = float((actual - ref).abs().max() / scale)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"
    return err


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped on CPU; run on the device, see docs/gpu.md)")
