"""Every setting of a network (`ViTConfig`) and of a training run (`TrainConfig`), as
frozen dataclasses that check their values when made, with what each field accepts
(`MODEL_RANGES`, `TRAIN_RANGES`, the choices below). Plain Python, no MindSpore: the command
line reads its flags' defaults and ranges from here before anything heavy is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .card import model_card
from .errors import ConfigError
from .ranges import AREA_SHARE, Range, problems as out_of_range
from .schedule import STAGE_UNITS, ExpansionSchedule, Shape, parse_shapes, parse_starts, shaped

MODES = ("insert", "stack")       # where a depth growth's new blocks go
GROWTHS = ("reference", "exact")  # the authors' EMA copies, or the same behind gates that start at 0
GATES = ("ramp", "learned")       # how an exact growth's gates go from 0: a linear ramp, or learned
SPLITS = ("random", "ema", "equal")  # how a width growth splits copied columns (width.py)
WIDTH_LR = ("same", "scaled")     # the learning rate of grown matrices: unchanged, or * old / new input width
PRECISIONS = ("float32", "float16", "bfloat16")


# What each numeric field of ViTConfig accepts (the command line's flags say the same).
# The upper bounds are far above any ViT built (ViT-22B: width 6144, MLP 24576, depth 48) and
# keep a value read from a file or typed by mistake from asking for absurd allocations.
MODEL_RANGES = {
    "image_size": Range(int, 1, 8192, high_open=False),
    "patch_size": Range(int, 1, 1024, high_open=False),
    "in_channels": Range(int, 1, 64, high_open=False),
    "width": Range(int, 1, 65536, high_open=False),
    "depth": Range(int, 1, 1024, high_open=False),
    "num_heads": Range(int, 1, 4096, high_open=False),
    "mlp_width": Range(int, 1, 262144, high_open=False),
    "num_classes": Range(int, 0, 1_000_000, high_open=False, note="(0: no head)"),
    **{name: Range(float, 0, 1) for name in ("dropout", "attention_dropout", "drop_path_rate")},
    "layer_norm_eps": Range(float, 0, 1, low_open=True, high_open=False),
}
# gelu_approximate: True (tanh) or False (exact); MindSpore's and PyTorch's spellings mean the same
GELU_SPELLINGS = {"tanh": True, "none": False, "exact": False, "erf": False}


@dataclass(frozen=True)
class ViTConfig:
    """Every hyper-parameter of the network. The defaults are the released ViT-B/16."""

    image_size: int = field(default_factory=lambda: model_card().input_size)
    patch_size: int = 16
    in_channels: int = 3
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_width: int = 3072
    num_classes: int = field(default_factory=lambda: model_card().num_classes)
    dropout: float = 0.0
    attention_dropout: float = 0.0
    drop_path_rate: float = 0.0
    # The zoo builds nn.GELU() (tanh approximation) and nn.LayerNorm (epsilon 1e-7);
    # DeiT/timm weights want exact GELU and 1e-6.
    gelu_approximate: bool = True
    layer_norm_eps: float = 1e-7

    def __post_init__(self):
        gelu = self.gelu_approximate
        if isinstance(gelu, str) and gelu.lower() in GELU_SPELLINGS:
            object.__setattr__(self, "gelu_approximate", GELU_SPELLINGS[gelu.lower()])
        problems = out_of_range(self, MODEL_RANGES)
        if not isinstance(self.gelu_approximate, bool):
            problems.append(f"gelu_approximate must be True (tanh) or False (exact), or one of "
                            f"{', '.join(map(repr, GELU_SPELLINGS))}, got {gelu!r}")
        if not problems:
            if self.image_size % self.patch_size:
                problems.append(f"image_size {self.image_size} is not a multiple of "
                                f"patch_size {self.patch_size}")
            if self.width % self.num_heads:
                problems.append(f"width {self.width} is not a multiple of num_heads {self.num_heads}")
        if problems:
            raise ConfigError("invalid ViTConfig: " + "; ".join(problems))

    @property
    def parameter_count(self) -> int:
        """The network's parameters (gates aside): what a file that describes this network
        must hold (`weights.py` checks it before building anything)."""
        w, mlp, classes = self.width, self.mlp_width, self.num_classes
        embedding = self.in_channels * self.patch_size ** 2 * w + w + w + (self.num_patches + 1) * w
        block = 4 * w + 4 * (w * w + w) + (w * mlp + mlp) + (mlp * w + w)
        return embedding + self.depth * block + 2 * w + (classes * w + classes if classes else 0)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    def drop_path_rates(self) -> list[float]:
        """Stochastic depth rising linearly from 0 to `drop_path_rate` over the blocks."""
        if self.depth == 1:
            return [0.0]
        return [self.drop_path_rate * i / (self.depth - 1) for i in range(self.depth)]


DEFAULT_BATCH_SIZE = 64
# Fine-tuning from pretrained weights: short, gentle, little warm-up.
FINETUNE_DEFAULTS = {"epochs": 10, "lr": 1e-4, "warmup_epochs": 1}

# What each numeric field of TrainConfig accepts (the command line's flags say the same).
TRAIN_RANGES = {
    "epochs": Range(int, 1),
    "lr": Range(float, 0, low_open=True),
    "min_lr": Range(float, 0),
    "warmup_epochs": Range(int, 0),
    "weight_decay": Range(float, 0),
    "label_smoothing": Range(float, 0, 1),
    "mixup": Range(float, 0, note="(0: off)"),
    "cutmix": Range(float, 0, note="(0: off)"),
    "clip_grad": Range(float, 0, low_open=True, optional=True),
    "ema_decay": Range(float, 0, 1),
    "layer_decay": Range(float, 0, 1, low_open=True, high_open=False, optional=True),
    "growth_ramp": Range(int, 1, optional=True, note="(None: one epoch)"),
    "size_crops": AREA_SHARE,
    "log_every": Range(int, 1),
    "seed": Range(int, 0, 2**32 - 1, high_open=False),  # MindSpore's and NumPy's seeds are 32-bit
    "loss_scale": Range(float, 0, low_open=True, optional=True, note="(unset: dynamic under float16, none otherwise)"),
}


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run (defaults: DeiT-B / the authors' ImageNet recipe)."""

    epochs: int = 300
    lr: float = 5e-4                 # peak learning rate
    min_lr: float = 1e-5
    warmup_epochs: int = 5
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    mixup: float = 0.0               # Beta(alpha, alpha) of mixup; 0 switches it off (DeiT: 0.8)
    cutmix: float = 0.0              # likewise for cutmix (DeiT: 1.0)
    clip_grad: float | None = None   # global gradient norm
    ema_decay: float = 0.99996
    schedule: tuple | None = None    # stages: depths (6, 12) or "6,12"; "6x384@160,12x768@224" grows width and
                                     # image size too (Shape); None: fixed
    stage_starts: tuple | None = None  # e.g. (0, 150) or "0,150"; None: stages of equal length
    stage_unit: str = "epoch"        # what stage_starts count: "epoch" or "step"
    expansion_mode: str = "insert"
    growth: str = "reference"        # "exact": new blocks enter behind gates at 0 (expansion.grow)
    growth_gate: str = "ramp"        # an exact growth's gates: "ramp" (linear to 1) or "learned" (from 0)
    growth_ramp: int | None = None   # steps of the ramp; None: one epoch
    carry_moments: bool = False      # keep AdamW moments of existing blocks at a depth growth (a width growth always does)
    width_split: str = "random"      # how a width growth splits copied columns: "random", "ema" or "equal"
    width_lr: str = "same"           # "scaled": a matrix whose input grew learns at lr * old / new width
    size_crops: float | None = None  # stages below the final image size train on random resized crops keeping
                                     # at least this share of the area (in-memory data; FolderData always crops)
    bias_correction: bool = True     # AdamW as PyTorch's; False: MindSpore's AdamWeightDecay (none)
    restart_lr: bool = False         # restart the cosine per stage, without warm-up
    scale_weight_decay: bool = False  # weight decay * depth / final depth
    layer_decay: float | None = None  # layer-wise lr decay (fine-tuning), e.g. 0.75
    freeze_backbone: bool = False    # train the head only
    log_every: int = 20              # steps between reading loss and accuracy back (and the NaN check)
    compile_ahead: bool = True       # compile every later stage's graphs at the start: a growth does not stop
    precision: str = "float32"       # what the network computes in: float32, float16 or bfloat16 (as O2; the
                                     # weights, the EMA, the optimizer and the loss stay float32)
    loss_scale: float | None = None  # a fixed loss scale; None: dynamic under float16 (from 2**16), none otherwise
    seed: int = 0

    def __post_init__(self):
        # Text from a command line or a saved run ('6,12', [6, 12]) becomes a tuple here, once.
        if self.schedule is not None:
            shapes = parse_shapes(self.schedule) if isinstance(self.schedule, str) else self.schedule
            object.__setattr__(self, "schedule", tuple(Shape.of(shape) for shape in shapes))
        if self.stage_starts is not None and not isinstance(self.stage_starts, tuple):
            starts = self.stage_starts
            object.__setattr__(self, "stage_starts", parse_starts(starts) if isinstance(starts, str) else tuple(starts))

        problems = out_of_range(self, TRAIN_RANGES)
        if self.stage_unit not in STAGE_UNITS:
            problems.append(f"stage_unit must be one of {', '.join(map(repr, STAGE_UNITS))}, got {self.stage_unit!r}")
        for name, choices in (("expansion_mode", MODES), ("growth", GROWTHS), ("growth_gate", GATES),
                              ("width_split", SPLITS), ("width_lr", WIDTH_LR), ("precision", PRECISIONS)):
            if getattr(self, name) not in choices:
                problems.append(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if problems:
            raise ConfigError("invalid TrainConfig: " + "; ".join(problems))

    def final_depth(self, depth: int) -> int:
        """The depth training ends at: the schedule's last stage, else `depth`."""
        return self.schedule[-1].depth if self.schedule else depth

    def first_depth(self, depth: int) -> int:
        """The depth training starts at: the schedule's first stage, else `depth`."""
        return self.schedule[0].depth if self.schedule else depth

    def final_width(self, width: int) -> int:
        """The width training ends at: the last width the schedule gives, else `width`."""
        widths = [shape.width for shape in self.schedule or () if shape.width is not None]
        return widths[-1] if widths else width

    def final_size(self, size: int) -> int:
        """The image size training ends at: the last size the schedule gives, else `size`."""
        sizes = [shape.size for shape in self.schedule or () if shape.size is not None]
        return sizes[-1] if sizes else size

    def shapes(self, model) -> tuple:
        """`(first, final)`: the `ViTConfig`s a run of this recipe starts and ends at, for a
        network otherwise as `model`: the final one at the schedule's last depth, width and
        image size (the model's own where the schedule gives none), the first at its first
        stage's (heads at the head dimension, the MLP at its ratio). The one place a run's
        shapes are worked out: the command line, a resume and the demo ask it."""
        final = shaped(model, self.final_depth(model.depth), self.final_width(model.width),
                       self.final_size(model.image_size))
        return self.first_model(final), final

    def first_model(self, final):
        """The `ViTConfig` training starts at, for a run that ends at `final`: the first
        stage's depth, width (heads at `final`'s head dimension, the MLP at its ratio) and
        image size."""
        if not self.schedule:
            return final
        first = self.schedule[0]
        return shaped(final, first.depth, first.width, first.size)

    def expansion_schedule(self, depth: int, steps_per_epoch: int = 1) -> ExpansionSchedule:
        if self.schedule is None:
            return ExpansionSchedule.full(depth)
        length = self.epochs * (steps_per_epoch if self.stage_unit == "step" else 1)
        return ExpansionSchedule.of(self.schedule, length, self.stage_starts, self.stage_unit)
