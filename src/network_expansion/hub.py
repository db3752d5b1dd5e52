"""The doors a user knocks on: `create_network` (what the hub client calls) and `load`.

The hub client imports `mindspore_hub_conf.py`, which re-exports `create_network` from
here, and calls `create_network(<card model-name lower-cased>, *args, **kwargs)`.
"""

from __future__ import annotations

import dataclasses

from .card import model_card
from .errors import ConfigError, UnknownModelError
from .model import ViTConfig, VisionTransformer
from . import weights as weight_files
from .weights import read_weights


def accepted_names() -> tuple:
    """Names `create_network` and `load` accept, compared without regard to case."""
    card = model_card()
    return (card.model_name, card.short_alias, card.uid)


def create_network(name: str = "NetworkExpansion", *args, pretrained=False, seed: int | None = None,
                   **overrides) -> VisionTransformer:
    """Build the NetworkExpansion ViT-B/16, optionally with the released weights.

    Args:
        name: `'NetworkExpansion'` in any case (the hub client passes `'networkexpansion'`),
            the alias `'noahsark/NetworkExpansion'`, or the hub uid.
        pretrained: False (random weights, the default), True (the released checkpoint,
            downloaded once into the cache), or the path or URL of a checkpoint
            (MindSpore or timm names, see `weights.py`). The architecture follows the
            weights (class count, depth, ...) unless a keyword says otherwise; a
            `num_classes` other than the checkpoint's keeps a new head for fine-tuning.
        seed: the initial weights' seed (None: drawn from NumPy's global state, which
            `mindspore.set_seed` seeds); the same seed builds the same network.
        **overrides: any `ViTConfig` field, e.g. `num_classes=10`, `image_size=384`,
            `drop_path_rate=0.1`, `depth=6`.

    Raises:
        UnknownModelError: the name is not one of `accepted_names()`.
        ConfigError: an unknown keyword, a positional argument, or values that do not fit.
        CheckpointError: the weights do not fit (every problem listed).
        DownloadError: the released checkpoint or URL cannot be downloaded.
    """
    check_name(name)
    if args:
        raise ConfigError(
            f"create_network takes the model name and keywords only, got extra positional "
            f"arguments {args!r}; pass configuration as keywords, e.g. num_classes=10")
    check_keywords(overrides)  # before any download
    if pretrained is False or pretrained is None:
        return VisionTransformer(ViTConfig(**overrides), seed=seed)
    source, sha256 = released_checkpoint() if pretrained is True else (pretrained, None)
    weights = read_weights(source, sha256=sha256, max_bytes=released_size_bound() if pretrained is True else None)
    weight_files.check_holds_its_network(weights)  # before anything of the size it describes is built
    # The weights decide the architecture (class count, depth, GELU form, ...); the
    # caller's keywords win. A class count of the caller's own asks for a new head.
    # Nothing is drawn for the weights the file overwrites (1.5 s of random numbers for
    # ViT-B): only a new head is initialised, from `seed`.
    try:
        config = ViTConfig(**{**weights.config_fields(), **overrides})
    except ConfigError as error:
        if "num_heads" in weights.architecture or "num_heads" in overrides:
            raise
        raise ConfigError(f"{error}. The weights do not record their number of attention heads (a file written by "
                          f"MindSpore's save_checkpoint or ModelCheckpoint holds tensors only), so the released "
                          f"model's {ViTConfig.num_heads} were assumed: pass the network's own, e.g. "
                          f"create_network(..., num_heads=2), or --num-heads on the command line") from None
    network = VisionTransformer(config, seed=seed, initialize=False)
    new_head = config.num_classes != weights.num_classes
    if new_head:
        network.reset_classifier(config.num_classes)
    weight_files.load_pretrained(network, weights, head="keep" if new_head else "strict")
    return network


def released_size_bound() -> int:
    """The most bytes the released checkpoint can be: the card's network in float32, with a
    quarter more for its format's records (a download larger than this is not it)."""
    return ViTConfig().parameter_count * 4 * 5 // 4 + (1 << 20)


def released_checkpoint() -> tuple:
    """(URL, sha256 or None) of the released checkpoint, from the card: what `True` means."""
    asset = model_card().checkpoint
    return asset.link, asset.sha256 or None


def load_pretrained(network, source=True, **options):
    """`weights.load_pretrained`, where `source=True` (the default) is the released checkpoint."""
    if source is True or source is None:
        source, released_sha256 = released_checkpoint()
        options.setdefault("sha256", released_sha256)
        options.setdefault("max_bytes", released_size_bound())
    return weight_files.load_pretrained(network, source, **options)


def load(name: str = "noahsark/NetworkExpansion", *, pretrained=True, **overrides) -> VisionTransformer:
    """`mindspore_hub.load` for this model: the released weights by default, as the hub
    client's own `pretrained=True` (`pretrained=False`: random weights, nothing downloaded;
    a path or URL: those weights). It also accepts the short alias, where the hub client
    wants the full uid (`noahsark/gpu/1.8/networkexpansion_v1.0_imagenet2012`), and needs no
    hub client.
    """
    return create_network(name, pretrained=pretrained, **overrides)


def check_name(name) -> None:
    accepted = accepted_names()
    if not isinstance(name, str) or name.lower() not in {a.lower() for a in accepted}:
        raise UnknownModelError(
            f"unknown model name {name!r}: this package provides one model, named "
            + ", ".join(repr(a) for a in accepted) + " (any case)")


def check_keywords(overrides: dict) -> None:
    """Unknown keywords raise `ConfigError` listing the `ViTConfig` fields."""
    known = [f.name for f in dataclasses.fields(ViTConfig)]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown keyword(s) {', '.join(unknown)}; create_network accepts pretrained, seed and "
            f"the ViTConfig fields: {', '.join(known)}")
