"""Schedules: which shape (depth, width, image size) a run trains in each stage, and
from which epoch or step; the FLOPs bound of a schedule. Plain Python, no MindSpore: the
command line parses and checks schedules before anything heavy is imported.

    >>> ExpansionSchedule.of("6,12", 300).starts
    (0, 150)
    >>> Shape.parse("6x384@160")
    Shape(depth=6, width=384, size=160)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import ConfigError

STAGE_UNITS = ("epoch", "step")  # what a schedule's starts count


@dataclass(frozen=True)
class Shape:
    """What a stage trains: its depth, its width and its image size (None: those of the
    stage before). Text: `'6'`, `'6x384'`, `'6@160'`, `'6x384@160'` (`Shape.parse`)."""

    depth: int
    width: int | None = None
    size: int | None = None

    @classmethod
    def of(cls, value) -> "Shape":
        """A shape from a depth, `'6x384@160'`, `(6, 384, 160)`, `{'depth': 6, 'width': 384}`
        or a shape."""
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls(**value)
        if isinstance(value, str):
            return cls.parse(value)
        if isinstance(value, (tuple, list)):
            return cls(*value)
        return cls(int(value))

    @classmethod
    def parse(cls, text: str) -> "Shape":
        model, _, size = text.strip().lower().partition("@")
        parts = model.split("x")
        if len(parts) > 2 or not all(part.strip().isdigit() for part in parts) or (_ and not size.strip().isdigit()):
            raise ConfigError(f"stage {text!r}: expected DEPTH[xWIDTH][@SIZE], e.g. 6, 6x384 or 6x384@160")
        numbers = [int(part) for part in parts] + [None] * (2 - len(parts))
        return cls(*numbers, int(size) if _ else None)

    def __str__(self):
        return (f"{self.depth}" + (f"x{self.width}" if self.width is not None else "")
                + (f"@{self.size}" if self.size is not None else ""))


@dataclass(frozen=True)
class Stage:
    """One stage of a schedule: its depth, the epoch (or step) it starts at, its width and
    its image size (None: the model's own, unchanged)."""

    depth: int
    start: int
    width: int | None = None
    size: int | None = None


@dataclass(frozen=True)
class ExpansionSchedule:
    """Depths (and widths) by stage and the epoch (or, with `unit='step'`, the step) each
    stage starts at. A width of None keeps the width of the stage before (the model's, for
    the first).

    >>> ExpansionSchedule.even((6, 12), epochs=300).starts
    (0, 150)
    >>> ExpansionSchedule.of("6x32,12x64", 48).stage(30)
    Stage(depth=12, start=24, width=64)
    """

    depths: tuple
    starts: tuple
    unit: str = "epoch"
    widths: tuple = ()
    sizes: tuple = ()

    def __post_init__(self):
        depths, starts = tuple(self.depths), tuple(self.starts)
        problems = []
        axes = {}  # width and image size: given per stage or None (the stage before's)
        for axis, values in (("width", self.widths), ("size", self.sizes)):
            values = tuple(values) or (None,) * len(depths)
            resolved, last = [], None
            for value in values:
                last = value if value is not None else last
                resolved.append(last)
            axes[axis] = (values, tuple(resolved))
        example = {"width": f"{depths[0] if depths else 6}x384,{depths[-1] if depths else 12}x768",
                   "size": f"{depths[0] if depths else 6}@160,{depths[-1] if depths else 12}@224"}
        if not depths or any(not isinstance(d, int) or d < 1 for d in depths):
            problems.append(f"depths must be positive integers, got {depths}")
        for axis, (given, resolved) in axes.items() if not problems else ():
            if len(given) != len(depths) or any(v is not None and (not isinstance(v, int) or v < 1) for v in given):
                problems.append(f"{axis}s must be positive integers or None, one per stage, got {given}")
            elif given[0] is None and any(v is not None for v in given):
                problems.append(f"a schedule that grows the {axis} must give the first stage's {axis} too, "
                                f"e.g. {example[axis]}")
            elif any(a is not None and b < a for a, b in zip(resolved, resolved[1:])):
                problems.append(f"{axis}s cannot shrink from stage to stage, got {given}")
        if not problems:
            shapes = [Shape(d, w, z) for d, w, z in zip(depths, axes["width"][1], axes["size"][1])]
            if any(b.depth < a.depth or b == a for a, b in zip(shapes, shapes[1:])):
                problems.append("every stage must grow the depth, the width or the image size, got "
                                + ", ".join(str(Shape(d, w, z)) for d, w, z in
                                            zip(depths, axes["width"][0], axes["size"][0]))
                                if shapes[0].width or shapes[0].size else f"depths must grow from stage to stage, got {depths}")
            elif any(b > 2 * a for a, b in zip(depths, depths[1:])):
                problems.append(f"a stage can at most double the depth (each new block copies one "
                                f"trained block), got {depths}")
        if len(starts) != len(depths) or (starts and starts[0] != 0) or any(b <= a for a, b in zip(starts, starts[1:])):
            problems.append(f"starts must be increasing, begin at 0 and give one start per stage, got {starts}")
        if self.unit not in STAGE_UNITS:
            problems.append(f"unit must be one of {', '.join(map(repr, STAGE_UNITS))}, got {self.unit!r}")
        if problems:
            raise ConfigError("invalid expansion schedule: " + "; ".join(problems))
        object.__setattr__(self, "depths", depths)
        object.__setattr__(self, "starts", starts)
        object.__setattr__(self, "widths", axes["width"][1])
        object.__setattr__(self, "sizes", axes["size"][1])

    @classmethod
    def even(cls, depths, epochs: int, unit: str = "epoch") -> "ExpansionSchedule":
        """The reference split: each stage lasts `epochs // len(depths)` epochs (or steps).
        `depths`: depths, or shapes (`Shape`, `'6x384'`) for stages that also grow the width."""
        shapes = tuple(Shape.of(d) for d in depths)
        length = epochs // len(shapes)
        if length < 1:
            raise ConfigError(f"{epochs} {unit}s cannot hold {len(shapes)} stages")
        return cls.of(shapes, epochs, tuple(i * length for i in range(len(shapes))), unit)

    @classmethod
    def of(cls, depths, length: int, starts=None, unit: str = "epoch") -> "ExpansionSchedule":
        """Depths `(6, 12)` (or shapes: `'6x32,12x64'`) evenly split over `length` epochs (or
        steps, with `unit='step'`), or starting at `starts` `(0, 40)`; text is parsed
        (`parse_shapes`, `parse_starts`)."""
        shapes = parse_shapes(depths) if isinstance(depths, str) else tuple(Shape.of(d) for d in depths)
        if isinstance(starts, str):
            starts = parse_starts(starts)
        if starts is None:
            return cls.even(shapes, length, unit)
        return cls(tuple(s.depth for s in shapes), tuple(starts), unit, tuple(s.width for s in shapes),
                   tuple(s.size for s in shapes))

    @classmethod
    def full(cls, depth: int) -> "ExpansionSchedule":
        """No expansion: one stage at full depth."""
        return cls((int(depth),), (0,))

    @property
    def final_depth(self) -> int:
        return self.depths[-1]

    @property
    def stages(self) -> tuple:
        """`(Stage(depth, start, width, size), ...)` in order."""
        return tuple(Stage(d, s, w, z) for d, s, w, z in zip(self.depths, self.starts, self.widths, self.sizes))

    def stage(self, clock: int) -> "Stage":
        """The stage under way at `clock` (an epoch, or a step with `unit='step'`)."""
        return self.stages[self.stage_at(clock)]

    def depth_at(self, epoch: int) -> int:
        return self.depths[self.stage_at(epoch)]

    def stage_at(self, epoch: int) -> int:
        return max(i for i, start in enumerate(self.starts) if start <= epoch)

    def block_work(self, epochs: int, config=None) -> float:
        """The blocks' share of the work (FLOPs) of training at the last stage's shape
        throughout (e.g. 0.75 for 6 -> 12). Stages that change the width or the image size
        need `config` (the final `ViTConfig`: tokens and MLP ratio); for depth alone the
        share is the depths'."""
        if config is None:
            if any(w != self.widths[-1] for w in self.widths) or any(z != self.sizes[-1] for z in self.sizes):
                raise ConfigError("the work of a schedule that grows the width or the image size depends on the "
                                  "model: give its config")
            return sum(self.depth_at(e) for e in range(epochs)) / (self.final_depth * epochs)

        def work(stage):
            return stage.depth * block_flops(config, stage.width or config.width, stage.size or config.image_size)
        return sum(work(self.stage(e)) for e in range(epochs)) / (work(self.stages[-1]) * epochs)

    def speedup_bound(self, epochs: int, config=None) -> float:
        """Upper bound of the speed-up from the blocks' FLOPs (patch embedding and head are
        small): `1 / block_work`."""
        return 1.0 / self.block_work(epochs, config)

    def __str__(self):
        return " -> ".join(f"{Shape(d, w, z)} (from {s})"
                           for d, s, w, z in zip(self.depths, self.starts, self.widths, self.sizes))


def shaped(config, depth: int, width: int | None = None, size: int | None = None):
    """`config` (a `ViTConfig`) at `depth`, `width` and image `size` (None: its own), with
    the heads at its head dimension and the MLP at its ratio, as a width growth keeps them."""
    width = config.width if width is None else width
    if width % config.head_dim:
        raise ConfigError(f"width {width} is not a multiple of the head dimension {config.head_dim}")
    size = config.image_size if size is None else size
    if size % config.patch_size:
        raise ConfigError(f"image size {size} is not a multiple of the patch size {config.patch_size}")
    return dataclasses.replace(config, depth=depth, width=width, num_heads=width // config.head_dim,
                               mlp_width=config.mlp_width * width // config.width, image_size=size)


def block_flops(config, width: int, size: int | None = None) -> float:
    """Multiply-adds of one block's forward pass at `width` (heads at `config`'s head
    dimension, the MLP at its ratio) on images of `size` (None: `config`'s): four
    projections, the MLP, and attention's two token-by-token products."""
    tokens = ((size or config.image_size) // config.patch_size) ** 2 + 1
    mlp = config.mlp_width * width / config.width
    return tokens * (4 * width * width + 2 * width * mlp) + 2 * tokens * tokens * width


def parse_shapes(text) -> tuple:
    """A schedule's stages from text: `'6,12'` -> (Shape(6), Shape(12)), `'6x32,12x64'`
    -> (Shape(6, 32), Shape(12, 64)), `'6@12,12@16'` -> (Shape(6, None, 12), Shape(12, None,
    16)); `ConfigError` otherwise."""
    try:
        return tuple(Shape.parse(part) for part in str(text).split(","))
    except ConfigError:
        raise ConfigError(f"schedule {text!r}: expected stages separated by commas, each DEPTH[xWIDTH][@SIZE], "
                          f"e.g. 6,12 or 6x384,12x768 or 6x384@160,12x768@224") from None


def parse_starts(text) -> tuple:
    """The stages' starts from text: `'0,150'` -> (0, 150); `ConfigError` otherwise."""
    return parse_numbers(text, "stage starts", "one start per stage, e.g. 0,150")


def parse_numbers(text, what: str, expected: str) -> tuple:
    """`'6,12'` -> (6, 12); anything else raises `ConfigError` naming `what` and `expected`."""
    parts = str(text).split(",")
    if not all(part.strip().isdigit() for part in parts):
        raise ConfigError(f"{what} {text!r}: expected {expected}")
    return tuple(int(part) for part in parts)
