"""The exported graphs against the package's own forward: ViT-B/16, taking turns.

    .venv/bin/python benchmarks/serving.py [--rounds 7] [--batches 1 8]

Exports a ViT-B/16 (random weights: the speed does not depend on the values) as a
dynamic-batch MindIR and a dynamic-batch ONNX file into a temporary folder, then times,
round after round, each batch size on each of: the package's compiled forward (what
`Classifier` runs), the MindIR in MindSpore (`nn.GraphCell`, as a MindSpore server loads
it) and the ONNX file in onnxruntime (intra-op threads: the cores). CPU tuning is asked for
first (`tune_cpu`: kernel fusion, thread binding): kernel fusion is a compile option of the
process that compiles a graph, so the MindIR gets it as the package does when its server
asks for it (the README says so). Prints the median milliseconds per batch and each one's
ratio to the package's.
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--no-fusion", action="store_true", help="leave MindSpore's kernel fusion off")
    args = parser.parse_args()

    from network_expansion import tune_cpu

    tune_cpu(kernel_fusion=not args.no_fusion)
    import mindspore as ms
    import numpy as np
    import onnxruntime

    from network_expansion import VisionTransformer, ViTConfig
    from network_expansion.export import export, load_mindir
    from network_expansion.graphs import compiled_forward

    ms.set_seed(0)
    network = VisionTransformer(ViTConfig())
    network.set_train(False)
    folder = Path(tempfile.mkdtemp(prefix="serving-"))
    start = time.perf_counter()
    mindir = export(network, folder / "vit.mindir", batch=None)
    onnx = export(network, folder / "vit.onnx", file_format="onnx", batch=None)
    print(f"exported ViT-B/16 as MindIR and ONNX (dynamic batch) in {time.perf_counter() - start:.0f} s")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    session = onnxruntime.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])
    graph = load_mindir(mindir)
    forward = compiled_forward(network)
    runners = {
        "package (compiled forward)": lambda x: forward(ms.Tensor(x)).asnumpy(),
        "MindIR (nn.GraphCell)": lambda x: graph(ms.Tensor(x)).asnumpy(),
        "ONNX (onnxruntime)": lambda x: session.run(["logits"], {"pixels": x})[0],
    }
    inputs = {b: np.random.default_rng(b).standard_normal((b, 3, 224, 224)).astype(np.float32) for b in args.batches}
    reference = {b: runners["package (compiled forward)"](x) for b, x in inputs.items()}
    for name, run in runners.items():  # compile, warm, and check each gives the package's logits
        for b, x in inputs.items():
            run(x)
            difference = float(np.abs(run(x) - reference[b]).max())
            print(f"  {name}, batch {b}: largest difference from the package's logits {difference:.1e}")
    times = {(name, b): [] for name in runners for b in args.batches}
    for _ in range(args.rounds):  # turns: the machine's drift falls on all alike
        for b, x in inputs.items():
            for name, run in runners.items():
                start = time.perf_counter()
                run(x)
                times[(name, b)].append(time.perf_counter() - start)
    print(f"\nViT-B/16, {args.rounds} rounds, median ms per batch ({os.cpu_count()} cores, "
          f"kernel fusion {'off' if args.no_fusion else 'asked'})")
    print(f"| {'runner':<28} | " + " | ".join(f"batch {b:>2} ms | vs package" for b in args.batches) + " |")
    print("|---|" + "---:|---:|" * len(args.batches))
    for name in runners:
        cells = []
        for b in args.batches:
            ms_ = 1000 * statistics.median(times[(name, b)])
            base = 1000 * statistics.median(times[("package (compiled forward)", b)])
            cells.append(f"{ms_:11.1f} | {ms_ / base:9.2f}x")
        print(f"| {name:<28} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
