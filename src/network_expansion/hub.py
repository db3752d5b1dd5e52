"""The doors a user knocks on: `create_network` (what the hub client calls) and `load`.

The hub client imports `mindspore_hub_conf.py`, which re-exports `create_network` from
here, and calls `create_network(<card model-name lower-cased>, *args, **kwargs)`.
"""

from __future__ import annotations

import dataclasses

from .card import model_card
from .errors import ConfigError, UnknownModelError
from .model import ViTConfig, VisionTransformer


def accepted_names() -> tuple:
    """Names `create_network` and `load` accept, compared without regard to case."""
    card = model_card()
    return (card.model_name, card.short_alias, card.uid)


def create_network(name: str = "NetworkExpansion", *args, pretrained=False, **overrides) -> VisionTransformer:
    """Build the NetworkExpansion ViT-B/16, optionally with the released weights.

    Args:
        name: `'NetworkExpansion'` in any case (the hub client passes `'networkexpansion'`),
            the alias `'noahsark/NetworkExpansion'`, or the hub uid.
        pretrained: False (random weights, the default), True (the released checkpoint),
            or the path or URL of a checkpoint.
        **overrides: any `ViTConfig` field, e.g. `num_classes=10`, `image_size=384`,
            `drop_path_rate=0.1`, `depth=6`.

    Raises:
        UnknownModelError: the name is not one of `accepted_names()`.
        ConfigError: an unknown keyword, a positional argument, or values that do not fit.
    """
    check_name(name)
    if args:
        raise ConfigError(
            f"create_network takes the model name and keywords only, got extra positional "
            f"arguments {args!r}; pass configuration as keywords, e.g. num_classes=10")
    config = make_config(**overrides)
    network = VisionTransformer(config)
    if pretrained is not False and pretrained is not None:
        raise NotImplementedError(
            "pretrained weights are not available in this version of network_expansion: "
            "create the network with pretrained=False and load a checkpoint with "
            "mindspore.load_checkpoint / mindspore.load_param_into_net")
    return network


def load(name: str = "noahsark/NetworkExpansion", *, pretrained=False, **overrides) -> VisionTransformer:
    """`mindspore_hub.load` for this model, accepting the short alias as well as the uid.

    The hub client itself wants the full uid (`noahsark/gpu/1.8/networkexpansion_v1.0_imagenet2012`);
    this function needs no hub client and no network access for `pretrained=False`.
    """
    return create_network(name, pretrained=pretrained, **overrides)


def check_name(name) -> None:
    accepted = accepted_names()
    if not isinstance(name, str) or name.lower() not in {a.lower() for a in accepted}:
        raise UnknownModelError(
            f"unknown model name {name!r}: this package provides one model, named "
            + ", ".join(repr(a) for a in accepted) + " (any case)")


def make_config(**overrides) -> ViTConfig:
    """`ViTConfig()` with `overrides`; unknown keywords raise `ConfigError` listing the known."""
    known = [f.name for f in dataclasses.fields(ViTConfig)]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown keyword(s) {', '.join(unknown)}; create_network accepts pretrained and "
            f"the ViTConfig fields: {', '.join(known)}")
    return ViTConfig(**overrides)
