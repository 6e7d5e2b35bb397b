"""An experiment folder: statuses, saved labels, learning curve and suggestions, written only in napari-unet/."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_unet.core.errors import Cancelled, UserInputError
from napari_unet.core.experiment import (
    EXPORT_MARKER,
    LABELS_SUFFIX,
    PREDICTION_SUFFIX,
    STATE_DIR,
    STATE_FILE,
    Experiment,
    iter_export_experiment,
    iter_segment_experiment,
    uncertainty,
)
from tests.core.test_training import discs, drain, tiny_bundle


def files_under(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` with its bytes (relative names)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def folder(tmp_path) -> Path:
    """Three images (two grey TIFFs, one RGB TIFF) and a user's own notes file."""
    folder = tmp_path / "experiment"
    folder.mkdir()
    for seed in range(3):
        image, _ = discs(seed, shape=(64, 64), n=6, rgb=seed == 2)
        tifffile.imwrite(folder / f"image_{seed}.tif", image)
    (folder / "notes.txt").write_text("the user's own file")
    return folder


def confident(shape: tuple[int, int], sure: bool) -> np.ndarray:
    """Probabilities ``(3, Y, X)``: a nucleus in the middle, sure of itself or not."""
    probabilities = np.zeros((3, *shape), np.float32)
    probabilities[0] = 1.0
    middle = (slice(20, 40), slice(20, 40))
    probabilities[:, middle[0], middle[1]] = np.array([0.0, 1.0, 0.0] if sure else [0.3, 0.4, 0.3])[:, None, None]
    return probabilities


def test_opening_a_folder_lists_its_images_as_new_and_writes_nothing(folder):
    before = files_under(folder)
    experiment = Experiment.open(folder)
    assert [r.name for r in experiment.records] == ["image_0.tif", "image_1.tif", "image_2.tif"]
    assert {r.status for r in experiment.records} == {"new"}
    assert experiment.read_image(2).shape == (64, 64, 3)
    assert files_under(folder) == before


def test_predictions_and_saved_labels_come_back_when_the_folder_is_reopened(folder):
    before = files_under(folder)
    experiment = Experiment.open(folder)
    _, truth = discs(0, shape=(64, 64), n=6)
    prediction = truth.copy()
    prediction[prediction == 1] = 0  # the model missed one nucleus
    experiment.record_prediction(0, prediction, confident((64, 64), sure=False), "default")
    experiment.record_prediction(1, truth, confident((64, 64), sure=True), "default")
    assert experiment.records[0].status == "segmented" and experiment.records[0].objects == 5
    corrected = experiment.record_labels(0, truth)
    reviewed = experiment.record_labels(1, truth)
    assert (corrected.status, reviewed.status) == ("corrected", "reviewed")
    assert corrected.prediction_ap50 == pytest.approx(5 / 6) and reviewed.prediction_ap50 == 1.0
    assert (corrected.saved_order, reviewed.saved_order) == (1, 2)
    experiment.record_labels(0, truth)  # saved again: keeps its place in the learning curve
    assert experiment.learning_curve() == [(1, "image_0.tif", pytest.approx(5 / 6)), (2, "image_1.tif", 1.0)]

    again = Experiment.open(folder)
    assert [r.status for r in again.records] == ["corrected", "reviewed", "new"]
    np.testing.assert_array_equal(again.saved_labels(0), truth)
    np.testing.assert_array_equal(again.prediction(0), prediction)
    images, labels, previous = again.training_data()
    assert len(images) == 2 and previous[0] is not None
    np.testing.assert_array_equal(labels[1], truth)
    changed = {name for name, data in files_under(folder).items() if before.get(name) != data}
    assert changed and all(name.startswith(f"{STATE_DIR}/") for name in changed)
    assert {name for name in before} <= set(files_under(folder))  # nothing of the user's went away


def test_a_file_napari_unet_did_not_write_is_never_replaced(folder):
    state = folder / STATE_DIR
    state.mkdir()
    theirs = state / f"image_0.tif{LABELS_SUFFIX}"
    theirs.write_bytes(b"someone else's labels")
    experiment = Experiment.open(folder)
    with pytest.raises(UserInputError, match="did not write"):
        experiment.record_labels(0, np.ones((64, 64), np.uint16))
    assert theirs.read_bytes() == b"someone else's labels"

    (state / STATE_FILE).write_text(json.dumps({"images": []}))  # a JSON file napari-unet did not write
    with pytest.raises(UserInputError, match="did not write"):
        Experiment.open(folder)
    assert json.loads((state / STATE_FILE).read_text()) == {"images": []}


def test_a_damaged_record_file_is_reported_not_overwritten(folder):
    (folder / STATE_DIR).mkdir()
    (folder / STATE_DIR / STATE_FILE).write_text("{not json")
    with pytest.raises(UserInputError, match="move it away"):
        Experiment.open(folder)


def test_an_empty_folder_or_a_stack_is_a_clear_error(tmp_path, folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserInputError, match="holds no image"):
        Experiment.open(empty)
    tifffile.imwrite(folder / "stack.tif", np.zeros((5, 32, 32), np.uint8))
    experiment = Experiment.open(folder)
    with pytest.raises(UserInputError, match="2D images"):
        experiment.read_image(experiment.index_of("stack.tif"))


def test_uncertainty_is_zero_when_sure_and_grows_when_unsure():
    assert uncertainty(confident((64, 64), sure=True)) == pytest.approx(0.0, abs=1e-5)
    assert 0.9 < uncertainty(confident((64, 64), sure=False)) <= 1.0
    background = np.zeros((3, 8, 8), np.float32)
    background[0] = 1
    assert uncertainty(background) == 0.0


def test_suggestions_put_the_most_uncertain_segmented_image_first(folder):
    experiment = Experiment.open(folder)
    empty = np.zeros((64, 64), np.uint16)
    experiment.record_prediction(0, empty, confident((64, 64), sure=True), "default")
    experiment.record_prediction(1, empty, confident((64, 64), sure=False), "default")
    order = experiment.suggestions()
    assert [index for index, _ in order] == [1, 0, 2]
    assert "unsure" in order[0][1] and order[2][1] == "not segmented yet"
    experiment.record_labels(1, empty)
    assert [index for index, _ in experiment.suggestions()] == [0, 2]


def test_segmenting_the_experiment_saves_each_prediction_and_stops_when_cancelled(folder):
    experiment = Experiment.open(folder)
    bundle = tiny_bundle()
    done, events = drain(iter_segment_experiment(experiment, bundle, [0, 2]))
    assert done == [0, 2] and len(events) == 2
    assert [r.status for r in experiment.records] == ["segmented", "new", "segmented"]
    assert (folder / STATE_DIR / f"image_2.tif{PREDICTION_SUFFIX}").is_file()
    assert experiment.records[0].model == bundle.spec and experiment.records[0].uncertainty is not None
    with pytest.raises(Cancelled):
        drain(iter_segment_experiment(experiment, bundle, [1], cancel=lambda: True))
    assert experiment.records[1].status == "new"


def test_exporting_an_experiment_writes_labels_measurements_and_a_summary(folder, tmp_path):
    experiment = Experiment.open(folder)
    _, truth = discs(0, shape=(64, 64), n=6)
    experiment.record_prediction(0, truth, None, "default")
    experiment.record_labels(1, truth)
    out = tmp_path / "export"
    done, events = drain(iter_export_experiment(experiment, out))
    assert done == out and len(events) == 2
    assert sorted(p.name for p in out.iterdir()) == [
        EXPORT_MARKER,
        "image_0_labels.tif",
        "image_0_measurements.csv",
        "image_1_labels.tif",
        "image_1_measurements.csv",
        "summary.csv",
    ]
    np.testing.assert_array_equal(tifffile.imread(out / "image_1_labels.tif"), truth)
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("image,status,labels,objects")
    assert summary[1].startswith("image_0.tif,segmented,prediction,6,") and "saved by the user" in summary[2]
    with pytest.raises(UserInputError, match="exists"):
        drain(iter_export_experiment(experiment, out))
    drain(iter_export_experiment(experiment, out, overwrite=True))  # an earlier export may be replaced
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "keep.txt").write_text("mine")
    with pytest.raises(UserInputError, match="did not write"):
        drain(iter_export_experiment(experiment, theirs, overwrite=True))
    assert (theirs / "keep.txt").read_text() == "mine"
