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

    train = commands.add_parser("train", help="train a ViT from scratch, with network expansion")
    train.add_argument("--data", required=True, metavar="DIR", help="ImageFolder tree of training images")
    train.add_argument("--val", metavar="DIR", help="ImageFolder tree of validation images")
    train.add_argument("--schedule", default="6,12", help="depths of the stages (default 6,12); 'none' trains at "
                                                          "--depth from the start")
    train.add_argument("--stage-starts", help="epoch each stage starts at, e.g. 0,150 (default: equal stages)")
    train.add_argument("--stage-unit", choices=("epoch", "step"), default="epoch",
                       help="what --stage-starts counts (default epoch)")
    train.add_argument("--mode", choices=("insert", "stack"), default="insert", help="where new blocks go")
    train.add_argument("--depth", type=int, default=12, help="depth without a schedule (default 12)")
    train.add_argument("--num-classes", type=int, help="default: the number of class folders")
    _add_training_options(train)
    train.set_defaults(run=_train)

    finetune = commands.add_parser("finetune", help="fine-tune pretrained weights on an ImageFolder tree")
    finetune.add_argument("--data", required=True, metavar="DIR", help="ImageFolder tree of training images")
    finetune.add_argument("--val", metavar="DIR", help="ImageFolder tree of validation images")
    finetune.add_argument("--weights", default=None, help="checkpoint path or URL (default: the released one)")
    finetune.add_argument("--freeze-backbone", action="store_true", help="train the new head only")
    finetune.add_argument("--layer-decay", type=float, help="layer-wise learning-rate decay, e.g. 0.75")
    _add_training_options(finetune, epochs=10, lr=1e-4, warmup=1)
    finetune.set_defaults(run=_finetune)

    demo = commands.add_parser("demo", help="expansion against full depth on scikit-learn's digits: table and plot")
    demo.add_argument("--epochs", type=int, help="epochs of each run")
    demo.add_argument("--schedule", help="expansion schedule (default 6,12)")
    demo.add_argument("--width", type=int, help="token width of the small ViT")
    demo.add_argument("--output", default="expansion-demo", help="folder for logs, plot and summary")
    demo.set_defaults(run=_demo)

    export = commands.add_parser("export", help="export for serving: MindIR, or ONNX where MindSpore can")
    export.add_argument("output", metavar="OUT", help="file to write (.mindir or .onnx is added if missing)")
    export.add_argument("--format", choices=("mindir", "onnx"), default="mindir")
    export.add_argument("--weights", default=None, help="checkpoint path or URL (default: the released one)")
    export.add_argument("--batch", default="1", help="batch size of the graph, or 'dynamic' (default 1)")
    export.add_argument("--with-preprocess", action="store_true",
                        help="take uint8 NHWC pictures and resize, crop, normalise inside the graph")
    export.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                        help="picture size with --with-preprocess (default: the resize size, square)")
    export.set_defaults(run=_export)
    return parser


def _export(args) -> int:
    from .export import export
    from .hub import create_network

    batch = None if args.batch == "dynamic" else int(args.batch)
    network = create_network("NetworkExpansion", pretrained=args.weights or True)
    path = export(network, args.output, file_format=args.format, batch=batch,
                  with_preprocess=args.with_preprocess, input_size=tuple(args.input_size) if args.input_size else None)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


def _add_training_options(parser, epochs=100, lr=5e-4, warmup=5) -> None:
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=lr, help="peak learning rate")
    parser.add_argument("--warmup-epochs", type=int, default=warmup)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (DeiT: 0.8)")
    parser.add_argument("--cutmix", type=float, default=0.0, help="cutmix alpha (DeiT: 1.0)")
    parser.add_argument("--clip-grad", type=float, help="clip the global gradient norm")
    parser.add_argument("--drop-path", type=float, default=0.0, help="maximum stochastic-depth rate")
    parser.add_argument("--ema-decay", type=float, default=0.99996)
    parser.add_argument("--image-size", type=int, help="input size (default: the card's)")
    parser.add_argument("--num-heads", type=int, help="attention heads (default 12)")
    parser.add_argument("--workers", type=int, default=2, help="data loading workers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=20, metavar="STEPS",
                        help="steps between reading loss and accuracy back from the device (and the NaN check)")
    parser.add_argument("--output", default="runs/network-expansion", help="folder for checkpoints and log.jsonl")
    parser.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint.ckpt")
    parser.add_argument("--distributed", action="store_true",
                        help="data parallel across the processes msrun started (one per device)")


def _train_config(args, **extra):
    from .train import TrainConfig

    return TrainConfig(epochs=args.epochs, lr=args.lr, warmup_epochs=args.warmup_epochs,
                       weight_decay=args.weight_decay, label_smoothing=args.label_smoothing, mixup=args.mixup,
                       cutmix=args.cutmix, clip_grad=args.clip_grad, ema_decay=args.ema_decay, seed=args.seed,
                       log_every=args.log_every, **extra)


def _run_training(args, model_factory, config):
    from .preprocess import data_config
    from .train import FolderData, Trainer

    job = None
    if args.distributed:
        from .distributed import init_data_parallel

        job = init_data_parallel()
    model = model_factory()
    data = data_config(model)
    train = FolderData(args.data, data, args.batch_size, workers=args.workers)
    if job:
        job.shard(train)
    val = FolderData(args.val, data, args.batch_size, train=False, workers=args.workers) if args.val else None
    if args.resume:
        trainer = Trainer.resume(args.resume, train, val, output_dir=args.output, distributed=job)
    else:
        trainer = Trainer(model, train, val, config, output_dir=args.output, distributed=job)
    history = trainer.fit()
    if history.interrupted:
        return 130
    final = history.final
    print(f"done: depth {trainer.model.depth}, loss {final.get('loss', float('nan')):.4f}, "
          f"train top-1 {final.get('train_top1', 0):.2%}"
          + (f", val top-1 {final['val_top1']:.2%} (EMA {final['ema_val_top1']:.2%})" if "val_top1" in final else "")
          + f"; weights in {args.output}/model.ckpt")
    return 0


def _model_overrides(args) -> dict:
    overrides = {"drop_path_rate": args.drop_path}
    if args.image_size:
        overrides["image_size"] = args.image_size
    if args.num_heads:
        overrides["num_heads"] = args.num_heads
    return overrides


def _train(args) -> int:
    from .datasets import ImageFolder
    from .hub import create_network

    schedule = None if args.schedule.lower() == "none" else args.schedule
    num_classes = args.num_classes or len(ImageFolder.scan(args.data).classes)
    first = int(schedule.split(",")[0]) if schedule else args.depth
    config = _train_config(args, schedule=schedule, stage_starts=args.stage_starts, stage_unit=args.stage_unit,
                           expansion_mode=args.mode)
    return _run_training(args, lambda: create_network("NetworkExpansion", depth=first, num_classes=num_classes,
                                                      **_model_overrides(args)), config)


def _finetune(args) -> int:
    from .datasets import ImageFolder
    from .hub import create_network

    num_classes = len(ImageFolder.scan(args.data).classes)
    config = _train_config(args, freeze_backbone=args.freeze_backbone, layer_decay=args.layer_decay)
    return _run_training(args, lambda: create_network("NetworkExpansion", pretrained=args.weights or True,
                                                      num_classes=num_classes, **_model_overrides(args)), config)


def _demo(args) -> int:
    import dataclasses

    from .demo import DemoSettings, compare

    settings = DemoSettings()
    changes = {k: v for k, v in (("epochs", args.epochs), ("schedule", args.schedule), ("width", args.width)) if v}
    if "width" in changes:
        changes["mlp_width"] = 2 * changes["width"]
    settings = dataclasses.replace(settings, **changes)
    print(f"training the same ViT twice on scikit-learn's digits ({settings.epochs} epochs each): "
          f"full depth {settings.final_depth}, then expansion {settings.schedule}")
    result = compare(settings, args.output)
    print(result["table"])
    print(f"plot: {result['plot']}; logs in {args.output}/")
    return 0


def _add_inference_options(parser) -> None:
    parser.add_argument("--weights", metavar="PATH", default=None,
                        help="checkpoint path or URL (default: the released checkpoint, cached)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--precision", choices=("float32", "float16", "bfloat16"), default="float32",
                        help="numeric precision where the device supports it (default float32)")
    parser.add_argument("--threads", type=int, help="CPU cores to use (default: all)")


def _classifier(args):
    from .predict import Classifier

    return Classifier(weights=args.weights or True, batch_size=args.batch_size, precision=args.precision,
                      threads=args.threads)


def _predict(args) -> int:
    from pathlib import Path

    from .datasets import image_files

    inputs = []
    for item in args.images:
        path = Path(item)
        if path.is_dir():
            inputs += [str(p) for p in image_files(path)]
        else:
            inputs.append(item)
    classifier = _classifier(args)
    failed = 0
    for result in classifier.predict_stream(inputs, topk=args.topk, progress=len(inputs) > classifier.batch_size):
        failed += not result.ok
        if args.json:
            print(json.dumps(result.to_dict()), flush=True)
        elif result.ok:
            print(result.source)
            for label, index, probability in zip(result.labels, result.indices, result.probabilities):
                print(f"  {probability:7.2%}  {label} ({index})")
        else:
            print(f"network-expansion: error: {result.error}", file=sys.stderr)
    return 1 if failed else 0


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
