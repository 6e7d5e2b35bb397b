"""The whole loop on a synthetic sample: segment -> correct -> fine-tune -> compare -> export."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

from napari_unet._widgets import CompareWidget, CorrectWidget, ExportWidget, FineTuneWidget, SegmentWidget
from napari_unet.core.models import registry
from tests.gui.helpers import messages, wait_until_idle

pytestmark = pytest.mark.gui


def test_segment_correct_finetune_compare_export(
    make_napari_viewer, qtbot, tiny_model, sample, tmp_path, notifications, unchecked_fine_tunes
):
    image, truth = sample
    viewer = make_napari_viewer()
    segment, correct, finetune, compare, export = (
        cls(viewer) for cls in (SegmentWidget, CorrectWidget, FineTuneWidget, CompareWidget, ExportWidget)
    )
    image_layer = viewer.add_image(image, name="nuclei")

    # 1. segment
    segment.model.select(tiny_model)
    segment.run()
    wait_until_idle(qtbot, segment)
    labels_layer = viewer.layers["nuclei labels"]
    assert labels_layer.data.max() >= 2

    # 2. programmatic corrections: replace the prediction by the truth in the left half (as painting would)
    correct.labels.set_layer(labels_layer)
    corrected = labels_layer.data.copy()
    corrected[:, :48] = truth[:, :48]
    from napari_unet._widgets._correct import apply_edit

    assert apply_edit(labels_layer, corrected) > 0
    correct.min_size.setValue(3)
    correct.delete_small()

    # 3. fine-tune a few steps on the corrected areas, re-segmenting afterwards
    finetune.image.set_layer(image_layer)
    finetune.labels.set_layer(labels_layer)
    finetune.start_model.select(tiny_model)
    finetune.mode.setCurrentText("Changed areas")
    finetune.budget_unit.setCurrentText("steps")
    finetune.budget.setValue(3)
    finetune.save_name.setText("tiny")
    finetune.resegment.setChecked(True)
    worker = finetune.start()
    assert worker is not None
    wait_until_idle(qtbot, finetune)
    assert [v.version for v in registry.list_versions("tiny")] == [1, 2]
    assert finetune.last_outcome.result.steps == 3
    assert finetune.start_model.currentText() == "tiny@v2"
    assert segment.model.currentText() == "tiny@v2", "the new version is selected everywhere"
    assert finetune.history.item(0).text().startswith("tiny@v2")
    resegmented = viewer.layers["nuclei re-segmented"]
    assert resegmented.data.shape == (96, 96)
    assert resegmented.metadata["napari_unet"]["model"] == "tiny@v2"
    assert any("saved tiny@v2" in m for m in messages(notifications, "info"))
    assert len(finetune._curves["loss"][0]) >= 1

    # 4. compare against the truth
    gt_layer = viewer.add_labels(truth, name="truth")
    compare.ground_truth.set_layer(gt_layer)
    compare.image.set_layer(image_layer)
    compare.model.select("tiny@v2")
    compare.set_methods(["UNet", "UNet (previous version)", "Otsu", "Li", "Local threshold", "Watershed"])
    compare.run()
    wait_until_idle(qtbot, compare)
    methods = [compare.table.item(row, 0).text() for row in range(compare.table.rowCount())]
    assert methods == ["UNet", "UNet (previous version)", "Otsu", "Li", "Local threshold", "Watershed"]
    otsu = compare.scores[2]
    assert 0.0 <= otsu.row["AP@0.5"] <= 1.0 and otsu.row["n_pred"] > 0
    errors = viewer.layers["Otsu errors"].data
    assert set(np.unique(errors)) <= {0, 1, 2, 3, 4, 5} and errors.max() > 0
    csv_path = compare.save_csv(tmp_path / "comparison.csv")
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["Method"] for r in rows] == methods
    assert float(rows[2]["AP@0.5"]) == pytest.approx(otsu.row["AP@0.5"], abs=1e-6)

    # 5. export the corrected labels and read them back
    export.refresh_layers()
    export.set_chosen_layers(["nuclei labels"])
    export.folder.setText(str(tmp_path / "out"))
    for key, box in export.format_boxes.items():
        box.setChecked(key in ("tif", "npy", "csv"))
    export.export()
    wait_until_idle(qtbot, export)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "nuclei_labels.tif"), labels_layer.data)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "nuclei_labels.npy"), labels_layer.data)
    assert (tmp_path / "out" / "nuclei_labels.tif.provenance.json").exists()
    assert not messages(notifications, "error")
