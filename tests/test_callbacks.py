"""Network expansion inside mindspore.train.Model.train: the Expansion callback."""

import mindspore as ms
import mindspore.dataset as ds
import numpy as np
import pytest
from conftest import SMALL, learnable_data
from mindspore import nn
from mindspore.train import Callback, CheckpointConfig, Model, ModelCheckpoint

from network_expansion import VisionTransformer, ViTConfig
from network_expansion.callbacks import Expansion
from network_expansion.errors import ConfigError
from network_expansion.formats import read_ckpt


def _dataset():
    images, labels = learnable_data(48)
    return ds.NumpySlicesDataset((images, labels.astype(np.int32)), ["image", "label"], shuffle=False).batch(8)


def _network(depth=2):
    ms.set_seed(0)
    return VisionTransformer(ViTConfig(**SMALL, depth=depth))


class _Probe(Callback):
    """The network's logits on fixed pictures at each epoch end (before or after the growth,
    by its place in the callback list)."""

    def __init__(self, network):
        super().__init__()
        self.network, self.seen = network, []
        self.x = ms.Tensor(learnable_data(4, seed=9)[0])

    def on_train_epoch_end(self, run_context):
        self.network.set_train(False)
        self.seen.append((self.network.depth, self.network(self.x).asnumpy()))
        self.network.set_train(True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model_train")
    network = _network()
    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    optimizer = lambda params: nn.AdamWeightDecay(params, learning_rate=2e-3, weight_decay=0.01)  # noqa: E731
    model = Model(network, loss, optimizer(network.trainable_params()))
    expansion = Expansion(model, "2,4", epochs=4, optimizer=optimizer, ema_decay=0.9)
    before, after = _Probe(network), _Probe(network)
    saver = ModelCheckpoint("vit", str(folder), CheckpointConfig(save_checkpoint_steps=6, keep_checkpoint_max=1))
    model.train(4, _dataset(), callbacks=[before, expansion, after, saver])
    return network, expansion, before, after, folder


def test_the_network_grows_on_schedule_inside_model_train(trained):
    network, expansion, _, _, _ = trained
    assert network.depth == 4 and expansion.ema.network.depth == 4
    (record,) = expansion.growths
    assert (record["epoch"], record["from"], record["to"]) == (2, 2, 4)
    assert record["order"] == ["b0", "e0", "b1", "e1"]
    assert record["carried"] > 0  # the optimizer's moments of the old blocks, the step count


def test_exact_growth_keeps_the_function_and_the_new_blocks_then_train(trained):
    network, _, before, after, _ = trained
    assert before.seen[1][0] == 2 and after.seen[1][0] == 4  # epoch 2: before and after the growth
    np.testing.assert_allclose(after.seen[1][1], before.seen[1][1], rtol=1e-5, atol=1e-6)
    assert not network.gates  # folded at the end: the released names
    copy = network.body.layers[1].parameters_dict()
    source = network.body.layers[0].parameters_dict()
    changed = [not np.array_equal(p.asnumpy(), s.asnumpy()) for p, s in zip(copy.values(), source.values())]
    assert any(changed)  # the new block (a copy of block 0 at the growth) trained on


def test_model_checkpoint_saves_the_grown_network(trained):
    *_, folder = trained
    (last,) = sorted(folder.glob("vit*.ckpt"))
    names = set(read_ckpt(last)[0])
    assert any(name.startswith("body.layers.3.") for name in names)


def test_the_callback_refuses_what_it_cannot_grow():
    network = _network(depth=3)
    model = Model(network, nn.SoftmaxCrossEntropyWithLogits(sparse=True), nn.Adam(network.trainable_params()))
    with pytest.raises(ConfigError, match="starts at depth 2.*has depth 3"):
        Expansion(model, "2,4", epochs=4, optimizer=nn.Adam)
    with pytest.raises(ConfigError, match="callable"):
        Expansion(model, "3,6", epochs=4, optimizer=None)
    with pytest.raises(ConfigError, match="needs the package's Trainer"):
        Expansion(model, "3@16,6@32", epochs=4, optimizer=nn.Adam)
    with pytest.raises(ConfigError, match="VisionTransformer"):
        Expansion(Model(nn.Dense(2, 2), nn.MSELoss(), nn.Adam(nn.Dense(2, 2).trainable_params())), "3,6", epochs=4,
                  optimizer=nn.Adam)
