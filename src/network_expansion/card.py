"""The MindSpore Hub card: the single source of the model's metadata.

A hub card is a Markdown file whose header, between two `---` lines, is YAML. The hub
client parses that header and checks it with its validator (`mindspore_hub/_utils/check.py`);
`validate_card` applies every rule of that validator that can be checked offline and
reports all problems at once. `model_card()` is the card shipped in `assets/`: input size,
class count and the checkpoint's link, file name and digest are read from it, nowhere
typed twice.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import CardError

# The hub validator's rules (hub-protocol.md).
REQUIRED_FIELDS = (
    "backbone-name", "module-type", "fine-tunable", "input-shape", "model-version",
    "train-dataset", "author", "update-time", "repo-link", "user-id", "used-for",
    "infer-backend", "mindspore-version", "asset", "license", "summary",
)
# `model-name` is not in the validator's list, but the client passes it to create_network.
REQUIRED_FIELDS_OF_THIS_PACKAGE = ("model-name",)
REQUIRED_ASSET_FIELDS = ("asset-link", "asset-sha256", "file-format")
ASSET_FORMATS = ("air", "ckpt", "onnx", "mindir", "mslite")
MODULE_TYPES = ("audio", "cv", "nlp", "recommend", "other")
TRAIN_DATASETS = (
    "imagenet", "coco", "cifar10", "cifar100", "WMT", "zh-wiki", "Gigaword corpus",
    "captcha 0.1.1", "criteo", "voc2007", "cn-wiki", "openimage", "Oxford-IIIT Pet",
)
USES = ("inference", "extract-feature", "transfer-learning")
BACKENDS = ("cpu", "gpu", "ascend")
TRUSTED_LINK_PREFIXES = (
    "https://download.mindspore.cn", "https://www.mindspore.cn",
    "https://gitee.com/mindspore/mindspore", "https://gitee.com/mindspore/models",
    "https://github.com/mindspore-ai/mindspore", "https://github.com/mindspore-lab",
)
REPO_LINK_PATTERN = re.compile(r"^https://[^/]+\.com/[^/]+/[^/]+/tree/[^/]+/[^/].*$")
FIELDS_ALLOWED_A_COLON = ("repo-link", "asset")

CARD_UID = "noahsark/gpu/1.8/networkexpansion_v1.0_imagenet2012"
MAX_CARD_BYTES = 64 * 1024


@dataclass(frozen=True)
class CardAsset:
    """One downloadable file of a card (`asset:` list item)."""

    file_format: str
    link: str
    sha256: str

    @property
    def file_name(self) -> str:
        return self.link.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class HubCard:
    """A parsed hub card. Field names are the card's keys with `-` turned into `_`."""

    model_name: str
    backbone_name: str
    module_type: str
    fine_tunable: bool
    input_shape: tuple
    model_version: str
    train_dataset: str
    author: str
    update_time: str
    repo_link: str
    user_id: str
    used_for: str
    infer_backend: str
    mindspore_version: str
    assets: tuple
    license: str
    summary: str
    accuracy: float | None = None
    train_backend: str | None = None
    featured_image: str | None = None
    allow_cache_ckpt: bool | None = None
    extra: dict = field(default_factory=dict)  # fields the hub does not define
    body: str = ""
    path: str = ""

    @property
    def uid(self) -> str:
        """`publisher/backend/version/markdown-name`, from where the card lies."""
        parts = Path(self.path).with_suffix("").parts
        return "/".join(parts[-4:])

    @property
    def publisher(self) -> str:
        return self.uid.split("/")[0]

    @property
    def short_alias(self) -> str:
        """`noahsark/NetworkExpansion`: what users type; the hub client itself wants the uid."""
        return f"{self.publisher}/{self.model_name}"

    @property
    def package_folder(self) -> str:
        """The folder the hub client downloads and imports `mindspore_hub_conf.py` from."""
        return self.repo_link.rstrip("/").rsplit("/", 1)[-1]

    @property
    def input_size(self) -> int:
        height, width = self.input_shape[0], self.input_shape[1]
        if height != width:
            raise CardError(self.path, [f"input-shape {list(self.input_shape)} is not square"])
        return int(height)

    @property
    def num_classes(self) -> int:
        return int(self.extra.get("num-classes", 1000))

    @property
    def checkpoint(self) -> CardAsset:
        for asset in self.assets:
            if asset.file_format == "ckpt":
                return asset
        raise CardError(self.path, ["no asset with file-format ckpt"])


def _assets_folder() -> Path:
    """`assets/` of a source checkout (or the hub's download of it), else the wheel's copy.

    setup.cfg installs the top-level `assets/` as `network_expansion/assets/`.
    """
    here = Path(__file__).resolve().parent
    for folder in (here.parents[1] / "assets", here / "assets"):
        if folder.is_dir():
            return folder
    raise CardError(here, ["network_expansion's assets/ folder is missing (the card and the class names "
                           "live there); reinstall the package, or keep assets/ beside src/ in a checkout"])


def asset_path(*parts: str) -> Path:
    """Path of a file shipped in `assets/`."""
    return _assets_folder().joinpath(*parts)


@functools.lru_cache(maxsize=None)
def model_card() -> HubCard:
    """The card of the released NetworkExpansion model shipped with this package."""
    return load_card(asset_path(f"{CARD_UID}.md"))


def load_card(path) -> HubCard:
    """Read a card; raise `CardError` listing every problem if it breaks a hub rule."""
    fields, body, problems = _read_card(path)
    problems += _check_fields(fields)
    if problems:
        raise CardError(path, problems)
    return _to_card(fields, body, path)


def validate_card(path) -> list[str]:
    """Every problem the hub's validator would find offline; empty when the card is valid."""
    try:
        fields, _, problems = _read_card(path)
    except CardError as error:
        return error.problems
    return problems + _check_fields(fields)


def _read_card(path):
    """Split a card into its header fields, body and the problems met while reading."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CARD_BYTES + 1)
        if len(raw) > MAX_CARD_BYTES:
            raise CardError(path, [f"the card is larger than {MAX_CARD_BYTES // 1024} KiB; a hub card is a short "
                                   f"header and a description"])
        text = raw.decode("utf-8")
    except OSError as error:
        raise CardError(path, [f"cannot read the card: {error.strerror or error}"]) from None
    except UnicodeDecodeError as error:
        raise CardError(path, [f"the card is not UTF-8 text ({error.reason})"]) from None
    pieces = re.split(r"^---[ \t]*$", text, maxsplit=2, flags=re.MULTILINE)
    if len(pieces) != 3:
        raise CardError(path, ["no YAML header: expected the fields between two lines '---'"])
    header, body = pieces[1], pieces[2].strip()
    try:
        fields = _load_yaml(header)
    except yaml.YAMLError as error:
        # Keep going line by line, as a person reading the card would, so that every
        # other problem is reported too, not just the first.
        where = getattr(error, "problem_mark", None)
        at = f" (header line {where.line + 1}, column {where.column + 1})" if where else ""
        reason = getattr(error, "problem", None) or str(error)
        return _read_lines(header), body, [f"the header is not valid YAML: {reason}{at}"]
    if not isinstance(fields, dict):
        return {}, body, ["the header is not a mapping of 'field: value' lines"]
    return fields, body, []


class _CardLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases (`*name` lets a ten-line card expand into
    gigabytes: "billion laughs"; no card needs one) and without timestamps (`update-time:
    2023-3-8` is text to a card; a date it cannot build, 2023-13-45, was a traceback)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "found a YAML alias (*name): cards may not use "
                                                          "aliases; write the value out", mark)
        return super().compose_node(parent, index)


_CardLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

MAX_NESTING = 16  # brackets a card's header may nest (a card has 2; 20,000 took PyYAML 10-28 s to refuse)


def _load_yaml(text: str):
    """The YAML `text` as Python values; `yaml.YAMLError` for anything it cannot be (what
    PyYAML raises of its own for a value it cannot build is turned into one), in bounded time."""
    depth = deepest = 0
    for character in text:
        if character in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif character in "]}":
            depth -= 1
    if deepest > MAX_NESTING:
        raise yaml.YAMLError(f"brackets nest {deepest} deep (at most {MAX_NESTING})")
    try:
        return yaml.load(text, Loader=_CardLoader)
    except yaml.YAMLError:
        raise
    except (ValueError, TypeError, OverflowError, RecursionError) as error:  # e.g. '!!int abc', 5000 digits
        raise yaml.YAMLError(f"a value that cannot be read: {str(error)[:200]}") from None


def _read_lines(header: str) -> dict:
    """A lenient reading of a header: `key: value` lines and one `asset:` list."""
    fields, current_asset = {}, None
    for line in header.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        stripped = line.strip()
        if stripped.startswith("- "):
            current_asset = {}
            if not isinstance(fields.get("asset"), list):
                fields["asset"] = []
            fields["asset"].append(current_asset)
            stripped = stripped[2:]
        elif not line[0].isspace():
            current_asset = None
        key, _, value = stripped.partition(":")
        target = current_asset if current_asset is not None else fields
        target[key.strip()] = _scalar(value.strip())
    return fields


def _scalar(text: str):
    try:
        value = _load_yaml(text)
    except yaml.YAMLError:
        return text
    return text if isinstance(value, dict) else value


def _check_fields(fields: dict) -> list[str]:
    problems = []
    for name in REQUIRED_FIELDS_OF_THIS_PACKAGE + REQUIRED_FIELDS:
        if name not in fields:
            near = difflib.get_close_matches(name, [str(key) for key in fields], n=1, cutoff=0.75)
            hint = f" (found '{near[0]}': rename it to '{name}')" if near else ""
            problems.append(f"missing required field '{name}'{hint}")

    def check(name, rule, expected):
        if name in fields and not rule(fields[name]):
            problems.append(f"'{name}' is {fields[name]!r}: expected {expected}")

    check("fine-tunable", lambda v: isinstance(v, bool), "True or False")
    check("input-shape", lambda v: isinstance(v, list) and v and all(
        isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v), "a list of positive integers")
    check("num-classes", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
          "a positive integer")
    check("accuracy", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "a number")
    check("allow-cache-ckpt", lambda v: isinstance(v, bool), "True or False")
    check("module-type", _module_type_ok,
          f"'<kind>' or '<kind>-<task>' with kind one of {', '.join(MODULE_TYPES)}")
    check("train-dataset", lambda v: v in TRAIN_DATASETS, f"one of {', '.join(TRAIN_DATASETS)}")
    check("used-for", lambda v: _parts_in(v, USES), f"comma-separated parts of {', '.join(USES)}")
    for backend in ("train-backend", "infer-backend"):
        check(backend, lambda v: _parts_in(v, BACKENDS), f"one of {', '.join(BACKENDS)}")
    check("repo-link", lambda v: isinstance(v, str) and bool(REPO_LINK_PATTERN.match(v)),
          "a link like https://<host>.com/<group>/<repo>/tree/<branch>/<path>")
    check("repo-link", _trusted, f"a link starting with one of {', '.join(TRUSTED_LINK_PREFIXES)}")
    for name, value in fields.items():
        if name not in FIELDS_ALLOWED_A_COLON and ":" in str(value):
            problems.append(f"'{name}' is {value!r}: no value but repo-link and asset may contain ':'")
    problems += _check_assets(fields.get("asset"))
    return problems


def _check_assets(assets) -> list[str]:
    if assets is None:
        return []
    if not isinstance(assets, list) or not all(isinstance(a, dict) for a in assets):
        return ["'asset' must be a list of entries with asset-link, asset-sha256, file-format"]
    problems = []
    for number, asset in enumerate(assets, start=1):
        for name in REQUIRED_ASSET_FIELDS:
            if name not in asset:
                problems.append(f"asset {number} is missing '{name}'")
        if "file-format" in asset and asset["file-format"] not in ASSET_FORMATS:
            problems.append(f"asset {number} 'file-format' is {asset['file-format']!r}: "
                            f"expected one of {', '.join(ASSET_FORMATS)}")
        if "asset-link" in asset and not _trusted(asset["asset-link"]):
            problems.append(f"asset {number} 'asset-link' {asset['asset-link']!r} does not start "
                            f"with a trusted prefix ({', '.join(TRUSTED_LINK_PREFIXES)})")
        sha = asset.get("asset-sha256")
        if sha not in (None, "") and not re.fullmatch(r"[0-9a-fA-F]{64}", str(sha)):
            problems.append(f"asset {number} 'asset-sha256' is {sha!r}: expected 64 hex digits or empty")
    return problems


def _module_type_ok(value) -> bool:
    parts = str(value).split("-")
    return len(parts) <= 2 and parts[0] in MODULE_TYPES and all(parts)


def _parts_in(value, allowed) -> bool:
    parts = [part.strip() for part in str(value).split(",")]
    return all(part in allowed for part in parts)


def _trusted(link) -> bool:
    return isinstance(link, str) and link.startswith(TRUSTED_LINK_PREFIXES)


def _to_card(fields: dict, body: str, path) -> HubCard:
    known = {f.name for f in HubCard.__dataclass_fields__.values()} - {"extra", "body", "path", "assets"}
    values, extra = {}, {}
    for key, value in fields.items():
        name = str(key).replace("-", "_")
        if name in known:
            values[name] = value
        elif key != "asset":
            extra[key] = value
    for name in ("model_version", "mindspore_version", "update_time"):
        values[name] = str(values[name])
    values["input_shape"] = tuple(values["input_shape"])
    assets = tuple(
        CardAsset(file_format=a["file-format"], link=a["asset-link"], sha256=a["asset-sha256"] or "")
        for a in fields["asset"]
    )
    return HubCard(**values, assets=assets, extra=extra, body=body, path=str(path))
