"""NetworkExpansion for MindSpore: the ViT-B/16 of "Network Expansion For Practical
Training Acceleration" (Ding et al., CVPR 2023), with the released checkpoint's names.

    >>> import network_expansion as ne
    >>> net = ne.create_network("NetworkExpansion", num_classes=10)

Importing the package is quick and changes nothing in the process: each name below is
imported from its module when first used (MindSpore with it). Nothing the package does
changes the process (environment, threads, signals outside a training run) unless asked:
`tune_cpu()` is the one call that tunes a process for MindSpore's CPU kernels.
"""

import importlib
import importlib.util
import sys
import types

__version__ = "1.0.0"

# What a user types in a notebook, and the module each comes from.
_EXPORTS = {
    "hub": ("create_network", "load", "load_pretrained"),
    "config": ("ViTConfig", "TrainConfig"),
    "model": ("VisionTransformer",),
    "weights": ("save_weights", "convert"),
    "predict": ("Classifier", "Prediction", "predict", "use_cores"),
    "evaluate": ("evaluate",),
    "preprocess": ("Preprocess", "DataConfig", "data_config"),
    "card": ("model_card", "load_card", "validate_card", "HubCard"),
    "train": ("Trainer", "folder_trainer"),
    "schedule": ("ExpansionSchedule", "Shape", "Stage"),
    "expansion": ("grow", "Growth", "expand", "Ramp", "set_gates"),
    "ema": ("EMA",),
    "tuning": ("tune_cpu",),
    "datasets": ("ArrayData", "FolderData"),
    "errors": ("NetworkExpansionError", "UnknownModelError", "ConfigError", "CardError", "CheckpointError",
               "DownloadError", "ImageError", "PrecisionError", "DataError", "TrainingDiverged", "ExportError",
               "OutputError", "JobLost"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [name for names in _EXPORTS.values() for name in names]


def __getattr__(name):
    module = _MODULE_OF.get(name)
    if module is None:
        if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
            return importlib.import_module(f".{name}", __name__)  # a module of the package: ne.weights, ne.images
        raise AttributeError(f"module 'network_expansion' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # imported once
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """The package, whose `predict` and `evaluate` stay the functions of those names: Python's
    import system sets a package's attribute to each submodule it imports, so once anything
    imported `network_expansion.predict`, `ne.predict(...)` would have called a module."""

    def __setattr__(self, name, value):
        if name in _MODULE_OF and name in _EXPORTS and isinstance(value, types.ModuleType):
            return  # the submodule stays in sys.modules: `from network_expansion.predict import X` finds it
            # (`import network_expansion.predict as m` gives the function: Python reads the attribute)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
