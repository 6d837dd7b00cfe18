"""The backend registry: the one piece of global state in the library.

Every backend family is declared here (``FAMILIES``: its environment variable, its preference order
per device type and the module that implements it). The implementing module registers its backends
when it is imported, which happens on the family's first use (``family``, ``set_backend``,
``available_backends``), so no kernel loads before it is needed. A family's choice is made once per
(device type, dtype class), from, in order: the argument of the call, the choices of the model
being called (``backends_in_scope``, which ``TrellisModel.backends`` enters), ``set_backend``, the
family's environment variable, and finally the first available implementation in the family's
preference order. Each choice is logged once.
"""
from __future__ import annotations

import importlib
import logging
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import torch

log = logging.getLogger("trellis_impl")

# name -> (environment variable, preference order per device type, implementing module under the
# package root). The first available name of the device type's list is the automatic choice.
FAMILIES: Dict[str, Tuple[str, Dict[str, List[str]], str]] = {
    "attention": ("TRELLIS_ATTN_BACKEND", {"cuda": ["torch_varlen", "flash_attn_4", "flash_attn", "sdpa"],
                                           "default": ["sdpa"]}, "backends.attention"),
    "sparse_conv": ("TRELLIS_CONV_BACKEND", {"default": ["torch"]}, "backends.sparse_conv"),
    "gaussian_raster": ("TRELLIS_GS_BACKEND", {"cuda": ["gsplat", "torch"], "default": ["torch"]},
                        "render.gaussian_raster"),
    "mesh_raster": ("TRELLIS_MESH_RASTER_BACKEND", {"cuda": ["nvdiffrast", "torch"], "default": ["torch"]},
                    "render.mesh_raster"),
    "radiance_field_render": ("TRELLIS_RF_BACKEND", {"default": ["torch"]}, "render.radiance_field_render"),
}
_PACKAGE = __name__.rsplit(".", 2)[0]  # 'trellis_impl', or its name inside a host's custom_nodes package


@dataclass
class Backend:
    """One implementation of a family.

    Attributes:
        name: the name users pass (argument, environment variable).
        fn: the implementation.
        available: ``available(device, dtype) -> bool``; False when the package is missing or
            the kernel cannot take this device/dtype (e.g. flash kernels on CPU or float32).
    """
    name: str
    fn: Callable
    available: Callable[[torch.device, torch.dtype], bool]


@dataclass
class BackendFamily:
    """A dispatch point: a named set of backends with a preference order per device type."""
    name: str
    env_var: str
    preference: Dict[str, List[str]]
    backends: Dict[str, Backend] = field(default_factory=dict)
    forced: Optional[str] = None
    _chosen: Dict[Tuple[str, torch.dtype, str], str] = field(default_factory=dict)

    def register(self, name: str, fn: Callable, available: Callable[[torch.device, torch.dtype], bool]) -> None:
        self.backends[name] = Backend(name, fn, available)

    def names(self) -> List[str]:
        return list(self.backends)

    def set(self, name: Optional[str]) -> None:
        """Force a backend for this process (None or 'auto' returns to automatic choice)."""
        if name not in (None, "auto"):
            self._check_name(name, "set_backend")
        self.forced = None if name == "auto" else name
        self._chosen.clear()

    def _check_name(self, name: str, source: str) -> None:
        if name not in self.backends:
            raise ValueError(
                f"{source}: unknown {self.name} backend {name!r}; allowed: 'auto', "
                + ", ".join(repr(n) for n in self.backends))

    def resolve(self, device: torch.device, dtype: torch.dtype, requested: Optional[str] = None) -> Backend:
        """Pick the backend for a call on ``device`` with ``dtype``.

        A backend requested explicitly (argument, ``set_backend`` or environment) that cannot
        run this device/dtype falls back to the automatic choice, with a warning logged once.
        """
        request, source = requested, "argument"
        if request in (None, "auto"):
            request, source = getattr(_SCOPE, "choices", {}).get(self.name), "the model's choice"
        if request in (None, "auto"):
            request, source = self.forced, "set_backend"
        if request in (None, "auto"):
            request, source = os.environ.get(self.env_var) or None, self.env_var
        if request == "auto":
            request = None
        key = (device.type, dtype, request or "")
        name = self._chosen.get(key)
        if name is None:
            name = self._choose(device, dtype, request, source)
            self._chosen[key] = name
        return self.backends[name]

    def _choose(self, device: torch.device, dtype: torch.dtype, request: Optional[str], source: str) -> str:
        if request is not None:
            self._check_name(request, source)
            if self.backends[request].available(device, dtype):
                log.info("[trellis] %s backend: %s (from %s) on %s/%s", self.name, request, source, device.type,
                         str(dtype).replace("torch.", ""))
                return request
            log.warning("[trellis] %s backend %r (from %s) cannot run on %s/%s; using the automatic choice",
                        self.name, request, source, device.type, str(dtype).replace("torch.", ""))
        order = self.preference.get(device.type, self.preference["default"])
        for name in order:
            if name in self.backends and self.backends[name].available(device, dtype):
                log.info("[trellis] %s backend: %s (auto) on %s/%s", self.name, name, device.type,
                         str(dtype).replace("torch.", ""))
                return name
        raise RuntimeError(f"no {self.name} backend can run on {device.type}/{dtype}")


_FAMILIES: Dict[str, BackendFamily] = {}


def family(name: str) -> BackendFamily:
    """The declared family ``name`` (created on first call; its implementing module registers into it)."""
    if name not in FAMILIES:
        raise ValueError(f"unknown backend family {name!r}; allowed: {', '.join(FAMILIES)}")
    if name not in _FAMILIES:
        env_var, preference, _ = FAMILIES[name]
        _FAMILIES[name] = BackendFamily(name, env_var, preference)
    return _FAMILIES[name]


def _loaded(name: str) -> BackendFamily:
    """The family with its implementations registered (their module imported)."""
    found = family(name)
    importlib.import_module(f"{_PACKAGE}.{FAMILIES[name][2]}")
    return found


def set_backend(family_name: str, backend: Optional[str]) -> None:
    """Force ``backend`` for a family (one of ``FAMILIES``) in this process; None/'auto' resets."""
    _loaded(family_name).set(backend)


def check_backend(family_name: str, backend: Optional[str], what: str = "backend") -> None:
    """ValueError naming ``what`` and the allowed names unless ``backend`` is one of the family's
    backends, 'auto' or None."""
    if backend not in (None, "auto"):
        _loaded(family_name)._check_name(backend, what)


_SCOPE = threading.local()  # this thread's backends_in_scope choices


@contextmanager
def backends_in_scope(choices: Mapping[str, Optional[str]]) -> Iterator[None]:
    """Within the block, in this thread, use ``choices`` ({family: backend}; 'auto' or None leaves
    a family to the process's choice) before ``set_backend`` and the environment; an explicit
    argument still wins. Nested blocks add to the outer one's choices."""
    for name, backend in choices.items():
        check_backend(name, backend, f"{name} backend")
    outer = getattr(_SCOPE, "choices", {})
    _SCOPE.choices = {**outer, **{name: b for name, b in choices.items() if b not in (None, "auto")}}
    try:
        yield
    finally:
        _SCOPE.choices = outer


def available_backends(device: torch.device, dtype: torch.dtype = torch.float16) -> Dict[str, List[str]]:
    """For each family, the backends that can run on ``device``/``dtype`` here."""
    families = [_loaded(name) for name in FAMILIES]
    return {f.name: [b.name for b in f.backends.values() if b.available(device, dtype)] for f in families}


def importable(module: str) -> bool:
    """True when ``module`` imports (used by availability checks; the result is cached)."""
    if module not in _IMPORTABLE:
        try:
            __import__(module)
            _IMPORTABLE[module] = True
        except Exception:  # an accelerator that is installed but broken counts as absent
            _IMPORTABLE[module] = False
    return _IMPORTABLE[module]


_IMPORTABLE: Dict[str, bool] = {}
