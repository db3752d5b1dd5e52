"""Do what `mindspore_hub.load` does (hub-protocol.md), without the hub client.

    python hub_client.py CARD FOLDER [CHECKPOINT]

1. parse the YAML header of CARD; 2. import FOLDER/mindspore_hub_conf.py by file path,
with FOLDER first on sys.path and as the working directory; 3. call
`create_network(<model-name>.lower())` and require an nn.Cell; 4. with CHECKPOINT, load
it the way the client does: `load_checkpoint` + non-strict `load_param_into_net`.
Prints one JSON line: the class name, output shape of a forward pass, unloaded names.
"""

import importlib.util
import json
import os
import sys

import numpy as np
import yaml


def main(card_path, folder, checkpoint=None):
    with open(card_path, encoding="utf-8") as f:
        info = yaml.safe_load(f.read().split("---")[1])
    sys.path.insert(0, folder)
    os.chdir(folder)
    spec = importlib.util.spec_from_file_location("mindspore_hub_conf", os.path.join(folder, "mindspore_hub_conf.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    import mindspore as ms
    from mindspore import nn

    network = module.create_network(info["model-name"].lower())
    if not isinstance(network, nn.Cell):
        raise TypeError(f"create_network returned {type(network)}")
    not_loaded = []
    if checkpoint:
        not_loaded, _ = ms.load_param_into_net(network, ms.load_checkpoint(checkpoint))
    network.set_train(False)
    size = info["input-shape"][0]
    output = network(ms.Tensor(np.zeros((1, 3, size, size), np.float32)))
    print(json.dumps({"class": type(network).__name__, "module_file": module.__file__,
                      "network_file": sys.modules[type(network).__module__].__file__,
                      "output_shape": list(output.shape), "not_loaded": not_loaded}))


if __name__ == "__main__":
    main(*sys.argv[1:])
