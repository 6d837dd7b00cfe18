"""Generation pipelines over model folders in the released layout."""
from .image_and_text import MULTI_IMAGE_MODES, ImageTo3DPipeline, TextTo3DPipeline, open_model_folder
from .model_folder import KNOWN_REPOSITORIES, ModelFolder, ModelFolderError, download_model_folder
from .random_folder import write_random_model_folder
from .generation import FORMATS, GenerationResult, TrellisPipeline

__all__ = ["ImageTo3DPipeline", "TextTo3DPipeline", "TrellisPipeline", "GenerationResult", "ModelFolder",
           "ModelFolderError", "open_model_folder", "download_model_folder", "write_random_model_folder",
           "KNOWN_REPOSITORIES", "FORMATS", "MULTI_IMAGE_MODES"]
