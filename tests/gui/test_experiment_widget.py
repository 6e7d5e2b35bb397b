"""A folder as one experiment in real napari: segment, correct, save, Next, fine-tune, segment the rest, reopen."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from qtpy.QtCore import QTimer

from napari_unet._widgets import ExperimentWidget
from napari_unet._widgets._correct import apply_edit
from napari_unet._widgets._experiment import LABELS_LAYER
from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.experiment import STATE_DIR
from tests.gui.helpers import messages

pytestmark = pytest.mark.gui

TIMEOUT_MS = 180_000


def make_folder(folder: Path, count: int = 6) -> dict[str, np.ndarray]:
    """``count`` synthetic fluorescence images (TIFF) and a file of the user's; returns the true labels by name."""
    folder.mkdir()
    truths = {}
    for seed in range(count):
        image, truth = synthetic_nuclei((96, 96), n_nuclei=10, seed=40 + seed)
        tifffile.imwrite(folder / f"field_{seed:02d}.tif", image)
        truths[f"field_{seed:02d}.tif"] = truth
    (folder / "plate_layout.csv").write_text("well,condition\nA1,control\n")
    return truths


def snapshot_outside_state(folder: Path) -> dict[str, bytes]:
    """Every file of ``folder`` outside ``napari-unet/`` with its bytes."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file() and STATE_DIR not in path.relative_to(folder).parts
    }


def wait_for(qtbot, panel) -> None:
    """Wait until a job panel's worker ended and its finished handler ran."""
    qtbot.waitUntil(lambda: panel.worker is None, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: not panel.cancel_button.isEnabled(), timeout=TIMEOUT_MS)


class GapMeter:
    """Longest gap between ticks of a 10 ms Qt timer: how long the event loop was blocked."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._last = time.perf_counter()
        self.timer = QTimer()
        self.timer.timeout.connect(self._tick)
        self.timer.start(10)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.longest = max(self.longest, now - self._last)
        self._last = now


def test_a_folder_is_worked_through_and_comes_back_as_left(
    make_napari_viewer, qtbot, tiny_model, tmp_path, notifications, record_property
):
    folder = tmp_path / "plate-1"
    truths = make_folder(folder)
    before = snapshot_outside_state(folder)
    viewer = make_napari_viewer()
    widget = ExperimentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model.select(tiny_model)
    assert widget.open_folder(folder)
    assert widget.table.rowCount() == 6
    assert [widget.table.item(row, 1).text() for row in range(6)] == ["new"] * 6

    widget.next()  # the first image: not segmented yet, so it is segmented in the background
    wait_for(qtbot, widget.image_job)
    labels = viewer.layers[LABELS_LAYER]
    assert widget.experiment.records[0].status == "segmented" and labels.data.max() > 0

    assert apply_edit(labels, truths["field_00.tif"]) > 0  # the user's corrections, as painting makes them
    widget.save()
    first = widget.experiment.records[0]
    assert first.status == "corrected" and 0.0 <= first.prediction_ap50 < 1.0
    assert widget.table.item(0, 1).text() == "corrected"

    widget.next()
    wait_for(qtbot, widget.image_job)
    assert widget.current == 1 and widget.experiment.records[1].status == "segmented"
    assert not widget.train_job.busy, "no fine-tuning starts on its own unless asked"
    apply_edit(viewer.layers[LABELS_LAYER], truths["field_01.tif"])
    widget.next()  # moving on saves the edits of the shown image
    wait_for(qtbot, widget.image_job)
    assert widget.experiment.records[1].status == "corrected"
    assert any("Your edits of field_01.tif were saved" in m for m in messages(notifications, "info"))
    widget.show_image(0)
    widget.segment_current()  # segmenting a corrected image again never replaces its labels on screen
    wait_for(qtbot, widget.image_job)
    np.testing.assert_array_equal(viewer.layers[LABELS_LAYER].data, truths["field_00.tif"])
    assert widget.experiment.records[0].status == "corrected"

    widget.budget.setValue(5)
    meter = GapMeter()
    widget.auto_fine_tune.setChecked(True)
    widget.show_image(1)
    widget.save()  # saving starts a fine-tuning on the saved images
    assert widget.train_job.busy
    assert widget.segment_rest() is not None  # a batch beside the fine-tuning
    wait_for(qtbot, widget.train_job)
    wait_for(qtbot, widget.jobs)
    meter.timer.stop()
    record_property("longest_event_gap_s", round(meter.longest, 3))
    print(f"longest gap in event processing while fine-tuning and segmenting: {meter.longest:.3f} s")
    result = widget.last_result
    assert result is not None and result.steps > 0
    if result.saved is not None:
        assert widget.experiment.model == result.saved.spec == widget.model.currentText()
    else:
        assert any(m.startswith("No new model version saved") for m in messages(notifications, "info"))
    statuses = [r.status for r in widget.experiment.records]
    assert statuses == ["corrected", "corrected"] + ["segmented"] * 4
    assert widget.experiment.learning_curve()[0][1] == "field_00.tif"
    viewer.close()

    again = ExperimentWidget(make_napari_viewer())
    assert again.open_folder(folder)
    assert [again.table.item(row, 1).text() for row in range(6)] == statuses
    np.testing.assert_array_equal(again.experiment.saved_labels(0), truths["field_00.tif"])
    np.testing.assert_array_equal(again.experiment.saved_labels(1), truths["field_01.tif"])
    assert again.suggestion.text().startswith("Correct next: field_0")
    assert snapshot_outside_state(folder) == before, "nothing outside napari-unet/ was written or changed"


def test_a_bad_folder_is_a_clear_notice(make_napari_viewer, tmp_path, notifications):
    widget = ExperimentWidget(make_napari_viewer())
    assert not widget.open_folder(tmp_path / "missing")
    assert not widget.open_folder("")
    errors = messages(notifications, "error") + messages(notifications, "warning")
    assert any("not an existing folder" in m for m in errors) and any("choose a folder" in m for m in errors)


def test_moving_on_while_an_image_is_segmented_segments_the_next_one_after_it(
    make_napari_viewer, qtbot, tiny_model, tmp_path, notifications
):
    folder = tmp_path / "plate-2"
    make_folder(folder, count=3)
    widget = ExperimentWidget(make_napari_viewer())
    widget.model.select(tiny_model)
    assert widget.open_folder(folder)
    widget.next()
    widget.next()  # before the first image's segmentation ended
    qtbot.waitUntil(lambda: widget.experiment.records[1].status == "segmented", timeout=TIMEOUT_MS)
    wait_for(qtbot, widget.image_job)
    assert [r.status for r in widget.experiment.records] == ["segmented", "segmented", "new"]
    assert widget.current == 1 and widget.viewer.layers[LABELS_LAYER].data.max() > 0
    assert not messages(notifications, "error") and not messages(notifications, "warning")
