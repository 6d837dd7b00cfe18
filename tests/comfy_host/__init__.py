"""A small in-repo stand-in for the ComfyUI host (only what the pack's nodes/host.py touches).

``install(tmp_path, variant)`` puts fake ``folder_paths``, ``comfy.model_management``,
``comfy.model_patcher``, ``comfy.utils``, the 2025 ``comfy_extras.nodes_hunyuan3d`` (MESH(vertices,
faces) only) and ``comfy_api.latest`` (the V3 node API of that variant, ``v3_api.py``; in the 2026
variant also ``Types``: MESH with keyword fields, SPLAT, File3D, VOXEL) into ``sys.modules``;
``import_pack(root, host)`` imports the pack the way ComfyUI does (spec_from_file_location on its
__init__.py under a mangled module name) and ``load_nodes(pack, host)`` takes its nodes as ComfyUI's
loader does (``nodes.py: load_custom_node``).
"""
from __future__ import annotations

import asyncio
import importlib.util
import inspect
import io
import os
import re
import sys
import types
from pathlib import Path
from typing import Dict, List, Optional

import torch

VARIANTS = ("2025", "2026")
HOST_MODULES = ("folder_paths", "comfy", "comfy.model_management", "comfy.model_patcher", "comfy.utils",
                "comfy_extras", "comfy_extras.nodes_hunyuan3d", "comfy_api", "comfy_api.latest")


class InterruptProcessingException(Exception):
    pass


_V3_APIS: Dict[str, types.ModuleType] = {}


def v3_api(variant: str) -> types.ModuleType:
    """The V3 node API (``comfy_api.latest.io``) of a host variant: v3_api.py run once per variant,
    so that the classes of a pack imported on one variant stay that variant's."""
    if variant not in _V3_APIS:
        spec = importlib.util.spec_from_file_location(f"comfy_host_v3_api_{variant}",
                                                      Path(__file__).with_name("v3_api.py"))
        module = importlib.util.module_from_spec(spec)
        module.VARIANT = variant
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        _V3_APIS[variant] = module
    return _V3_APIS[variant]


class Host:
    """The installed fake modules plus what they recorded."""

    def __init__(self, root: Path, variant: str):
        self.root, self.variant = Path(root), variant
        self.models_dir = self.root / "models"
        self.output_dir = self.root / "output"
        self.temp_dir = self.root / "temp"
        self.input_dir = self.root / "input"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.input_dir.mkdir(parents=True, exist_ok=True)
        self.load_calls: List[dict] = []
        self.free_calls: List[tuple] = []  # (bytes, device) asked of free_memory
        self.progress: List[tuple] = []
        self.interrupted = False
        self.interrupt_after_checks: Optional[int] = None  # set the flag after that many checks
        self.checks = 0
        self.modules: Dict[str, types.ModuleType] = {}
        self._build()

    # -- folder_paths
    def _folder_paths(self):
        fp = types.ModuleType("folder_paths")
        fp.models_dir = str(self.models_dir)
        fp.output_directory = str(self.output_dir)
        fp.temp_directory = str(self.temp_dir)
        fp.input_directory = str(self.input_dir)
        fp.folder_names_and_paths = {}

        def add_model_folder_path(name, path, is_default=False):
            if name in fp.folder_names_and_paths:
                paths = fp.folder_names_and_paths[name][0]
                if path not in paths:
                    paths.insert(0, path) if is_default else paths.append(path)
            else:
                fp.folder_names_and_paths[name] = ([path], set())

        def get_folder_paths(name):
            return fp.folder_names_and_paths[name][0][:]

        def get_output_directory():
            return fp.output_directory

        def get_input_directory():
            return fp.input_directory

        def get_temp_directory():
            return fp.temp_directory

        def get_save_image_path(filename_prefix, output_dir, image_width=0, image_height=0):
            subfolder = os.path.dirname(os.path.normpath(filename_prefix))
            filename = os.path.basename(os.path.normpath(filename_prefix))
            full_output_folder = os.path.join(output_dir, subfolder)
            if os.path.commonpath((output_dir, os.path.abspath(full_output_folder))) != output_dir:
                raise Exception("**** ERROR: Saving image outside the output folder is not allowed.")
            pattern = re.compile(re.escape(filename) + r"_(\d+)_")
            counter = 1
            if os.path.isdir(full_output_folder):
                numbers = [int(m.group(1)) for f in os.listdir(full_output_folder) if (m := pattern.match(f))]
                counter = max(numbers, default=0) + 1
            return full_output_folder, filename, counter, subfolder, filename_prefix

        fp.add_model_folder_path = add_model_folder_path
        fp.get_folder_paths = get_folder_paths
        fp.get_output_directory = get_output_directory
        fp.get_input_directory = get_input_directory
        fp.get_temp_directory = get_temp_directory
        fp.get_save_image_path = get_save_image_path
        return fp

    # -- comfy.*
    def _model_management(self):
        mm = types.ModuleType("comfy.model_management")
        host = self
        mm.InterruptProcessingException = InterruptProcessingException
        # COMFY_HOST_DEVICE=cuda runs the node tests as on a GPU host (default: cpu, as --cpu)
        mm.get_torch_device = lambda: torch.device(os.environ.get("COMFY_HOST_DEVICE", "cpu"))
        mm.unet_offload_device = lambda: torch.device("cpu")
        mm.intermediate_device = lambda: torch.device("cpu")

        def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                            force_full_load=False):
            host.load_calls.append({"models": list(models), "force_full_load": force_full_load,
                                    "memory_required": memory_required})
            for m in models:
                m.model.to(m.load_device)
                m.model.device = m.load_device  # as ComfyUI's ModelPatcher.load does

        def throw_exception_if_processing_interrupted():
            host.checks += 1
            if host.interrupt_after_checks is not None and host.checks >= host.interrupt_after_checks:
                host.interrupted = True
                host.interrupt_after_checks = None
            if host.interrupted:
                host.interrupted = False  # the real host clears the flag when it raises
                raise InterruptProcessingException()

        mm.load_models_gpu = load_models_gpu
        mm.extra_reserved_memory = lambda: 400 * 1024 * 1024
        mm.free_memory = lambda memory_required, device, keep_loaded=[]: host.free_calls.append(
            (memory_required, torch.device(device)))
        mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
        mm.processing_interrupted = lambda: host.interrupted
        return mm

    def _model_patcher(self):
        mp = types.ModuleType("comfy.model_patcher")

        class ModelPatcher:
            def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
                self.model, self.load_device, self.offload_device = model, load_device, offload_device

        mp.ModelPatcher = ModelPatcher
        return mp

    def _utils(self):
        utils = types.ModuleType("comfy.utils")
        host = self

        class ProgressBar:
            def __init__(self, total, node_id=None):
                self.total, self.current = total, 0
                host.progress.append(("new", total))

            def update_absolute(self, value, total=None, preview=None):
                if total is not None:
                    self.total = total
                self.current = value
                host.progress.append(("abs", value, self.total))

            def update(self, value):
                self.update_absolute(self.current + value, self.total)

        utils.ProgressBar = ProgressBar
        return utils

    # -- 3D types
    def _types_2025(self):
        mod = types.ModuleType("comfy_extras.nodes_hunyuan3d")

        class VOXEL:
            def __init__(self, data):
                self.data = data

        class MESH:
            def __init__(self, vertices, faces):
                self.vertices, self.faces = vertices, faces

        mod.VOXEL, mod.MESH = VOXEL, MESH
        return mod

    def _types_2026(self):
        class VOXEL:
            def __init__(self, data, voxel_colors=None, resolution=None):
                self.data, self.voxel_colors, self.resolution = data, voxel_colors, resolution

        class MESH:
            def __init__(self, vertices, faces, uvs=None, vertex_colors=None, texture=None, vertex_counts=None,
                         face_counts=None, unlit=False):
                assert (vertex_counts is None) == (face_counts is None)
                self.vertices, self.faces, self.uvs = vertices, faces, uvs
                self.vertex_colors, self.texture, self.unlit = vertex_colors, texture, unlit
                self.vertex_counts, self.face_counts = vertex_counts, face_counts

        class SPLAT:
            def __init__(self, positions, scales, rotations, opacities, sh, counts=None):
                self.positions, self.scales, self.rotations = positions, scales, rotations
                self.opacities, self.sh, self.counts = opacities, sh, counts

        class File3D:
            def __init__(self, source, file_format=""):
                self._source, self.format = source, file_format.lower()

            def get_bytes(self):
                if isinstance(self._source, io.BytesIO):
                    return self._source.getvalue()
                return Path(self._source).read_bytes()

        return types.SimpleNamespace(MESH=MESH, VOXEL=VOXEL, SPLAT=SPLAT, File3D=File3D)

    def _comfy_api(self):
        """``comfy_api.latest``: the V3 node API and ``Types`` (0.3.64's holds no 3D types)."""
        api = v3_api(self.variant)
        latest = types.ModuleType("comfy_api.latest")
        latest.io, latest.ComfyExtension = api, api.ComfyExtension
        latest.Types = self._types_2026() if self.variant == "2026" else types.SimpleNamespace()
        return latest

    def _build(self):
        comfy = types.ModuleType("comfy")
        comfy.__path__ = []
        m = {"folder_paths": self._folder_paths(), "comfy": comfy,
             "comfy.model_management": self._model_management(), "comfy.model_patcher": self._model_patcher(),
             "comfy.utils": self._utils()}
        comfy.model_management, comfy.model_patcher, comfy.utils = (m["comfy.model_management"],
                                                                    m["comfy.model_patcher"], m["comfy.utils"])
        extras = types.ModuleType("comfy_extras")
        extras.__path__ = []
        m["comfy_extras"] = extras
        hunyuan = self._types_2025()
        m["comfy_extras.nodes_hunyuan3d"] = hunyuan
        extras.nodes_hunyuan3d = hunyuan
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be '2025' or '2026', got {self.variant!r}")
        api = types.ModuleType("comfy_api")
        api.__path__ = []
        api.latest = self._comfy_api()
        m["comfy_api"], m["comfy_api.latest"] = api, api.latest
        if self.variant == "2026":
            hunyuan.MESH, hunyuan.VOXEL = api.latest.Types.MESH, api.latest.Types.VOXEL  # kept for compatibility
        self.modules = m

    @property
    def folder_paths(self):
        return self.modules["folder_paths"]


def install(root: Path, variant: str) -> Host:
    """Install the fake host into sys.modules (call ``uninstall`` afterwards)."""
    host = Host(root, variant)
    for name in HOST_MODULES:
        sys.modules.pop(name, None)
    sys.modules.update(host.modules)
    return host


def uninstall() -> None:
    for name in HOST_MODULES:
        sys.modules.pop(name, None)


def pack_module_name(pack_root: Path, host: Optional[Host] = None) -> str:
    """ComfyUI's module name of a pack folder (its path, '.' -> '_x_'); on the stand-in one per host
    variant: a ComfyUI process imports the pack once, against its one host, this one once per variant."""
    name = str(Path(pack_root).resolve()).replace(".", "_x_")
    return name if host is None else f"{name}@{host.variant}"


def import_pack(pack_root: Path, host: Optional[Host] = None):
    """Import the pack as ComfyUI's loader does (spec_from_file_location on its __init__.py), on the
    stand-in ``host`` or, with None, on the real host whose modules are importable."""
    init = Path(pack_root) / "__init__.py"
    name = pack_module_name(pack_root, host)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, str(init),
                                                  submodule_search_locations=[str(Path(pack_root).resolve())])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        sys.modules.pop(name, None)
        raise
    return module


def load_nodes(pack, host: Host) -> tuple[Dict[str, type], Dict[str, str]]:
    """(node classes by id, display names) of an imported pack, as ``nodes.py: load_custom_node``
    takes them: ``NODE_CLASS_MAPPINGS`` when the module has it (its ``comfy_entrypoint`` is then
    ignored), else ``comfy_entrypoint()`` (awaited when a coroutine), which must give a
    ComfyExtension; 0.24.0 awaits its ``on_load`` first; every node's schema is built once."""
    if getattr(pack, "NODE_CLASS_MAPPINGS", None) is not None:
        return dict(pack.NODE_CLASS_MAPPINGS), dict(getattr(pack, "NODE_DISPLAY_NAME_MAPPINGS", None) or {})

    async def entry():
        extension = pack.comfy_entrypoint()
        if inspect.iscoroutine(extension):
            extension = await extension
        if not isinstance(extension, v3_api(host.variant).ComfyExtension):
            raise TypeError("comfy_entrypoint did not return a ComfyExtension")
        if host.variant == "2026":
            await extension.on_load()
        return await extension.get_node_list()

    classes, names = {}, {}
    for node_cls in asyncio.run(entry()):
        schema = node_cls.GET_SCHEMA()
        classes[schema.node_id] = node_cls
        if schema.display_name is not None:
            names[schema.node_id] = schema.display_name
    return classes, names
