"""The one module of the pack that touches ComfyUI's own modules.

The V3 node API (``comfy_api.latest``: ``io``, ``ComfyExtension``), which every supported host has
(0.3.64 onwards), is imported here for the node modules, which subclass its ``io.ComfyNode``.
Everything else is imported lazily, inside the functions, and everything is resolved by feature
(never by version), so the pack runs on a 2025 host (0.3.64: ``MESH`` in
``comfy_extras.nodes_hunyuan3d``, no SPLAT / File3D / VOXEL in ``comfy_api``, inputs without
``advanced=``) and on a 2026 host (``comfy_api.latest.Types``, ``io.Splat``, ``io.File3D*``).
"""
from __future__ import annotations

import importlib
import os
from io import BytesIO
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from comfy_api.latest import ComfyExtension, io  # noqa: F401  (ComfyExtension: for nodes/__init__.py)

from ..trellis_impl.readers import MESH_EXTENSIONS

TRELLIS_FOLDER = "trellis"


def _module(name: str):
    """A host module, imported when used (not at the pack's import: the test stand-in replaces the
    host's modules between tests). Every host with ``comfy_api.latest`` has the ones named here."""
    return importlib.import_module(name)


# ----------------------------------------------------------------------------- V3 schema

def core_socket(name: str, io_type: str):
    """The host's socket class ``io.<name>`` (e.g. ``io.Splat``), or a custom socket of the same
    type string where the host has none (0.3.64: no SPLAT / File3D sockets): links match by the
    type string alone, so saved workflows and core nodes connect the same either way."""
    return getattr(io, name, None) or io.Custom(io_type)


def output(socket, name: str, tooltip: str):
    """An output shown as ``name`` (0.3.64 shows an output without ``display_name`` by its type).
    Its id is apart from the input ids, which 0.3.64 requires (``Schema.validate``): the loader's
    input and output are both 'model'. Links and saved workflows refer to outputs by position."""
    return socket.Output(f"{name}_output", display_name=name, tooltip=tooltip)


def advanced(socket, name: str, **options):
    """``socket.Input(name, **options)`` folded away in the front end as an expert input. Hosts since
    2026 take ``advanced=True``; 0.3.64's inputs lack the argument, and there the flag goes into the
    input's ``extra_dict``, which every host serves among its options (where the V1 nodes had it)."""
    try:
        return socket.Input(name, advanced=True, **options)
    except TypeError:
        made = socket.Input(name, **options)
        made.extra_dict["advanced"] = True
        return made


# ----------------------------------------------------------------------------- progress, interrupts

def progress_bar(total: int):
    """A ``comfy.utils.ProgressBar`` (created inside the node function, as the host requires)."""
    return _module("comfy.utils").ProgressBar(max(1, int(total)))


def check_interrupt() -> None:
    """Raise the host's InterruptProcessingException when the user pressed Cancel."""
    _module("comfy.model_management").throw_exception_if_processing_interrupted()


def step_callback(total: int) -> Callable[[str, int, int], None]:
    """A pipeline progress callback ``(stage, step, steps)``: one progress bar update per sampler
    step, and an interrupt check each step (so a Cancel stops within one step)."""
    pbar = progress_bar(total)

    def callback(stage: str, step: int, steps: int) -> None:
        check_interrupt()
        pbar.update_absolute(step, steps)
    return callback


# ----------------------------------------------------------------------------- output files

def output_directory(kind: str = "output") -> str:
    """ComfyUI's output folder, or its temp folder (``kind='temp'``: previews, emptied at start-up)."""
    fp = _module("folder_paths")
    return fp.get_temp_directory() if kind == "temp" else fp.get_output_directory()


def input_path(path: str) -> str:
    """A path relative to ComfyUI's input folder (e.g. '3d/chair.obj') made absolute; absolute
    paths are kept (they are read, never written)."""
    if os.path.isabs(path):
        return path
    return os.path.join(_module("folder_paths").get_input_directory(), path)


def input_mesh_files() -> List[str]:
    """Mesh files under ComfyUI's input folder, relative to it with '/' separators, sorted (the
    choices of a mesh widget; uploads through the core Load 3D node land in ``input/3d``)."""
    base = _module("folder_paths").get_input_directory()
    found = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [os.path.relpath(os.path.join(dirpath, f), base).replace(os.sep, "/")
                  for f in filenames if f.lower().endswith(MESH_EXTENSIONS)]
    return sorted(found)


def install_example_inputs(sources: Dict[str, str]) -> List[str]:
    """Copy the example workflows' input files into ComfyUI's input folder: ``sources`` maps a
    path relative to the input folder (names of the pack's own, never a core example's) to the
    file to copy. A file already there is kept, whatever it holds; a copy is written whole (temporary
    name, then rename). Returns the paths written."""
    base = _module("folder_paths").get_input_directory()
    written = []
    for relative, source in sources.items():
        target = os.path.join(base, relative)
        if os.path.lexists(target):
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        partial = f"{target}.{os.getpid()}.partial"
        with open(source, "rb") as src, open(partial, "xb") as dst:
            dst.write(src.read())
        try:
            os.link(partial, target)  # fails if another process made the file meanwhile: theirs is kept
            written.append(relative)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not os.path.lexists(target):
                os.replace(partial, target)
                written.append(relative)
        finally:
            if os.path.lexists(partial):
                os.remove(partial)
    return written


def check_filename_prefix(filename_prefix: str) -> str:
    """Refuse prefixes that could leave the output folder."""
    prefix = str(filename_prefix or "").strip()
    if not prefix:
        raise ValueError("filename_prefix is empty; give e.g. 'trellis/asset'")
    normalised = prefix.replace("\\", "/")
    if os.path.isabs(prefix) or normalised.startswith("/") or (len(prefix) > 1 and prefix[1] == ":"):
        raise ValueError(f"filename_prefix {filename_prefix!r} is an absolute path; give a path relative to "
                         "ComfyUI's output folder, e.g. 'trellis/asset'")
    if ".." in normalised.split("/"):
        raise ValueError(f"filename_prefix {filename_prefix!r} contains '..'; files are written only inside "
                         "ComfyUI's output folder")
    return prefix


def save_output_set(filename_prefix: str, saves: Dict[str, Callable[[str], object]], kind: str = "output"
                    ) -> Dict[str, dict]:
    """Write the files of one asset as one set ``<prefix>_NNNNN_.<extension>``: one counter N
    (from ``folder_paths.get_save_image_path``, then the next one free for every extension), so
    the set's files share their number. ``saves`` maps extension -> ``save(path)``, which must
    raise FileExistsError rather than overwrite. ``kind``: 'output' or 'temp' (previews).
    Returns per extension {'path', 'filename', 'subfolder', 'type', 'relative'}."""
    prefix = check_filename_prefix(filename_prefix)
    fp = _module("folder_paths")
    out_dir = output_directory(kind)
    folder, filename, counter, subfolder, _ = fp.get_save_image_path(prefix, out_dir)
    real_out = os.path.realpath(out_dir)
    if os.path.commonpath([real_out, os.path.realpath(folder)]) != real_out:
        raise ValueError(f"filename_prefix {filename_prefix!r} leads outside the {kind} folder")
    os.makedirs(folder, exist_ok=True)
    name = lambda n, ext: f"{filename}_{n:05}_.{ext}"  # noqa: E731
    while any(os.path.lexists(os.path.join(folder, name(counter, ext))) for ext in saves):
        counter += 1
    written = {}
    for ext, save in saves.items():
        path = os.path.join(folder, name(counter, ext))
        save(path)
        written[ext] = {"path": path, "filename": name(counter, ext), "subfolder": subfolder, "type": kind,
                        "relative": os.path.relpath(path, out_dir).replace(os.sep, "/")}
    return written


def save_new_output(filename_prefix: str, extension: str, save: Callable[[str], object], kind: str = "output") -> dict:
    """``save_output_set`` of one file."""
    return save_output_set(filename_prefix, {extension: save}, kind)[extension]


# ----------------------------------------------------------------------------- model folders

def register_model_folder() -> List[str]:
    """Make sure ``models/trellis`` is a registered ``trellis`` folder (keeping entries that
    extra_model_paths.yaml made); returns the registered directories."""
    fp = _module("folder_paths")
    default = os.path.join(fp.models_dir, TRELLIS_FOLDER)
    known = getattr(fp, "folder_names_and_paths", {})
    paths = list(known[TRELLIS_FOLDER][0]) if TRELLIS_FOLDER in known else []
    if os.path.normcase(os.path.abspath(default)) not in [os.path.normcase(os.path.abspath(p)) for p in paths]:
        fp.add_model_folder_path(TRELLIS_FOLDER, default)
    try:
        return list(fp.get_folder_paths(TRELLIS_FOLDER))
    except Exception:
        return paths + [default]


def model_folders() -> List[str]:
    """Sub-folders (up to two levels) of the registered ``trellis`` folders holding a pipeline.json,
    as paths relative to their root (first root wins for duplicates)."""
    found: List[str] = []
    for root in register_model_folder():
        if not os.path.isdir(root):
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            depth = os.path.relpath(dirpath, root).count(os.sep)
            if "pipeline.json" in filenames and dirpath != root:
                rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
                if rel not in found:
                    found.append(rel)
                dirnames[:] = []
            elif depth >= 1:
                dirnames[:] = []
            dirnames.sort()
    return sorted(found)


def model_roots() -> List[str]:
    """The folders model names are looked up in, in order (the first takes downloads): the
    registered ``trellis`` folders, else ``models/trellis`` under the working directory."""
    return register_model_folder() or [os.path.join(os.getcwd(), "models", TRELLIS_FOLDER)]


# ----------------------------------------------------------------------------- model management

def torch_device() -> torch.device:
    return torch.device(_module("comfy.model_management").get_torch_device())


def offload_device() -> torch.device:
    return torch.device(_module("comfy.model_management").unet_offload_device())


def make_patcher(module: torch.nn.Module):
    """A ``ModelPatcher`` so that ComfyUI offloads the module when other models need the GPU."""
    return _module("comfy.model_patcher").ModelPatcher(module, load_device=torch_device(),
                                                        offload_device=offload_device())


def free_for(memory_required: int) -> None:
    """Before GPU work that loads no model (GLB export): the host offloads models until
    ``memory_required`` bytes and its own reserve are free on the compute device."""
    device = torch_device()
    if device.type != "cpu":
        mm = _module("comfy.model_management")
        mm.free_memory(int(memory_required) + mm.extra_reserved_memory(), device)


def load_to_device(patchers, memory_required: int = 0) -> None:
    """``load_models_gpu(patchers, memory_required, force_full_load=True)``: the sparse / custom
    layers cannot be partially loaded; other models (a 2D model of the same graph) are offloaded
    first until the weights and ``memory_required`` bytes of working memory fit."""
    if patchers:
        _module("comfy.model_management").load_models_gpu(list(patchers), memory_required=int(memory_required),
                                                            force_full_load=True)


# ----------------------------------------------------------------------------- core types

def core_types():
    """``comfy_api.latest.Types`` or None."""
    return getattr(_module("comfy_api.latest"), "Types", None)


def core_class(name: str):
    types = core_types()
    cls = getattr(types, name, None) if types is not None else None
    if cls is None and name in ("MESH", "VOXEL"):  # 0.3.64: the classes of the Hunyuan3D nodes
        cls = getattr(_module("comfy_extras.nodes_hunyuan3d"), name, None)
    return cls


def _pad_stack(items: List[torch.Tensor], dtype) -> torch.Tensor:
    n = max(t.shape[0] for t in items)
    out = torch.zeros((len(items), n) + tuple(items[0].shape[1:]), dtype=dtype)
    for i, t in enumerate(items):
        out[i, :t.shape[0]] = t.to(dtype)
    return out


def make_mesh(meshes: List[dict]):
    """Core MESH from textured meshes (glTF frame, Y up): dicts with 'vertices' [V,3], 'faces'
    [F,3], optional 'uv' [V,2], 'texture' [S,S,3] uint8 (sRGB), 'vertex_colors' [V,3] (0..1).
    Variable sizes are zero-padded with vertex_counts / face_counts. None when the host lacks MESH."""
    cls = core_class("MESH")
    if cls is None or not meshes:
        return None
    verts = [torch.as_tensor(np.asarray(m["vertices"]), dtype=torch.float32) for m in meshes]
    faces = [torch.as_tensor(np.asarray(m["faces"]), dtype=torch.int64) for m in meshes]
    same = len({v.shape[0] for v in verts}) == 1 and len({f.shape[0] for f in faces}) == 1
    fields = {"vertices": _pad_stack(verts, torch.float32), "faces": _pad_stack(faces, torch.int64)}
    extras = {}
    if not same:
        extras["vertex_counts"] = torch.tensor([v.shape[0] for v in verts], dtype=torch.int64)
        extras["face_counts"] = torch.tensor([f.shape[0] for f in faces], dtype=torch.int64)
    if all(m.get("uv") is not None and m.get("texture") is not None for m in meshes):
        extras["uvs"] = _pad_stack([torch.as_tensor(np.asarray(m["uv"]), dtype=torch.float32) for m in meshes],
                                   torch.float32)
        textures = [torch.as_tensor(np.asarray(m["texture"])).float() / 255.0 for m in meshes]
        if len({t.shape for t in textures}) == 1:
            extras["texture"] = torch.stack(textures)
    elif all(m.get("vertex_colors") is not None for m in meshes):
        extras["vertex_colors"] = _pad_stack(
            [torch.as_tensor(np.asarray(m["vertex_colors"]), dtype=torch.float32) for m in meshes], torch.float32)
    try:
        mesh = cls(**fields, **extras)
    except TypeError:  # 0.3.x: MESH(vertices, faces) only; keep the extras as attributes
        mesh = cls(fields["vertices"], fields["faces"])
        for key, value in extras.items():
            setattr(mesh, key, value)
    return mesh


def mesh_items(mesh) -> List[tuple]:
    """(vertices [V,3] float, faces [F,3] int64) per batch item of a core MESH (counts honoured)."""
    vertices, faces = mesh.vertices, mesh.faces
    if vertices.dim() == 2:
        vertices, faces = vertices[None], faces[None]
    vc, fc = getattr(mesh, "vertex_counts", None), getattr(mesh, "face_counts", None)
    items = []
    for i in range(vertices.shape[0]):
        v, f = vertices[i], faces[i]
        if vc is not None and fc is not None:
            v, f = v[:int(vc[i])], f[:int(fc[i])]
        items.append((v.detach().cpu().float(), f.detach().cpu().long()))
    return items


def splat_fields(gaussians) -> dict:
    """Activated 3DGS-frame fields of a TRELLIS ``Gaussians`` (the official PLY transform
    (x, y, z) -> (x, -z, y), rotations likewise): positions [N,3], rotations [N,4] wxyz,
    scales [N,3], opacities [N,1], sh [N,K,3]."""
    attrs = gaussians.ply_attributes()
    n = len(attrs["x"])

    def cols(names):
        return torch.from_numpy(np.stack([attrs[k] for k in names], axis=1).astype(np.float32)).reshape(n, -1)
    positions = cols(["x", "y", "z"])
    rotations = torch.nn.functional.normalize(cols([f"rot_{i}" for i in range(4)]), dim=1)
    scales = torch.exp(cols([f"scale_{i}" for i in range(3)]))
    opacities = torch.sigmoid(cols(["opacity"]))
    dc = cols(["f_dc_0", "f_dc_1", "f_dc_2"]).reshape(n, 1, 3)
    rest_names = sorted([k for k in attrs if k.startswith("f_rest_")], key=lambda k: int(k.split("_")[-1]))
    if rest_names:  # stored channel-major: all red, then green, then blue
        rest = cols(rest_names).reshape(n, 3, -1).transpose(1, 2)
        sh = torch.cat([dc, rest], dim=1)
    else:
        sh = dc
    return {"positions": positions, "rotations": rotations, "scales": scales, "opacities": opacities, "sh": sh}


def make_splat(gaussians_list) -> Optional[object]:
    """Core SPLAT (3DGS frame, activated values) from TRELLIS Gaussians, one batch item each;
    None when the host has no SPLAT."""
    cls = core_class("SPLAT")
    if cls is None or not gaussians_list:
        return None
    items = [splat_fields(g) for g in gaussians_list]
    fields = {k: _pad_stack([it[k] for it in items], torch.float32) for k in items[0]}
    counts = None
    if len({it["positions"].shape[0] for it in items}) > 1:
        counts = torch.tensor([it["positions"].shape[0] for it in items], dtype=torch.int64)
    try:
        return cls(**fields, counts=counts)
    except TypeError:
        return cls(**fields)


def make_file3d(data: bytes, file_format: str):
    """Core File3D holding ``data`` (None when the host has no File3D)."""
    cls = core_class("File3D")
    if cls is None:
        return None
    return cls(BytesIO(data), file_format=file_format)


def make_voxel(coords: torch.Tensor, resolution: int, batch_size: int):
    """Core VOXEL: dense occupancy (B, R, R, R), indexed so that core's VoxelToMesh
    (data[i, j, k] -> x=k, y=j, z=i) gives the glTF frame (Y up): i = R-1-y, j = z, k = x of the
    TRELLIS (Z up) coords. None when the host has no VOXEL."""
    cls = core_class("VOXEL")
    if cls is None:
        return None
    r = int(resolution)
    data = torch.zeros(batch_size, r, r, r, dtype=torch.float32)
    c = coords.detach().long().cpu()
    if c.numel():
        data[c[:, 0], r - 1 - c[:, 2], c[:, 3], c[:, 1]] = 1.0
    return cls(data)
