"""Weights: read a checkpoint, map its names, check it against a network, load, convert.

Two naming schemes are understood:

* `mindspore`: the model zoo's names, which the released checkpoint and this package's
  network use (`body.layers.{i}.0.cell.1.to_q.weight`, ... see `model.py`);
* `timm`: timm/DeiT Vision Transformer state dicts (`blocks.{i}.attn.qkv.weight`, ...).

The name maps below are data, in the manner of nanoGPT's `from_pretrained`: a table of
renames, plus the short list of tensors that change shape on the way (the fused q/k/v
projection, and the patch embedding, a Conv2d in timm and a Dense here).

Loading validates everything first (missing, unexpected, misshaped, non-finite) and
raises one `CheckpointError` listing every problem; only a checkpoint with none is
assigned, so a network is never left half-loaded.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .download import fetch, file_name_of
from .errors import CheckpointError, ConfigError, DownloadError
from .formats import FORMATS, NAMING_SCHEMES
from .graphs import assign
from .config import GELU_SPELLINGS, MODEL_RANGES, ViTConfig
from .model import fields_from_shapes, is_classifier_name

# Entries a training checkpoint holds beside the model (optimizer, loss scale, counters).
OPTIMIZER_ENTRY = re.compile(
    r"^(moments?\d?|adam_[mv]|accu(m|_grads)|ema|optimizer)\.|"
    r"^(global_step|learning_rate|beta[12]_power|scale_sense|current_iterator_step|"
    r"last_overflow_iterator_step|epoch_num|step_num|loss_scale)$")

# timm name -> MindSpore (model zoo) name. `{i}` is the block index.
TIMM_TO_MINDSPORE = {
    "cls_token": "cls",
    "pos_embed": "pos_embedding",
    "patch_embed.proj.bias": "stem.patch_to_embedding.dense.bias",
    "blocks.{i}.norm1.weight": "body.layers.{i}.0.cell.0.gamma",
    "blocks.{i}.norm1.bias": "body.layers.{i}.0.cell.0.beta",
    "blocks.{i}.attn.proj.weight": "body.layers.{i}.0.cell.1.to_out.weight",
    "blocks.{i}.attn.proj.bias": "body.layers.{i}.0.cell.1.to_out.bias",
    "blocks.{i}.norm2.weight": "body.layers.{i}.1.cell.0.gamma",
    "blocks.{i}.norm2.bias": "body.layers.{i}.1.cell.0.beta",
    "blocks.{i}.mlp.fc1.weight": "body.layers.{i}.1.cell.1.ff1.dense.weight",
    "blocks.{i}.mlp.fc1.bias": "body.layers.{i}.1.cell.1.ff1.dense.bias",
    "blocks.{i}.mlp.fc2.weight": "body.layers.{i}.1.cell.1.ff2.dense.weight",
    "blocks.{i}.mlp.fc2.bias": "body.layers.{i}.1.cell.1.ff2.dense.bias",
    "norm.weight": "norm.gamma",
    "norm.bias": "norm.beta",
    "head.weight": "head.0.weight",
    "head.bias": "head.0.bias",
}
# Tensors that change shape between the schemes (both Dense layouts are [out, in]):
TIMM_PATCH_WEIGHT = "patch_embed.proj.weight"               # Conv2d [D, C, p, p]
MINDSPORE_PATCH_WEIGHT = "stem.patch_to_embedding.dense.weight"  # Dense [D, C*p*p], (c, row, col)
TIMM_QKV = "blocks.{i}.attn.qkv.{kind}"                     # [3D, D]: rows q, then k, then v
MINDSPORE_QKV = tuple(f"body.layers.{{i}}.0.cell.1.to_{x}.{{kind}}" for x in "qkv")

# What timm-trained weights need (DeiT/timm: exact GELU, LayerNorm epsilon 1e-6).
TIMM_ARCHITECTURE = {"gelu_approximate": False, "layer_norm_eps": 1e-6}
# What zoo-named weights without metadata are taken to be (any mindspore.save_checkpoint
# file, the released one included): the zoo's nn.GELU() (tanh) and nn.LayerNorm (1e-7).
ZOO_ARCHITECTURE = {"gelu_approximate": True, "layer_norm_eps": 1e-7}
# mindcv's ViTs (`mindcv.models.vit`) have timm's names but MindSpore's LayerNorm names
# (`gamma`/`beta` for `weight`/`bias`) and MindSpore's defaults: nn.GELU() (tanh), nn.LayerNorm (1e-7).
MINDCV_ARCHITECTURE = {"gelu_approximate": True, "layer_norm_eps": 1e-7}
MINDCV_NORM = re.compile(r"^((?:blocks\.\d+\.)?(?:norm1|norm2|norm|fc_norm))\.(gamma|beta)$")
ARCHITECTURE_FIELDS = ("gelu_approximate", "layer_norm_eps", "num_heads")


@dataclass
class Weights:
    """A checkpoint read into memory, with MindSpore (model zoo) names."""

    state: dict                      # name -> np.ndarray
    source: str
    scheme: str                      # 'mindspore', 'timm' or 'mindcv': the names the file had
    architecture: dict = field(default_factory=dict)  # ViTConfig fields recorded or certain from the names
    ignored: list = field(default_factory=list)       # optimizer entries and the like
    # Fields assumed where nothing is recorded (zoo names: the zoo's architecture). They
    # build the network and are written on conversion, but loading does not insist on them.
    assumed: dict = field(default_factory=dict)
    class_names: tuple | None = None                  # labels of the head's outputs, if recorded
    file_tensors: int = 0                             # the model's tensors as the file holds them (timm: fused qkv)

    @property
    def shape_fields(self) -> dict:
        """The `ViTConfig` fields the tensors' shapes say (`model.fields_from_shapes`)."""
        return fields_from_shapes({name: np.shape(value) for name, value in self.state.items()})

    @property
    def num_classes(self) -> int:
        return self.shape_fields["num_classes"]

    def config_fields(self) -> dict:
        """The `ViTConfig` fields these weights imply (what `create_network` builds)."""
        return {**self.assumed, **self.architecture, **self.shape_fields}


@dataclass
class LoadReport:
    """What `load_pretrained` did."""

    source: str
    scheme: str
    loaded: int                      # parameters assigned
    kept: list = field(default_factory=list)       # network parameters left as they were (head='keep')
    resized: list = field(default_factory=list)    # e.g. pos_embedding resampled to a new image size
    ignored: list = field(default_factory=list)    # optimizer entries in the file

    def __str__(self):
        lines = [f"loaded {self.loaded} parameters from {self.source} ({self.scheme} names)"]
        if self.kept:
            lines.append(f"kept the network's own {', '.join(self.kept)}")
        if self.resized:
            lines.append(f"resized {', '.join(self.resized)}")
        if self.ignored:
            lines.append(f"ignored {len(self.ignored)} optimizer entries")
        return "; ".join(lines)


# -- reading -------------------------------------------------------------------------

def read_weights(source, *, cache_dir=None, sha256=None, progress=True, max_bytes=None) -> Weights:
    """Read weights from `source` and map them to MindSpore names.

    `source`: an `http(s)` URL (downloaded once, through the cache; at most `max_bytes`) or
    the path of a `.ckpt`, `.safetensors` or `.npz` file. (The released checkpoint is the
    hub's business: `create_network(pretrained=True)`, `network_expansion.load_pretrained(net)`.)
    """
    path = local_path(source, cache_dir=cache_dir, sha256=sha256, progress=progress, max_bytes=max_bytes)
    raw, metadata = _read_file(path)
    model = {k: v for k, v in raw.items() if not OPTIMIZER_ENTRY.match(k)}
    ignored = sorted(set(raw) - set(model))
    if any(name == "cls_token" or name.startswith("blocks.") for name in model):
        scheme = "mindcv" if any(MINDCV_NORM.match(name) for name in model) else "timm"
        if scheme == "mindcv":
            model = {mindcv_to_timm_name(name): value for name, value in model.items()}
        state, unmapped = timm_to_mindspore(model)
        state.update(unmapped)  # reported as unexpected by the check
        architecture = dict(MINDCV_ARCHITECTURE if scheme == "mindcv" else TIMM_ARCHITECTURE)
        assumed = {}
    else:
        state, scheme, architecture, assumed = model, "mindspore", {}, dict(ZOO_ARCHITECTURE)
    recorded = _architecture_from(metadata, path)
    architecture.update(recorded)
    assumed = {k: v for k, v in assumed.items() if k not in recorded}
    weights = Weights(state=state, source=str(path), scheme=scheme, architecture=architecture, ignored=ignored,
                      assumed=assumed, class_names=_class_names_from(metadata, path), file_tensors=len(model))
    if weights.class_names is not None and len(weights.class_names) != weights.num_classes:
        raise CheckpointError(path, [f"its metadata names {len(weights.class_names)} classes, its head has "
                                     f"{weights.num_classes} outputs"],
                              advice="Write the file again with save_weights, or remove the metadata.")
    return weights


def check_holds_its_network(weights: Weights) -> None:
    """`CheckpointError` unless the file holds every value of the network its shapes
    describe: a few tensors claiming a huge width (a 96 KB file whose `cls` said 24,000)
    would otherwise have a network of that size built (110 GB) before a single name was
    compared. The readers already refuse any tensor whose bytes the file does not hold."""
    fields = weights.config_fields()
    try:
        described = ViTConfig(**{**fields, "num_heads": 1}).parameter_count  # the head count changes no size
    except ConfigError as error:
        raise CheckpointError(weights.source, [f"its shapes describe no network this package builds: {error}"],
                              advice="The file is damaged, or not weights of this model.") from None
    held = sum(int(np.size(value)) for value in weights.state.values())
    if described > held:
        shape = ", ".join(f"{k} {v}" for k, v in fields.items() if k in ("width", "depth", "mlp_width", "image_size"))
        raise CheckpointError(weights.source, [f"its shapes describe a network of {described:,} parameters ({shape}) "
                                               f"but it holds {held:,} values"],
                              advice="The file is damaged, or not weights of this model: nothing was built.")


def local_path(source, *, cache_dir=None, sha256=None, progress=True, max_bytes=None) -> Path:
    """The local path of `source`: a file, or a URL downloaded into the cache."""
    if source is None or isinstance(source, bool):
        raise ConfigError(f"weights source {source!r}: pass a path or URL (True, the released checkpoint, is "
                          f"understood by create_network and network_expansion.load_pretrained)")
    source = str(source)
    if source.lower().startswith(("http://", "https://")):
        suffix = Path(file_name_of(source)).suffix.lower()
        if suffix not in FORMATS:  # before a byte is downloaded
            raise CheckpointError(source, [f"the URL names a {suffix or 'suffix-less'} file, not a checkpoint"],
                                  advice=f"Give the URL of a {', '.join(FORMATS)} file.")
        return fetch(source, folder=cache_dir, sha256=sha256, progress=progress, max_bytes=max_bytes,
                     check=lambda part: _read_file(part, suffix))
    advice = "Pass the path of a .ckpt, .safetensors or .npz file, an http(s) URL, or True for the released checkpoint."
    try:
        path = Path(source).expanduser()
        if not path.is_file():
            raise CheckpointError(path, ["no such file" if not path.exists() else "not a file"], advice=advice)
    except (OSError, ValueError, RuntimeError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(source, [f"cannot be opened ({getattr(error, 'strerror', None) or error})"],
                              advice=advice) from None
    return path


def _read_file(path: Path, suffix: str | None = None):
    """`({name: array}, metadata)` of a checkpoint file, by its suffix (or `suffix`)."""
    suffix = suffix or path.suffix.lower()
    if suffix not in FORMATS:
        raise CheckpointError(path, [f"unknown format {suffix or '(no suffix)'!r}"],
                              advice=f"Expected one of {', '.join(FORMATS)}.")
    try:
        return FORMATS[suffix].read(path)
    except CheckpointError:
        raise
    except (OSError, MemoryError) as error:  # about this machine, not the file: it may be good
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise CheckpointError(path, [f"cannot be read here ({reason})"], readable=False,
                              advice="Check that the file can be read (permissions, disk, free memory).") from None
    except Exception as error:  # each reader raises its own types for a damaged file
        raise CheckpointError(path, [f"cannot be read as {suffix}: {error}"],
                              advice="The file is damaged or not what its name says: download it again.") from error


def _architecture_from(metadata, path) -> dict:
    recorded = metadata.get("architecture", {}) if isinstance(metadata, dict) else {}
    if not isinstance(recorded, dict):
        raise CheckpointError(path, [f"its metadata's 'architecture' is a {type(recorded).__name__}, "
                                     f"expected a mapping of ViTConfig fields"],
                              advice="The file was not written by this package, or was edited: "
                                     "remove the metadata or write it again with save_weights.")
    fields = {k: v for k, v in recorded.items() if k in ARCHITECTURE_FIELDS}
    problems = [problem for name in ("layer_norm_eps", "num_heads") if name in fields
                for problem in [MODEL_RANGES[name].problem(name, fields[name])] if problem]
    gelu = fields.get("gelu_approximate", True)
    if not isinstance(gelu, bool):
        if isinstance(gelu, str) and gelu.lower() in GELU_SPELLINGS:
            fields["gelu_approximate"] = GELU_SPELLINGS[gelu.lower()]
        else:
            problems.append(f"gelu_approximate must be true or false, got {gelu!r}")
    if problems:
        raise CheckpointError(path, [f"its metadata's architecture: {problem}" for problem in problems],
                              advice="The file was edited or not written by this package: remove the metadata "
                                     "or write it again with save_weights.")
    return fields


def _class_names_from(metadata, path):
    names = metadata.get("class_names") if isinstance(metadata, dict) else None
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(path, ["its metadata's 'class_names' is not a list of strings"],
                              advice="Write the file again with save_weights, or remove the metadata.")
    import collections

    repeated = sorted(name for name, count in collections.Counter(names).items() if count > 1)
    if repeated:  # two outputs of one name: an evaluation would score one of them as never right
        raise CheckpointError(path, [f"its metadata names a class twice: {', '.join(map(repr, repeated[:5]))}"],
                              advice="Write the file again with save_weights and distinct class names.")
    return tuple(names)


# -- name maps -----------------------------------------------------------------------

def _block_index(name: str):
    match = re.match(r"^blocks\.(\d+)\.(.*)$", name)
    return (int(match.group(1)), f"blocks.{{i}}.{match.group(2)}") if match else (None, name)


def mindcv_to_timm_name(name: str) -> str:
    """A mindcv ViT name as timm's (they differ in the LayerNorms' `gamma`/`beta` only)."""
    match = MINDCV_NORM.match(name)
    return f"{match.group(1)}.{'weight' if match.group(2) == 'gamma' else 'bias'}" if match else name


def timm_to_mindspore(state: dict):
    """`(mapped, unmapped)`: timm/DeiT names mapped to MindSpore names; the rest as they were."""
    mapped, unmapped = {}, {}
    for name, value in state.items():
        index, template = _block_index(name)
        if template in TIMM_TO_MINDSPORE:
            mapped[TIMM_TO_MINDSPORE[template].replace("{i}", str(index))] = value
        elif name == TIMM_PATCH_WEIGHT and np.ndim(value) == 4:
            mapped[MINDSPORE_PATCH_WEIGHT] = value.reshape(value.shape[0], -1)
        elif template in (TIMM_QKV.format(i="{i}", kind="weight"), TIMM_QKV.format(i="{i}", kind="bias")) \
                and np.ndim(value) >= 1 and np.shape(value)[0] % 3 == 0:
            kind = template.rsplit(".", 1)[1]
            for target, part in zip(MINDSPORE_QKV, np.split(value, 3, axis=0)):
                mapped[target.format(i=index, kind=kind)] = np.ascontiguousarray(part)
        else:  # a name timm does not have, or a tensor of a shape no name map fits: reported by the load
            unmapped[name] = value
    return mapped, unmapped


def mindspore_to_timm(state: dict, in_channels: int = 3) -> dict:
    """MindSpore names mapped to timm names (the exact inverse of `timm_to_mindspore`)."""
    inverse = {v: k for k, v in TIMM_TO_MINDSPORE.items()}
    out = {}
    for name, value in state.items():
        template = re.sub(r"^body\.layers\.\d+\.", "body.layers.{i}.", name)
        index = name.split(".")[2] if template != name else None
        if template in inverse:
            out[inverse[template].replace("{i}", str(index))] = value
        elif name == MINDSPORE_PATCH_WEIGHT:
            patch = int(round((value.shape[1] / in_channels) ** 0.5))
            out[TIMM_PATCH_WEIGHT] = value.reshape(value.shape[0], in_channels, patch, patch)
        elif template in (MINDSPORE_QKV[0].format(i="{i}", kind="weight"), MINDSPORE_QKV[0].format(i="{i}", kind="bias")):
            kind = template.rsplit(".", 1)[1]
            parts = [state[t.format(i=index, kind=kind)] for t in MINDSPORE_QKV]
            out[TIMM_QKV.format(i=index, kind=kind)] = np.concatenate(parts, axis=0)
        elif any(template == t.format(i="{i}", kind=k) for t in MINDSPORE_QKV[1:] for k in ("weight", "bias")):
            continue  # folded into qkv with to_q
        else:
            raise CheckpointError("(network)", [f"{name} has no timm name"])
    return out


# -- loading -------------------------------------------------------------------------

def load_pretrained(network, source, *, head="strict", cache_dir=None, sha256=None,
                    progress=True, max_bytes=None) -> LoadReport:
    """Load weights into `network`, all of them or none.

    Args:
        source: a URL, a path, or `Weights` (`network_expansion.load_pretrained` also takes
            True, the released checkpoint).
        head: 'strict' (the checkpoint's head must fit the network's class count) or
            'keep' (keep the network's own head, e.g. a new one for fine-tuning).

    Raises:
        CheckpointError: listing every missing, unexpected, misshaped or non-finite
            parameter and every architecture mismatch; the network is left unchanged.
    """
    if head not in ("strict", "keep"):
        raise ConfigError(f"head must be 'strict' or 'keep', got {head!r}")
    try:
        weights = source if isinstance(source, Weights) else read_weights(
            source, cache_dir=cache_dir, sha256=sha256, progress=progress, max_bytes=max_bytes)
    except DownloadError as error:
        raise error.advise("load_pretrained(network, '/path/to/{name}')") from None
    parameters = {p.name: p for p in network.get_parameters()}
    state = dict(weights.state)
    problems, kept, resized, advice = [], [], [], []

    for name, value in weights.architecture.items():
        have = getattr(network.config, name)
        if value != have:
            problems.append(f"the weights need {name}={value!r}, the network has {have!r}")
    if any(p.startswith("the weights need") for p in problems):
        advice.append("Build the network from the weights: create_network('NetworkExpansion', "
                      "pretrained=PATH) sets these fields.")

    if head == "keep":
        kept = sorted(network.classifier_names())
        for name in [n for n in state if is_classifier_name(n)]:
            state.pop(name)
    elif weights.num_classes != network.config.num_classes:
        advice.append(f"The checkpoint has {weights.num_classes} classes and the network "
                      f"{network.config.num_classes}: build it with num_classes={weights.num_classes}, "
                      f"or pass head='keep' to keep the network's own head (fine-tuning).")

    positions = network.pos_embedding.name
    if positions in state:
        resampled = resample_positions(state[positions], tuple(network.pos_embedding.shape))
        if resampled is not None:
            state[positions] = resampled
            resized.append(f"{positions} {weights.state[positions].shape[1] - 1} -> "
                           f"{resampled.shape[1] - 1} patches")

    for name, parameter in parameters.items():
        if name in kept:
            continue
        if name not in state:
            problems.append(f"missing: {name} {tuple(parameter.shape)}")
            continue
        value = state[name]
        if np.asarray(value).dtype.kind != "f":
            problems.append(f"not floating point: {name} holds {np.asarray(value).dtype} values")
        elif tuple(value.shape) != tuple(parameter.shape):
            problems.append(f"wrong shape: {name} is {tuple(value.shape)} in the checkpoint, "
                            f"{tuple(parameter.shape)} in the network")
        elif not np.isfinite(value).all():
            problems.append(f"not finite: {name} holds {int(np.size(value) - np.isfinite(value).sum())} "
                            f"NaN or infinite values")
        elif np.asarray(value).dtype.itemsize > 4 and np.abs(value).max(initial=0) > np.finfo(np.float32).max:
            problems.append(f"out of float32's range: {name} holds values up to {np.abs(value).max():.3g}, "
                            f"which the network's float32 parameters would hold as infinite")
    for name in state:
        if name not in parameters:
            problems.append(f"unexpected: {name} {tuple(np.shape(state[name]))}")
    if problems:
        raise CheckpointError(weights.source, problems, advice=" ".join(advice))

    for name, parameter in parameters.items():
        if name not in kept:
            assign(parameter, state[name])  # in place: graphs compiled before see it
    if head == "strict":
        network.class_names = weights.class_names
    return LoadReport(source=weights.source, scheme=weights.scheme,
                      loaded=len(parameters) - len(kept), kept=kept, resized=resized,
                      ignored=weights.ignored)


def resample_positions(positions: np.ndarray, wanted: tuple):
    """Position embeddings `(1, 1 + grid^2, width)` resampled bicubically to another patch
    grid (`wanted`: the new shape; the class token's row kept); None if it is the same
    shape, or they cannot be."""
    if positions.shape == wanted or positions.ndim != 3 or positions.shape[2] != wanted[2]:
        return None
    old, new = int(round((positions.shape[1] - 1) ** 0.5)), int(round((wanted[1] - 1) ** 0.5))
    if old * old != positions.shape[1] - 1 or new * new != wanted[1] - 1:
        return None
    from PIL import Image

    grid = positions[0, 1:].reshape(old, old, -1).astype(np.float32)
    channels = [np.asarray(Image.fromarray(grid[:, :, c], mode="F").resize((new, new), Image.BICUBIC))
                for c in range(grid.shape[2])]
    resized = np.stack(channels, axis=-1).reshape(1, new * new, -1)
    return np.concatenate([positions[:, :1], resized], axis=1).astype(np.float32)


# -- writing -------------------------------------------------------------------------

def network_state(network) -> dict:
    """`{MindSpore name: array}` of a network's parameters."""
    return {p.name: p.asnumpy() for p in network.get_parameters()}


def save_weights(network_or_weights, path, *, names: str = "mindspore") -> Path:
    """Write weights to `.ckpt`, `.safetensors` or `.npz` with MindSpore or timm names.

    The architecture fields the weights need (GELU form, LayerNorm epsilon, heads) are
    recorded in the file's metadata, so `create_network(pretrained=path)` rebuilds the
    same network; a network inside an exact growth is saved with its gates folded in (the
    released names). Written to a temporary file, then renamed: never half a file.
    """
    if names not in NAMING_SCHEMES:
        raise ConfigError(f"names must be one of {', '.join(NAMING_SCHEMES)}, got {names!r}")
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise CheckpointError(path, [f"cannot write format {path.suffix or '(no suffix)'!r}"],
                              advice=f"Use one of {', '.join(FORMATS)}.")
    if isinstance(network_or_weights, Weights):
        weights = network_or_weights
        state, architecture = weights.state, {**weights.assumed, **weights.architecture}
        class_names = weights.class_names
    else:
        if getattr(network_or_weights, "gates", None):
            network_or_weights = network_or_weights.folded_copy()
        state = network_state(network_or_weights)
        architecture = architecture_of(network_or_weights)
        class_names = getattr(network_or_weights, "class_names", None)
    state = in_scheme(state, names)
    metadata = weights_metadata(architecture, class_names, names)
    with atomic_write(path) as temporary:
        _write_file(state, temporary, metadata)
    if names == "timm" and path.name == TIMM_FOLDER_WEIGHTS:
        config = ViTConfig(**network_or_weights.config_fields()) if isinstance(network_or_weights, Weights) \
            else network_or_weights.config
        with atomic_write(path.with_name("config.json")) as temporary:
            temporary.write_text(json.dumps(timm_folder_config(config, class_names), indent=1))
    return path


TIMM_FOLDER_WEIGHTS = "model.safetensors"  # with config.json beside it: a folder timm loads ("local-dir:")


def timm_folder_config(config, class_names=None) -> dict:
    """timm's config.json for a folder of timm-named weights: `timm.create_model("local-dir:<folder>")`
    builds the ViT and resolves the model's own preprocessing (bilinear, ImageNet mean and std,
    crop 0.875), not timm's ViT default (bicubic, 0.5, 0.9)."""
    from .preprocess import pretrained_cfg

    cfg = pretrained_cfg(config)
    cfg.update({"fixed_input_size": True, "first_conv": "patch_embed.proj", "classifier": "head"})
    if class_names is not None:
        cfg["label_names"] = list(class_names)
    return {
        "architecture": "vit_base_patch16_224", "num_classes": config.num_classes, "num_features": config.width,
        "global_pool": "token",
        "model_args": {"img_size": config.image_size, "patch_size": config.patch_size, "in_chans": config.in_channels,
                       "embed_dim": config.width, "depth": config.depth, "num_heads": config.num_heads,
                       "mlp_ratio": config.mlp_width / config.width, "qkv_bias": True,
                       "num_classes": config.num_classes,
                       "act_layer": "gelu_tanh" if config.gelu_approximate else "gelu"},
        "pretrained_cfg": cfg,
        # timm builds its LayerNorms with eps 1e-6; the weights were trained with this one
        "network_expansion": {"layer_norm_eps": config.layer_norm_eps},
    }


def architecture_of(network) -> dict:
    """What a network's tensors do not say about it: GELU form, LayerNorm epsilon, heads."""
    return {name: getattr(network.config, name) for name in ARCHITECTURE_FIELDS}


def weights_metadata(architecture: dict, class_names=None, names: str = "mindspore") -> str:
    """The metadata text every weights file the package writes carries (`formats.METADATA_KEY`)."""
    fields = {"names": names, "architecture": architecture}
    if class_names is not None:
        fields["class_names"] = list(class_names)
    return json.dumps(fields)


def _write_file(state: dict, path: Path, metadata: str) -> None:
    FORMATS[path.suffix.lower()].write({n: np.ascontiguousarray(v) for n, v in state.items()}, path, metadata)


def in_scheme(state: dict, names: str) -> dict:
    """`state` (MindSpore names) with the names of `names` ('mindspore' or 'timm')."""
    return mindspore_to_timm(state) if names == "timm" else state


def default_names(destination) -> str:
    """The naming scheme `convert` writes by default: MindSpore names for `.ckpt`, timm names
    for `.safetensors` and `.npz` (the formats the PyTorch world reads)."""
    return "mindspore" if Path(destination).suffix.lower() == ".ckpt" else "timm"


def convert(source, destination, *, names: str | None = None) -> Path:
    """Convert a checkpoint (path, URL or `Weights`) between formats and naming schemes.

    `names`: 'mindspore' or 'timm'; by default `default_names(destination)`.
    """
    destination = Path(destination)
    names = names or default_names(destination)
    weights = source if isinstance(source, Weights) else read_weights(source)
    return save_weights(weights, destination, names=names)
