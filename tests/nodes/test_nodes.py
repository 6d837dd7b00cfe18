"""The node pack on a fake ComfyUI host (CPU, small random model folders, 2 sampler steps)."""
from __future__ import annotations

import os
import sys

import pytest
import torch

from node_fixtures import (host2026_fixture, host_fixture, model_root_fixture, nodes_fixture,  # noqa: F401
                           pack_fixture, run, run_with_ui)  # fixtures (by their name=) and helpers
import comfy_host  # noqa: E402  (on sys.path via node_fixtures)
from comfy_host import InterruptProcessingException  # noqa: E402

CORE_IDS = {"SaveGLB", "Preview3D", "Preview3DAdvanced", "PreviewGaussianSplat", "PreviewPointCloud", "Load3D",
            "CreateCameraInfo", "SplatToFile3D", "File3DToSplat", "RenderSplat", "TransformSplat", "MergeSplat",
            "GetSplatCount", "SplatToMesh", "VoxelToMesh", "VoxelToMeshBasic", "VAEDecodeHunyuan3D",
            "VaeDecodeShapeTrellis", "VaeDecodeTextureTrellis"}
STEPS = dict(steps=2, cfg=3.0, cfg_interval_start=0.5, cfg_interval_end=1.0, rescale_t=3.0)


def _image(b=1, h=80, w=96):
    img = torch.zeros(b, h, w, 3)
    img[:, 20:60, 30:70] = torch.tensor([0.8, 0.3, 0.2])
    mask = torch.ones(b, h, w)
    mask[:, 20:60, 30:70] = 0.0  # LoadImage: mask = 1 - alpha
    return img, mask


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def _image_asset(nodes, host, views=1, **loader):
    (model,) = run(nodes["TrellisModelLoader"], "random-image", **loader)
    img, mask = _image(views)
    cond, pre = run(nodes["TrellisImageCondition"], model, img, "auto", mask)
    assert pre.shape == (views, 518, 518, 3)
    structure, voxel = run(nodes["TrellisStructureSampler"], model, cond, seed=1, multi_image_mode="stochastic",
                                                              num_samples=1, **STEPS)
    (slat,) = run(nodes["TrellisLatentSampler"], model, cond, structure, seed=1, multi_image_mode="stochastic",
                                                   **STEPS)
    (asset,) = run(nodes["TrellisDecode"], model, slat, True, True, False)
    return model, structure, voxel, asset


EXPERT_INPUTS = {"dtype", "attention_backend", "sparse_conv_backend", "cfg_interval_start", "cfg_interval_end",
                 "rescale_t", "step_cache", "bake_steps", "unwrap", "fill_holes", "pitch", "radius", "fov"}


def test_node_definitions(pack, host):
    assert not hasattr(pack, "NODE_CLASS_MAPPINGS")  # else the host's loader would ignore comfy_entrypoint
    classes, display_names = comfy_host.load_nodes(pack, host)
    assert classes and set(classes) == set(display_names)
    for node_id, cls in classes.items():
        assert node_id.startswith("Trellis") and not node_id.startswith("Trellis2") and node_id not in CORE_IDS
        assert cls.CATEGORY.startswith("TRELLIS/")
        inputs = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, (kind, options) in inputs.get(section, {}).items():
                assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"
                if name == "seed":
                    assert options.get("control_after_generate") is True
                # expert inputs fold away in the front end ("advanced"); the everyday ones stay shown
                assert bool(options.get("advanced")) == (name in EXPERT_INPUTS), f"{node_id}.{name}"
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
        assert hasattr(cls, cls.FUNCTION)
    choices = classes["TrellisModelLoader"].INPUT_TYPES()["required"]["model"][1]["options"]
    assert "random-image" in choices and "random-text" in choices and "microsoft/TRELLIS-image-large" in choices
    # the extra_model_paths entry is kept, models/trellis appended
    paths = host.folder_paths.get_folder_paths("trellis")
    assert len(paths) == 2 and paths[1] == os.path.join(host.folder_paths.models_dir, "trellis")


def test_image_chain(nodes, host):
    model, structure, voxel, asset = _image_asset(nodes, host)
    # model management: every stage model loaded through load_models_gpu with force_full_load
    assert host.load_calls and all(c["force_full_load"] for c in host.load_calls)
    loaded = {id(p.model) for c in host.load_calls for p in c["models"]}
    for key in ("sparse_structure_flow_model", "sparse_structure_decoder", "slat_flow_model", "slat_decoder_gs",
                "slat_decoder_mesh"):
        assert id(model.folder.model(key)) in loaded, key
    # ... each with the working memory of its stage at this size, so the host offloads beforehand
    pipeline, voxels = model.pipeline, structure.coords.shape[0]
    asked = {tuple(sorted(id(p.model) for p in c["models"])): c["memory_required"] for c in host.load_calls}
    for key, stage, size in (("slat_flow_model", "latent", {"voxels": voxels}),
                             ("slat_decoder_mesh", "mesh", {"voxels": voxels}),
                             ("sparse_structure_flow_model", "structure", {"samples": 1})):
        ids = [k for k in asked if id(model.folder.model(key)) in k]
        assert ids and asked[ids[0]] == pipeline.working_memory(stage, **size) > 0, key
    assert any(e[0] == "abs" and e[2] == 2 for e in host.progress)  # per-step progress
    if host.variant == "2026":
        assert voxel.data.shape == (1, 16, 16, 16) and voxel.data.sum() == structure.coords.shape[0]
    else:
        assert voxel is not None and voxel.data.dim() == 4

    # the texture bake is host-independent: the older host checks its outputs on the cheaper vertex colours
    bake = "fast" if host.variant == "2026" else "vertex_colors"
    out = run_with_ui(nodes["TrellisExportGLB"], asset, "trellis/asset", simplify=0.9, texture_size=512, bake=bake,
                                           bake_steps=10, unwrap="fast", origin="center", fill_holes=False)
    mesh, glb_file, rel = out.outputs
    assert rel == "trellis/asset_00001_.glb"
    path = os.path.join(host.output_dir, rel)
    with open(path, "rb") as f:
        assert f.read(4) == b"glTF"
    try:
        import trimesh
    except ImportError:  # device machines without trimesh: the frame checks below need it
        trimesh = None
    geometry = trimesh.load(path, force="mesh") if trimesh is not None else None
    assert geometry is None or len(geometry.faces) > 0
    preview = out.ui["trellis_preview"][0]
    assert preview["mesh"] == {"filename": "asset_00001_.glb", "subfolder": "trellis", "type": "output"}
    assert preview["splat"] is None
    assert mesh.vertices.dim() == 3 and mesh.vertices.shape[2] == 3 and mesh.faces.shape[2] == 3
    if host.variant == "2026":
        assert mesh.uvs.shape[:2] == mesh.vertices.shape[:2] and mesh.texture.shape == (1, 512, 512, 3)
        assert glb_file.format == "glb" and glb_file.get_bytes()[:4] == b"glTF"
    else:
        assert glb_file is None
    # MESH vertices are exactly what the GLB holds (glTF frame, Y up, centred)
    v = mesh.vertices[0].double().cpu().numpy()
    assert geometry is None or abs(v.min(0) - geometry.bounds[0]).max() < 1e-5 \
        and abs(v.max(0) - geometry.bounds[1]).max() < 1e-5
    assert abs((v.min(0) + v.max(0)) / 2).max() < 1e-5  # origin 'center'
    # and Y up: the TRELLIS (Z up) decoded mesh's vertical extent becomes the Y extent
    decoded = asset.decoded["mesh"][0].vertices.double().cpu()
    z_extent = float(decoded[:, 2].max() - decoded[:, 2].min())
    assert abs((v.max(0) - v.min(0))[1] - z_extent) < 0.05 * z_extent + 0.02

    if host.variant == "2025":  # the rest (numbering, splat formats, turntable, preview) is the same on both
        splat, splat_file, _ = run(nodes["TrellisExportSplat"], asset, "trellis/splat", "ply")
        assert splat is None and splat_file is None
        return
    # second export: new numbered file, never overwritten
    out2 = run(nodes["TrellisExportGLB"], asset, "trellis/asset", 0.9, 512, "vertex_colors", 10, "fast", "base",
                                            False)
    assert out2[2] == "trellis/asset_00002_.glb"

    for fmt in ("ply", "spz", "splat"):
        res = run_with_ui(nodes["TrellisExportSplat"], asset, "trellis/splat", fmt)
        splat, splat_file, srel = res.outputs
        assert srel == f"trellis/splat_00001_.{fmt}" if fmt == "ply" else srel.endswith(f".{fmt}")
        assert os.path.isfile(os.path.join(host.output_dir, srel))
        entry = res.ui["trellis_preview"][0]
        assert entry["splat_format"] == fmt and entry["mesh"] is None
        if host.variant == "2026":
            g = asset.decoded["gaussian"][0]
            n = g.get_xyz.shape[0]
            assert splat.positions.shape == (1, n, 3) and splat.rotations.shape == (1, n, 4)
            assert splat.scales.shape == (1, n, 3) and splat.opacities.shape == (1, n, 1)
            assert splat.sh.shape[:2] == (1, n) and splat.sh.shape[3] == 3
            xyz = g.get_xyz.double().cpu()
            expected = torch.stack([xyz[:, 0], -xyz[:, 2], xyz[:, 1]], dim=1).float()
            assert torch.allclose(splat.positions[0], expected, atol=1e-5)
            assert torch.allclose(splat.opacities[0], g.get_opacity.float().cpu(), atol=1e-5)
            assert torch.allclose(splat.scales[0], g.get_scaling.float().cpu(), rtol=1e-4, atol=1e-7)
            assert torch.allclose(splat.rotations[0].norm(dim=1), torch.ones(n), atol=1e-5)
            assert splat_file.format == fmt
        else:
            assert splat is None and splat_file is None

    (frames,) = run(nodes["TrellisTurntable"], asset, frames=2, resolution=32, mode="side_by_side", pitch=14.3,
                                                 radius=2.0, fov=40.0)
    assert frames.shape == (2, 32, 64, 3) and frames.device.type == "cpu"
    assert float(frames.min()) >= 0 and float(frames.max()) <= 1

    # the preview node writes both a mesh and a splat for the widget (side by side / toggle)
    preview = run_with_ui(nodes["TrellisPreview"], asset, "trellis/preview")
    assert preview.outputs == ()
    (item,) = preview.ui["trellis_preview"]
    assert item["mesh"]["filename"].endswith(".glb") and item["splat"]["filename"].endswith(".spz")
    assert item["mesh"]["filename"][:-4] == item["splat"]["filename"][:-4]  # one number for the pair
    for key in ("mesh", "splat"):  # previews go to temp/, not output/
        assert item[key]["type"] == "temp"
        assert (host.temp_dir / item[key]["subfolder"] / item[key]["filename"]).is_file()
        assert not (host.output_dir / item[key]["subfolder"] / item[key]["filename"]).exists()


def test_text_chain_and_variant(nodes, host2026):
    host = host2026
    (model,) = run(nodes["TrellisModelLoader"], "random-text", "float32", "auto", "auto", False)
    (cond,) = run(nodes["TrellisTextCondition"], model, "a wooden chair")
    structure, _ = run(nodes["TrellisStructureSampler"], model, cond, seed=3, multi_image_mode="stochastic",
                                                           num_samples=2, **STEPS)
    assert structure.num_samples == 2
    (slat,) = run(nodes["TrellisLatentSampler"], model, cond, structure, seed=3, multi_image_mode="stochastic",
                                                   **STEPS)
    (asset,) = run(nodes["TrellisDecode"], model, slat, True, True, False)
    assert len(asset.decoded["mesh"]) == 2
    out = run_with_ui(nodes["TrellisExportGLB"], asset, "text/chair", 0.9, 512, "vertex_colors", 10, "fast", "center",
                                           False)
    assert len(out.ui["trellis_preview"]) == 2
    mesh = out.outputs[0]
    assert mesh.vertices.shape[0] == 2

    # split nodes with equal seeds = the official single call for that seed
    pipeline = model.prepare(["structure", "latent"])
    reference = pipeline.generate(cond.on(pipeline.device), seed=3, num_samples=2, formats=(),
                                  structure_params={"steps": 2, "cfg_strength": 3.0, "cfg_interval": [0.5, 1.0],
                                                    "rescale_t": 3.0},
                                  slat_params={"steps": 2, "cfg_strength": 3.0, "cfg_interval": [0.5, 1.0],
                                               "rescale_t": 3.0})
    assert torch.equal(reference.coords.cpu(), structure.coords)
    assert torch.allclose(reference.slat.feats.cpu(), slat.slat.feats.cpu(), atol=1e-5)

    # mesh -> structure -> latent sampler (variant)
    structure2, voxel2 = run(nodes["TrellisMeshToStructure"], model, mesh=mesh)
    assert structure2.coords.shape[1] == 4 and structure2.coords.shape[0] > 0 and structure2.noise_shape is None
    (slat2,) = run(nodes["TrellisLatentSampler"], model, cond, structure2, seed=5, multi_image_mode="stochastic",
                                                    **STEPS)
    assert slat2.slat.feats.shape[0] == structure2.coords.shape[0]
    assert voxel2.data.shape == (1, 16, 16, 16)
    # a mesh file path works too (reading .glb needs trimesh)
    pytest.importorskip("trimesh")
    structure3, _ = run(nodes["TrellisMeshToStructure"], model, mesh_path=os.path.join(host.output_dir,
                                                                                          "text/chair_00001_.glb"))
    assert structure3.coords.shape[0] > 0


def test_each_loader_sets_the_backends_of_its_own_model(nodes, host2026):
    import sys
    generation = sys.modules[nodes["TrellisModelLoader"].__module__]  # the pack's own registry
    (naive,) = run(nodes["TrellisModelLoader"], "random-image", "float32", "naive", "auto", False)
    (auto,) = run(nodes["TrellisModelLoader"], "random-image", "float32", "auto", "auto", False)
    naive.prepare(["structure"])
    auto.prepare(["structure"])
    assert naive.folder.model("sparse_structure_flow_model").backends == {"attention": "naive"}
    assert auto.folder.model("sparse_structure_flow_model").backends == {}
    assert generation.ATTENTION.forced is None  # nothing process-wide
    with pytest.raises(ValueError, match="attention_backend: unknown attention backend 'fast'"):
        run(nodes["TrellisModelLoader"], "random-image", "float32", "fast", "auto", False)


def test_multi_view_image(nodes, host2026):
    (model,) = run(nodes["TrellisModelLoader"], "random-image")
    img, mask = _image(2)
    cond, _ = run(nodes["TrellisImageCondition"], model, img, "auto", mask)
    assert cond.views == 2
    for mode in ("stochastic", "multidiffusion"):
        structure, _ = run(nodes["TrellisStructureSampler"], model, cond, seed=0, multi_image_mode=mode,
                                                               num_samples=1, **STEPS)
        assert structure.coords.shape[1] == 4


def test_bad_mask_size(nodes, host2026):
    (model,) = run(nodes["TrellisModelLoader"], "random-image")
    img, _ = _image(1, 80, 96)
    with pytest.raises(ValueError, match=r"mask.*32x40.*96x80"):
        run(nodes["TrellisImageCondition"], model, img, "auto", torch.zeros(1, 40, 32))
    # LoadImage's 64x64 placeholder = no mask: then the image's own alpha is used
    rgba = torch.cat([img, torch.zeros(1, 80, 96, 1)], dim=3)
    rgba[:, 20:60, 30:70, 3] = 1.0
    cond, _ = run(nodes["TrellisImageCondition"], model, rgba, "auto", torch.zeros(1, 64, 64))
    assert cond.tensors["cond"].shape[0] == 1


def test_empty_batch(nodes, host2026):
    (model,) = run(nodes["TrellisModelLoader"], "random-image")
    with pytest.raises(ValueError, match="empty"):
        run(nodes["TrellisImageCondition"], model, torch.zeros(0, 64, 64, 3), "auto")


def test_wrong_model_kind(nodes, host2026):
    (text_model,) = run(nodes["TrellisModelLoader"], "random-text")
    img, mask = _image()
    with pytest.raises(ValueError, match="random-text is a text model; TrellisImageCondition needs an image model"):
        run(nodes["TrellisImageCondition"], text_model, img, "auto", mask)
    (image_model,) = run(nodes["TrellisModelLoader"], "random-image")
    with pytest.raises(ValueError, match="random-image is an image model; TrellisTextCondition needs a text model"):
        run(nodes["TrellisTextCondition"], image_model, "a chair")
    cond, _ = run(nodes["TrellisImageCondition"], image_model, img, "auto", mask)
    with pytest.raises(ValueError, match="image model"):
        run(nodes["TrellisStructureSampler"], text_model, cond, seed=0, multi_image_mode="stochastic",
                                                num_samples=1, **STEPS)


def test_interrupt(nodes, host2026):
    host = host2026
    (model,) = run(nodes["TrellisModelLoader"], "random-image")
    img, mask = _image()
    cond, _ = run(nodes["TrellisImageCondition"], model, img, "auto", mask)
    steps = dict(STEPS, steps=6)
    host.checks = 0
    # checks: before the stage, before every block of the flow model (block_hook) and after every
    # step; the third falls inside the first step's forward pass, which stops there
    host.interrupt_after_checks = 3
    with pytest.raises(InterruptProcessingException):
        run(nodes["TrellisStructureSampler"], model, cond, seed=0, multi_image_mode="stochastic", num_samples=1,
                                                **steps)
    step_updates = [e for e in host.progress if e[0] == "abs" and e[2] == 6]
    assert host.checks == 3 and step_updates == []  # stopped within one block of the flag
    structure, _ = run(nodes["TrellisStructureSampler"], model, cond, seed=0, multi_image_mode="stochastic",
                                                           num_samples=1, **STEPS)
    (slat,) = run(nodes["TrellisLatentSampler"], model, cond, structure, seed=0, multi_image_mode="stochastic",
                                                   **STEPS)
    (asset,) = run(nodes["TrellisDecode"], model, slat, True, True, False)
    # interrupted export: no file left behind, then a re-run writes the first number
    host.checks = 0
    host.interrupt_after_checks = 3
    with pytest.raises(InterruptProcessingException):
        run(nodes["TrellisExportGLB"], asset, "trellis/asset", 0.9, 512, "fast", 10, "fast", "center", False)
    assert [f for f in _files(host.output_dir) if not os.path.isdir(os.path.join(host.output_dir, f))] == []
    out = run(nodes["TrellisExportGLB"], asset, "trellis/asset", 0.9, 512, "vertex_colors", 10, "fast", "center",
                                           False)
    assert out[2] == "trellis/asset_00001_.glb"
    assert _files(host.output_dir) == [os.path.join("trellis", "asset_00001_.glb")]


@pytest.mark.parametrize("prefix", ["../escape", "trellis/../../escape", "/tmp/abs", "..\\x", ""])
def test_bad_prefix(pack, nodes, host2026, prefix):
    host = host2026
    asset = pack.nodes.generation.TrellisAsset({"mesh": [object()], "gaussian": [object()]}, 1)
    with pytest.raises(ValueError, match="filename_prefix"):
        run(nodes["TrellisExportGLB"], asset, prefix, 0.9, 512, "fast", 10, "fast", "center", False)
    with pytest.raises(ValueError, match="filename_prefix"):
        run(nodes["TrellisExportSplat"], asset, prefix, "ply")
    assert _files(host.output_dir) == []
    assert not os.path.exists(os.path.join(os.path.dirname(host.output_dir), "escape"))


def test_embedded_demo_model_is_the_first_choice_and_needs_no_download(pack, nodes, host2026, model_root,
                                                                       monkeypatch):
    model_folder = sys.modules[pack.__name__ + ".trellis_impl.pipelines.model_folder"]
    loader = nodes["TrellisModelLoader"]
    monkeypatch.setattr(model_folder, "DEMO_MODEL_PATH", model_root / "absent")
    assert "TRELLIS-demo" not in loader.INPUT_TYPES()["required"]["model"][1]["options"]  # not listed when not shipped
    monkeypatch.setattr(model_folder, "DEMO_MODEL_PATH", model_root / "random-image")  # a stand-in, same layout
    assert loader.INPUT_TYPES()["required"]["model"][1]["options"][0] == "TRELLIS-demo"
    (model,) = run(nodes["TrellisModelLoader"], "TRELLIS-demo")  # download stays off
    assert model.folder.path == model_root / "random-image" and model.folder.kind == "image"


def test_step_cache_input_runs_fewer_model_forwards(pack, nodes, host, monkeypatch):
    """step_cache = 3 on both samplers: the models run at 5 of 10 steps per flow (StepCache), and the
    samplers' progress still reaches every step."""
    from trellis_impl.sampling import StepCache
    flow_euler = sys.modules[f"{pack.__name__}.trellis_impl.sampling.flow_euler"]  # the pack's own copy
    calls = []
    original = flow_euler.FlowEulerSampler._model_call
    monkeypatch.setattr(flow_euler.FlowEulerSampler, "_model_call",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    (model,) = run(nodes["TrellisModelLoader"], "random-image")
    img, mask = _image()
    cond, _ = run(nodes["TrellisImageCondition"], model, img, "auto", mask)
    every_step = dict(steps=10, cfg=3.0, cfg_interval_start=0.0, cfg_interval_end=1.0, rescale_t=3.0)
    structure, _ = run(nodes["TrellisStructureSampler"], model, cond, seed=1, multi_image_mode="stochastic",
                       num_samples=1, step_cache=3, **every_step)
    run(nodes["TrellisLatentSampler"], model, cond, structure, seed=1, multi_image_mode="stochastic", step_cache=3,
        **every_step)
    assert len(calls) == 2 * 2 * StepCache(interval=3).evaluations(10) == 20  # 2 flows, a CFG pair each
    assert host.progress.count(("abs", 10, 10)) == 2  # each sampler's bar reached its last step


def test_combo_values_are_checked_before_the_run(nodes, host):
    """Every node with a combo refuses a value outside its choices in validate_inputs, naming the
    input (0.3.64 does not check the combos of V3 nodes); a good value and a linked one (None) pass."""
    cases = {"TrellisImageCondition": {"background": "sideways"},
             "TrellisStructureSampler": {"multi_image_mode": "all"},
             "TrellisLatentSampler": {"multi_image_mode": "all"},
             "TrellisRegionEdit": {"mode": "merge", "method": "magic"},
             "TrellisExportGLB": {"bake": "slow", "unwrap": "uv", "origin": "top"},
             "TrellisExportSplat": {"format": "obj"},
             "TrellisTurntable": {"mode": "points"}}
    for node_id, bad in cases.items():
        check = nodes[node_id].validate_inputs
        for name, value in bad.items():
            verdict = check(**{name: value})
            assert isinstance(verdict, str) and verdict.startswith(f"{name} must be one of"), (node_id, verdict)
            assert check(**{name: None}) is True
    assert nodes["TrellisExportGLB"].validate_inputs(bake="fast", unwrap="fast", origin="base") is True


def test_glb_export_asks_the_host_to_make_room_on_a_gpu_host(nodes, host, monkeypatch):
    """The export loads no model, so it asks the host to offload others until its working memory
    (and the host's reserve) is free; on a CPU host it asks nothing."""
    from trellis_impl.pipelines.memory import working_memory
    _, _, _, asset = _image_asset(nodes, host)
    export = dict(simplify=0.9, texture_size=512, bake="vertex_colors", bake_steps=10, unwrap="fast",
                  origin="center", fill_holes=False)
    run(nodes["TrellisExportGLB"], asset, "trellis/room", **export)
    assert host.free_calls == []
    host_module = sys.modules[nodes["TrellisExportGLB"].__module__].host
    monkeypatch.setattr(host_module, "torch_device", lambda: torch.device("cuda", 0))
    run(nodes["TrellisExportGLB"], asset, "trellis/room", **export)
    assert host.free_calls == [(working_memory("glb_export", 512 ** 2) + 400 * 1024 * 1024, torch.device("cuda", 0))]
