"""Label alignment, preprocessing and the GoogLeNet path through the stand-in model."""

import numpy as np
import pytest
from PIL import Image

from concepts_extraction.aggregate import top_concepts
from concepts_extraction.decode import load_image
from concepts_extraction.labels import load_labels
from concepts_extraction.models import (
    PREPROCESSING,
    load_classifier,
    probabilities_from_logits,
)

from standin import GOLDFISH, TABBY


def test_labels_standard_order():
    labels = load_labels()

    assert len(labels) == 1000
    assert labels.loc[0, "wnid"] == "n01440764"
    assert labels.loc[281, "wnid"] == "n02123045"
    assert labels.loc[281, "concept"] == "tabby, tabby cat"
    assert labels.loc[967, "concept"] == "espresso"
    assert list(labels["wnid"]) == sorted(labels["wnid"])


def test_logits_1001_drop_background():
    logits = np.zeros((1, 1001))
    logits[0, 0] = 50.0
    logits[0, 1 + TABBY] = 5.0

    probabilities = probabilities_from_logits(logits)

    assert probabilities.shape == (1, 1000)
    assert probabilities[0].argmax() == TABBY
    assert probabilities[0].sum() == pytest.approx(1.0, abs=1e-5)


def test_logits_1000_unshifted():
    logits = np.zeros((1, 1000))
    logits[0, TABBY] = 5.0

    assert probabilities_from_logits(logits)[0].argmax() == TABBY


def test_logits_wrong_width():
    with pytest.raises(ValueError, match=r"Received: \(2, 999\)"):
        probabilities_from_logits(np.zeros((2, 999)))


def test_top_concepts_order_and_names():
    probabilities = np.zeros((1, 1000), dtype=np.float32)
    probabilities[0, [TABBY, 967, 3]] = [0.5, 0.3, 0.2]

    (concepts,) = top_concepts(probabilities, 3)

    assert [c["wnid"] for c in concepts] == ["n02123045", "n07920052", "n01491361"]
    assert [c["probability"] for c in concepts] == pytest.approx([0.5, 0.3, 0.2])


def test_preprocessing_central_crop(tmp_path):
    # A white frame 1/16 wide on each side falls outside the 87.5% central crop.
    array = np.zeros((320, 320, 3), dtype=np.uint8)
    array[:20], array[-20:], array[:, :20], array[:, -20:] = 255, 255, 255, 255
    array[20:-20, 20:-20] = (10, 200, 30)
    Image.fromarray(array).save(tmp_path / "frame.png")

    decoded, info = load_image(
        tmp_path / "frame.png", **vars(PREPROCESSING["googlenet"])
    )

    assert decoded.shape == (224, 224, 3)
    assert decoded.dtype == np.uint8
    assert info.mode == "RGB"
    assert np.abs(decoded.astype(int) - (10, 200, 30)).max() <= 2


def test_preprocessing_aspect_ratio_squashed(tmp_path):
    Image.new("RGB", (640, 480), (255, 0, 0)).save(tmp_path / "wide.jpg")

    decoded, _ = load_image(tmp_path / "wide.jpg")

    assert decoded.shape == (224, 224, 3)


def test_googlenet_standin_labels_aligned(standin_googlenet):
    classifier = load_classifier("googlenet", standin_googlenet)
    dark = np.zeros((1, 224, 224, 3), dtype=np.uint8)
    bright = np.full((1, 224, 224, 3), 255, dtype=np.uint8)

    probabilities = classifier.predict(np.concatenate([dark, bright]))
    dark_top, bright_top = top_concepts(probabilities, 1)

    assert dark_top[0]["wnid"] == "n02123045"
    assert bright_top[0]["concept"] == load_labels().loc[GOLDFISH, "concept"]
    # The stand-in's largest logit is the background; it must not leak in.
    assert probabilities.sum(axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)


def test_googlenet_input_scaled_to_unit(standin_googlenet):
    classifier = load_classifier("googlenet", standin_googlenet)
    middle = np.full((1, 224, 224, 3), 128, dtype=np.uint8)

    probabilities = classifier.predict(middle)[0]

    # With inputs in [0, 1], brightness 0.5 gives equal tabby and goldfish logits.
    assert probabilities[TABBY] == pytest.approx(probabilities[GOLDFISH], rel=0.05)


def test_load_classifier_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="download_googlenet"):
        load_classifier("googlenet", tmp_path / "absent")


def test_load_classifier_damaged_copy(tmp_path):
    damaged = tmp_path / "googlenet"
    damaged.mkdir()
    (damaged / "saved_model.pb").write_bytes(b"not a protocol buffer")

    with pytest.raises(RuntimeError, match="Delete it, so that the next run"):
        load_classifier("googlenet", damaged)


def test_load_classifier_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="Received: 'alexnet'"):
        load_classifier("alexnet", tmp_path)
