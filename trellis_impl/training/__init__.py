"""Training of every TRELLIS model (the paper's "Loss & Training"): data preparation, one trainer with
per-stage losses, and export of runs as a released-layout model folder."""
from .config import TrainConfig, load_config
from .dataset import TrainingData
from .export import export_model_folder
from .stages import STAGES
from .trainer import Trainer

__all__ = ["TrainConfig", "load_config", "TrainingData", "Trainer", "STAGES", "export_model_folder"]
