"""Classifier.predict and evaluate, on hand-wired tiny networks whose answers are known."""

import json

import mindspore as ms
import numpy as np
import pytest
from conftest import color_image, color_rigged_network
from PIL import Image

from network_expansion import Classifier, ImageError, PrecisionError, evaluate, save_weights
from network_expansion.cli import main
from network_expansion.predict import imagenet_class_names

EGYPTIAN_CAT, TENCH, GOLDFISH = 285, 0, 1


@pytest.fixture(scope="module")
def imagenet_rig():
    """1001 outputs like the released head: red -> Egyptian cat, green -> tench, blue ->
    goldfish, and the untrained output 1000 given the largest bias of all."""
    network = color_rigged_network(channel_classes=(EGYPTIAN_CAT, TENCH, GOLDFISH), num_classes=1001)
    bias = np.zeros(1001, np.float32)
    bias[[10, 20, 30]] = [0.3, 0.2, 0.1]  # a fixed order for the places after the first
    bias[1000] = 50.0
    network.head[0].bias.set_data(ms.Tensor(bias))
    return Classifier(network, batch_size=4)


def test_the_shipped_class_list_has_the_1000_imagenet_classes_in_wordnet_order():
    names = imagenet_class_names()
    assert len(names) == 1000
    assert (names[0], names[1], names[285], names[999]) == ("tench", "goldfish", "Egyptian cat", "toilet tissue")


def test_predict_gives_deterministic_topk_with_imagenet_labels_and_probabilities_summing_to_one(imagenet_rig):
    red = color_image(0)
    first = imagenet_rig.predict(red, topk=4)
    again = imagenet_rig.predict(red, topk=4)
    assert first == again
    assert first.labels[0] == "Egyptian cat" and first.indices[0] == EGYPTIAN_CAT
    assert first.indices[1:] == [10, 20, 30]
    assert first.probabilities == sorted(first.probabilities, reverse=True)
    assert 1000 not in first.indices  # the zoo's unused output is dropped
    full = imagenet_rig.probabilities(np.zeros((1, 3, 32, 32), np.float32))
    assert full.shape == (1, 1000) and abs(full.sum() - 1) < 1e-5


def test_predict_accepts_paths_pil_images_and_arrays(imagenet_rig, tmp_path):
    Image.fromarray(color_image(1)).save(tmp_path / "green.png")
    results = imagenet_rig.predict([str(tmp_path / "green.png"), Image.fromarray(color_image(2)), color_image(0)],
                                   topk=1)
    assert [r.labels[0] for r in results] == ["tench", "goldfish", "Egyptian cat"]


def test_a_batch_with_a_bad_file_returns_results_for_the_others(imagenet_rig, tmp_path):
    Image.fromarray(color_image(2)).save(tmp_path / "blue.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    results = imagenet_rig.predict([str(tmp_path / "broken.jpg"), str(tmp_path / "blue.jpg"),
                                    str(tmp_path / "missing.jpg")], topk=2)
    assert [r.ok for r in results] == [False, True, False]
    assert "broken.jpg: not an image Pillow can read" in results[0].error
    assert results[1].labels[0] == "goldfish"
    assert "missing.jpg: no such file" in results[2].error


def test_a_single_bad_input_raises(imagenet_rig, tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        imagenet_rig.predict(str(tmp_path / "missing.jpg"))


def test_a_float16_classifier_leaves_the_callers_network_in_float32():
    network = color_rigged_network()
    classifier = Classifier(network, precision="float16", batch_size=2)
    assert classifier.network is not network and classifier.predict(color_image(0)).indices[0] == 0
    assert all(p.dtype == ms.float32 for p in network.get_parameters())
    assert classifier.network.mixed_precision_type != network.mixed_precision_type  # only the copy is cast


def test_bfloat16_on_the_cpu_says_why_not():
    with pytest.raises(PrecisionError, match="no bfloat16 MatMul"):
        Classifier(color_rigged_network(), precision="bfloat16")


def _color_tree(root, per_class=4, channels=(0, 1, 2), names=("0_red", "1_green", "2_blue")):
    """Folders 0_red, 1_green, 2_blue (or `names`) holding images dominated by `channels` in that order."""
    for name, channel in zip(names, channels):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(color_image(channel, seed=10 * channel + i)).save(root / name / f"{i}.png")
    return root


def test_evaluate_reports_100_percent_on_a_tree_the_network_was_wired_to_get_right(tmp_path):
    result = evaluate(Classifier(color_rigged_network(), batch_size=4), _color_tree(tmp_path / "tree"),
                      progress=False)
    assert (result.top1, result.top5, result.count) == (1.0, None, 12)  # top-5 of 3 classes says nothing
    assert result.per_class == [("0_red", 4, 1.0), ("1_green", 4, 1.0), ("2_blue", 4, 1.0)]


def test_evaluate_reports_less_on_shuffled_labels_and_names_unreadable_files(tmp_path):
    root = _color_tree(tmp_path / "tree", channels=(0, 2, 1))  # green and blue images swapped
    (root / "0_red" / "damaged.png").write_bytes(b"\x89PNG broken")
    result = evaluate(Classifier(color_rigged_network(), batch_size=4), root, progress=False)
    assert result.top1 == pytest.approx(4 / 12) and result.count == 12
    assert [path.endswith("damaged.png") for path, _ in result.errors] == [True]


def test_predict_and_evaluate_commands(tmp_path, capsys):
    weights = save_weights(color_rigged_network(), tmp_path / "rig.ckpt")
    root = _color_tree(tmp_path / "tree")
    assert main(["predict", str(root / "0_red" / "0.png"), "--weights", str(weights), "--topk", "2", "--json"]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert line["source"].endswith("0.png") and line["indices"][0] == 0 and line["labels"][0] == "0"
    assert main(["evaluate", str(root), "--weights", str(weights), "--csv", str(tmp_path / "classes.csv")]) == 0
    out = capsys.readouterr().out
    assert "top-1 100.00%" in out
    assert (tmp_path / "classes.csv").read_text().splitlines()[1] == "0_red,4,1.000000"
    (tmp_path / "bad.jpg").write_bytes(b"")
    assert main(["predict", str(tmp_path / "bad.jpg"), str(root / "2_blue"), "--weights", str(weights)]) == 1
    captured = capsys.readouterr()
    assert "bad.jpg: the file is empty" in captured.err and "3.png" in captured.out


def test_one_classifier_serves_many_threads_with_the_same_answers(imagenet_rig):
    from concurrent.futures import ThreadPoolExecutor

    pictures = [color_image(i % 3, seed=i) for i in range(12)]
    sequential = [imagenet_rig.predict(p, topk=3) for p in pictures]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda p: imagenet_rig.predict(p, topk=3), pictures))
    assert threaded == sequential


def test_predict_stream_reads_lazily_and_keeps_order(imagenet_rig):
    pulled = []

    def camera():
        for i in range(10):
            pulled.append(i)
            yield color_image(i % 3, seed=i) if i != 5 else b"not an image"

    stream = imagenet_rig.predict_stream(camera(), topk=1)
    first = next(stream)
    assert first.labels == ["Egyptian cat"] and len(pulled) <= imagenet_rig.batch_size  # one batch in memory
    rest = list(stream)
    assert len(rest) == 9 and not rest[4].ok and "cannot read an image from a bytes" in rest[4].error
    assert [r.labels[0] for r in rest if r.ok][:2] == ["tench", "goldfish"]


def test_use_cores_binds_the_process_and_a_classifier_does_not():
    import os

    from network_expansion.predict import use_cores

    before = os.sched_getaffinity(0)
    try:
        Classifier(color_rigged_network())
        assert os.sched_getaffinity(0) == before   # no hidden change to the process
        use_cores(1)
        assert len(os.sched_getaffinity(0)) == 1
        with pytest.raises(ValueError, match="threads=999: this process may use 1 to"):
            use_cores(999)
    finally:
        os.sched_setaffinity(0, before)


# -- class folders scored against the right outputs (issue 10) ---------------------------

def test_a_subset_of_imagenet_folders_is_scored_by_wordnet_id_not_by_position(imagenet_rig, tmp_path):
    """Red pictures in the Egyptian cat's folder (n02124075), green in the tench's (n01440764):
    sorted position would send the cats to output 1 and score 0%."""
    root = _color_tree(tmp_path / "val", channels=(0, 1), names=("n02124075", "n01440764"))
    result = evaluate(imagenet_rig, root, progress=False)
    assert (result.top1, result.count) == (1.0, 8)


def test_folders_that_name_no_class_and_do_not_count_every_output_are_refused(imagenet_rig, tmp_path):
    from network_expansion import DataError

    root = _color_tree(tmp_path / "val", channels=(0, 1), names=("cats", "fish"))
    with pytest.raises(DataError, match=r"2 class folders \('cats', 'fish'\) cannot be matched to the network's "
                                        r"1000 outputs.*label map"):
        evaluate(imagenet_rig, root, progress=False)
    (tmp_path / "val" / "n01440764").mkdir()
    (tmp_path / "val" / "fish").rename(tmp_path / "val" / "n01440764" / "fish")
    with pytest.raises(DataError, match=r"1 of 2 class folders are not classes of the network: 'cats'"):
        evaluate(imagenet_rig, root, progress=False)


@pytest.mark.parametrize("text", ['{"cats": 285, "fish": 0}', "cats\t285\nfish 0\n"])
def test_a_label_map_file_maps_any_folder_names(imagenet_rig, tmp_path, text):
    root = _color_tree(tmp_path / "val", channels=(0, 1), names=("cats", "fish"))
    (tmp_path / "map.txt").write_text(text)
    assert evaluate(imagenet_rig, root, label_map=tmp_path / "map.txt", progress=False).top1 == 1.0


def test_a_model_trained_with_class_names_scores_a_subset_of_its_folders_by_name(tmp_path):
    network = color_rigged_network()
    network.class_names = ("red", "green", "blue")
    root = _color_tree(tmp_path / "val", channels=(2, 1), names=("blue", "green"))
    classifier = Classifier(network, batch_size=4)
    assert evaluate(classifier, root, progress=False).top1 == 1.0
    assert classifier.predict(color_image(2)).labels[0] == "blue"


def test_class_names_and_label_map_from_the_command_line(tmp_path, capsys):
    weights = save_weights(color_rigged_network(), tmp_path / "rig.ckpt")
    root = _color_tree(tmp_path / "val", channels=(2, 0), names=("sky", "fire"))
    (tmp_path / "names.txt").write_text("red\ngreen\nblue\n")
    (tmp_path / "map.tsv").write_text("sky\t2\nfire\t0\n")
    assert main(["predict", str(root / "sky" / "0.png"), "--weights", str(weights),
                 "--class-names", str(tmp_path / "names.txt"), "--topk", "1"]) == 0
    assert "blue (2)" in capsys.readouterr().out
    assert main(["evaluate", str(root), "--weights", str(weights), "--label-map", str(tmp_path / "map.tsv")]) == 0
    assert "top-1 100.00%" in capsys.readouterr().out
    assert main(["evaluate", str(root), "--weights", str(weights)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("network-expansion: error: 2 class folders") and "--label-map" in err


def test_a_classifier_says_it_is_compiling_before_its_first_prediction(caplog):
    import logging

    classifier = Classifier(color_rigged_network(), batch_size=2)
    with caplog.at_level(logging.INFO, logger="network_expansion"):
        classifier.predict([color_image(0), color_image(1)])
        classifier.predict(color_image(2))
    assert [m for m in caplog.messages if "compiling" in m] == [
        "compiling the network for batches of 2, preprocessing on the host (the first prediction waits for it) ..."]


def test_the_classifier_preprocesses_on_the_device_where_asked_or_where_there_is_one(monkeypatch):
    from conftest import SMALL
    from skimage import data

    from network_expansion import VisionTransformer, ViTConfig, cpu_forms

    network = VisionTransformer(ViTConfig(**{**SMALL, "image_size": 64, "patch_size": 16, "num_classes": 4}), seed=0)
    photos = [data.astronaut(), data.coffee(), data.chelsea()]
    host = Classifier(network, batch_size=4, preprocess="host")
    device = Classifier(network, batch_size=4, preprocess="device")
    assert (host.preprocessing, device.preprocessing) == ("host", "device")
    for a, b in zip(host.predict(photos), device.predict(photos)):
        assert a.indices == b.indices
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
    assert device._on_device is not None and host._on_device is None
    assert Classifier(network, preprocess="auto").preprocessing == "host"  # the CPU: the same cores either way
    monkeypatch.setattr(cpu_forms, "device_target", lambda: "GPU")
    assert Classifier(network, preprocess="auto").preprocessing == "device"
    with pytest.raises(Exception, match="preprocess='gpu': expected one of auto, host, device"):
        Classifier(network, preprocess="gpu")
