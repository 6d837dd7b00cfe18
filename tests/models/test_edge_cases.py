"""Edge cases of sparse inputs through the real models: empty, very uneven batches, grid
borders, a single voxel, and inputs that must be refused with a clear error."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import CONFORMANCE, assert_rel_close, ckpt_path
from trellis_impl.models import load_model
from trellis_impl.sparse import SparseTensor, sparse_cat

ARGS = {name: m["args"] for name, m in json.loads((CONFORMANCE / "index.json").read_text())["models"].items()}
SPARSE_MODELS = ["slat_flow", "slat_enc", "slat_dec_gs", "slat_dec_rf", "slat_dec_mesh"]


@pytest.fixture(scope="module", autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def in_channels(name):
    a = ARGS[name]
    return a.get("in_channels") if name in ("slat_flow", "slat_enc") else a["latent_channels"]


def voxels(coords, channels, seed=0):
    coords = torch.tensor(coords, dtype=torch.int32)
    return SparseTensor(torch.randn(coords.shape[0], channels, generator=torch.Generator().manual_seed(seed)), coords)


def shell(batch, res, radius, channels, seed=0):
    r = torch.arange(res)
    grid = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3).float()
    d = (grid - (res - 1) / 2).norm(dim=1)
    xyz = grid[(d <= radius) & (d > radius - 1.5)].int()
    coords = torch.cat([torch.full((xyz.shape[0], 1), batch, dtype=torch.int32), xyz], 1)
    return coords.tolist()


def run(name, model, x):
    """The model's output as a list of comparable float tensors per batch item."""
    if name == "slat_flow":
        cond = torch.randn(1, 3, ARGS[name]["cond_channels"], generator=torch.Generator().manual_seed(1))
        out = model(x, torch.full((x.batch_size,), 500.0), cond.expand(x.batch_size, -1, -1))
        return [[out.feats[rows]] for rows in out.layout]
    if name == "slat_enc":
        out = model(x, sample_posterior=False)
        return [[out.feats[rows]] for rows in out.layout]
    reps = model(x)
    if name == "slat_dec_gs":
        return [[g.get_xyz, g.get_scaling, g.get_opacity] for g in reps]
    if name == "slat_dec_rf":
        return [[r.position, r.trivec, r.density] for r in reps]
    return [[m.vertices, m.faces.float()] for m in reps]


@pytest.mark.parametrize("name", SPARSE_MODELS)
def test_empty_input_gives_empty_outputs(name):
    model = load_model(ckpt_path(name))
    x = SparseTensor(torch.zeros(0, in_channels(name)), torch.zeros(0, 4, dtype=torch.int32), batch_size=2)
    outs = run(name, model, x)
    assert len(outs) == 2
    assert all(t.shape[0] == 0 for item in outs for t in item)


@pytest.mark.parametrize("name", SPARSE_MODELS)
def test_uneven_batch_equals_items_run_alone(name):
    """A big item next to a single voxel at the far grid corner: batching changes nothing."""
    model = load_model(ckpt_path(name))
    res = ARGS[name]["resolution"]
    big = voxels(shell(0, res, res / 2 - 1, in_channels(name)), in_channels(name), seed=2)
    corner = voxels([[0, res - 1, res - 1, res - 1]], in_channels(name), seed=3)
    both = run(name, model, sparse_cat([big, corner]))
    for item, alone in zip(both, run(name, model, big) + run(name, model, corner)):
        for got, ref in zip(item, alone):
            if ref.numel():
                assert_rel_close(got, ref, 1e-4, name)  # batching only reorders float sums
            else:
                assert got.numel() == 0


def test_latent_flow_items_of_one_size_take_the_dense_path_with_the_same_result():
    """Items of one size (a CFG pair: one structure, two latents) run the transformer blocks on
    dense [B, n, C] tokens; the same items beside one of another size run them packed."""
    name = "slat_flow"
    model = load_model(ckpt_path(name))
    res, channels = ARGS[name]["resolution"], in_channels(name)
    coords = shell(0, res, res / 2 - 1, channels)
    pair = sparse_cat([voxels(coords, channels, seed=4), voxels(coords, channels, seed=5)])
    odd = voxels([[0, res - 1, res - 1, res - 1]], channels, seed=6)
    dense = run(name, model, pair)
    packed = run(name, model, sparse_cat([pair, odd]))
    for got, ref in zip(dense, packed[:2]):
        assert_rel_close(got[0], ref[0], 1e-4, name)


@pytest.mark.parametrize("name", SPARSE_MODELS)
def test_single_voxel_at_each_border(name):
    model = load_model(ckpt_path(name))
    res = ARGS[name]["resolution"]
    for corner in ([0, 0, 0, 0], [0, res - 1, 0, res - 1]):
        outs = run(name, model, voxels([corner], in_channels(name)))
        assert all(torch.isfinite(t).all() for t in outs[0])
    if name == "slat_dec_mesh":  # a lone voxel decodes to a closed blob or nothing, never garbage
        mesh = model(voxels([[0, res // 2, res // 2, res // 2]], in_channels(name)))[0]
        assert mesh.faces.shape[0] == 0 or int(mesh.faces.max()) < mesh.vertices.shape[0]


@pytest.mark.parametrize("name", SPARSE_MODELS)
def test_coordinates_off_the_grid_are_refused(name):
    model = load_model(ckpt_path(name))
    res = ARGS[name]["resolution"]
    with pytest.raises(ValueError, match=rf"coordinates must be in \[0, {res}\)"):
        run(name, model, voxels([[0, 1, 2, res]], in_channels(name)))


def test_wrong_channel_and_condition_shapes_are_refused():
    flow = load_model(ckpt_path("slat_flow"))
    x = voxels([[0, 1, 2, 3]], in_channels("slat_flow"))
    with pytest.raises(ValueError, match="channels"):
        flow(voxels([[0, 1, 2, 3]], 3), torch.tensor([1.0]), torch.zeros(1, 2, ARGS["slat_flow"]["cond_channels"]))
    with pytest.raises(ValueError, match=r"cond must be \[1, tokens, 48\]"):
        flow(x, torch.tensor([1.0]), torch.zeros(2, 2, 48))
    ss_flow = load_model(ckpt_path("ss_flow"))
    with pytest.raises(ValueError, match=r"x must be \[B, 8, 8, 8, 8\]"):
        ss_flow(torch.zeros(1, 8, 4, 4, 4), torch.tensor([1.0]), torch.zeros(1, 2, 48))
    with pytest.raises(ValueError, match=r"cond must be \[1, tokens, 48\]"):
        ss_flow(torch.zeros(1, 8, 8, 8, 8), torch.tensor([1.0]), torch.zeros(1, 2, 47))


def test_a_host_may_assign_device():
    """ComfyUI's ModelPatcher assigns ``model.device`` after moving the weights; the models accept
    it without patching their class, and ``device`` keeps reporting where the weights are."""
    model = load_model(ckpt_path("ss_dec"))
    cls = type(model)
    model.device = "cpu"
    model.device = torch.device("meta")  # a record only: the weights did not move
    assert type(model) is cls and model.device == torch.device("cpu")
    with pytest.raises(RuntimeError):
        model.device = "no such device"


def test_block_hook_runs_before_every_block_and_can_stop_a_forward_pass():
    """A host's Cancel reaches into one long forward pass (``TrellisModel.block_hook``)."""
    from conftest import load_case
    t, _ = load_case("ss_flow")
    model = load_model(ckpt_path("ss_flow"))
    calls = []
    model.block_hook = lambda: calls.append(1)
    model(t["x"], t["t"], t["cond"])
    assert len(calls) == len(model.blocks)

    def cancel():
        raise KeyboardInterrupt
    model.block_hook = cancel
    with pytest.raises(KeyboardInterrupt):
        model(t["x"], t["t"], t["cond"])
