"""Stand-in for ComfyUI's V3 node API (``comfy_api.latest``: ``io``, ``ComfyExtension``), only what the
pack uses, written from CONTRACT.md (sections 3, 11, 12) and the behaviour of ``comfy_api/latest/_io.py``
of ComfyUI 0.3.64 and 0.24.0: the schema classes, the V1 info the server builds from a schema
(``GET_NODE_INFO_V1``, what the front end gets from ``/object_info``), and the class properties the
executor reads (``RETURN_TYPES``, ``OUTPUT_NODE``...).

The module runs once per host variant (``comfy_host.v3_api(variant)`` sets ``VARIANT`` first), so a
pack imported on each variant gets classes of its own. What 0.3.64 lacks is missing here too:
inputs take no ``advanced=`` (passing it fails as an unknown keyword does), widget inputs take no
``extra_dict=``, an output without ``display_name`` is named by its type, and there are no SPLAT /
File3D sockets.
"""
from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, List, Optional

VARIANT: str  # "2025" (ComfyUI 0.3.64) or "2026" (0.24.0), set before this module runs
SINCE_2026 = VARIANT == "2026"  # noqa: F821


def _prune(options: dict) -> dict:
    return {key: value for key, value in options.items() if value is not None}


def _since_2026(argument: str, value) -> None:
    if value is not None and not SINCE_2026:
        raise TypeError(f"__init__() got an unexpected keyword argument '{argument}'")


class classproperty:
    def __init__(self, getter):
        self.getter = getter

    def __get__(self, instance, owner):
        return self.getter(owner)


# ----------------------------------------------------------------------------- inputs and outputs

class Input:
    io_type: str = None  # set on each socket's own Input class

    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                 extra_dict: dict = None, advanced: bool = None):
        _since_2026("advanced", advanced)
        self.id, self.display_name, self.optional, self.tooltip, self.lazy = id, display_name, optional, tooltip, lazy
        self.extra_dict = extra_dict if extra_dict is not None else {}
        self.advanced = advanced

    def as_dict(self) -> dict:
        return _prune({"display_name": self.display_name, "optional": self.optional, "tooltip": self.tooltip,
                       "lazy": self.lazy, "advanced": self.advanced}) | _prune(self.extra_dict)


class WidgetInput(Input):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, socketless=None,
                 force_input=None, extra_dict=None, advanced=None):
        _since_2026("extra_dict", extra_dict)
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, advanced)
        self.default, self.socketless, self.force_input = default, socketless, force_input

    def as_dict(self) -> dict:
        return super().as_dict() | _prune({"default": self.default, "socketless": self.socketless,
                                           "forceInput": self.force_input})


class BooleanInput(WidgetInput):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, label_on=None,
                 label_off=None, socketless=None, force_input=None, extra_dict=None, advanced=None):
        super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, force_input, extra_dict,
                         advanced)
        self.label_on, self.label_off = label_on, label_off

    def as_dict(self) -> dict:
        return super().as_dict() | _prune({"label_on": self.label_on, "label_off": self.label_off})


class IntInput(WidgetInput):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, min=None,
                 max=None, step=None, control_after_generate=None, display_mode=None, socketless=None,
                 force_input=None, extra_dict=None, advanced=None):
        super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, force_input, extra_dict,
                         advanced)
        self.min, self.max, self.step = min, max, step
        self.control_after_generate, self.display_mode = control_after_generate, display_mode

    def as_dict(self) -> dict:
        return super().as_dict() | _prune({"min": self.min, "max": self.max, "step": self.step,
                                           "control_after_generate": self.control_after_generate,
                                           "display": self.display_mode})


class FloatInput(WidgetInput):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, min=None,
                 max=None, step=None, round=None, display_mode=None, socketless=None, force_input=None,
                 extra_dict=None, advanced=None):
        super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, force_input, extra_dict,
                         advanced)
        self.min, self.max, self.step, self.round, self.display_mode = min, max, step, round, display_mode

    def as_dict(self) -> dict:
        return super().as_dict() | _prune({"min": self.min, "max": self.max, "step": self.step, "round": self.round,
                                           "display": self.display_mode})


class StringInput(WidgetInput):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, multiline=False,
                 placeholder=None, default=None, dynamic_prompts=None, socketless=None, force_input=None,
                 extra_dict=None, advanced=None):
        super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, force_input, extra_dict,
                         advanced)
        self.multiline, self.placeholder, self.dynamic_prompts = multiline, placeholder, dynamic_prompts

    def as_dict(self) -> dict:  # multiline is served even when False
        return super().as_dict() | _prune({"multiline": self.multiline, "placeholder": self.placeholder,
                                           "dynamicPrompts": self.dynamic_prompts})


class ComboInput(WidgetInput):
    def __init__(self, id, options=None, display_name=None, optional=False, tooltip=None, lazy=None, default=None,
                 control_after_generate=None, socketless=None, extra_dict=None, advanced=None):
        super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, extra_dict, advanced)
        self.options, self.control_after_generate = options, control_after_generate

    def as_dict(self) -> dict:  # the choices go into the options, the type stays "COMBO"
        return super().as_dict() | _prune({"multiselect": False, "options": self.options,
                                           "control_after_generate": self.control_after_generate})


class Output:
    io_type: str = None

    def __init__(self, id: str = None, display_name: str = None, tooltip: str = None, is_output_list=False):
        self.id, self.tooltip, self.is_output_list = id, tooltip, is_output_list
        # 0.3.64 names an output without display_name by its type; 0.24.0 by its id
        self.display_name = display_name or (id if SINCE_2026 else None)


def _socket(io_type: str, input_class=Input):
    """A socket type: its ``io_type`` and its own ``Input`` / ``Output`` classes."""
    return type(f"Socket_{io_type}", (), {
        "io_type": io_type,
        "Input": type("Input", (input_class,), {"io_type": io_type}),
        "Output": type("Output", (Output,), {"io_type": io_type}),
    })


def Custom(io_type: str):
    return _socket(io_type)


Boolean = _socket("BOOLEAN", BooleanInput)
Int = _socket("INT", IntInput)
Float = _socket("FLOAT", FloatInput)
String = _socket("STRING", StringInput)
Combo = _socket("COMBO", ComboInput)
Image = _socket("IMAGE")
Mask = _socket("MASK")
Mesh = _socket("MESH")
Voxel = _socket("VOXEL")
if SINCE_2026:
    Splat = _socket("SPLAT")
    File3DGLB = _socket("FILE_3D_GLB")
    File3DSplatAny = _socket("FILE_3D_SPLAT_ANY")


class Hidden(str, enum.Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"


# ----------------------------------------------------------------------------- schema

@dataclass
class Schema:
    node_id: str
    display_name: str = None
    category: str = "sd"
    inputs: Optional[List[Input]] = None
    outputs: Optional[List[Output]] = None
    hidden: Optional[List[Hidden]] = None
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    not_idempotent: bool = False

    def finalize(self) -> None:
        """Output nodes get the prompt and the workflow as hidden inputs; outputs get ids."""
        self.inputs, self.outputs, self.hidden = self.inputs or [], self.outputs or [], self.hidden or []
        if self.is_output_node:
            self.hidden += [h for h in (Hidden.prompt, Hidden.extra_pnginfo) if h not in self.hidden]
        for i, output in enumerate(self.outputs):
            if output.id is None:
                output.id = f"_{i}_{output.io_type}_"

    def validate(self) -> None:
        inputs, outputs = [i.id for i in self.inputs], [o.id for o in self.outputs]
        for kind, ids in (("Input", inputs), ("Output", outputs)):
            repeated = sorted({i for i in ids if ids.count(i) > 1})
            if repeated:
                raise ValueError(f"{kind} ids must be unique, but {repeated} are not.")
        shared = sorted(set(inputs) & set(outputs))
        if shared and not SINCE_2026:
            raise ValueError(f"Ids must be unique between inputs and outputs, but {shared} are not.")

    def v1_inputs(self) -> dict:
        inputs = {"required": {}}
        for i in self.inputs:
            options = i.as_dict()
            options.pop("optional", None)
            inputs.setdefault("optional" if i.optional else "required", {})[i.id] = (i.io_type, options)
        for hidden in self.hidden:
            inputs.setdefault("hidden", {})[hidden.name] = (hidden.value,)
        return inputs

    def get_v1_info(self, cls) -> dict:
        inputs = self.v1_inputs()
        info = {
            "input": inputs,
            "input_order": {section: list(entries) for section, entries in inputs.items()},
            "output": [o.io_type for o in self.outputs],
            "output_is_list": [o.is_output_list for o in self.outputs],
            "output_name": [o.display_name or o.io_type for o in self.outputs],
            "output_tooltips": [o.tooltip or None for o in self.outputs],
            "name": self.node_id,
            "display_name": self.display_name,
            "description": self.description,
            "python_module": getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"),
            "category": self.category,
            "output_node": self.is_output_node,
            "deprecated": self.is_deprecated,
            "experimental": self.is_experimental,
            "api_node": False,
        }
        if SINCE_2026:
            info.update(is_input_list=self.is_input_list, output_matchtypes=None, dev_only=False, price_badge=None,
                        search_aliases=None, essentials_category=None, has_intermediate_output=False)
        return info


# ----------------------------------------------------------------------------- nodes

class NodeOutput:
    def __init__(self, *args: Any, ui: dict = None, expand: dict = None, block_execution: str = None):
        self.args, self.ui, self.expand, self.block_execution = args, ui, expand, block_execution

    @property
    def result(self):
        return self.args if self.args else None

    def __getitem__(self, index):
        return self.args[index]


class ComfyNode:
    """Base of V3 nodes: classmethods only; the V1 class attributes the host reads are derived from
    the schema."""
    RELATIVE_PYTHON_MODULE = None

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs) -> NodeOutput:
        raise NotImplementedError

    @classmethod
    def validate_inputs(cls, **kwargs):
        raise NotImplementedError

    @classmethod
    def fingerprint_inputs(cls, **kwargs):
        raise NotImplementedError

    @classmethod
    def GET_BASE_CLASS(cls):
        """Where the placeholders of the optional classmethods are (``first_real_override``)."""
        return ComfyNode

    @classmethod
    def GET_SCHEMA(cls) -> Schema:
        schema = cls.define_schema()
        schema.finalize()
        schema.validate()
        return schema

    @classmethod
    def GET_NODE_INFO_V1(cls) -> dict:
        return cls.GET_SCHEMA().get_v1_info(cls)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        schema = cls.define_schema()
        schema.finalize()
        return schema.v1_inputs()

    @classmethod
    def EXECUTE_NORMALIZED(cls, **inputs) -> NodeOutput:
        result = cls.execute(**inputs)
        if result is None:
            return NodeOutput()
        if isinstance(result, NodeOutput):
            return result
        if isinstance(result, tuple):
            return NodeOutput(*result)
        raise Exception(f"Invalid return type from node: {type(result)}")

    FUNCTION = "EXECUTE_NORMALIZED"
    RETURN_TYPES = classproperty(lambda cls: [o.io_type for o in cls.GET_SCHEMA().outputs])
    RETURN_NAMES = classproperty(lambda cls: [o.display_name or o.io_type for o in cls.GET_SCHEMA().outputs])
    OUTPUT_TOOLTIPS = classproperty(lambda cls: [o.tooltip or None for o in cls.GET_SCHEMA().outputs])
    OUTPUT_NODE = classproperty(lambda cls: cls.GET_SCHEMA().is_output_node)
    CATEGORY = classproperty(lambda cls: cls.GET_SCHEMA().category)
    DESCRIPTION = classproperty(lambda cls: cls.GET_SCHEMA().description)
    NOT_IDEMPOTENT = classproperty(lambda cls: cls.GET_SCHEMA().not_idempotent)


class ComfyExtension(ABC):
    async def on_load(self) -> None:
        """Awaited before ``get_node_list`` by 0.24.0; never called by 0.3.64."""

    @abstractmethod
    async def get_node_list(self) -> list:
        ...
