from __future__ import annotations

import json

import numpy as np
import pytest
import roifile
import tifffile
import zarr

from napari_unet._widgets import CompareWidget, ExportWidget, SegmentWidget
from napari_unet.core.models.registry import model_postprocess
from tests.gui.helpers import messages, wait_until_idle

pytestmark = pytest.mark.gui


@pytest.fixture
def exporter(make_napari_viewer, sample, tmp_path):
    viewer = make_napari_viewer()
    widget = ExportWidget(viewer)
    viewer.window.add_dock_widget(widget)
    viewer.add_image(sample[0], name="nuclei")
    viewer.add_labels(sample[1].astype(np.int32), name="truth")
    viewer.add_labels((sample[1] > 0).astype(np.int32), name="mask")
    widget.folder.setText(str(tmp_path / "export"))
    return viewer, widget


def choose(widget: ExportWidget, *formats: str) -> None:
    for key, box in widget.format_boxes.items():
        box.setChecked(key in formats)


def test_export_every_format_reads_back(exporter, qtbot, sample, tmp_path, notifications):
    _viewer, widget = exporter
    widget.select_all_layers()
    assert widget.chosen_layer_names() == ["truth", "mask"]
    widget.image.set_layer("nuclei")
    choose(widget, "tif", "png", "npy", "zarr", "roi", "csv")
    widget.provenance.setChecked(True)
    widget.export()
    wait_until_idle(qtbot, widget)
    out = tmp_path / "export"
    truth = sample[1]
    np.testing.assert_array_equal(tifffile.imread(out / "truth.tif"), truth)
    np.testing.assert_array_equal(np.load(out / "mask.npy"), truth > 0)
    from napari_unet.core.io import read_labels

    np.testing.assert_array_equal(read_labels(out / "truth.png"), truth)
    np.testing.assert_array_equal(read_labels(out / "truth.ome.zarr"), truth)
    assert zarr.open_group(str(out / "truth.ome.zarr"), mode="r") is not None
    rois = roifile.roiread(out / "truth_rois.zip")
    assert len(rois) == len(np.unique(truth)) - 1
    csv_lines = (out / "truth_measurements.csv").read_text().strip().splitlines()
    assert len(csv_lines) == len(np.unique(truth))  # header + one row per object
    assert "mean_intensity" in csv_lines[0]
    record = json.loads((out / "truth.tif.provenance.json").read_text())
    assert record["method"] == "manual" and record["settings"]["layer"] == "truth"
    assert len(widget.last_written) == 2 * 6 * 2  # 2 layers x 6 formats x (file + provenance)
    assert not messages(notifications, "error") and not messages(notifications, "warning")


def test_export_asks_before_overwriting(exporter, qtbot, tmp_path, notifications):
    _, widget = exporter
    widget.set_chosen_layers(["truth"])
    choose(widget, "npy")
    widget.provenance.setChecked(False)
    widget.export()
    wait_until_idle(qtbot, widget)
    target = tmp_path / "export" / "truth.npy"
    np.save(target, np.zeros((2, 2), np.int32))  # a file the user cares about

    asked = []
    widget.ask_overwrite = lambda paths: asked.append(paths) or False
    assert widget.export() is None
    assert asked == [[target]]
    np.testing.assert_array_equal(np.load(target), np.zeros((2, 2)))  # kept

    widget.ask_overwrite = lambda paths: True
    widget.export()
    wait_until_idle(qtbot, widget)
    assert np.load(target).shape == (96, 96)


def test_export_problems_are_reported_not_fatal(exporter, qtbot, tmp_path, notifications):
    viewer, widget = exporter
    assert widget.export() is None
    assert "no Labels layer ticked" in messages(notifications, "error")[-1]
    viewer.add_labels(np.ones((2, 32, 32), np.int32), name="stack")
    widget.set_chosen_layers(["stack"])
    choose(widget)
    assert widget.export() is None
    assert "no format ticked" in messages(notifications, "error")[-1]
    choose(widget, "png", "npy")  # PNG cannot hold a stack; NPY can
    widget.export()
    wait_until_idle(qtbot, widget)
    assert (tmp_path / "export" / "stack.npy").exists()
    assert any("stack (png) not exported" in m for m in messages(notifications, "warning"))


def test_compare_bad_inputs(make_napari_viewer, sample, notifications):
    viewer = make_napari_viewer()
    widget = CompareWidget(viewer)
    assert widget.run() is None
    assert "no ground truth layer" in messages(notifications, "error")[-1]
    viewer.add_image(sample[0], name="nuclei")
    viewer.add_labels(np.ones((40, 40), np.int32), name="other shape")
    assert widget.run() is None
    assert "shape" in messages(notifications, "error")[-1]
    assert widget.save_csv("never.csv") is None
    assert "press 'Compare' first" in messages(notifications, "error")[-1]


def test_compare_previous_version_missing_is_skipped(make_napari_viewer, qtbot, sample, tiny_model, notifications):
    viewer = make_napari_viewer()
    widget = CompareWidget(viewer)
    viewer.add_image(sample[0], name="nuclei")
    viewer.add_labels(sample[1].astype(np.int32), name="truth")
    widget.model.select(tiny_model)
    widget.set_methods(["UNet (previous version)", "Li"])
    widget.error_layers.setChecked(False)
    widget.run()
    wait_until_idle(qtbot, widget)
    assert [s.method for s in widget.scores] == ["Li"]
    assert widget.table.rowCount() == 1
    assert "Li errors" not in viewer.layers
    assert any("no parent or previous version" in m for m in messages(notifications, "info"))


def test_settings_are_remembered(make_napari_viewer, qtbot, tiny_model, sample):
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    viewer.add_image(sample[0], name="nuclei")
    widget.model.select(tiny_model)
    widget.tile_size.setValue(256)
    widget.min_size.setValue(42)
    widget.keep_probabilities.setChecked(True)
    widget.run()
    wait_until_idle(qtbot, widget)
    again = SegmentWidget(viewer)
    assert again.tile_size.value() == 256
    assert again.keep_probabilities.isChecked()
    assert again.model.currentText() == tiny_model
    # post-processing thresholds are not remembered: they come from the selected model's tuned settings
    assert again.min_size.value() == model_postprocess(tiny_model).min_size != 42


def test_layers_larger_than_free_memory_are_refused_before_reading(
    exporter, qtbot, tmp_path, notifications, monkeypatch
):
    from napari_unet.core.predict import memory

    viewer, widget = exporter
    viewer.add_labels(np.zeros((4096, 4096), np.uint32), name="big")  # 67 MB
    monkeypatch.setattr(memory, "system_available_bytes", lambda: 100_000_000)  # copying it needs > half of it
    widget.set_chosen_layers(["big", "truth"])
    choose(widget, "npy")
    assert widget.export() is None
    error = messages(notifications, "error")[-1]
    assert "'big' needs 67 MB in memory, more than half of the 100 MB free" in error and "cropped region" in error
    assert not (tmp_path / "export").exists() or not any((tmp_path / "export").iterdir())


def test_compare_defaults_to_corrected_labels_and_shows_every_row(
    make_napari_viewer, qtbot, sample, tiny_model, notifications
):
    from napari_unet._widgets._common import set_layer_data

    viewer = make_napari_viewer()
    image = viewer.add_image(sample[0], name="nuclei")
    corrected = viewer.add_labels(sample[1].astype(np.int32), name="corrected")  # drawn by the user
    set_layer_data(viewer, "nuclei labels", (sample[1] > 0).astype(np.int32), "labels", like=image)  # a prediction
    widget = CompareWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.ground_truth.layer() is corrected, "the UNet's own output is not the default ground truth"
    widget.model.select(tiny_model)
    widget.set_methods(["UNet", "Otsu", "Li", "Watershed"])
    widget.error_layers.setChecked(False)
    widget.run()
    wait_until_idle(qtbot, widget)
    table = widget.table
    assert table.rowCount() == 4
    header = table.horizontalHeader().height()
    assert table.height() >= header + sum(table.rowHeight(r) for r in range(4)), "all rows show at once"
    assert not messages(notifications, "error")


def test_export_into_a_folder_that_refuses_writes_says_so_once(exporter, qtbot, tmp_path, notifications, monkeypatch):
    from napari_unet.core import io

    _viewer, widget = exporter
    widget.set_chosen_layers(["truth", "mask"])
    choose(widget, "tif", "csv", "npy")

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(io, "export_labels", read_only)
    widget.export()
    wait_until_idle(qtbot, widget)
    errors = messages(notifications, "error")
    assert len(errors) == 1 and "nothing was exported" in errors[0] and "Read-only file system" in errors[0]
    assert not messages(notifications, "warning")
    assert not any(m.startswith("Exported") for m in messages(notifications, "info"))
    assert widget.jobs.status.text().startswith("Export: failed")


def test_export_refuses_a_folder_it_cannot_write_to_before_starting(exporter, tmp_path, notifications, monkeypatch):
    import tempfile

    _viewer, widget = exporter
    widget.set_chosen_layers(["truth"])
    choose(widget, "tif")

    def refused(*args, **kwargs):
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    assert widget.export() is None
    assert "cannot write to" in messages(notifications, "error")[-1]
    assert not (tmp_path / "export").exists()


def test_compare_switches_to_a_ground_truth_added_after_a_corrected_prediction(make_napari_viewer, sample):
    from napari_unet._widgets._common import set_layer_data

    viewer = make_napari_viewer()
    image = viewer.add_image(sample[0], name="nuclei")
    predicted = set_layer_data(viewer, "nuclei labels", (sample[1] > 0).astype(np.int32), "labels", like=image)
    widget = CompareWidget(viewer)
    assert widget.ground_truth.layer() is predicted  # the only labels: offered, though a raw prediction
    predicted.data = predicted.data * 2  # corrected by hand
    widget.ground_truth.refresh()
    assert widget.ground_truth.layer() is predicted
    truth = viewer.add_labels(sample[1].astype(np.int32), name="truth")  # a real ground truth, opened later
    assert widget.ground_truth.layer() is truth
    widget.ground_truth.set_layer(predicted)  # the user's own choice is kept
    viewer.add_labels(sample[1].astype(np.int32), name="another truth")
    assert widget.ground_truth.layer() is predicted
