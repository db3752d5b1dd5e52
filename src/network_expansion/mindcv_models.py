"""The model in mindcv's registry: `import network_expansion.mindcv_models`, then

    import mindcv
    network = mindcv.create_model("networkexpansion_vit_b_16_224", pretrained=True)

mindcv (optional; not a dependency) has no plugin mechanism: a model registers when the
module that defines it is imported, so importing this module registers ours. The network
is the package's own (`create_network`): the released weights with `pretrained=True`, a
new head for another `num_classes` (mindcv's default is 1000; the released head has 1001,
the zoo's ImageNet head: with the released weights, 1000 keeps its 1000 trained outputs,
1001 the head whole). A mindcv
ViT checkpoint (`vit_b_16_224`, names `blocks.*.norm1.gamma`) loads into it as well:
`create_network(pretrained="vit_b_16_224.ckpt")` maps the names and records mindcv's GELU
(tanh) and LayerNorm epsilon (1e-7).
"""

from __future__ import annotations

from mindcv.models.registry import register_model

from .hub import create_network
from .predict import IMAGENET_CLASSES

__all__ = []  # register_model appends the names it registers

RELEASED_CLASSES = IMAGENET_CLASSES + 1  # the zoo's ImageNet head: output 1000 unused


@register_model
def networkexpansion_vit_b_16_224(pretrained: bool = False, num_classes: int = RELEASED_CLASSES, in_channels: int = 3,
                                  **kwargs):
    """NetworkExpansion ViT-B/16 at 224 (Ding et al., CVPR 2023): `create_network`'s network.
    With the released weights, mindcv's default `num_classes=1000` keeps the released head's
    1000 ImageNet classes (its output 1000 was never trained), not a new head."""
    if pretrained is True and num_classes == IMAGENET_CLASSES:
        network = create_network("NetworkExpansion", pretrained=True, in_channels=in_channels, **kwargs)
        if network.config.num_classes == RELEASED_CLASSES:
            network.keep_outputs(IMAGENET_CLASSES)
        return network
    return create_network("NetworkExpansion", pretrained=pretrained, num_classes=num_classes,
                          in_channels=in_channels, **kwargs)
