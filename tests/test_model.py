"""The network: exact checkpoint names, the architecture's arithmetic, surgery."""

import mindspore as ms
import numpy as np
import pytest
from conftest import parameters_of, reference_names, tiny_config

import numpy_vit
from network_expansion import ConfigError, VisionTransformer, ViTConfig


def test_full_vit_b_names_and_shapes_equal_the_released_checkpoint(vit_b):
    assert list(vit_b.parameter_shapes().items()) == reference_names()


def test_full_vit_b_has_86_6_million_parameters_with_1000_classes(vit_b):
    with_1001 = vit_b.num_parameters()
    with_1000 = with_1001 - (768 + 1)  # one head row and its bias
    print(f"ViT-B/16 parameters: {with_1000:,} (1000 classes), {with_1001:,} (1001 classes)")
    assert with_1000 == 86_567_656  # timm's vit_base_patch16_224 has the same count


def test_defaults_are_read_from_the_card():
    from network_expansion import model_card

    config = ViTConfig()
    assert config.image_size == model_card().input_size == 224
    assert config.num_classes == model_card().num_classes == 1001


@pytest.mark.parametrize("gelu_approximate,layer_norm_eps", [(True, 1e-7), (False, 1e-6)])
def test_forward_matches_numpy_reference(gelu_approximate, layer_norm_eps, tiny_images):
    ms.set_seed(1)
    config = tiny_config(gelu_approximate=gelu_approximate, layer_norm_eps=layer_norm_eps)
    network = VisionTransformer(config)
    network.set_train(False)
    # Weights of unit gain and non-trivial LayerNorm/bias values, so that every part
    # (patch layout, q/k/v, a swapped gamma/beta) moves the output well above tolerance.
    rng = np.random.default_rng(2)
    for p in network.get_parameters():
        scale = 1 / np.sqrt(p.shape[-1]) if p.name.endswith(".weight") else 0.5
        p.set_data(ms.Tensor((rng.standard_normal(p.shape) * scale).astype(np.float32)))
    reference = dict(num_heads=4, gelu_approximate=gelu_approximate,
                     layer_norm_eps=layer_norm_eps)
    params = parameters_of(network)
    expected = numpy_vit.forward(params, tiny_images.astype(np.float64), **reference)
    got = network(ms.Tensor(tiny_images)).asnumpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    expected_tokens = numpy_vit.forward(params, tiny_images.astype(np.float64), features=True, **reference)
    got_tokens = network.forward_features(ms.Tensor(tiny_images)).asnumpy()
    np.testing.assert_allclose(got_tokens, expected_tokens, rtol=1e-4, atol=1e-4)


def test_graph_mode_and_pynative_agree(tiny, tiny_images):
    eager = tiny(ms.Tensor(tiny_images)).asnumpy()
    graph = ms.jit(tiny.construct)(ms.Tensor(tiny_images)).asnumpy()
    np.testing.assert_allclose(graph, eager, rtol=1e-5, atol=1e-6)


def test_forward_features_returns_normalised_tokens_and_head_uses_cls(tiny, tiny_images):
    tokens = tiny.forward_features(ms.Tensor(tiny_images))
    assert tokens.shape == (2, 17, 32)  # 16 patches + cls
    np.testing.assert_allclose(tokens.asnumpy().mean(-1), 0, atol=1e-5)  # final LayerNorm, beta 0
    pooled = tiny.forward_head(tokens, pre_logits=True).asnumpy()
    np.testing.assert_array_equal(pooled, tokens.asnumpy()[:, 0])
    np.testing.assert_allclose(tiny.forward_head(tokens).asnumpy(), tiny(ms.Tensor(tiny_images)).asnumpy(),
                               rtol=1e-6)


def test_reset_classifier_gives_a_new_head_with_checkpoint_names(tiny, tiny_images):
    tiny.reset_classifier(3)
    assert tiny.config.num_classes == 3
    assert tiny.parameter_shapes()["head.0.weight"] == (3, 32)
    assert tiny(ms.Tensor(tiny_images)).shape == (2, 3)
    tiny.reset_classifier(0)
    assert "head.0.weight" not in tiny.parameter_shapes()
    assert tiny(ms.Tensor(tiny_images)).shape == (2, 32)  # pooled features


def test_set_blocks_inserts_blocks_and_renumbers_names_without_gaps(tiny, tiny_images):
    before = parameters_of(tiny)
    first, second = tiny.blocks
    inserted = tiny.new_block()
    tiny.set_blocks([first, inserted, second])
    names = list(tiny.parameter_shapes())
    assert tiny.depth == tiny.config.depth == 3
    assert sorted({n.split(".")[2] for n in names if n.startswith("body.layers.")}) == ["0", "1", "2"]
    after = parameters_of(tiny)
    # The old second block now answers to index 2, with its weights.
    np.testing.assert_array_equal(after["body.layers.2.0.cell.1.to_q.weight"],
                                  before["body.layers.1.0.cell.1.to_q.weight"])
    assert tiny(ms.Tensor(tiny_images)).shape == (2, 10)
    # The grown network's weights load into a freshly built network of the new depth.
    fresh = VisionTransformer(tiny_config(depth=3))
    assert ms.load_param_into_net(fresh, {n: ms.Parameter(v, name=n) for n, v in after.items()},
                                  strict_load=True) == ([], [])


def test_set_blocks_spreads_drop_path_rates_again_over_the_new_depth():
    network = VisionTransformer(tiny_config(depth=2, drop_path_rate=0.3))
    assert [b[0].drop_path.rate for b in network.blocks] == pytest.approx([0.0, 0.3])
    network.set_blocks(network.blocks + [network.new_block(), network.new_block()])
    assert [b[1].drop_path.rate for b in network.blocks] == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_set_blocks_refuses_a_block_listed_twice(tiny):
    with pytest.raises(ConfigError, match="same block twice"):
        tiny.set_blocks([tiny.blocks[0], tiny.blocks[0]])


def test_drop_path_acts_only_while_training(tiny_images):
    ms.set_seed(3)
    network = VisionTransformer(tiny_config(drop_path_rate=0.5, depth=4))
    network.set_train(False)
    x = ms.Tensor(tiny_images)
    eval_a, eval_b = network(x).asnumpy(), network(x).asnumpy()
    np.testing.assert_array_equal(eval_a, eval_b)
    network.set_train(True)
    assert not np.allclose(network(x).asnumpy(), eval_a)


@pytest.mark.parametrize("overrides,message", [
    (dict(image_size=30), "not a multiple of patch_size"),
    (dict(width=30), "not a multiple of num_heads"),
    (dict(depth=0), "depth must be a whole number from 1 to 1024, got 0"),
    (dict(drop_path_rate=1.5), "drop_path_rate must be a number >= 0 and < 1, got 1.5"),
    (dict(num_classes=-1), r"num_classes must be a whole number from 0 to 1000000 \(0: no head\), got -1"),
])
def test_config_rejects_values_that_cannot_be_built(overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(**overrides)


def test_compiled_forward_follows_the_blocks_after_growth(tiny, tiny_images):
    from network_expansion.graphs import compiled_forward

    x = ms.Tensor(tiny_images)
    compiled_forward(tiny)(x)
    tiny.set_blocks(tiny.blocks + [tiny.new_block()])
    np.testing.assert_allclose(compiled_forward(tiny)(x).asnumpy(), tiny(x).asnumpy(), rtol=1e-5, atol=1e-6)
    # The trap it avoids: MindSpore reuses the graph of `ms.jit(network.construct)` after surgery.
    stale = ms.jit(tiny.construct)(x).asnumpy()
    assert stale.shape == (2, 10)


def test_a_graph_that_has_run_keeps_its_weights_when_the_host_sets_new_ones(tiny, tiny_images):
    """MindSpore 2.10 behaviour the trainer designs around: after a compiled graph has run,
    `Parameter.set_data` from the host is not seen by it (updates made inside graphs are).
    So the EMA gets a graph of its own instead of lending its weights to the model's graph.
    Should this test fail after a MindSpore upgrade, that graph can go."""
    from network_expansion.graphs import compiled_forward

    x = ms.Tensor(tiny_images)
    forward = compiled_forward(tiny)
    before = forward(x).asnumpy()
    for parameter in tiny.get_parameters():
        parameter.set_data(parameter.value() * 2)
    assert not np.allclose(tiny(x).asnumpy(), before)            # the network itself changed
    np.testing.assert_array_equal(forward(x).asnumpy(), before)   # its compiled graph did not
