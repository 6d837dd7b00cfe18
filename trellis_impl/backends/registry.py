"""The backend registry: the one piece of global state in the library.

Each backend family (attention, sparse convolution, later rasterisers) registers its
implementations here. A family's choice is made once per (device type, dtype class), from,
in order: the argument of the call, ``set_backend``, the family's environment variable, and
finally the first available implementation in the family's preference order. Each choice is
logged once.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch

log = logging.getLogger("trellis_impl")


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


def family(name: str, env_var: str, preference: Dict[str, List[str]]) -> BackendFamily:
    """Create (once) and return the family called ``name``."""
    if name not in _FAMILIES:
        _FAMILIES[name] = BackendFamily(name, env_var, preference)
    return _FAMILIES[name]


def set_backend(family_name: str, backend: Optional[str]) -> None:
    """Force ``backend`` for a family ('attention', 'sparse_conv', ...); None/'auto' resets."""
    if family_name not in _FAMILIES:
        raise ValueError(f"unknown backend family {family_name!r}; allowed: {', '.join(_FAMILIES)}")
    _FAMILIES[family_name].set(backend)


def available_backends(device: torch.device, dtype: torch.dtype = torch.float16) -> Dict[str, List[str]]:
    """For each family, the backends that can run on ``device``/``dtype`` here."""
    return {n: [b.name for b in f.backends.values() if b.available(device, dtype)] for n, f in _FAMILIES.items()}


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
