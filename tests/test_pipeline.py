"""The C++ input pipeline: FolderData's files read and checked in Python, decoded by
MindSpore's C++ operations; what the C++ decoder gets wrong goes through PIL; bad files are
replaced and named; mixup/cutmix in the pipeline; exact resume; a run on a faked GPU."""

import logging

import mindspore as ms
import numpy as np
import pytest
from conftest import SMALL
from PIL import Image

from network_expansion import TrainConfig, VisionTransformer, ViTConfig, data_config
from network_expansion.datasets import FolderData, imagefolder_dataset
from network_expansion.encoded import EncodedFiles, sniff
from network_expansion.images import load_image
from network_expansion.preprocess import preprocess_image
from network_expansion.recipe import BatchTargets
from network_expansion.train import folder_trainer


def _photos():
    from skimage import data

    return [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Two classes of real photos as JPEGs (8 each), and the files the C++ decoder would get
    wrong, in class0: CMYK, EXIF-rotated, 16-bit PNG, WebP."""
    root = tmp_path_factory.mktemp("tree")
    photos = _photos()
    for c in range(2):
        (root / f"class{c}").mkdir()
        for i in range(8):
            picture = photos[(c * 2 + i) % 4][i * 9:, i * 11:]
            Image.fromarray(np.ascontiguousarray(picture)).save(root / f"class{c}" / f"{i}.jpg", quality=90)
    odd = root / "class0"
    Image.fromarray(photos[0]).convert("CMYK").save(odd / "odd_cmyk.jpg")
    rotated = Image.fromarray(photos[1][:300, :200])
    exif = rotated.getexif()
    exif[0x0112] = 6  # turn 90 degrees to view
    rotated.save(odd / "odd_rotated.jpg", exif=exif)
    Image.fromarray(photos[2][..., 0].astype(np.uint16) * 256).save(odd / "odd_deep.png")
    Image.fromarray(photos[3]).save(odd / "odd_picture.webp")
    return root


CONFIG = data_config(ViTConfig(image_size=64, patch_size=16))


def test_the_header_says_what_the_cpp_decoder_would_get_wrong(tree):
    assert sniff((tree / "class0" / "0.jpg").read_bytes()).why_pil is None
    assert sniff((tree / "class0" / "odd_cmyk.jpg").read_bytes()).why_pil == "CMYK"
    assert sniff((tree / "class0" / "odd_rotated.jpg").read_bytes()).why_pil == "an EXIF orientation to apply"
    assert sniff((tree / "class0" / "odd_deep.png").read_bytes()).why_pil == "16 bits a sample"
    assert sniff((tree / "class0" / "odd_picture.webp").read_bytes()).why_pil.startswith("a format other than")
    header = sniff((tree / "class1" / "0.jpg").read_bytes())
    assert (header.format, header.width, header.height) == ("jpeg", 451, 300)  # scikit-image's chelsea


def test_odd_files_are_decoded_by_pil_and_agree_with_the_host_recipe(tree):
    """Each odd file through the C++ pipeline's eval recipe equals PIL's decoding (orientation
    applied, CMYK converted, 16 bits reduced) through the host recipe."""
    odd = sorted((tree / "class0").glob("odd_*"))
    files = EncodedFiles([(path, 0) for path in odd])
    dataset = imagefolder_dataset(files, CONFIG, batch_size=len(odd), workers=2)
    images, _ = next(dataset.create_tuple_iterator(output_numpy=True))
    expected = np.stack([preprocess_image(load_image(path), CONFIG) for path in odd])
    np.testing.assert_allclose(images, expected, atol=1e-5)
    assert sorted(files.through_pil) == [str(path) for path in odd]


def test_bad_files_are_replaced_in_training_left_out_of_evaluation_and_named_once(tree, tmp_path, caplog):
    import shutil

    root = tmp_path / "bad"
    shutil.copytree(tree, root)
    whole = (root / "class1" / "0.jpg").read_bytes()
    (root / "class1" / "cut.jpg").write_bytes(whole[:len(whole) // 2])
    (root / "class1" / "text.jpg").write_bytes(b"not a picture\n" * 20)
    Image.new("RGB", (10_000, 20)).save(root / "class1" / "strip.png")
    data = FolderData(root, CONFIG, batch_size=4, workers=2)
    with caplog.at_level(logging.WARNING, logger="network_expansion"):
        batches = list(data.batches(0, 0)) + list(data.batches(1, 0))
    assert len(batches) == 2 * len(data) == 2 * (len(data.folder) // 4)
    assert sorted(name.split("/")[-1] for name in data.files.bad) == ["cut.jpg", "strip.png", "text.jpg"]
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
    assert len(skipped) == 3  # once per file, not once per epoch
    assert any("cut.jpg: a JPEG cut short" in line for line in skipped)
    evaluated = sum(len(labels) for _, labels in data.evaluation_batches())
    assert evaluated == len(data.folder) - 3  # an evaluation counts each readable image once, and no other
    assert sorted(data.evaluated_files.bad) == sorted(data.files.bad)


def test_a_resumed_epoch_sees_the_same_crops_and_mixes(tree):
    data = FolderData(tree, CONFIG, batch_size=4, workers=2)
    mix = BatchTargets(2, TrainConfig(mixup=0.8, cutmix=1.0, seed=5), epoch=3)
    whole = [[part.asnumpy() if hasattr(part, "asnumpy") else part for part in batch]
             for batch in data.batches(3, 5, mix=mix)]
    resumed = [[part.asnumpy() if hasattr(part, "asnumpy") else part for part in batch]
               for batch in data.batches(3, 5, start=2, mix=mix)]
    assert len(resumed) == len(whole) - 2
    for a, b in zip(whole[2:], resumed):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    other = next(iter(data.batches(4, 5)))[0].asnumpy()
    assert not np.array_equal(other, whole[0][0])  # another epoch, other crops


def test_mixup_in_the_pipeline_is_the_recipes_mixup_of_the_same_batch(tree):
    """The pipeline's workers mix each batch as `soft_targets` would on the host, drawn from
    (seed, epoch, batch): the same inputs and targets."""
    data = FolderData(tree, CONFIG, batch_size=4, workers=2)
    mix = BatchTargets(2, TrainConfig(mixup=0.8, cutmix=1.0, label_smoothing=0.1, seed=1), epoch=0)
    plain = list(data.batches(0, 1))
    mixed = list(data.batches(0, 1, mix=mix))
    for b, ((images, labels), (inputs, targets, mixed_labels)) in enumerate(zip(plain, mixed)):
        expected_inputs, expected_targets = mix(images.asnumpy(), labels, b)
        np.testing.assert_allclose(inputs.asnumpy(), expected_inputs, atol=1e-6)
        np.testing.assert_allclose(targets.asnumpy(), expected_targets, atol=1e-7)
        assert np.array_equal(mixed_labels, labels)
    assert isinstance(mixed[0][0], ms.Tensor)  # handed on without a host copy


@pytest.mark.parametrize("device", ["GPU", "Ascend"])
def test_a_faked_device_trains_from_folders_in_float16_with_mixup_and_growths(tree, device, fake_device):
    """The device reported as GPU or Ascend: plain forms, float16 with its loss scale, the C++
    pipeline with mixup/cutmix in its workers, a growth in depth and image size; the run
    completes on the CPU."""
    seen = fake_device(device)  # the forms the package's graphs apply
    model = VisionTransformer(ViTConfig(**{**SMALL, "image_size": 16, "patch_size": 8, "num_classes": 2}, depth=1))
    config = TrainConfig(epochs=2, schedule="1@16,2@32", warmup_epochs=1, mixup=0.8, cutmix=1.0,
                         precision="float16", ema_decay=0.9)
    trainer = folder_trainer(model, tree, tree, config, batch_size=8, progress=False)
    history = trainer.fit()
    assert [r["depth"] for r in history.epochs] == [1, 2] and np.isfinite(history.final["loss"])
    assert trainer.model.config.image_size == 32 and trainer.train_data.image_size == 32  # the pipeline grew too
    assert seen == [] and trainer.model.precision == "float16"
    assert all("loss_scale" in r for r in history.epochs)
