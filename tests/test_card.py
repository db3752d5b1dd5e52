"""The hub card: parsed into typed fields, validated as the hub's validator does."""

import pytest
from conftest import REPO

from network_expansion import CardError, load_card, model_card, validate_card
from network_expansion.card import CARD_UID

OUR_CARD = REPO / "assets" / f"{CARD_UID}.md"
PUBLISHED_CARD = REPO / "assets" / "published" / "NetworkExpansion.md"


def test_our_card_passes_every_offline_rule_of_the_hub_validator():
    assert validate_card(OUR_CARD) == []


def test_the_published_card_is_reported_invalid_with_every_reason():
    assert validate_card(PUBLISHED_CARD) == [
        "the header is not valid YAML: mapping values are not allowed here (header line 17, column 19)",
        "missing required field 'repo-link' (found 'vit-repo-link': rename it to 'repo-link')",
        "'accuracy' is 'vit-base: 81.5': expected a number",
        "'train-dataset' is 'imagenet2012': expected one of imagenet, coco, cifar10, cifar100, WMT, "
        "zh-wiki, Gigaword corpus, captcha 0.1.1, criteo, voc2007, cn-wiki, openimage, Oxford-IIIT Pet",
        "'accuracy' is 'vit-base: 81.5': no value but repo-link and asset may contain ':'",
        "'vit-repo-link' is 'https://gitee.com/mindspore/models/tree/master/official/cv/VIT': "
        "no value but repo-link and asset may contain ':'",
        "asset 1 is missing 'asset-sha256'",
    ]


def test_loading_the_published_card_raises_card_error_listing_all_problems():
    with pytest.raises(CardError) as caught:
        load_card(PUBLISHED_CARD)
    assert len(caught.value.problems) == 7
    assert "7 problem(s)" in str(caught.value) and "asset-sha256" in str(caught.value)


def test_our_card_keeps_the_published_values_in_typed_fields():
    card = model_card()
    assert card.model_name == "NetworkExpansion"
    assert card.uid == "noahsark/gpu/1.8/networkexpansion_v1.0_imagenet2012"
    assert card.short_alias == "noahsark/NetworkExpansion"
    assert card.fine_tunable is True and card.input_shape == (224, 224, 3) and card.input_size == 224
    assert (card.model_version, card.mindspore_version, card.update_time) == ("1.0", "1.8", "2023-3-8")
    assert card.accuracy == 81.5 and card.extra["accuracy-backbone"] == "vit-base"
    assert card.train_dataset == "imagenet" and card.extra["train-dataset-version"] == "imagenet2012"
    assert card.num_classes == 1001
    assert card.checkpoint.link == ("https://download.mindspore.cn/models/r1.8/depth_expansion_vit_base_"
                                    "gpu_v180_imagenet2012_research_cv_top1acc81.5.ckpt")
    assert card.checkpoint.file_name.endswith("top1acc81.5.ckpt")
    assert card.checkpoint.sha256 == ""  # not published; not invented
    assert "official/cv/VIT" in card.body  # the published vit-repo-link, kept in the body
    assert card.package_folder == "NetworkExpansion"


def test_repo_link_is_under_a_prefix_the_hub_client_trusts():
    assert model_card().repo_link.startswith("https://gitee.com/mindspore/models/tree/")


def _card(tmp_path, header, body="text"):
    path = tmp_path / "card.md"
    path.write_text(f"# T\n\n---\n{header}\n---\n{body}\n", encoding="utf-8")
    return path


def _valid_header(**changes):
    text = OUR_CARD.read_text(encoding="utf-8").split("---")[1]
    lines = []
    for line in text.splitlines():
        key = line.split(":", 1)[0]
        if key in changes:
            if changes[key] is None:
                continue
            line = f"{key}: {changes[key]}"
        lines.append(line)
    return "\n".join(lines)


@pytest.mark.parametrize("changes,problem", [
    ({"fine-tunable": "yes please"}, "'fine-tunable' is 'yes please': expected True or False"),
    ({"input-shape": "[224, x, 3]"}, "'input-shape' is [224, 'x', 3]: expected a list of positive integers"),
    ({"module-type": "cv-classification-extra"}, "'module-type' is 'cv-classification-extra'"),
    ({"used-for": "inference, dreaming"}, "'used-for' is 'inference, dreaming'"),
    ({"infer-backend": "tpu"}, "'infer-backend' is 'tpu': expected one of cpu, gpu, ascend"),
    ({"repo-link": "https://example.com/a/b/tree/master/c"}, "expected a link starting with one of"),
    ({"repo-link": "https://gitee.com/mindspore/models"}, "expected a link like https://<host>.com"),
    ({"license": None}, "missing required field 'license'"),
])
def test_each_broken_rule_is_named(tmp_path, changes, problem):
    problems = validate_card(_card(tmp_path, _valid_header(**changes)))
    assert any(problem in p for p in problems), problems


def test_a_card_without_header_or_file_raises_card_error(tmp_path):
    headerless = tmp_path / "no-header.md"
    headerless.write_text("# Just a title\n")
    with pytest.raises(CardError, match="no YAML header"):
        load_card(headerless)
    with pytest.raises(CardError, match="cannot read the card: No such file"):
        load_card(tmp_path / "missing.md")
    binary = tmp_path / "binary.md"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CardError, match="not UTF-8"):
        load_card(binary)
