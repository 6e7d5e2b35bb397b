"""Fine-tuning advises a resize when the corrected nuclei are far from the sizes the model learned."""

from __future__ import annotations

import dataclasses

import numpy as np

from napari_unet.core.predict.object_size import METADATA_KEY
from napari_unet.core.train.fine_tune import iter_train
from napari_unet.core.train.outcome import notice_of
from napari_unet.core.train.preparation import size_advice, size_advice_text
from tests.core.test_training import FAST, dataset, drain, tiny_bundle

LEARNED = {METADATA_KEY: {"low": 12.0, "median": 20.0, "high": 40.0, "images": 10}}


def disc_labels(diameters: list[float], shape: tuple[int, int] = (400, 400)) -> np.ndarray:
    """Labels of discs of the given diameters on a row-major grid, none touching the border."""
    labels = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    step = shape[1] // 4
    for index, diameter in enumerate(diameters):
        cy, cx = step // 2 + step * (index // 4), step // 2 + step * (index % 4)
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= (diameter / 2) ** 2] = index + 1
    return labels


def everywhere(labels: np.ndarray) -> np.ndarray:
    return np.ones(labels.shape, bool)


def test_large_corrected_nuclei_get_the_resize_that_brings_them_into_the_learned_range():
    labels = disc_labels([80.0] * 5)
    advice = size_advice(LEARNED, [labels], [everywhere(labels)])
    assert advice is not None and advice["nuclei"] == 5 and abs(advice["diameter"] - 80) < 1.5
    assert advice["factor"] == round(40.0 / advice["diameter"], 2)
    small = disc_labels([5.0] * 4)
    assert size_advice(LEARNED, [small], [everywhere(small)])["factor"] > 2
    text = size_advice_text(advice)
    assert "80 px across (median of 5), larger than the 12-40 px nuclei" in text and "resized by 0.5" in text


def test_no_advice_within_the_range_without_a_record_or_with_too_few_counted_nuclei():
    within, large = disc_labels([30.0] * 6), disc_labels([80.0] * 6)
    assert size_advice(LEARNED, [within], [everywhere(within)]) is None
    assert size_advice({}, [large], [everywhere(large)]) is None, "no recorded range, no advice"
    first_row = np.zeros(large.shape, bool)
    first_row[:100] = True  # the annotated area holds 4 of the 6 nuclei
    assert size_advice(LEARNED, [large], [first_row])["nuclei"] == 4
    first_two = np.zeros(large.shape, bool)
    first_two[:100, :200] = True
    assert size_advice(LEARNED, [large], [first_two]) is None, "2 counted nuclei are too few to judge"


def test_a_fine_tune_on_nuclei_larger_than_the_model_learned_says_so_and_records_it():
    bundle = tiny_bundle()
    bundle.metadata[METADATA_KEY] = {"low": 3.0, "median": 4.0, "high": 5.0, "images": 4}  # the discs are 8-14 px
    images, labels = dataset(2)
    result, events = drain(iter_train(bundle, images, labels, dataclasses.replace(FAST, max_steps=2)))
    advice = result.lineage["size_advice"]
    assert 8 <= advice["diameter"] <= 14 and advice["factor"] == round(5.0 / advice["diameter"], 2)
    assert any(event.message.startswith(f"the corrected nuclei are {advice['diameter']:.0f} px") for event in events)
    assert notice_of(result).endswith(f" Note: {size_advice_text(advice)}.")
    assert notice_of(result).count("the corrected nuclei are") == 1, "the advice is said once, as a note"
    unvalidated = dataclasses.replace(FAST, max_steps=2, val_fraction=0.0)
    result, _ = drain(iter_train(bundle, images, labels, unvalidated))
    assert notice_of(result).startswith("no held-out corrections to score it on (no validation possible: val_fraction")
    assert notice_of(result).count("the corrected nuclei are") == 1
    result, _ = drain(iter_train(tiny_bundle(), images, labels, dataclasses.replace(FAST, max_steps=2)))
    assert "size_advice" not in result.lineage and "Note:" not in notice_of(result)
