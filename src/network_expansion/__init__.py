"""NetworkExpansion for MindSpore: the ViT-B/16 of "Network Expansion For Practical
Training Acceleration" (Ding et al., CVPR 2023), with the released checkpoint's names.

    >>> import network_expansion as ne
    >>> net = ne.create_network("NetworkExpansion", num_classes=10)
"""

from .graphs import quiet_openmp

quiet_openmp()  # before anything imports MindSpore: OpenMP reads it once (graphs.py)

from .card import HubCard, load_card, model_card, validate_card
from .errors import (CardError, CheckpointError, ConfigError, DataError, DownloadError, ExportError,
                     ImageError, NetworkExpansionError, OutputError, PrecisionError, TrainingDiverged,
                     UnknownModelError)
from .datasets import ArrayData, FolderData
from .evaluate import evaluate
from .expansion import EMA, ExpansionSchedule, Growth, Ramp, Shape, Stage, expand, grow, set_gates
from .hub import create_network, load, load_pretrained
from .model import ViTConfig, VisionTransformer
from .predict import Classifier, Prediction, predict, use_cores
from .preprocess import DataConfig, Preprocess, data_config
from .recipe import TrainConfig
from .train import Trainer, folder_trainer
from .weights import convert, save_weights

__version__ = "1.0.0"

__all__ = [
    "create_network", "load", "VisionTransformer", "ViTConfig",
    "load_pretrained", "save_weights", "convert",
    "Classifier", "Prediction", "predict", "use_cores", "evaluate", "Preprocess", "DataConfig", "data_config",
    "model_card", "load_card", "validate_card", "HubCard",
    "Trainer", "TrainConfig", "ExpansionSchedule", "Shape", "Stage", "EMA", "grow", "Growth", "expand", "Ramp", "set_gates",
    "ArrayData", "FolderData", "folder_trainer",
    "NetworkExpansionError", "UnknownModelError", "ConfigError", "CardError", "CheckpointError",
    "DownloadError", "ImageError", "PrecisionError", "DataError", "TrainingDiverged", "ExportError", "OutputError",
]
