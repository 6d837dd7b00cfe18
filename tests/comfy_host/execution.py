"""What the host's ``execution.py`` does around one node of a prompt, for the stand-in executor
(tests/workflows/ui_graph.py) and the node tests: check the node's inputs before anything runs
(``validate_inputs``), fingerprint them (``IsChangedCache``) and run the node, V1 (the FUNCTION
method of an instance) or V3 (``execute`` on a locked copy of the class, so a node keeps no state
between runs), with what it returns normalised to (outputs, ui) as ``get_output_data`` does.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, List, NamedTuple, Optional

_CONVERT = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


class Ran(NamedTuple):
    outputs: tuple
    ui: Optional[dict]


def is_v3(node_cls) -> bool:
    return callable(getattr(node_cls, "GET_NODE_INFO_V1", None))


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def _override(node_cls, name: str):
    """A V3 node's classmethod ``name`` where the node defines it, else None (``first_real_override``)."""
    own = getattr(node_cls, name)
    return None if own.__func__ is getattr(node_cls.GET_BASE_CLASS(), name).__func__ else own


def _own_check(node_cls):
    """The node's own input check: V3 ``validate_inputs``, V1 ``VALIDATE_INPUTS``."""
    return _override(node_cls, "validate_inputs") if is_v3(node_cls) else getattr(node_cls, "VALIDATE_INPUTS", None)


def _link_type_matches(received, expected) -> bool:
    """``comfy_execution/validation.py``: the same type string, or overlapping comma-separated unions."""
    if received == expected:
        return True
    return isinstance(received, str) and isinstance(expected, str) and \
        bool(set(received.split(",")) & set(expected.split(",")))


def check_inputs(node_cls, inputs: Dict[str, Any], received_types: Dict[str, Any], variant: str
                 ) -> tuple[List[str], Dict[str, Any]]:
    """(errors, constants converted to their types) of one node's prompt inputs, as the host's
    ``validate_inputs``: a required input missing, a link from an output of another type, a constant
    that does not convert, is outside [min, max] or not among a combo's choices (the host checks a
    V3 "COMBO" only since 2026), unless the node's own check names the input; then what that check
    returns (it gets the constants it names, linked inputs as None)."""
    declared = node_cls.INPUT_TYPES()
    check = _own_check(node_cls)
    spec = inspect.getfullargspec(check) if check is not None else None
    named_by_check = set(spec.args) if spec else set()
    check_takes_all = bool(spec and spec.varkw)
    errors, constants = [], {}
    for section in ("required", "optional"):
        for name, entry in declared.get(section, {}).items():
            kind, options = entry[0], (entry[1] if len(entry) > 1 else {})
            if name not in inputs:
                if section == "required":
                    errors.append(f"Required input is missing: {name}")
                continue
            value = inputs[name]
            if is_link(value):
                if not _link_type_matches(received_types[name], kind):
                    errors.append(f"Return type mismatch between linked nodes: {name}, "
                                  f"received_type({received_types[name]}) mismatch input_type({kind})")
                continue
            try:
                value = _CONVERT[kind](value) if isinstance(kind, str) and kind in _CONVERT else value
            except (TypeError, ValueError) as error:
                errors.append(f"Failed to convert an input value to a {kind} value: {name}, {value}, {error}")
                continue
            constants[name] = value
            if name in named_by_check or check_takes_all:
                continue
            if "min" in options and value < options["min"]:
                errors.append(f"Value {value} smaller than min of {options['min']}: {name}")
            elif "max" in options and value > options["max"]:
                errors.append(f"Value {value} bigger than max of {options['max']}: {name}")
            else:
                choices = kind if isinstance(kind, list) else \
                    options.get("options") if kind == "COMBO" and variant == "2026" else None
                if choices is not None and value not in choices:
                    errors.append(f"Value not in list: {name}: {value!r} not in {choices}")
    if check is not None:
        given = {name: constants.get(name) for name in inputs if name in named_by_check or check_takes_all}
        verdict = _call(node_cls, check.__name__, given)
        if verdict is not True:
            errors += [f"Custom validation failed for node: {name} - {verdict}" for name in given]
    return errors, constants


def fingerprint(node_cls, constants: Dict[str, Any], linked: List[str]):
    """The node's ``fingerprint_inputs`` (V1: ``IS_CHANGED``) of its constant inputs (linked ones
    as None), part of its cache key; False when it has none, NaN when it fails (always re-run)."""
    if is_v3(node_cls):
        own = _override(node_cls, "fingerprint_inputs")
    else:
        own = getattr(node_cls, "IS_CHANGED", None)
    if own is None:
        return False
    try:
        return _call(node_cls, own.__name__, {**constants, **{key: None for key in linked}})
    except Exception:
        return float("nan")


def _locked_copy(node_cls):
    """What a V3 node's classmethods run on: a subclass whose class attributes cannot be set."""
    class Locked(type(node_cls)):
        def __setattr__(cls, name, value):
            raise AttributeError(f"Cannot modify class attribute '{name}' on locked class '{cls.__name__}'")
    return Locked(f"{node_cls.__name__}Clone", (node_cls,), {})


def _call(node_cls, method: str, inputs: Dict[str, Any]):
    if is_v3(node_cls):
        return getattr(node_cls, method).__func__(_locked_copy(node_cls), **inputs)
    function = getattr(node_cls, method)
    return function(**inputs) if inspect.ismethod(function) else getattr(node_cls(), method)(**inputs)


def run_node(node_cls, inputs: Dict[str, Any]) -> Ran:
    """Run one node with its input values; its outputs and ui as the host keeps them."""
    result = _call(node_cls, node_cls.FUNCTION, inputs)
    if is_v3(node_cls):
        return Ran(tuple(result.args), result.ui)
    if isinstance(result, dict):
        return Ran(tuple(result.get("result", ())), result.get("ui"))
    return Ran(tuple(result), None)
