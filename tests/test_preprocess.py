"""The eval recipe on the host (mindspore.dataset) and on the device (a Cell) agree."""

import mindspore as ms
import numpy as np
import pytest
from conftest import tiny_config

from network_expansion import Preprocess, VisionTransformer, data_config
from network_expansion.preprocess import WithPreprocess, preprocess_image

# One gray level of the channel with the smallest std (0.224 * 255): the two resizes
# round to whole gray levels in different places (OpenCV's fixed point vs. float).
ONE_GRAY_LEVEL = 1 / (0.224 * 255)


def _photos():
    from skimage import data

    gray = data.camera()
    return {"astronaut": data.astronaut(), "coffee": data.coffee(), "chelsea": data.chelsea(),
            "rocket": data.rocket(), "camera (gray)": np.repeat(gray[:, :, None], 3, axis=2)}


def test_the_recipe_is_read_from_the_card_and_the_network():
    config = data_config()
    assert (config.input_size, config.resize_size, config.interpolation) == (224, 256, "bilinear")
    assert config.mean == (0.485, 0.456, 0.406) and config.std == (0.229, 0.224, 0.225)
    assert data_config(tiny_config(image_size=384, patch_size=16)).resize_size == 432  # the zoo's rounding


@pytest.mark.parametrize("name", list(_photos()))
def test_host_and_device_preprocessing_agree_on_real_photos(name):
    photo = _photos()[name]
    config = data_config()
    host = preprocess_image(photo, config)
    device = ms.jit(Preprocess(config).construct)(ms.Tensor(photo[None])).asnumpy()[0]
    assert host.shape == device.shape == (3, 224, 224)
    difference = np.abs(host - device)
    assert difference.max() <= ONE_GRAY_LEVEL + 1e-6
    assert difference.mean() < 0.003


def test_host_preprocessing_matches_the_recipe_written_out_by_hand():
    from PIL import Image

    photo = _photos()["chelsea"]  # 300 x 451
    host = preprocess_image(photo, data_config())
    # shorter side 300 -> 256, longer 451 -> 384 (floor), crop 224 from the centre
    resized = np.asarray(Image.fromarray(photo).resize((384, 256), Image.BILINEAR, reducing_gap=None)).astype(np.float32)
    top, left = (256 - 224) // 2, (384 - 224) // 2
    crop = resized[top:top + 224, left:left + 224]
    expected = ((crop - np.array([123.675, 116.28, 103.53])) / np.array([58.395, 57.12, 57.375])).transpose(2, 0, 1)
    # Pillow's bilinear filter is antialiased, OpenCV's is not: they agree on average only.
    assert np.abs(host - expected).mean() < 0.05


def test_preprocess_compiles_into_the_same_graph_as_the_network():
    ms.set_seed(0)
    network = VisionTransformer(tiny_config())
    network.set_train(False)
    names = list(network.parameter_shapes())
    both = WithPreprocess(network)
    assert list(network.parameter_shapes()) == names  # wrapping keeps the checkpoint names
    photo = _photos()["coffee"]
    fused = ms.jit(both.construct)(ms.Tensor(photo[None])).asnumpy()
    separate = network(ms.Tensor(preprocess_image(photo, data_config(network))[None])).asnumpy()
    np.testing.assert_allclose(fused, separate, atol=0.05)


def _tree(root):
    from PIL import Image

    photos = _photos()
    for label, names in enumerate((("astronaut", "coffee"), ("chelsea", "rocket"))):
        (root / f"class{label}").mkdir(parents=True)
        for name in names:
            Image.fromarray(photos[name]).save(root / f"class{label}" / f"{name}.png")
    return root


def test_the_imagefolder_pipeline_yields_the_host_recipe_with_labels(tmp_path):
    from network_expansion.datasets import imagefolder_dataset

    config = data_config()
    dataset = imagefolder_dataset(_tree(tmp_path), config, batch_size=4, workers=2)
    images, labels = next(dataset.create_tuple_iterator(output_numpy=True))
    photos = _photos()
    expected = np.stack([preprocess_image(photos[n], config) for n in ("astronaut", "coffee", "chelsea", "rocket")])
    np.testing.assert_allclose(images, expected, atol=1e-5)
    assert labels.tolist() == [0, 0, 1, 1]


def test_a_damaged_file_in_the_pipeline_is_named_and_replaced(tmp_path, caplog):
    from network_expansion.datasets import imagefolder_dataset

    root = _tree(tmp_path)
    (root / "class1" / "zz_damaged.png").write_bytes(b"garbage")
    dataset = imagefolder_dataset(root, data_config(), batch_size=5, workers=1)
    with caplog.at_level("WARNING", logger="network_expansion"):
        batches = list(dataset.create_tuple_iterator(output_numpy=True))
    assert sum(len(labels) for _, labels in batches) == 5  # four photos and one in the damaged file's place
    assert "zz_damaged.png: not an image Pillow can read" in caplog.text
