"""The `network-expansion` command.

A user's mistake (a flag's value, a missing file, weights that do not fit) prints one
`network-expansion: error: ...` message naming what was given and what is accepted, and
exits 2; a traceback means a bug in the package. Defaults are read from the dataclasses
and module constants they belong to, never typed here a second time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys

from .atomic import check_writable_folder
from .errors import ConfigError, DownloadError, NetworkExpansionError
from .ranges import POSITIVE, Range

PROG = "network-expansion"


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(_with_config(parser, sys.argv[1:] if argv is None else list(argv)))
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    _refuse_empty_paths(parser, args)
    global _output
    _output = sys.stdout  # the command's own output; anything else printed goes to stderr
    handler = _StoryHandler(sys.stderr if getattr(args, "json", False) else _output)
    package_logger = logging.getLogger("network_expansion")
    package_logger.addHandler(handler)
    levels = {package_logger: package_logger.level}
    package_logger.setLevel(logging.INFO)
    if not args.verbose:  # MindSpore's own warnings ('... has been compiled again') stay out
        levels.update(_quiet_mindspore())
    if getattr(args, "computes", False):
        _tune_process()
    strays = [name for name in AKG_LOGS if not os.path.exists(name)]
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return args.run(args) or 0
    except DownloadError as error:
        return _fail(error.advise("--weights /path/to/{name}"))
    except NetworkExpansionError as error:
        return _fail(error)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    finally:
        package_logger.removeHandler(handler)
        for logger, level in levels.items():
            logger.setLevel(level)
        for name in strays:  # the logs this command's kernel fusion made in the working folder
            with contextlib.suppress(OSError):
                os.remove(name)


def run() -> None:
    """The console script (and `python -m network_expansion`): `main`, with this process's
    standard output kept for the command's own output. Whatever else writes to file
    descriptor 1 (MindSpore's kernel compiler runs in processes of its own that print
    there, native libraries) goes to stderr, so that `predict --json` prints JSON only."""
    sys.stdout.flush()
    kept = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = open(kept, "w", encoding=sys.stdout.encoding or "utf-8", errors="backslashreplace",
                      buffering=1, closefd=True)
    sys.exit(main())


_output = sys.stdout


# the logs MindSpore 2.10's kernel compiler (AKG) writes into the working folder when it fuses
AKG_LOGS = ("dsa_transfrom.log", "scalar_transform.log")
# "0": leave MindSpore's kernel threads to the scheduler (for two processes computing at once on the same cores)
BIND_THREADS = "NETWORK_EXPANSION_BIND_THREADS"


def _tune_process() -> None:
    """A command that computes is the whole process: tune it for MindSpore's CPU kernels
    (`tuning.tune_cpu`), first, before MindSpore is imported. Kernel fusion follows once
    the network is known (`_fuse_if_it_pays`)."""
    from .tuning import tune_cpu

    tune_cpu(kernel_fusion=False, bind_threads=os.environ.get(BIND_THREADS, "1") != "0")


def _fuse_if_it_pays(config) -> None:
    """Kernel fusion for this process where the network is large enough to gain
    (`cpu_forms.fusion_pays`: from ViT-B's tokens on)."""
    from .cpu_forms import fusion_pays
    from .tuning import tune_cpu

    if fusion_pays(config):
        tune_cpu(kernel_fusion=True, bind_threads=os.environ.get(BIND_THREADS, "1") != "0")


def _say(*parts) -> None:
    """Print the command's own output (results, the story of a run), each line's control
    characters escaped (`errors.printable`): names from files print no terminal escape."""
    print(_printable_lines(" ".join(str(part) for part in parts)), file=_output, flush=True)


def _printable_lines(text: str) -> str:
    from .errors import printable

    return "\n".join(printable(line) for line in text.split("\n"))


def _fail(error) -> int:
    print(_printable_lines(f"{PROG}: error: {error}"), file=sys.stderr)
    return 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (not the usage block), exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _with_config(parser, argv: list) -> list:
    """`argv` with the flags of its `--config FILE` (YAML: every flag a key, `batch_size` or
    `batch-size`) put right after the command, so that a flag typed on the command line wins."""
    command = next((i for i, token in enumerate(argv) if token in parser.commands), None)
    if command is None:
        return argv
    rest = argv[command + 1:]
    paths = [rest[i + 1] for i, token in enumerate(rest[:-1]) if token == "--config"] \
        + [token.split("=", 1)[1] for token in rest if token.startswith("--config=")]
    if not paths:
        return argv
    subparser = parser.commands[argv[command]]
    try:
        tokens = config_tokens(subparser, paths[-1])
    except ConfigError as error:
        subparser.error(str(error))
    return argv[:command + 1] + tokens + rest


def config_tokens(subparser, path) -> list:
    """The command-line tokens a YAML config file stands for (`ConfigError` naming the key
    and the accepted ones for anything else)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f.read(1 << 20))
    except OSError as error:
        raise ConfigError(f"--config {path}: {error.strerror or error}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"--config {path} is not YAML: {str(error).splitlines()[0]}") from error
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a mapping of flags to values (epochs: 300), got "
                          f"{type(values).__name__}")
    actions = {option: action for action in subparser._actions for option in action.option_strings}
    tokens = []
    for key, value in values.items():
        option = "--" + str(key).replace("_", "-")
        action = actions.get(option)
        if action is None or option in ("--config", "--help"):
            known = sorted(o[2:] for o in actions if o.startswith("--") and o not in ("--config", "--help"))
            raise ConfigError(f"--config {path}: unknown key {key!r}; the keys are the flags: {', '.join(known)}")
        if isinstance(action, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise ConfigError(f"--config {path}: {key} is true or false, got {value!r}")
            tokens += [option] if value else []
        elif isinstance(value, (list, tuple)) and action.nargs not in (None, "?"):
            tokens += [option, *map(str, value)]
        elif isinstance(value, (dict, list, tuple)) or value is None:
            raise ConfigError(f"--config {path}: {key} takes one value, got {value!r}")
        else:
            tokens += [option, str(value).lower() if isinstance(value, bool) else str(value)]
    return tokens


class _StoryHandler(logging.Handler):
    """The package's log as the console's story of a run: information on `stream` (the
    command's output, or stderr when that is JSON), warnings on stderr."""

    def __init__(self, stream):
        super().__init__()
        self.stream = stream

    def emit(self, record):
        if record.levelno >= logging.WARNING:
            print(_printable_lines(f"{PROG}: warning: {record.getMessage()}"), file=sys.stderr, flush=True)
        else:
            print(_printable_lines(record.getMessage()), file=self.stream, flush=True)


def _quiet_mindspore() -> dict:
    """MindSpore's own warnings off for this command: before MindSpore is imported, through
    its log level variable (its C++ and Python logs both read it; a level the user set is
    kept); after, by its Python logger's level. Returns {logger: level to restore}."""
    if "mindspore" not in sys.modules:
        os.environ.setdefault("GLOG_v", "3")  # errors only; the command is the whole process
        return {}
    import mindspore as ms

    ms.get_level()  # sets MindSpore's logger up if nothing has logged yet
    logger = logging.getLogger(f"ME.mindspore.log.{os.getpid()}")
    level = logger.level
    logger.setLevel(logging.ERROR)
    return {logger: level}


# -- values a flag accepts -----------------------------------------------------------

# Arguments that name files, folders or URLs: none may be empty (an empty path would mean
# "here", or the released weights, without a word).
_PATHS = {"weights": "--weights", "data": "--data", "val": "--val", "output": "--output", "csv": "--csv",
          "label_map": "--label-map", "class_names": "--class-names", "resume": "--resume", "source": "SRC",
          "destination": "DST", "root": "DIR", "images": "IMG", "cards": "CARD"}


def _refuse_empty_paths(parser, args) -> None:
    for name, flag in _PATHS.items():
        value = getattr(args, name, None)
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and not v.strip() for v in values):
            parser.error(f"argument {flag}: an empty path; give the file or folder itself"
                         + (" (leave --weights out for the released weights)" if name == "weights" else ""))


def _accepting(accepted):
    """A flag's type: the value `accepted` (a `ranges.Range`) takes, or argparse's one-line error."""
    def parse(text):
        try:
            return accepted.parse(text)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return parse


def _schedule(text):
    from .schedule import ExpansionSchedule, parse_shapes

    try:
        shapes = parse_shapes(text)
        ExpansionSchedule.even(shapes, len(shapes))  # growing, at most doubling
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


NO_SCHEDULE = "none"


def _schedule_or_none(text):
    return NO_SCHEDULE if text.lower() == NO_SCHEDULE else _schedule(text)


def _starts(text):
    from .schedule import parse_starts

    try:
        parse_starts(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _batch(text):
    if text == "dynamic":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1 or 'dynamic', got {text!r}")
    return int(text)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# -- the parser ----------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog=PROG, description="NetworkExpansion ViT-B/16 (Ding et al., CVPR 2023) for MindSpore.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--verbose", action="store_true", help="also show MindSpore's own warnings")
    commands = parser.add_subparsers(title="commands")
    parser.commands = commands.choices  # name -> its parser (`--config` reads their flags)

    info = commands.add_parser("info", help="print the hub card, the architecture and the parameter count")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(run=_info)

    check = commands.add_parser("check-card", help="check hub cards against the hub's validator rules")
    check.add_argument("cards", nargs="*", metavar="CARD",
                       help="path of a card (.md); default: the card shipped with this package")
    check.set_defaults(run=_check_card)

    from .formats import FORMATS, NAMING_SCHEMES

    convert = commands.add_parser(
        "convert", help="convert weights between .ckpt/.safetensors/.npz and MindSpore/timm names",
        description="Convert a checkpoint. The source's names (MindSpore model zoo or timm/DeiT) are "
                    "recognised; the destination gets MindSpore names for .ckpt and timm names for "
                    ".safetensors and .npz unless --names says otherwise.")
    convert.add_argument("source", metavar="SRC", help=f"a {', '.join(FORMATS)} file, or a URL")
    convert.add_argument("destination", metavar="DST", help=f"the file to write ({', '.join(FORMATS)})")
    convert.add_argument("--names", choices=NAMING_SCHEMES, help="naming scheme of DST (default: by its suffix)")
    convert.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    convert.set_defaults(run=_convert)

    predict = commands.add_parser("predict", help="classify images (ImageNet labels with the released weights)")
    predict.add_argument("images", nargs="+", metavar="IMG", help="image files or folders of images")
    _add_inference_options(predict)
    predict.add_argument("--topk", type=_accepting(POSITIVE), default=5, help="classes per image (default 5)")
    predict.add_argument("--json", action="store_true", help="one JSON object per line")
    predict.set_defaults(run=_predict, computes=True)

    evaluate = commands.add_parser("evaluate", help="top-1/top-5 accuracy on an ImageFolder tree")
    evaluate.add_argument("root", metavar="DIR", help="one sub-folder of images per class, named by class "
                                                      "(ImageNet: WordNet ids such as n01440764)")
    _add_inference_options(evaluate)
    evaluate.add_argument("--workers", type=_accepting(POSITIVE),
                          help="image decoding threads (default: one per core, at most 16)")
    evaluate.add_argument("--label-map", metavar="FILE", help="folder name -> output index, for folders named "
                                                              "otherwise (JSON object or lines 'folder<TAB>index')")
    evaluate.add_argument("--csv", metavar="FILE", help="write per-class accuracy to this CSV file")
    evaluate.set_defaults(run=_evaluate, computes=True)

    from .config import GATES, GROWTHS, MODES, SPLITS, WIDTH_LR, TrainConfig, ViTConfig
    from .config import MODEL_RANGES as MODEL, TRAIN_RANGES as RECIPE
    from .schedule import STAGE_UNITS

    vit = ViTConfig(image_size=224, num_classes=1000)
    train = commands.add_parser("train", help="train a ViT from scratch, with network expansion")
    train.add_argument("--data", required=True, metavar="DIR", help="ImageFolder tree of training images")
    train.add_argument("--val", metavar="DIR", help="ImageFolder tree of validation images")
    train.add_argument("--schedule", type=_schedule_or_none,
                       help=f"the stages: depths, DEPTHxWIDTH to grow the width too, DEPTH[xWIDTH]@SIZE to grow "
                            f"the image size, e.g. 6x384@160,12x768@224 (default {DEFAULT_SCHEDULE}); 'none' trains "
                            f"at --depth from the start")
    train.add_argument("--stage-starts", type=_starts, help="epoch each stage starts at, e.g. 0,150 "
                                                            "(default: equal stages)")
    train.add_argument("--stage-unit", choices=STAGE_UNITS,
                       help=f"what --stage-starts counts (default {TrainConfig.stage_unit})")
    train.add_argument("--mode", choices=MODES, help=f"where new blocks go (default {TrainConfig.expansion_mode})")
    train.add_argument("--growth", choices=GROWTHS,
                       help=f"'exact': new blocks enter behind gates at 0, so the function does not change at the "
                            f"growth; 'reference': as the authors' code (default {TrainConfig.growth})")
    train.add_argument("--growth-gate", choices=GATES, help=f"with --growth exact: the gates ramp linearly to 1, "
                                                           f"or are learned from 0 (default {TrainConfig.growth_gate})")
    train.add_argument("--growth-ramp", type=_accepting(RECIPE["growth_ramp"]), metavar="STEPS",
                       help="steps of the gates' ramp (default: one epoch)")
    train.add_argument("--width-split", choices=SPLITS,
                       help=f"how a width growth splits the copied columns (default {TrainConfig.width_split})")
    train.add_argument("--width-lr", choices=WIDTH_LR, help=f"'scaled': a matrix whose input a width growth widened "
                                                          f"learns at lr * old / new width (default {TrainConfig.width_lr})")

    def model(name):
        return _accepting(MODEL[name])

    train.add_argument("--depth", type=model("depth"), help=f"depth without a schedule (default {vit.depth}; "
                                                          f"--depth alone trains at that depth throughout)")
    train.add_argument("--width", type=model("width"), help=f"token width (default {vit.width})")
    train.add_argument("--mlp-width", type=model("mlp_width"), help=f"MLP hidden width (default {vit.mlp_width})")
    train.add_argument("--patch-size", type=model("patch_size"), help=f"patch size (default {vit.patch_size})")
    train.add_argument("--num-classes", type=_accepting(POSITIVE), help="default: the number of class folders")
    _add_training_options(train, TrainConfig())
    train.add_argument("--config", metavar="YAML", help="the flags as a YAML file (epochs: 300, batch-size: 128, "
                                                        "...); flags typed here win; the run writes the config it "
                                                        "resolved to config.yaml in --output")
    train.set_defaults(run=_train, computes=True)

    from .config import FINETUNE_DEFAULTS

    finetune = commands.add_parser("finetune", help="fine-tune pretrained weights on an ImageFolder tree")
    finetune.add_argument("--data", required=True, metavar="DIR", help="ImageFolder tree of training images")
    finetune.add_argument("--val", metavar="DIR", help="ImageFolder tree of validation images")
    finetune.add_argument("--weights", default=None, help="checkpoint path or URL (default: the released one)")
    finetune.add_argument("--freeze-backbone", action="store_true", help="train the new head only")
    finetune.add_argument("--layer-decay", type=_accepting(RECIPE["layer_decay"]),
                          help="layer-wise learning-rate decay, e.g. 0.75 (default: none)")
    _add_training_options(finetune, TrainConfig(**FINETUNE_DEFAULTS))
    finetune.set_defaults(run=_finetune, computes=True)

    from .demo import DemoSettings

    demo_settings = DemoSettings()
    about = ("expansion against full depth on scikit-learn's digits: table and plot (about 3 minutes on two "
             "idle CPU cores, longer on a busy machine; needs the demo extra: pip install -e '.[demo]')")
    demo = commands.add_parser("demo", help=about, description=about)
    demo.add_argument("--epochs", type=_accepting(RECIPE["epochs"]),
                      help=f"epochs of each run (default {demo_settings.recipe.epochs})")
    demo.add_argument("--schedule", type=_schedule, help=f"expansion schedule (default {demo_settings.schedule_text})")
    demo.add_argument("--width", type=_accepting(MODEL["width"]),
                      help=f"token width of the small ViT (default {demo_settings.model.width})")
    demo.add_argument("--output", default="runs/expansion-demo", help="folder for logs, plot and summary "
                                                                      "(default runs/expansion-demo)")
    demo.set_defaults(run=_demo, computes=True)

    from .export import FORMATS as EXPORT_FORMATS

    plot = commands.add_parser("plot", help="plot runs' accuracy and loss against time from their log.jsonl")
    plot.add_argument("runs", nargs="+", metavar="RUN_DIR", help="training runs' output folders (overlaid)")
    plot.add_argument("--output", metavar="PNG", help="default: RUN_DIR/plot.png for one run, "
                                                      "runs-plot.png here for several")
    plot.set_defaults(run=_plot)

    export = commands.add_parser("export", help="export for serving: MindIR (with a JSON beside it) or ONNX, "
                                                "labels and preprocessing described")
    export.add_argument("output", metavar="OUT", help="file to write (.mindir or .onnx is added if missing)")
    export.add_argument("--format", choices=tuple(EXPORT_FORMATS), default="mindir",
                        help="default mindir; onnx needs the onnx package (opset 18)")
    export.add_argument("--weights", default=None, help="checkpoint path or URL (default: the released one)")
    export.add_argument("--batch", type=_batch, default=1, help="batch size of the graph, or 'dynamic' (default 1)")
    export.add_argument("--with-preprocess", action="store_true",
                        help="take uint8 NHWC pictures and resize, crop, normalise inside the graph")
    export.add_argument("--input-size", type=_accepting(POSITIVE), nargs=2, metavar=("H", "W"),
                        help="picture size with --with-preprocess (default: the resize size, square)")
    export.add_argument("--classes-only", action="store_true",
                        help="only the outputs that are classes (1000 of the released head's 1001)")
    export.add_argument("--overwrite", action="store_true", help="replace OUT (and its JSON) if it exists")
    export.set_defaults(run=_export, computes=True)
    return parser


def _add_training_options(parser, defaults) -> None:
    """The recipe's flags. Their defaults are `defaults` (a TrainConfig); a flag left out is
    None here, so that a resumed run can tell what the user asked to change."""
    from .config import DEFAULT_BATCH_SIZE, PRECISIONS
    from .config import MODEL_RANGES as MODEL, TRAIN_RANGES as RECIPE

    def recipe(name):
        return _accepting(RECIPE[name])

    d = defaults
    parser.add_argument("--epochs", type=recipe("epochs"), help=f"default {d.epochs}")
    parser.add_argument("--batch-size", type=_accepting(POSITIVE),
                        help=f"images per step (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--lr", type=recipe("lr"), help=f"peak learning rate (default {d.lr:g})")
    parser.add_argument("--warmup-epochs", type=recipe("warmup_epochs"), help=f"default {d.warmup_epochs}")
    parser.add_argument("--weight-decay", type=recipe("weight_decay"), help=f"default {d.weight_decay:g}")
    parser.add_argument("--label-smoothing", type=recipe("label_smoothing"), help=f"default {d.label_smoothing:g}")
    parser.add_argument("--mixup", type=recipe("mixup"), help=f"mixup alpha, 0 off (default {d.mixup:g}; DeiT: 0.8)")
    parser.add_argument("--cutmix", type=recipe("cutmix"),
                        help=f"cutmix alpha, 0 off (default {d.cutmix:g}; DeiT: 1.0)")
    parser.add_argument("--clip-grad", type=recipe("clip_grad"), help="clip the global gradient norm "
                                                                     "(default: no clipping)")
    parser.add_argument("--drop-path", type=_accepting(MODEL["drop_path_rate"]),
                        help="maximum stochastic-depth rate (default 0)")
    parser.add_argument("--ema-decay", type=recipe("ema_decay"), help=f"default {d.ema_decay:g}")
    parser.add_argument("--image-size", type=_accepting(MODEL["image_size"]),
                        help="input size (default: the card's, or the weights')")
    parser.add_argument("--num-heads", type=_accepting(MODEL["num_heads"]),
                        help="attention heads (default 12, or the weights')")
    parser.add_argument("--workers", type=_accepting(POSITIVE),
                        help="decoding threads of the input pipeline (default: one per core, at most 16)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help=f"what the network computes in (O2: LayerNorms, softmax, loss and weights stay "
                             f"float32); float16/bfloat16 for GPUs and NPUs (default {d.precision})")
    parser.add_argument("--loss-scale", type=recipe("loss_scale"), metavar="SCALE",
                        help="a fixed loss scale (default: dynamic under float16, none otherwise)")
    parser.add_argument("--seed", type=recipe("seed"), help=f"default {d.seed}")
    parser.add_argument("--log-every", type=recipe("log_every"), metavar="STEPS",
                        help=f"steps between reading loss and accuracy back from the device, and the NaN check "
                             f"(default {d.log_every})")
    parser.add_argument("--output", default="runs/network-expansion",
                        help="folder for checkpoints and log.jsonl (default runs/network-expansion)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in --output (default: refuse; --resume continues it)")
    parser.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint.ckpt; --epochs, --log-every "
                                                         "and --output may change, the rest must stay")
    parser.add_argument("--distributed", action="store_true",
                        help="data parallel across the processes msrun started (one per device)")
    parser.set_defaults(recipe=defaults)


# Flags of the recipe -> TrainConfig fields.
_RECIPE_FLAGS = {"epochs": "epochs", "lr": "lr", "warmup_epochs": "warmup_epochs", "weight_decay": "weight_decay",
                 "label_smoothing": "label_smoothing", "mixup": "mixup", "cutmix": "cutmix",
                 "clip_grad": "clip_grad", "ema_decay": "ema_decay", "seed": "seed", "log_every": "log_every",
                 "schedule": "schedule", "stage_starts": "stage_starts", "stage_unit": "stage_unit",
                 "mode": "expansion_mode", "growth": "growth", "growth_gate": "growth_gate",
                 "growth_ramp": "growth_ramp", "width_split": "width_split", "width_lr": "width_lr",
                 "freeze_backbone": "freeze_backbone", "layer_decay": "layer_decay", "precision": "precision",
                 "loss_scale": "loss_scale"}
# Flags of the architecture -> ViTConfig fields.
_MODEL_FLAGS = {"depth": "depth", "width": "width", "mlp_width": "mlp_width", "patch_size": "patch_size",
                "num_heads": "num_heads", "image_size": "image_size", "drop_path": "drop_path_rate",
                "num_classes": "num_classes"}


def _given(args, flags: dict) -> dict:
    """{field: value} of the flags the user typed (store_true flags: only when set)."""
    given = {field: getattr(args, flag) for flag, field in flags.items()
             if getattr(args, flag, None) not in (None, False)}
    if given.get("schedule") == NO_SCHEDULE:
        given["schedule"] = None
    return given


def _train_config(args, **fixed):
    return dataclasses.replace(args.recipe, **{**_given(args, _RECIPE_FLAGS), **fixed})


def _run_training(args, model_factory, config) -> int:
    from .config import DEFAULT_BATCH_SIZE, TrainConfig, ViTConfig
    from .train import folder_trainer
    from .training_checkpoint import read_training_state

    state = read_training_state(args.resume) if args.resume else None
    batch_size = args.batch_size or (state or {}).get("batch_size") or DEFAULT_BATCH_SIZE
    if state:
        _refuse_changed(args, state, batch_size)
        _fuse_if_it_pays(TrainConfig(**state["train_config"]).shapes(ViTConfig(**state["model_config"]))[1])
    import mindspore as ms

    # The command is the program: seeding MindSpore's own random ops (dropout, drop-path)
    # here makes the same command with the same --seed train the same weights.
    ms.set_seed(state["train_config"]["seed"] if state else config.seed)
    job = None
    if args.distributed:
        from .distributed import init_data_parallel, resume_advice
        from .errors import JobLost

        try:
            job = init_data_parallel()
        except JobLost as error:  # in msrun's scheduler process: a worker stopped answering
            raise JobLost(f"{error} {resume_advice(os.path.join(args.output, 'checkpoint.ckpt'))}") from error
    trainer = folder_trainer(None if state else model_factory(), args.data, args.val, config, batch_size=batch_size,
                             workers=args.workers, output_dir=args.output, distributed=job,
                             resume=args.resume, changes=_given(args, _RECIPE_FLAGS),
                             overwrite=getattr(args, "overwrite", False))
    if trainer.is_main:
        _write_resolved_config(args, trainer)
    history = trainer.fit()
    if history.interrupted:
        from .stopping import StopOnSignal

        return StopOnSignal.EXIT_CODES.get(history.stopped_by, 130)
    final = history.final
    if not trainer.is_main:  # one summary for a data-parallel job: its numbers are the job's
        return 0
    loss = final.get("loss")
    _say(f"done: depth {trainer.model.depth}, loss {'-' if loss is None else f'{loss:.4f}'}, "
          f"train top-1 {final.get('train_top1', 0):.2%}"
          + (f", val top-1 {final['val_top1']:.2%} (EMA {final['ema_val_top1']:.2%})" if "val_top1" in final else "")
          + f"; weights in {args.output}/model.ckpt")
    _plot_run(args.output)
    return 0


def _refuse_changed(args, state: dict, batch_size: int) -> None:
    """A resumed run is the same run: its architecture, batch size and recipe stay; only
    --epochs, --log-every and --output may change. Said in flags, before anything is read."""
    from .config import TrainConfig
    from .training_checkpoint import RESUMABLE

    saved = dict(state["model_config"])
    differing = [f"--{flag.replace('_', '-')} {value} (saved {saved[field]})"
                 for flag, field in _MODEL_FLAGS.items()
                 if field in saved and (value := getattr(args, flag, None)) is not None
                 and value != saved[field] and field != "depth"]
    if state.get("batch_size") not in (None, batch_size):
        differing.append(f"--batch-size {batch_size} (saved {state['batch_size']})")
    recipe = TrainConfig(**state["train_config"])
    given = {field: value for field, value in _given(args, _RECIPE_FLAGS).items() if field not in RESUMABLE}
    proposed = dataclasses.replace(recipe, **given)  # normalised as the saved recipe was
    flag_of = {field: flag for flag, field in _RECIPE_FLAGS.items()}
    differing += [f"--{flag_of[field].replace('_', '-')} {_flag_value(getattr(proposed, field))} "
                  f"(saved {_flag_value(getattr(recipe, field))})"
                  for field in given if getattr(proposed, field) != getattr(recipe, field)]
    if differing:
        allowed = ", ".join(f"--{flag_of[field].replace('_', '-')}" for field in RESUMABLE if field in flag_of)
        raise ConfigError("a resumed run is the same run; these differ from the checkpoint's: " + ", ".join(differing)
                          + f". Only {allowed} and --output can change: drop the others, or start a new run")


def _flag_value(value) -> str:
    """A setting as it is typed on the command line (`6,12` for a schedule, `none` for none)."""
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _model_overrides(args) -> dict:
    given = _given(args, _MODEL_FLAGS)
    given.pop("depth", None)
    given.pop("num_classes", None)
    return given


DEFAULT_SCHEDULE = "6,12"  # the released model's


def _train(args) -> int:
    from .datasets import ImageFolder
    from .hub import create_network
    from .config import ViTConfig

    check_writable_folder(args.output, what="--output")
    if args.resume:
        return _run_training(args, None, None)
    # --schedule, else the released 6,12 (with --depth alone: that depth throughout)
    schedule = args.schedule or (None if args.depth else DEFAULT_SCHEDULE)
    config = _train_config(args, schedule=None if schedule == NO_SCHEDULE else schedule)
    _refuse_flags_that_would_be_ignored(args, config)
    num_classes = args.num_classes or _class_count(ImageFolder.scan(args.data))
    overrides = _model_overrides(args)
    # the flags describe the final network; the schedule's last stage gives its width and size where they do not
    ends = {"width": config.final_width(overrides.get("width", ViTConfig.width)),
            "image_size": config.final_size(overrides.get("image_size") or ViTConfig().image_size)}
    for flag, field in (("--width", "width"), ("--image-size", "image_size")):
        if overrides.get(field, ends[field]) != ends[field]:
            raise ConfigError(f"{flag} {overrides[field]} and --schedule {schedule} end at different "
                              f"{field.replace('_', ' ')}s: give one of them")
    first, final = config.shapes(ViTConfig(**{**overrides, **ends, "depth": args.depth or ViTConfig.depth,
                                              "num_classes": num_classes}))
    _fuse_if_it_pays(final)
    return _run_training(args, lambda: create_network("NetworkExpansion", seed=config.seed, **dataclasses.asdict(first)),
                         config)


def _plot_run(folder) -> None:
    """The finished run's curves beside its log (without matplotlib: a line saying so)."""
    from .plots import plot_runs

    try:
        _say(f"curves: {plot_runs([folder], os.path.join(folder, 'plot.png'))}")
    except ConfigError as error:  # no matplotlib
        _say(f"no plot: {error}")


_NOT_FLAGS = {"run", "computes", "recipe", "config", "overwrite", "resume", "verbose", "distributed"}


def _write_resolved_config(args, trainer) -> None:
    """The run's flags as `--config` takes them, in `--output`/config.yaml: those given (in a
    config or typed) and the recipe's values the run resolved them to, with the batch size and
    class count; `train --config` of that file trains the same run again."""
    import yaml

    from .atomic import atomic_write

    values = {flag: value for flag, value in vars(args).items()
              if flag not in _NOT_FLAGS and value is not None and value is not False}
    unused = {"growth_gate", "growth_ramp"} if trainer.config.growth != "exact" else set()  # refused if given
    for flag, field in _RECIPE_FLAGS.items():
        value = getattr(trainer.config, field, None)
        if flag in vars(args) and flag not in values and flag not in unused and not isinstance(value, bool) \
                and isinstance(value, (int, float, str)):
            values[flag] = value
    values["batch_size"] = trainer.train_data.batch_size
    if "num_classes" in vars(args):
        values["num_classes"] = trainer.model.config.num_classes
    values = {flag: ",".join(map(str, value)) if isinstance(value, tuple) else value for flag, value in values.items()}
    text = "# this run's flags (network-expansion train --config config.yaml trains it again)\n" \
        + yaml.safe_dump({flag.replace("_", "-"): value for flag, value in sorted(values.items())}, sort_keys=False)
    with atomic_write(os.path.join(args.output, "config.yaml")) as temporary:
        temporary.write_text(text)


def _refuse_flags_that_would_be_ignored(args, config) -> None:
    """A flag the run would not use is a mistake to say, not to pass over."""
    if args.depth and config.schedule and config.final_depth(args.depth) != args.depth:
        raise ConfigError(f"--depth {args.depth} and --schedule {args.schedule} end at different depths "
                          f"({config.final_depth(args.depth)}): give one of them")
    if args.stage_starts and not config.schedule:
        raise ConfigError("--stage-starts without stages: give --schedule too, or leave --stage-starts out")
    if config.stage_starts and config.stage_unit == "epoch" and max(config.stage_starts) >= config.epochs:
        raise ConfigError(f"--stage-starts {','.join(map(str, config.stage_starts))}: a stage starts after the last "
                          f"of --epochs {config.epochs} (epochs count from 0); start it earlier or train longer")
    for flag, value in (("--growth-ramp", args.growth_ramp), ("--growth-gate", args.growth_gate)):
        if value is not None and config.growth != "exact":
            raise ConfigError(f"{flag} shapes an exact growth's gates: give --growth exact too, or leave {flag} out")


def _class_count(folder) -> int:
    """The classes a training tree gives the classifier: two or more."""
    from .errors import DataError

    if len(folder.classes) < 2:
        raise DataError(f"{folder.root} has one class folder ({folder.classes[0]!r}): a classifier learns to tell "
                        f"classes apart and needs two or more; put each class's images in a folder of its own")
    return len(folder.classes)


def _finetune(args) -> int:
    from .datasets import ImageFolder
    from .hub import create_network

    check_writable_folder(args.output, what="--output")
    if args.resume:
        return _run_training(args, None, None)
    config = _train_config(args)
    num_classes = _class_count(ImageFolder.scan(args.data))

    def model():
        try:
            network = create_network("NetworkExpansion", pretrained=args.weights or True, num_classes=num_classes,
                                     seed=config.seed, **_model_overrides(args))
        except DownloadError as error:
            raise error.advise("--weights /path/to/{name}") from None
        _fuse_if_it_pays(network.config)
        return network

    return _run_training(args, model, config)


def _demo(args) -> int:
    from .demo import DemoSettings, compare

    check_writable_folder(args.output, what="--output")  # before minutes of training, not after
    settings = DemoSettings().changed(epochs=args.epochs, schedule=args.schedule, width=args.width)
    _say(f"training the same ViT twice on scikit-learn's digits ({settings.recipe.epochs} epochs each): "
          f"full depth {settings.model.depth}, then expansion {settings.schedule_text}")
    result = compare(settings, args.output)
    _say(result["table"])
    _say(f"plot: {result['plot']}; logs in {args.output}/")
    return 0


def _plot(args) -> int:
    from .plots import plot_runs

    output = args.output or (os.path.join(args.runs[0], "plot.png") if len(args.runs) == 1 else "runs-plot.png")
    _say(f"wrote {plot_runs(args.runs, output)}")
    return 0


def _export(args) -> int:
    from .export import description_path, destination, export
    from .hub import create_network

    if args.input_size and not args.with_preprocess:
        raise ConfigError("--input-size is the size of the pictures the exported preprocessing takes: give "
                          "--with-preprocess too, or leave --input-size out")
    destination(args.output, args.format, args.overwrite)  # before the weights are read
    network = create_network("NetworkExpansion", pretrained=args.weights or True)
    _fuse_if_it_pays(network.config)
    path = export(network, args.output, file_format=args.format, batch=args.batch, overwrite=args.overwrite,
                  with_preprocess=args.with_preprocess, input_size=tuple(args.input_size) if args.input_size else None,
                  classes_only=args.classes_only)
    described = f", described in {description_path(path)}" if args.format == "mindir" else " (described in its metadata)"
    _say(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB){described}")
    return 0


def _add_inference_options(parser) -> None:
    from .config import PRECISIONS

    parser.add_argument("--weights", metavar="PATH", default=None,
                        help="checkpoint path or URL (default: the released checkpoint, cached)")
    parser.add_argument("--batch-size", type=_accepting(POSITIVE), default=8,
                        help="images per forward pass (default 8)")
    parser.add_argument("--precision", choices=PRECISIONS, default=PRECISIONS[0],
                        help=f"numeric precision where the device supports it (default {PRECISIONS[0]})")
    parser.add_argument("--threads", type=_accepting(Range(int, 1, _cores(), high_open=False)),
                        help=f"CPU cores to use, 1 to {_cores()} (default: all)")
    parser.add_argument("--class-names", metavar="FILE", help="one label per line, in output order (default: the "
                                                              "weights' own, or ImageNet's)")


def _classifier(args):
    from .evaluate import read_class_names
    from .hub import create_network
    from .predict import Classifier, use_cores

    names = read_class_names(args.class_names) if args.class_names else None
    if args.threads:
        use_cores(args.threads)  # the command is the whole process: binding it is its call to make
    network = create_network("NetworkExpansion", pretrained=args.weights or True)
    _fuse_if_it_pays(network.config)
    return Classifier(network, batch_size=args.batch_size, precision=args.precision, class_names=names)


def _predict(args) -> int:
    from pathlib import Path

    from .datasets import image_files
    from .errors import DataError, ImageError, printable

    inputs = []
    for item in args.images:  # every path checked before the weights are read
        path = Path(item)
        if path.is_dir():
            found = [str(p) for p in image_files(path)]
            if not found:
                raise DataError(f"{item}: no image files in this folder (looked for the suffixes of JPEG, PNG, WebP, "
                                f"BMP, GIF and TIFF files, in its sub-folders too)")
            inputs += found
        elif not path.exists():
            raise ImageError(f"{item}: no such file or folder")
        else:
            inputs.append(item)
    classifier = _classifier(args)
    failed = 0
    for result in classifier.predict_stream(inputs, topk=args.topk, progress=len(inputs) > classifier.batch_size):
        failed += not result.ok
        if args.json:
            _say(json.dumps(result.to_dict()))
        elif result.ok:
            _say(printable(result.source))
            for label, index, probability in zip(result.labels, result.indices, result.probabilities):
                _say(f"  {probability:7.2%}  {printable(label)} ({index})")
        else:
            print(_printable_lines(f"{PROG}: error: {result.error}"), file=sys.stderr)
    return 1 if failed else 0


def _evaluate(args) -> int:
    from .evaluate import evaluate

    if args.csv:
        _check_report_path(args.csv, args.root, [args.label_map, args.class_names])  # before an hour of work
    result = evaluate(_classifier(args), args.root, workers=args.workers, label_map=args.label_map)
    _say(result)
    if args.csv:
        _say(f"per-class accuracy written to {result.write_csv(args.csv)}")
    return 0


def _check_report_path(path, tree, inputs) -> None:
    """`evaluate --csv`'s file: not one of the command's inputs, not inside the tree it
    evaluates, and in a folder it can write to; checked before the evaluation."""
    from pathlib import Path

    from .atomic import check_writable_folder
    from .errors import OutputError

    target = Path(path).resolve()
    for given in [p for p in inputs if p]:
        if Path(given).resolve() == target:
            raise OutputError(f"--csv {path} is an input of this command ({given}): give another file")
    if Path(tree).resolve() in target.parents:
        raise OutputError(f"--csv {path} lies inside the tree being evaluated ({tree}): give a file outside it")
    if target.is_dir():
        raise OutputError(f"--csv {path} is a folder: give a file name")
    check_writable_folder(target.parent, what="--csv's folder")


def _info(args) -> int:
    from .card import model_card
    from .download import cache_path
    from .model import VisionTransformer

    card = model_card()
    network = VisionTransformer()
    config = dataclasses.asdict(network.config)
    count = network.num_parameters()
    if args.json:
        card_fields = {k: v for k, v in dataclasses.asdict(card).items() if k != "body"}
        _say(json.dumps({"card": card_fields, "uid": card.uid, "architecture": config,
                          "parameters": count}, indent=2))
        return 0
    _say(f"{card.model_name} {card.model_version}: {card.summary}")
    _say(f"  hub uid       {card.uid}  (short alias {card.short_alias})")
    _say(f"  card          {card.path}")
    _say(f"  author        {card.author}, updated {card.update_time}, license {card.license}")
    _say(f"  trained on    {card.train_dataset} ({card.extra.get('train-dataset-version', '')}) "
          f"with MindSpore {card.mindspore_version} on {card.train_backend}")
    _say(f"  accuracy      {card.accuracy} top-1 ({card.extra.get('accuracy-backbone', '')})")
    _say(f"  input         {list(card.input_shape)} (height, width, channels)")
    _say(f"  checkpoint    {card.checkpoint.link}")
    _say(f"  cached at     {cache_path(card.checkpoint.link)}")
    _say(f"  sha256        {card.checkpoint.sha256 or 'not published'}")
    _say("architecture")
    for name, value in config.items():
        _say(f"  {name:<18}{value}")
    _say(f"parameters      {count:,}")
    return 0


def _shipped_card() -> str:
    from .card import CARD_UID, asset_path

    return str(asset_path(f"{CARD_UID}.md"))


def _check_card(args) -> int:
    from .card import validate_card

    failed = 0
    for path in args.cards or [_shipped_card()]:
        problems = validate_card(path)
        _say(f"{path}: {'valid' if not problems else f'{len(problems)} problem(s)'}")
        for problem in problems:
            _say(f"  - {problem}")
        failed += bool(problems)
    return 1 if failed else 0


def _convert(args) -> int:
    from pathlib import Path

    from .weights import convert, default_names, in_scheme, read_weights

    from .errors import OutputError

    if Path(args.destination).exists() and not args.overwrite:
        raise OutputError(f"{args.destination} exists; pass --overwrite to replace it, or give another name")
    weights = read_weights(args.source)
    names = args.names or default_names(args.destination)
    path = convert(weights, args.destination, names=names)
    _say(f"wrote {path}: {len(in_scheme(weights.state, names))} tensors with {names} names, from "
          f"{weights.file_tensors} tensors with {weights.scheme} names in {weights.source}; architecture "
          f"{weights.architecture or weights.assumed}")
    return 0


if __name__ == "__main__":
    run()
