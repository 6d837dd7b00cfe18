"""TRELLIS_V1_MODEL: a model folder, its condition encoder and the ComfyUI patchers of its stages."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch

from ..trellis_impl.pipelines import ImageTo3DPipeline, TextTo3DPipeline, model_folder, open_model_folder
from ..trellis_impl.pipelines.model_folder import DEMO_MODEL, KNOWN_REPOSITORIES, ModelFolder, ModelFolderError
from ..trellis_impl.models.base import TrellisModel
from . import host

DTYPES = {"auto": None, "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
STAGE_KEYS = {
    "structure": ("sparse_structure_flow_model", "sparse_structure_decoder"),
    "latent": ("slat_flow_model",),
    "gaussian": ("slat_decoder_gs",),
    "radiance_field": ("slat_decoder_rf",),
    "mesh": ("slat_decoder_mesh",),
    "structure_encoder": ("sparse_structure_encoder",),
}


def _managed(cls):
    """The pipeline with its run device set by the node (models live on the offload device and
    are moved by ComfyUI's model management)."""
    class Managed(cls):
        run_device = torch.device("cpu")

        @property
        def device(self) -> torch.device:
            return self.run_device
    Managed.__name__ = f"Managed{cls.__name__}"
    return Managed


_ManagedImage = _managed(ImageTo3DPipeline)
_ManagedText = _managed(TextTo3DPipeline)


class ModelHandle:
    """What flows on TRELLIS_V1_MODEL links. Stage models load lazily (first use), each wrapped in a
    ``ModelPatcher`` and loaded with ``load_models_gpu(force_full_load=True)`` before it runs."""

    def __init__(self, name: str, folder: ModelFolder, download: bool = False,
                 backends: Optional[Dict[str, str]] = None):
        self.name = name
        self.folder = folder
        # this model's kernels ({family: name}, 'auto' = the process's choice), set on each stage model
        self.backends = {k: v for k, v in (backends or {}).items() if v not in (None, "auto")}
        self.kind = folder.kind
        self.download = download
        self.patchers: Dict[str, object] = {}
        self._encoder = None
        self._dinov2 = None  # a text model's DINOv2, for encoding meshes
        self._pipeline = None

    def __repr__(self) -> str:
        return f"ModelHandle({self.name!r}, kind={self.kind})"

    def require(self, kind: str, node: str) -> None:
        if self.kind != kind:
            raise ValueError(f"model folder {self.name} is a {self.kind} model; {node} needs an {kind} model"
                             if kind == "image" else
                             f"model folder {self.name} is an {self.kind} model; {node} needs a {kind} model")

    def _patcher(self, key: str, module: torch.nn.Module):
        if isinstance(module, TrellisModel):
            module.backends = self.backends
            module.block_hook = host.check_interrupt  # Cancel within one block of a long forward pass
        if key not in self.patchers:
            patcher = host.make_patcher(module)
            self.patchers[key] = patcher  # set only once fully created
        return self.patchers[key]

    def _load_encoder(self):
        if self._encoder is None:
            from ..trellis_impl.pipelines.encoders import image_encoder_path, text_encoder_path
            device = host.offload_device()
            if self.kind == "image":
                from ..trellis_impl.conditioning import load_dinov2
                encoder = load_dinov2(str(image_encoder_path(self.folder, self.download)), device=device)
            else:
                from ..trellis_impl.conditioning.clip_text import ClipTextEncoder
                encoder = ClipTextEncoder.from_folder(text_encoder_path(self.folder, self.download), device=device)
            self._encoder = encoder
        return self._encoder

    @property
    def pipeline(self):
        if self._pipeline is None:
            cls = _ManagedImage if self.kind == "image" else _ManagedText
            self._pipeline = cls(self.folder, self._load_encoder(),
                                 batch_cfg=host.torch_device().type == "cuda")
        return self._pipeline

    def prepare_encoding(self):
        """Load the SLat and structure encoders and DINOv2 (an image model's own; for a text model
        the DINOv2 found beside it, or downloaded) onto the compute device, with the working memory
        of a batch of views through DINOv2 (the largest step); returns DINOv2."""
        from ..trellis_impl.encoding.encode import VIEWS_PER_BATCH
        from ..trellis_impl.pipelines.memory import working_memory
        from ..trellis_impl.pipelines.model_folder import ENCODER_KEY, SLAT_ENCODER_KEY
        if self.kind == "image":
            dinov2, key = self._load_encoder(), "encoder"
        else:
            if self._dinov2 is None:
                from ..trellis_impl.conditioning import load_dinov2
                from ..trellis_impl.pipelines.encoders import image_encoder_path
                self._dinov2 = load_dinov2(str(image_encoder_path(self.folder, self.download)),
                                           device=host.offload_device())
            dinov2, key = self._dinov2, "dinov2"
        host.load_to_device([self._patcher(k, self.folder.model(k)) for k in (SLAT_ENCODER_KEY, ENCODER_KEY)]
                            + [self._patcher(key, dinov2)], working_memory("condition", VIEWS_PER_BATCH))
        return dinov2

    def prepare(self, stages: Sequence[str] = (), encoder: bool = False, voxels: int = 0, samples: int = 1,
                images: int = 1):
        """Load the models of ``stages`` (keys of STAGE_KEYS) and/or the encoder onto the compute
        device through ComfyUI's model management, asking it for the stages' working memory at
        these sizes (``TrellisPipeline.working_memory``) so it offloads before, not after, an
        out-of-memory; returns the pipeline."""
        pipeline = self.pipeline
        pipeline.run_device = host.torch_device()
        patchers = []
        if encoder:
            enc = self._load_encoder()
            patchers.append(self._patcher("encoder", enc))
        for stage in stages:
            for key in STAGE_KEYS[stage]:
                patchers.append(self._patcher(key, self.folder.model(key)))
        needs = [pipeline.working_memory(s, voxels, samples, images) for s in [*stages, *(["condition"] if encoder else [])]]
        host.load_to_device(patchers, max(needs, default=0))
        return pipeline


def model_choices():
    """The embedded demo model (no download; listed when this copy of the pack has it), the known
    repository ids (stable values for shared workflows: each resolves to its folder when present
    under a 'trellis' model folder, else downloads), then other local folders."""
    known = {r.split("/")[1] for r in KNOWN_REPOSITORIES}
    demo = [DEMO_MODEL] if (model_folder.DEMO_MODEL_PATH / "pipeline.json").is_file() else []
    return demo + list(KNOWN_REPOSITORIES) + [m for m in host.model_folders() if m not in known | {DEMO_MODEL}]


def load_trellis_model(name: str, dtype: str = "auto", download: bool = False,
                       backends: Optional[Dict[str, str]] = None) -> ModelHandle:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    torch_dtype = DTYPES[dtype]
    if torch_dtype is None:  # the released choice: half precision on a GPU, float32 on CPU
        torch_dtype = torch.float32 if host.torch_device().type == "cpu" else torch.float16
    try:
        folder = open_model_folder(name, host.model_roots(), device=host.offload_device(), dtype=torch_dtype,
                                   download=download)
    except ModelFolderError as error:
        raise ModelFolderError(f"model {name!r}: {error}") from None
    return ModelHandle(name, folder, download, backends)
