"""Time and peak memory to load a full ViT-B/16 checkpoint from disk.

    .venv/bin/python benchmarks/loading.py

Writes a checkpoint with the released file's names and shapes (random values, 346 MB) to
a temporary folder, then loads it in fresh processes, three ways:
  * `create_network(pretrained=path)`: this package (read, check every tensor, assign);
  * the hub client's way: `load_checkpoint` + non-strict `load_param_into_net`;
  * building the network alone (the baseline both include).
Peak memory is the process's maximum resident set size.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

SNIPPETS = {
    "build network only": "net = VisionTransformer()",
    "create_network(pretrained=path)": "net = create_network('NetworkExpansion', pretrained=PATH)",
    "hub client: load_checkpoint + load_param_into_net":
        "net = VisionTransformer(); ms.load_param_into_net(net, ms.load_checkpoint(PATH))",
}

TEMPLATE = """
import resource, time
import mindspore as ms
from network_expansion import VisionTransformer, create_network
PATH = {path!r}
start = time.perf_counter()
{snippet}
seconds = time.perf_counter() - start
print(seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def main():
    import argparse

    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    import mindspore as ms

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import random_state, reference_names

    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "released.ckpt")
        ms.save_checkpoint([{"name": n, "data": ms.Tensor(v)}
                            for n, v in random_state(reference_names()).items()], path)
        size = Path(path).stat().st_size / 2**20
        print(f"checkpoint: {size:.0f} MiB, 200 tensors\n")
        print(f"{'way':<52}{'seconds':>9}{'peak RSS MiB':>14}")
        for label, snippet in SNIPPETS.items():
            out = subprocess.run([sys.executable, "-c", TEMPLATE.format(path=path, snippet=snippet)],
                                 capture_output=True, text=True, check=True)
            seconds, peak = map(float, out.stdout.split())
            print(f"{label:<52}{seconds:>9.2f}{peak:>14.0f}")


if __name__ == "__main__":
    main()
