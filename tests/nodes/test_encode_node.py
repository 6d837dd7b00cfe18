"""TrellisEncodeMesh on the fake host: a core MESH or a mesh file -> SLat + structure that the
decode and edit nodes take; progress and Cancel per batch of views; bad input is a clear error."""
from __future__ import annotations

import pytest
import torch

from node_fixtures import (host2026_fixture, model_root_fixture, nodes_fixture, pack_fixture,  # noqa: F401
                           run)
from comfy_host import InterruptProcessingException  # noqa: E402  (on sys.path via node_fixtures)
from test_edit_nodes import _cond
from test_nodes import STEPS

trimesh = pytest.importorskip("trimesh")


def _core_mesh(colour):
    """A 2026 core MESH (glTF frame) of a box with one vertex colour."""
    from comfy_api.latest import Types
    box = trimesh.creation.box(extents=(0.8, 0.5, 0.3))
    vertices = torch.tensor(box.vertices, dtype=torch.float32)
    colours = torch.tensor(colour, dtype=torch.float32).expand(len(vertices), 3)
    return Types.MESH(vertices[None], torch.tensor(box.faces)[None], vertex_colors=colours[None].clone()), box


def test_encode_core_mesh_feeds_decode_and_edits(nodes, host2026):
    from trellis_impl.export.mesh_files import from_gltf_frame
    from trellis_impl.pipelines.voxelize import voxelize_mesh
    (model,) = run(nodes["TrellisModelLoader"], "random-image")
    red_mesh, box = _core_mesh((0.9, 0.1, 0.1))
    host2026.progress.clear()
    slat, structure = run(nodes["TrellisEncodeMesh"], model, 2, 0, mesh=red_mesh)
    assert ("abs", 2, 2) in host2026.progress  # one update per batch of views
    loaded = {id(p.model) for c in host2026.load_calls for p in c["models"]}  # through model management
    assert {id(model.folder.model(key)) for key in ("slat_encoder", "sparse_structure_encoder")} <= loaded
    expected = voxelize_mesh(torch.as_tensor(from_gltf_frame(torch.tensor(box.vertices, dtype=torch.float32)
                                                             .double())), torch.tensor(box.faces), resolution=16)
    assert torch.equal(structure.coords[:, 1:], expected) and (structure.coords[:, 0] == 0).all()
    assert structure.latent.shape == (1, 8, 4, 4, 4) and structure.resolution == 16
    assert torch.equal(slat.slat.coords.cpu(), structure.coords) and slat.slat.feats.shape == (len(expected), 8)
    blue, _ = run(nodes["TrellisEncodeMesh"], model, 2, 0, mesh=_core_mesh((0.1, 0.1, 0.9))[0])
    assert (blue.slat.feats - slat.slat.feats).abs().max() > 1e-2  # the colours reach the latents
    (asset,) = run(nodes["TrellisDecode"], model, slat, True, False, False)
    assert len(asset.decoded["gaussian"]) == 1
    cond, _ = _cond(nodes, model)
    (varied,) = run(nodes["TrellisDetailVariation"], model, cond, structure, 0.5, seed=1, slat=slat, **STEPS)
    assert torch.equal(varied.slat.coords.cpu(), structure.coords)


def test_encode_mesh_file_and_errors(nodes, host2026):
    (model,) = run(nodes["TrellisModelLoader"], "random-image")
    _, box = _core_mesh((0.5, 0.5, 0.5))
    box.export(str(host2026.input_dir / "box.stl"))
    slat, structure = run(nodes["TrellisEncodeMesh"], model, 1, 3, mesh_path="box.stl")
    assert slat.slat.feats.shape[0] == structure.coords.shape[0] > 0
    with pytest.raises(ValueError, match="link a mesh or give mesh_path"):
        run(nodes["TrellisEncodeMesh"], model, 2, 0)
    # the host refuses it before the run (validate_inputs); a run anyway fails naming the file
    assert "no such file in ComfyUI's input folder" in nodes["TrellisEncodeMesh"].validate_inputs(mesh_path="nothing.glb")
    with pytest.raises(ValueError, match="mesh file not found: .*nothing.glb"):
        run(nodes["TrellisEncodeMesh"], model, 2, 0, mesh_path="nothing.glb")
    with pytest.raises(ValueError, match="views"):
        run(nodes["TrellisEncodeMesh"], model, 0, 0, mesh_path="box.stl")
    host2026.interrupt_after_checks = host2026.checks + 2  # Cancel during the views
    with pytest.raises(InterruptProcessingException):
        run(nodes["TrellisEncodeMesh"], model, 4, 0, mesh_path="box.stl")
