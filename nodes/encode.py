"""TrellisEncodeMesh: a textured mesh -> its TRELLIS latents with the model's encoders."""
from __future__ import annotations


from ..trellis_impl.pipelines.generation import Structure
from . import host
from .generation import TrellisSlat, _mesh_path_input, _model_input, check_mesh_path
from .host import io
from .model import ModelHandle
from .sockets import MESH, SLAT, STRUCTURE


def _core_mesh(mesh):
    """A TexturedMesh (TRELLIS frame) from a core MESH's first item: glTF-frame vertices, and its
    uvs + texture (glTF convention) or vertex colours when the MESH carries them."""
    from ..trellis_impl.encoding import TexturedMesh
    from ..trellis_impl.frames import from_gltf_frame
    items = host.mesh_items(mesh)
    if not items:
        raise ValueError("mesh: the MESH batch is empty")
    vertices, faces = items[0]
    rows = vertices.shape[0]
    uv, texture, colors = getattr(mesh, "uvs", None), getattr(mesh, "texture", None), getattr(mesh, "vertex_colors", None)
    uv = None if uv is None or texture is None else (uv if uv.dim() == 2 else uv[0])[:rows]
    texture = None if uv is None else (texture if texture.dim() == 3 else texture[0]).detach().cpu().numpy()
    colors = None if colors is None else (colors if colors.dim() == 2 else colors[0])[:rows].detach().cpu().numpy()
    return TexturedMesh.from_arrays(from_gltf_frame(vertices.double()), faces,
                                    vertex_colors=colors if uv is None else None,
                                    uv=None if uv is None else uv.detach().cpu().numpy(), texture=texture)


def _file_mesh(mesh_path: str):
    """A TexturedMesh (TRELLIS frame) from a file under ComfyUI's input folder (checked by
    ``validate_inputs`` before the run), its up axis by format (``frames.mesh_file_frame``)."""
    from ..trellis_impl.encoding import load_textured_mesh
    return load_textured_mesh(host.input_path(mesh_path), up="auto")


class TrellisEncodeMesh(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TrellisEncodeMesh", display_name="TRELLIS Encode Mesh (no sampling)", category="TRELLIS/sampling",
            description="Encodes a textured mesh without sampling, as the official dataset toolkit makes its "
                        "training latents: surface voxels, DINOv2 features averaged over rendered views (unlit base "
                        "colour), then the SLat and structure encoders.",
            inputs=[
                _model_input(),
                io.Int.Input("views", default=150, min=1, max=1000,
                             tooltip="Rendered views (official: 150); fewer is faster and coarser."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the cameras' Hammersley offset (the official toolkit draws one at "
                                     "random per asset)."),
                MESH.Input("mesh", optional=True,
                           tooltip="A core MESH (glTF frame, Y up; its uvs + texture or vertex colours are used when "
                                   "present, else grey); its first batch item is used."),
                _mesh_path_input(),
            ],
            outputs=[host.output(SLAT, "slat", "The mesh's structured latent (decode it, or edit it with the edit "
                                               "nodes)."),
                     host.output(STRUCTURE, "structure", "Its structure, with the dense structure latent (for the "
                                                         "edit nodes).")])

    @classmethod
    def validate_inputs(cls, mesh_path=""):
        return check_mesh_path(mesh_path)

    @classmethod
    def execute(cls, model: ModelHandle, views=150, seed=0, mesh=None, mesh_path=""):
        from ..trellis_impl.encoding import encode_asset
        if isinstance(views, bool) or not isinstance(views, int) or views < 1:
            raise ValueError(f"views must be an int >= 1, got {views!r}")
        if mesh is not None:
            textured = _core_mesh(mesh)
        elif mesh_path and str(mesh_path).strip():
            textured = _file_mesh(str(mesh_path).strip())
        else:
            raise ValueError("TrellisEncodeMesh: link a mesh or give mesh_path")
        host.check_interrupt()
        folder = model.folder
        dinov2 = model.prepare_encoding()
        pbar = host.progress_bar(int(views))

        def progress(phase: str, done: int, total: int) -> None:
            host.check_interrupt()
            if phase == "views":
                pbar.update_absolute(done, total)

        device = host.torch_device()
        asset = encode_asset(textured, folder, int(views), seed=int(seed), dinov2=dinov2, device=device,
                             progress=progress)
        slat = asset.slat(device)
        structure = Structure(slat.coords.cpu(), 1, folder.resolution, latent=asset.structure_latent)
        return io.NodeOutput(TrellisSlat(slat, 1), structure)
