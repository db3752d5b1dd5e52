"""The `network-expansion` command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from .errors import NetworkExpansionError


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except NetworkExpansionError as error:
        print(f"network-expansion: error: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="network-expansion",
        description="NetworkExpansion ViT-B/16 (Ding et al., CVPR 2023) for MindSpore.")
    commands = parser.add_subparsers(title="commands")

    info = commands.add_parser("info", help="print the hub card, the architecture and the parameter count")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(run=_info)

    check = commands.add_parser("check-card", help="check hub cards against the hub's validator rules")
    check.add_argument("cards", nargs="+", metavar="CARD", help="path of a card (.md)")
    check.set_defaults(run=_check_card)

    convert = commands.add_parser(
        "convert", help="convert weights between .ckpt/.safetensors/.npz and MindSpore/timm names",
        description="Convert a checkpoint. The source's names (MindSpore model zoo or timm/DeiT) are "
                    "recognised; the destination gets MindSpore names for .ckpt and timm names for "
                    ".safetensors and .npz unless --names says otherwise.")
    convert.add_argument("source", metavar="SRC", help="a .ckpt, .safetensors or .npz file, or a URL")
    convert.add_argument("destination", metavar="DST", help="the file to write (.ckpt, .safetensors, .npz)")
    convert.add_argument("--names", choices=("mindspore", "timm"), help="naming scheme of DST")
    convert.set_defaults(run=_convert)

    predict = commands.add_parser("predict", help="classify images (ImageNet labels with the released weights)")
    predict.add_argument("images", nargs="+", metavar="IMG", help="image files or folders of images")
    _add_inference_options(predict)
    predict.add_argument("--topk", type=int, default=5, help="classes per image (default 5)")
    predict.add_argument("--json", action="store_true", help="one JSON object per line")
    predict.set_defaults(run=_predict)

    evaluate = commands.add_parser("evaluate", help="top-1/top-5 accuracy on an ImageFolder tree")
    evaluate.add_argument("root", metavar="DIR", help="one sub-folder of images per class, sorted as the labels")
    _add_inference_options(evaluate)
    evaluate.add_argument("--workers", type=int, default=2, help="image decoding threads (default 2)")
    evaluate.add_argument("--csv", metavar="FILE", help="write per-class accuracy to this CSV file")
    evaluate.set_defaults(run=_evaluate)
    return parser


def _add_inference_options(parser) -> None:
    parser.add_argument("--weights", metavar="PATH", default=None,
                        help="checkpoint path or URL (default: the released checkpoint, cached)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--precision", choices=("float32", "float16", "bfloat16"), default="float32",
                        help="numeric precision where the device supports it (default float32)")


def _classifier(args):
    from .predict import Classifier

    return Classifier(weights=args.weights or True, batch_size=args.batch_size, precision=args.precision)


def _predict(args) -> int:
    from pathlib import Path

    from .datasets import IMAGE_SUFFIXES

    inputs = []
    for item in args.images:
        path = Path(item)
        if path.is_dir():
            inputs += sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            inputs.append(item)
    results = _classifier(args).predict(inputs, topk=args.topk)
    for result in results:
        if args.json:
            print(json.dumps(result.to_dict()))
        elif result.ok:
            print(result.source)
            for label, index, probability in zip(result.labels, result.indices, result.probabilities):
                print(f"  {probability:7.2%}  {label} ({index})")
        else:
            print(f"network-expansion: error: {result.error}", file=sys.stderr)
    return 0 if all(result.ok for result in results) else 1


def _evaluate(args) -> int:
    from .evaluate import evaluate

    result = evaluate(_classifier(args), args.root, workers=args.workers)
    print(result)
    if args.csv:
        print(f"per-class accuracy written to {result.write_csv(args.csv)}")
    return 0


def _info(args) -> int:
    from .card import model_card
    from .model import VisionTransformer

    card = model_card()
    network = VisionTransformer()
    config = dataclasses.asdict(network.config)
    count = network.num_parameters()
    if args.json:
        card_fields = {k: v for k, v in dataclasses.asdict(card).items() if k != "body"}
        print(json.dumps({"card": card_fields, "uid": card.uid, "architecture": config,
                          "parameters": count}, indent=2))
        return 0
    print(f"{card.model_name} {card.model_version}: {card.summary}")
    print(f"  hub uid       {card.uid}  (short alias {card.short_alias})")
    print(f"  card          {card.path}")
    print(f"  author        {card.author}, updated {card.update_time}, license {card.license}")
    print(f"  trained on    {card.train_dataset} ({card.extra.get('train-dataset-version', '')}) "
          f"with MindSpore {card.mindspore_version} on {card.train_backend}")
    print(f"  accuracy      {card.accuracy} top-1 ({card.extra.get('accuracy-backbone', '')})")
    print(f"  input         {list(card.input_shape)} (height, width, channels)")
    print(f"  checkpoint    {card.checkpoint.link}")
    print(f"  sha256        {card.checkpoint.sha256 or 'not published'}")
    print("architecture")
    for name, value in config.items():
        print(f"  {name:<18}{value}")
    print(f"parameters      {count:,}")
    return 0


def _check_card(args) -> int:
    from .card import validate_card

    failed = 0
    for path in args.cards:
        problems = validate_card(path)
        print(f"{path}: {'valid' if not problems else f'{len(problems)} problem(s)'}")
        for problem in problems:
            print(f"  - {problem}")
        failed += bool(problems)
    return 1 if failed else 0


def _convert(args) -> int:
    from .weights import convert, read_weights

    weights = read_weights(args.source)
    path = convert(weights, args.destination, names=args.names)
    print(f"wrote {path}: {len(weights.state)} tensors from {weights.source} ({weights.scheme} names), "
          f"architecture {weights.architecture or 'as the model zoo builds it'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
