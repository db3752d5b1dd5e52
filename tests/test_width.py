"""Width growth: the residual stream, heads and MLP grow with the function unchanged."""

import mindspore as ms
import numpy as np
import pytest
from conftest import off_defaults, tiny_config

import network_expansion as ne
from network_expansion import ConfigError, VisionTransformer, create_network, save_weights
from network_expansion.ema import EMA
from network_expansion.graphs import compiled_forward
from network_expansion.recipe import TrainConfig, build_optimizer, soft_cross_entropy
from network_expansion.width import WidthMaps

WIDER = [(128, 4, 512), (96, 3, 384)]  # 64 -> 2x64 (r = 0), 64 -> 64 + 32 (k = 1, r = 32)




def _network(depth=3):
    network = off_defaults(VisionTransformer(tiny_config(depth=depth, width=64, num_heads=2, mlp_width=256)))
    network.set_train(False)
    return network


def _images(n=3, seed=2):
    return ms.Tensor(np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32))


def _relative(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("width,heads,mlp", WIDER)
@pytest.mark.parametrize("split", ["random", "ema", "equal"])
def test_width_growth_keeps_the_logits_of_model_and_ema_in_pynative_and_graph_mode(width, heads, mlp, split):
    network, images = _network(), _images()
    ema = EMA(network, 0.9)
    off_defaults(ema.network, seed=1)  # the EMA's own weights: the `ema` split uses them
    before, ema_before = network(images).asnumpy(), ema.network(images).asnumpy()
    growth = ne.grow(network, width=width, num_heads=heads, mlp_width=mlp, ema=ema, split=split)
    network.set_train(False)
    assert (network.config.width, network.config.num_heads, network.config.mlp_width) == (width, heads, mlp)
    assert growth.order == ["b0", "b1", "b2"] and growth.gates == []
    assert _relative(network(images).asnumpy(), before) <= 1e-5
    assert _relative(compiled_forward(network)(images).asnumpy(), before) <= 1e-5
    assert _relative(growth.ema.network(images).asnumpy(), ema_before) <= 1e-5
    assert _relative(compiled_forward(growth.ema.network)(images).asnumpy(), ema_before) <= 1e-5
    assert network.cls.shape == (1, 1, width) and growth.ema.network.cls.name == "ema.cls"


def _streams(network, images):
    """The residual stream after the embedding and after each block (PyNative)."""
    tokens = network.stem(images)
    cls = ms.ops.broadcast_to(network.cls, (tokens.shape[0], 1, tokens.shape[2]))
    tokens = ms.ops.concat((cls, tokens), axis=1) + network.pos_embedding
    streams = [tokens.asnumpy()]
    for block in network.blocks:
        tokens = block(tokens)
        streams.append(tokens.asnumpy())
    return streams


@pytest.mark.parametrize("width,heads,mlp", WIDER)
def test_every_block_keeps_the_stream_as_copies_and_the_residue_as_their_mean(width, heads, mlp):
    network, images = _network(), _images()
    old = _streams(network, images)
    ne.grow(network, width=width, num_heads=heads, mlp_width=mlp)
    new = _streams(network, images)
    k = width // 64
    for x, grown in zip(old, new):
        scale = np.abs(x).max()
        for copy in range(k):
            assert np.abs(grown[..., copy * 64:(copy + 1) * 64] - x).max() <= 1e-6 * scale * 10
        residue = grown[..., k * 64:]
        if residue.size:
            assert np.abs(residue - x.mean(-1, keepdims=True)).max() <= 1e-6 * scale * 10


def _one_step(network, images, seed=0):
    labels = np.random.default_rng(seed).integers(0, 10, len(images))
    targets = ms.Tensor(np.eye(10, dtype=np.float32)[labels])
    optimizer = build_optimizer(network, TrainConfig(epochs=1, lr=1e-2, warmup_epochs=0), 1, network.depth).optimizer

    def loss(x, t):
        return soft_cross_entropy(network(x), t)

    gradients = ms.value_and_grad(loss, None, optimizer.parameters)
    network.set_train(True)
    optimizer(gradients(images, targets)[1])
    return network


@pytest.mark.parametrize("split,differ", [("random", True), ("ema", True), ("equal", False)])
def test_one_step_after_the_growth_sets_the_copies_apart_unless_the_split_is_equal(split, differ):
    network = _network(depth=1)
    ema = EMA(network, 0.9)
    off_defaults(ema.network, seed=1)
    ne.grow(network, width=128, num_heads=4, mlp_width=512, ema=ema, split=split)
    _one_step(network, _images(4))
    stem = network.stem.patch_to_embedding.dense.weight.asnumpy()          # residual replicas: rows
    ff1 = network.blocks[0][1].cell[1].ff1.dense.weight.asnumpy()          # copied neurons: rows
    q = network.blocks[0][0].cell[1].to_q.weight.asnumpy()                 # copied heads: rows
    gaps = [np.abs(stem[:64] - stem[64:]).max(), np.abs(ff1[:256] - ff1[256:]).max(), np.abs(q[:64] - q[64:]).max()]
    if differ:
        assert min(gaps) > 1e-6
    else:
        assert max(gaps) <= 1e-6


def test_the_moments_grow_by_the_same_maps():
    network = _network(depth=1)
    optimizer = build_optimizer(network, TrainConfig(epochs=1), 1, 1).optimizer
    rng = np.random.default_rng(0)
    optimizer.take_moments({id(p): (rng.standard_normal(p.shape), rng.random(p.shape)) for p in optimizer.parameters})
    moments = optimizer.moments()
    old = {p.name: moments[id(p)][:2] for p in optimizer.parameters}
    growth = ne.grow(network, width=96, num_heads=3, mlp_width=384, moments=moments)
    grown = {p.name: growth.moments[id(p)] for p in network.get_parameters() if id(p) in growth.moments}
    assert set(grown) == set(old) and all(m.shape == p.shape for p in network.get_parameters()
                                           for m in grown[p.name][:2])
    # to_q: rows are heads (head 0 copied twice: m/2, v/4; head 1 once), columns read the stream
    # (64 kept, 32 residue columns at 0)
    m, v, _ = grown["body.layers.0.0.cell.1.to_q.weight"]
    m_old, v_old = old["body.layers.0.0.cell.1.to_q.weight"]
    np.testing.assert_allclose(m[:32, :64], m_old[:32] / 2, rtol=1e-6)
    np.testing.assert_allclose(v[64:, :64], v_old[:32] / 4, rtol=1e-6)
    np.testing.assert_allclose(m[32:64, :64], m_old[32:], rtol=1e-6)
    assert not m[:, 64:].any() and not v[:, 64:].any()
    # ff2: rows write the stream (k = 1: kept, the residue 0), columns split (kept)
    m, v, _ = grown["body.layers.0.1.cell.1.ff2.dense.weight"]
    m_old = old["body.layers.0.1.cell.1.ff2.dense.weight"][0]
    np.testing.assert_allclose(m[:64, :256], m_old, rtol=1e-6)
    np.testing.assert_allclose(m[:64, 256:], m_old[:, :128], rtol=1e-6)
    assert not m[64:].any()


def test_width_then_depth_and_depth_then_width_keep_the_logits():
    images = _images()
    for steps in ([{"width": 128}, {"depth": 5}], [{"depth": 5}, {"width": 128}], [{"depth": 5, "width": 128}]):
        network = _network()
        ema = EMA(network, 0.9)
        before = network(images).asnumpy()
        for change in steps:
            ema = ne.grow(network, ema=ema, exact=True, **change).ema
        network.set_train(False)
        assert (network.depth, network.config.width, network.config.num_heads) == (5, 128, 4)
        assert _relative(network(images).asnumpy(), before) <= 1e-5
        network.fold_gates()
        assert _relative(network(images).asnumpy(), before) <= 1e-5


def test_a_grown_network_is_rebuilt_from_its_file_and_converts_to_timm_names(tmp_path):
    network, images = _network(), _images()
    ne.grow(network, width=96, num_heads=3, mlp_width=384)
    network.set_train(False)
    expected = network(images).asnumpy()
    for names in ("mindspore", "timm"):
        path = save_weights(network, tmp_path / f"grown-{names}.ckpt", names=names)
        loaded = create_network(pretrained=str(path), image_size=32)
        loaded.set_train(False)
        assert (loaded.config.width, loaded.config.num_heads, loaded.config.mlp_width) == (96, 3, 384)
        np.testing.assert_allclose(loaded(images).asnumpy(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("change,message", [
    ({"width": 32}, "can only grow"),
    ({"width": 100}, "not a multiple of the head dimension 32"),
    ({"width": 128, "num_heads": 2}, "use 4 heads"),
    ({"width": 128, "mlp_width": 128}, "mlp_width can only grow"),
])
def test_a_width_that_cannot_grow_says_why(change, message):
    with pytest.raises(ConfigError, match=message):
        WidthMaps.plan(_network().config, **change)
    with pytest.raises(ConfigError, match="width split 'half'"):
        ne.grow(_network(depth=1), width=128, split="half")


@pytest.mark.slow
def test_the_full_vit_b_grown_to_width_1024_keeps_its_predictions_on_real_photos(vit_b):
    from skimage import data

    from network_expansion.preprocess import data_config, preprocess_image

    network = VisionTransformer(vit_b.config, initialize=False)  # a copy: the fixture is shared
    for mine, theirs in zip(network.get_parameters(), vit_b.get_parameters()):
        mine.set_data(theirs.value().copy())
    config = data_config(network)
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    images = ms.Tensor(np.stack([preprocess_image(photo, config) for photo in photos]))
    network.set_train(False)
    before = network(images).asnumpy()
    ne.grow(network, width=1024, mlp_width=4096)
    network.set_train(False)
    after = network(images).asnumpy()
    assert network.config.num_heads == 16
    assert _relative(after, before) <= 1e-5
    assert (after.argmax(-1) == before.argmax(-1)).all()


# -- in the trainer: a stage DEPTHxWIDTH grows model, EMA and AdamW together --------------

@pytest.fixture(scope="module")
def wide_run(tmp_path_factory):
    """Four epochs of the SMALL ViT (width 16, 2 heads), 2 blocks wide 16, then 4 blocks
    wide 32 from epoch 2 (depth and width at once), nothing in the way."""
    from conftest import small_trainer

    out = tmp_path_factory.mktemp("wide")
    trainer = small_trainer(out, schedule="2x16,4x32", growth="exact", width_split="random")
    return trainer, trainer.fit(), out


def test_the_trainer_grows_width_and_depth_at_the_stage_start_with_the_function_kept(wide_run):
    trainer, history, _ = wide_run
    grow = next(r for r in history.records if r["event"] == "grow")
    before = history.records[history.records.index(grow) - 1]
    assert (grow["epoch"], grow["width_from"], grow["width_to"], grow["heads_to"], grow["to"]) == (3, 16, 32, 4, 4)
    assert (trainer.model.config.width, trainer.model.config.mlp_width, trainer.model.depth) == (32, 64, 4)
    # exact: the evaluation at the growth scores what the epoch before did, model and EMA
    assert (grow["val_top1"], grow["ema_val_top1"]) == (before["val_top1"], before["ema_val_top1"])
    losses = [r["loss"] for r in history.epochs]
    assert losses[-1] < losses[1]  # training goes on after the growth
    assert trainer.ema.network.config.width == 32


@pytest.mark.slow
def test_resume_across_a_width_growth_reproduces_the_uninterrupted_run(wide_run, tmp_path):
    from conftest import parameters_of, small_trainer, stop_at_step

    from network_expansion import Trainer

    uninterrupted = wide_run[0]
    trainer = small_trainer(tmp_path, schedule="2x16,4x32", growth="exact", width_split="random")
    stop_at_step(trainer, 8)  # inside the first grown epoch, inside the gates' ramp
    assert trainer.fit().interrupted and trainer.model.config.width == 32
    resumed = Trainer.resume(tmp_path / "checkpoint.ckpt", trainer.train_data, trainer.val_data, progress=False)
    assert resumed.model.config.width == 32 and resumed.model.gated_blocks() == [1, 3]
    resumed.fit()
    expected, got = parameters_of(uninterrupted.model), parameters_of(resumed.model)
    assert list(got) == list(expected)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
    born = resumed.optimizer.born_by_name()
    assert born["head.0.weight"] == 0 and born["body.layers.1.0.cell.1.to_q.weight"] == 6  # carried / new block


def test_a_width_schedule_needs_a_model_of_its_first_width():
    from conftest import small_trainer

    with pytest.raises(ConfigError, match="starts at width 32, the model has 16: build it with width=32"):
        small_trainer(schedule="2x32,4x64")
    with pytest.raises(ConfigError, match="widths cannot shrink"):
        TrainConfig(schedule="2x32,4x16").expansion_schedule(4)
    with pytest.raises(ConfigError, match="give the first stage's width too"):
        TrainConfig(schedule="2,4x32").expansion_schedule(4)


def test_scaled_width_lr_slows_only_the_matrices_whose_input_grew():
    network = _network(depth=1)
    first = network.config
    ne.grow(network, width=128, num_heads=4, mlp_width=512)
    scales = build_optimizer(network, TrainConfig(epochs=1, width_lr="scaled"), 1, 1, first=first).lr_scales
    assert scales["body.layers.0.0.cell.1.to_q.weight"] == scales["head.0.weight"] == 0.5   # read the stream
    assert scales["body.layers.0.0.cell.1.to_out.weight"] == scales["body.layers.0.1.cell.1.ff2.dense.weight"] == 0.5
    assert scales["stem.patch_to_embedding.dense.weight"] == scales["body.layers.0.0.cell.1.to_q.bias"] == 1.0
    same = build_optimizer(network, TrainConfig(epochs=1), 1, 1, first=first).lr_scales
    assert set(same.values()) == {1.0}


def test_width_growth_from_the_command_line(tmp_path, capsys):
    from conftest import noise_folder, run_command

    noise_folder(tmp_path / "data", classes=("a", "b"), size=16)
    code, out, _ = run_command(["train", "--data", str(tmp_path / "data"), "--output", str(tmp_path / "run"),
                                "--schedule", "1x16,2x32", "--epochs", "2", "--image-size", "16", "--patch-size", "8",
                                "--num-heads", "2", "--mlp-width", "64", "--batch-size", "4", "--width-split", "ema",
                                "--width-lr", "scaled"], capsys)
    assert code == 0, out
    assert "width 16 -> 32" in out
    grown = create_network(pretrained=str(tmp_path / "run" / "model.ckpt"))
    assert (grown.depth, grown.config.width, grown.config.num_heads, grown.config.mlp_width) == (2, 32, 2, 64)
