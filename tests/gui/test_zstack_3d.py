"""Z-stacks in every panel: Segment with the 3D model, Correct in 3D, Fine-tune in 3D, Compare and Export 3D labels."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_unet._widgets import CompareWidget, CorrectWidget, ExportWidget, FineTuneWidget
from napari_unet.core.data.synthetic import random_zstack
from napari_unet.core.evaluate.metrics import evaluate_image, summary_row
from napari_unet.core.models import registry
from tests.gui.helpers import make_segment_widget, messages, wait_until_idle

pytestmark = pytest.mark.gui

MODEL_3D = registry.BUNDLED_3D_NAME


@pytest.fixture(scope="module")
def stack() -> tuple[np.ndarray, np.ndarray, dict]:
    """A held-out synthetic Z-stack (a test seed of ``benchmarks/bench_3d.py``), its 3D labels and settings."""
    image, labels, settings = random_zstack(20_003, (16, 64, 64))
    return image, labels.astype(np.int32), settings


def test_segment_a_zstack_with_the_3d_model_finds_3d_nuclei(make_napari_viewer, qtbot, stack, notifications):
    image, truth, settings = stack
    viewer, widget = make_segment_widget(make_napari_viewer, MODEL_3D)
    viewer.add_image(image, name="stack", scale=(settings["z_spacing"], 1.0, 1.0))
    assert widget.run() is not None
    wait_until_idle(qtbot, widget)
    layer = viewer.layers["stack labels"]
    assert layer.data.shape == image.shape
    assert summary_row(evaluate_image(truth, layer.data, (0.5,)))["AP@0.5"] > 0.5
    spans = [len(np.unique(np.nonzero(layer.data == i)[0])) for i in np.unique(layer.data)[1:]]
    assert np.median(spans) >= 3, "objects are 3D: each spans several planes"
    meta = layer.metadata["napari_unet"]
    assert meta["settings"]["z_spacing"] == pytest.approx(settings["z_spacing"])
    assert any("3D model" in m and "one volume" in m for m in messages(notifications, "info"))

    widget.min_size.setValue(10**6)  # post-processing again, in 3D, from the kept probabilities
    widget.rerun_postprocessing()
    assert layer.data.max() == 0
    assert not messages(notifications, "error")


def test_the_3d_model_on_a_single_image_says_what_to_do(make_napari_viewer, qtbot, sample, notifications):
    viewer, widget = make_segment_widget(make_napari_viewer, MODEL_3D)
    viewer.add_image(sample[0], name="plane")
    widget.run()
    wait_until_idle(qtbot, widget)
    assert "Z-stacks" in messages(notifications, "error")[-1]
    assert "plane labels" not in viewer.layers


def test_correct_merges_and_splits_3d_objects(make_napari_viewer, stack, notifications):
    _, truth, _ = stack
    viewer = make_napari_viewer()
    widget = CorrectWidget(viewer)
    layer = viewer.add_labels(truth.copy(), name="stack labels")
    widget.labels.set_layer(layer)
    first, second = (int(i) for i in np.unique(truth)[1:3])
    widget.merge_ids.setText(f"{first}, {second}")
    widget.merge()
    assert second not in layer.data and (layer.data == first).sum() == ((truth == first) | (truth == second)).sum()
    points = widget.start_points()
    points.data = np.array([np.argwhere(truth == first)[0], np.argwhere(truth == second)[0]])  # (z, y, x) clicks
    widget.split_at_points()
    pieces = np.unique(layer.data[(truth == first) | (truth == second)])
    assert len(pieces) == 2, "the merged 3D object is split in two again"
    assert not messages(notifications, "error")


@pytest.fixture
def finetune_3d(make_napari_viewer, stack):
    image, truth, _ = stack
    viewer = make_napari_viewer()
    widget = FineTuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image.set_layer(viewer.add_image(image, name="stack"))
    widget.labels.set_layer(viewer.add_labels(truth, name="stack labels"))
    widget.start_model.select(MODEL_3D)
    widget.save_name.setText("my-3d")
    widget.budget_unit.setCurrentText("steps")
    widget.budget.setValue(2)
    return viewer, widget


def test_finetune_a_3d_model_on_a_zstack_saves_a_3d_version(finetune_3d, qtbot, notifications):
    _viewer, widget = finetune_3d
    widget.resegment.setChecked(True)
    assert widget.start() is not None
    wait_until_idle(qtbot, widget, timeout=300_000)
    assert [v.version for v in registry.list_versions("my-3d")] == [1]
    saved = registry.load_model("my-3d")
    assert saved.config.spatial_dims == 3
    assert widget.last_outcome.result.steps == 2
    assert widget.last_outcome.resegmented[0][1].volumetric
    assert any("Z-stack(s) in 3D" in m for m in messages(notifications, "info"))
    assert not messages(notifications, "error")


def test_finetune_3d_on_reviewed_planes_only(finetune_3d, qtbot, notifications):
    viewer, widget = finetune_3d
    changed = widget.mode.model().item(widget.mode.findText("Changed areas"))
    assert not changed.isEnabled()  # not offered for a 3D model...
    widget.start_model.select("default")
    assert changed.isEnabled()  # ...but for a 2D one
    widget.start_model.select(MODEL_3D)
    widget.mode.setCurrentText("Changed areas")  # chosen anyway (programmatically): refused with the way out
    assert widget.start() is None
    assert "Whole image" in messages(notifications, "error")[-1]
    widget.mode.setCurrentText("Reviewed regions (ROIs)")
    viewer.add_shapes(
        [np.array([[5, 0, 0], [5, 0, 63], [5, 63, 63], [5, 63, 0]])], shape_type="polygon", name="stack labels reviewed"
    )
    assert widget.start() is not None
    wait_until_idle(qtbot, widget, timeout=300_000)
    assert [v.version for v in registry.list_versions("my-3d")] == [1]


def test_compare_and_export_3d_labels(make_napari_viewer, qtbot, stack, tmp_path, notifications):
    image, truth, _ = stack
    viewer = make_napari_viewer()
    viewer.add_image(image, name="stack")
    viewer.add_labels(truth, name="truth")
    compare = CompareWidget(viewer)
    viewer.window.add_dock_widget(compare)
    compare.model.select(MODEL_3D)
    compare.set_methods(["UNet", "Watershed"])
    compare.run()
    wait_until_idle(qtbot, compare, timeout=300_000)
    scores = {score.method: score for score in compare.scores}
    assert set(scores) == {"UNet", "Watershed"}
    assert all(layer.data.shape == truth.shape for layer in viewer.layers if "errors" in layer.name)

    export = ExportWidget(viewer)
    export.set_chosen_layers(["truth"])
    export.image.set_layer("stack")
    for key, box in export.format_boxes.items():
        box.setChecked(key in ("tif", "csv"))
    export.folder.setText(str(tmp_path / "export"))
    export.export()
    wait_until_idle(qtbot, export)
    with open(tmp_path / "export" / "truth_measurements.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(np.unique(truth)) - 1
    first = rows[0]
    assert int(first["volume"]) == int((truth == int(first["label"])).sum())  # voxels
    assert not messages(notifications, "error")
