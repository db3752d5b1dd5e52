"""The released model's evaluation preprocessing, on the host and on the device.

The recipe is the model zoo's `dataset.py` (eval): resize the shorter side to 256
(bilinear), center crop 224, normalise with ImageNet mean/std on a 0..255 scale, HWC ->
CHW, float32. Its numbers travel with the model: `data_config(network)` reads crop
fraction, interpolation, mean and std from the card and the sizes from the network's
config, so a model fine-tuned at 384 gets a 384 recipe.

Two forms that agree (tests/test_preprocess.py states the tolerance):
* host: `mindspore.dataset` transforms (`host_transforms`, `preprocess_image`), for
  data pipelines with parallel workers (`datasets.imagefolder_dataset`);
* device: the `Preprocess` cell, uint8 NHWC in, normalised NCHW out, built from MindSpore
  ops, so it compiles into the same graph as the network and runs where the network runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mindspore import Tensor, nn, ops

from .card import model_card


@dataclass(frozen=True)
class DataConfig:
    """What an image must go through before the network sees it."""

    input_size: int          # the center crop, the network's image size
    resize_size: int         # the shorter side before cropping
    interpolation: str       # 'bilinear'
    mean: tuple              # per channel, on a 0..1 scale
    std: tuple

    @property
    def mean_255(self) -> list:
        return [m * 255.0 for m in self.mean]

    @property
    def std_255(self) -> list:
        return [s * 255.0 for s in self.std]


def data_config(network_or_config=None) -> DataConfig:
    """The preprocessing of `network_or_config` (a network, a `ViTConfig`, or the released model)."""
    from .model import ViTConfig

    config = getattr(network_or_config, "config", network_or_config) or ViTConfig()
    card = model_card()
    crop_pct = float(card.extra["crop-pct"])
    # The zoo's rounding: int(int(224 / 0.875 / 16 + 0.5) * 16) == 256.
    resize = int(int(config.image_size / crop_pct / config.patch_size + 0.5) * config.patch_size)
    return DataConfig(input_size=config.image_size, resize_size=resize,
                      interpolation=str(card.extra["interpolation"]),
                      mean=tuple(card.extra["mean"]), std=tuple(card.extra["std"]))


def pretrained_cfg(network_or_config=None) -> dict:
    """The preprocessing in timm's `pretrained_cfg` keys (what `timm.data.resolve_data_config`
    reads): a timm user given this gets the model's transform, not timm's ViT default
    (bicubic, mean and std 0.5, crop 0.9)."""
    config = getattr(network_or_config, "config", network_or_config)
    data = data_config(network_or_config)
    return {"input_size": (getattr(config, "in_channels", 3), data.input_size, data.input_size),
            "interpolation": data.interpolation, "mean": tuple(data.mean), "std": tuple(data.std),
            "crop_pct": data.input_size / data.resize_size, "crop_mode": "center",
            "num_classes": getattr(config, "num_classes", None)}


# -- host ----------------------------------------------------------------------------

def host_transforms(config: DataConfig) -> list:
    """`mindspore.dataset` transforms: RGB uint8 HWC in, normalised CHW float32 out."""
    import mindspore.dataset.vision as vision

    interpolation = {"bilinear": vision.Inter.BILINEAR, "bicubic": vision.Inter.BICUBIC}[config.interpolation]
    return [vision.Resize(config.resize_size, interpolation), vision.CenterCrop(config.input_size)] \
        + normalize_transforms(config)


def normalize_transforms(config: DataConfig) -> list:
    """The last steps of every recipe, eval or training: normalise, HWC -> CHW."""
    import mindspore.dataset.vision as vision

    return [vision.Normalize(mean=config.mean_255, std=config.std_255), vision.HWC2CHW()]


def crop_image(image: np.ndarray, config: DataConfig) -> np.ndarray:
    """One RGB uint8 HWC image resized and center-cropped as `host_transforms` does, still
    uint8 HWC: what `Preprocess(config, resize=False)` normalises on the device (a quarter
    of float32's bytes to move there)."""
    for transform in host_transforms(config)[:2]:  # resize, center crop
        image = transform(image)
    return np.ascontiguousarray(image, dtype=np.uint8)


def preprocess_image(image: np.ndarray, config: DataConfig) -> np.ndarray:
    """One RGB uint8 HWC image through `host_transforms`, eagerly: CHW float32."""
    for transform in host_transforms(config):
        image = transform(image)
    return np.asarray(image, dtype=np.float32)


# -- device --------------------------------------------------------------------------

class Preprocess(nn.Cell):
    """uint8 NHWC images (one size per batch) -> normalised float32 NCHW crops, on device.

    The same recipe as `host_transforms`: shorter side to `resize_size` (bilinear,
    half-pixel centres, as OpenCV and `mindspore.dataset` resize; rounded to whole gray
    levels as their uint8 output is), center crop, normalise. Shapes are static in graph
    mode, so every input size compiles once. `resize=False`: the images are crops already
    (`crop_image`), and this only normalises them.
    """

    def __init__(self, config: DataConfig, resize: bool = True, picture_size=None):
        super().__init__()
        self.resize = resize
        self.resize_size = config.resize_size
        self.input_size = config.input_size
        # a graph for pictures of one known size (an export) plans its resize here, in Python:
        # a plan made in the graph from a shape with a dynamic batch is control flow that
        # MindSpore's runtime cannot run from a loaded MindIR
        self.plan = self.plan_for(*picture_size) if picture_size is not None else None
        self.bilinear = ops.ResizeBilinearV2(align_corners=False, half_pixel_centers=True)
        self.mean = Tensor(np.array(config.mean_255, np.float32).reshape(1, 3, 1, 1))
        self.std = Tensor(np.array(config.std_255, np.float32).reshape(1, 3, 1, 1))

    def plan_for(self, h, w):
        """The resized size, and the crop's top and left, for pictures of h x w."""
        if h <= w:
            size = (self.resize_size, int(w * self.resize_size / h))
        else:
            size = (int(h * self.resize_size / w), self.resize_size)
        return size, (size[0] - self.input_size) // 2, (size[1] - self.input_size) // 2

    def construct(self, images):
        x = images.astype(np.float32).transpose(0, 3, 1, 2)
        if not self.resize:
            return (x - self.mean) / self.std
        size, top, left = self.plan if self.plan is not None else self.plan_for(x.shape[2], x.shape[3])
        x = self.bilinear(x, size)  # ops.interpolate's bilinear, without its shape checks (control flow)
        x = ops.clamp(ops.round(x), 0.0, 255.0)
        x = x[:, :, top:top + self.input_size, left:left + self.input_size]
        return (x - self.mean) / self.std


class WithPreprocess(nn.Cell):
    """uint8 NHWC images in, the network's output out: `Preprocess` and the network in one
    graph (for GPUs, and for exporting a model that takes raw pixels)."""

    def __init__(self, network, config: DataConfig | None = None, resize: bool = True, picture_size=None):
        # auto_prefix=False: wrapping must not rename the network's parameters to
        # `network.*`, which would break its checkpoint names.
        super().__init__(auto_prefix=False)
        self.preprocess = Preprocess(config or data_config(network), resize, picture_size)
        self.network = network

    def construct(self, images):
        return self.network(self.preprocess(images))
