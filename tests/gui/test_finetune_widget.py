from __future__ import annotations

import numpy as np
import pytest

from napari_unet._widgets import FineTuneWidget
from napari_unet._widgets._finetune import segmentation_scale
from napari_unet.core.errors import UserInputError
from napari_unet.core.models import registry
from tests.gui.helpers import messages, wait_until_idle

pytestmark = pytest.mark.gui


@pytest.fixture
def setup(make_napari_viewer, tiny_model, sample):
    viewer = make_napari_viewer()
    widget = FineTuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    image_layer = viewer.add_image(sample[0], name="nuclei")
    labels_layer = viewer.add_labels(sample[1].astype(np.int32), name="nuclei labels")
    widget.image.set_layer(image_layer)
    widget.labels.set_layer(labels_layer)
    widget.start_model.select(tiny_model)
    widget.save_name.setText("tiny")
    widget.resegment.setChecked(False)
    return viewer, widget


def long_budget(widget: FineTuneWidget) -> None:
    widget.budget_unit.setCurrentText("steps")
    widget.budget.setValue(100_000)


def wait_for_training(qtbot, widget: FineTuneWidget) -> None:
    qtbot.waitUntil(lambda: len(widget._curves["loss"][0]) >= 1, timeout=60_000)


def test_cancel_keeps_previous_model(setup, qtbot, notifications):
    _, widget = setup
    long_budget(widget)
    assert widget.start() is not None
    wait_for_training(qtbot, widget)
    widget.jobs.cancel_button.click()
    wait_until_idle(qtbot, widget)
    assert [v.version for v in registry.list_versions("tiny")] == [1]
    cancelled = [m for m in messages(notifications, "info") if "cancelled" in m]
    assert cancelled == ["Fine-tuning cancelled: no new version was saved, the previous model is kept."]  # once
    assert widget.jobs.status.text() == "Fine-tuning: cancelled"  # not the last step's loss and time left
    assert not messages(notifications, "error")


def test_two_finetunes_at_once_are_refused(setup, make_napari_viewer, qtbot, notifications, sample, tiny_model):
    _, first = setup
    long_budget(first)
    first.start()
    other_viewer = make_napari_viewer()
    second = FineTuneWidget(other_viewer)
    other_viewer.add_image(sample[0], name="img")
    other_viewer.add_labels(sample[1].astype(np.int32), name="lab")
    second.start_model.select(tiny_model)
    assert second.start() is None
    assert "already running" in messages(notifications, "error")[-1]
    first.jobs.cancel()
    wait_until_idle(qtbot, first)
    assert [v.version for v in registry.list_versions("tiny")] == [1]


def test_rois_mode_and_revert(setup, qtbot, notifications, unchecked_fine_tunes):
    viewer, widget = setup
    widget.mode.setCurrentText("Reviewed regions (ROIs)")
    widget.budget_unit.setCurrentText("steps")
    widget.budget.setValue(2)
    assert widget.start() is None
    assert "Mark region as reviewed" in messages(notifications, "error")[-1]

    viewer.add_shapes(
        [np.array([[0, 0], [0, 60], [60, 60], [60, 0]])], shape_type="polygon", name="nuclei labels reviewed"
    )
    assert widget.start() is not None
    wait_until_idle(qtbot, widget)
    assert [v.version for v in registry.list_versions("tiny")] == [1, 2]
    assert widget.last_outcome.result.lineage["annotation_mode"] == "rois"
    assert widget.history.count() == 2

    widget.history.setCurrentRow(1)  # newest first: row 1 is tiny@v1
    saved = widget.revert_selected()
    assert saved.spec == "tiny@v3"
    assert registry.load_model("tiny@v3").sha256 == registry.load_model("tiny@v1").sha256
    assert widget.start_model.currentText() == "tiny@v3"


def test_bad_pairs_are_refused_with_messages(setup, notifications):
    viewer, widget = setup
    image_layer = viewer.layers["nuclei"]
    small = viewer.add_labels(np.ones((32, 32), np.int32), name="small")
    assert not widget.add_pair(image_layer, small)
    assert "shape" in messages(notifications, "error")[-1]

    rgb = viewer.add_image(np.zeros((96, 96, 3), np.uint8), name="rgb", rgb=True)
    assert not widget.add_pair(image_layer, rgb)
    assert "RGB image, not labels" in messages(notifications, "error")[-1]

    empty = viewer.add_labels(np.zeros((96, 96), np.int32), name="empty")
    assert not widget.add_pair(image_layer, empty)
    assert "empty (all zero)" in messages(notifications, "error")[-1]
    widget.labels.set_layer(empty)
    assert widget.start() is None
    assert "empty (all zero)" in messages(notifications, "error")[-1]

    widget.labels.set_layer("nuclei labels")
    widget.mode.setCurrentText("Changed areas")
    assert widget.start() is None
    assert "needs the prediction" in messages(notifications, "error")[-1]

    assert widget.add_pair(image_layer, viewer.layers["nuclei labels"])
    assert widget.pairs.count() == 1
    assert [v.version for v in registry.list_versions("tiny")] == [1], "nothing was trained"


def test_closing_viewer_while_training_stops_the_worker(make_napari_viewer, qtbot, tiny_model, sample, notifications):
    viewer = make_napari_viewer()
    widget = FineTuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    viewer.add_image(sample[0], name="nuclei")
    viewer.add_labels(sample[1].astype(np.int32), name="nuclei labels")
    widget.start_model.select(tiny_model)
    widget.save_name.setText("tiny")
    long_budget(widget)
    worker = widget.start()
    state = widget.jobs.state
    wait_for_training(qtbot, widget)
    viewer.close()
    qtbot.waitUntil(lambda: state.worker is None, timeout=60_000)
    assert not worker.is_running
    assert [v.version for v in registry.list_versions("tiny")] == [1]
    assert not messages(notifications, "error")


def test_learning_rate_defaults_to_the_finetuning_rate_and_stays_editable(setup):
    _, widget = setup
    assert widget.learning_rate.value() == pytest.approx(3e-4)
    assert widget.training_config().learning_rate == pytest.approx(3e-4)
    widget.learning_rate.setValue(1e-3)
    assert widget.training_config().learning_rate == pytest.approx(1e-3)


def test_labels_segmented_at_a_scale_are_fine_tuned_and_resegmented_at_that_scale(
    setup, qtbot, notifications, unchecked_fine_tunes
):
    viewer, widget = setup
    labels_layer = viewer.layers["nuclei labels"]
    labels_layer.metadata["napari_unet"] = {"settings": {"inference": {"scale": 2.0}}}  # as the Segment widget saves
    widget.mode.setCurrentText("Reviewed regions (ROIs)")
    viewer.add_shapes(
        [np.array([[0, 0], [0, 40], [40, 40], [40, 0]])], shape_type="polygon", name="nuclei labels reviewed"
    )

    data = widget._snapshot_data("rois")
    height, width = labels_layer.data.shape
    assert data.labels[0].shape == (2 * height, 2 * width) and data.images[0].shape == (2 * height, 2 * width)
    assert set(np.unique(data.labels[0])) == set(np.unique(labels_layer.data))  # nearest: the same ids
    np.testing.assert_allclose(data.rois[0][0].max(axis=0), [80.5, 80.5])  # the region grows with the image
    assert data.sources[0][3] == 2.0

    widget.budget_unit.setCurrentText("steps")
    widget.budget.setValue(2)
    widget.resegment.setChecked(True)
    assert widget.start() is not None
    wait_until_idle(qtbot, widget)
    assert any("resized 2x as they were segmented" in m for m in messages(notifications, "info"))
    image_name, prediction, scale = widget.last_outcome.resegmented[0]
    assert image_name == "nuclei" and prediction.labels.shape == (height, width) and scale == 2.0
    resegmented = viewer.layers["nuclei re-segmented"]
    assert segmentation_scale(resegmented) == 2.0  # correcting and fine-tuning again keeps the scale
    assert not messages(notifications, "error")


def test_plot_draws_each_validation_once_and_ends_on_the_final_score(setup, qtbot, notifications, monkeypatch):
    from dataclasses import replace

    _viewer, widget = setup
    widget.budget_unit.setCurrentText("seconds")
    widget.budget.setValue(4)
    config = widget.training_config
    monkeypatch.setattr(widget, "training_config", lambda: replace(config(), val_every=5))
    totals = []
    widget.jobs.progressed.connect(
        lambda event: totals.append((event.done, event.total)) if event.stage == "train" else None
    )
    assert widget.start() is not None
    bar_ranges = []
    qtbot.waitUntil(lambda: bar_ranges.append(widget.jobs.bar.maximum()) or widget.jobs.worker is None, timeout=120_000)

    steps, scores = widget._curves["validation AP@0.5"]
    history = widget.last_outcome.result.history
    validated_steps = [r["step"] for r in history if "val_ap50" in r]
    assert steps == validated_steps, "one point per validation, none for steps that were not validated"
    assert scores[-1] == pytest.approx(history[-1]["val_ap50"]), "the last point is the final validation"
    assert all(total >= done > 0 for done, total in totals if done), "a time budget still gives the bar a range"
    assert max(bar_ranges) > 0
    assert not messages(notifications, "error")


def test_export_model_button_writes_the_selected_version_as_a_package_the_segment_panel_can_add(
    setup, make_napari_viewer, qtbot, tmp_path, sample, notifications
):
    pytest.importorskip("bioimageio.core")
    import torch

    from napari_unet._widgets import SegmentWidget
    from napari_unet.core.models.bioimageio import import_bioimageio
    from napari_unet.core.predict.segment import predict

    viewer, widget = setup
    newer = registry.load_model("tiny@v1")
    with torch.no_grad():
        next(newer.network.parameters()).add_(0.5)
    registry.save_version(newer, "tiny")  # tiny@v2: other weights, listed first
    widget.save_name.setText("tiny")
    widget.refresh_history()
    assert widget.export_selected(tmp_path / "tiny.zip") is None  # nothing selected yet
    assert "select a version" in messages(notifications, "error")[-1]
    widget.history.setCurrentRow(1)  # newest first: row 1 is tiny@v1
    assert widget.export_selected(tmp_path / "tiny.zip") is not None
    wait_until_idle(qtbot, widget)
    assert any(m.startswith("Exported tiny@v1 to") for m in messages(notifications, "info"))
    assert widget.jobs.status.text() == "Exporting the model: done"  # not "Fine-tuning: done"

    exported, other = registry.load_model("tiny@v1"), registry.load_model("tiny@v2")
    assert exported.sha256 != other.sha256
    package = import_bioimageio(tmp_path / "tiny.zip")
    assert package.sha256 == exported.sha256, "the package holds the selected version's weights"
    assert package.config == exported.config and package.postprocess == exported.postprocess
    expected = predict(sample[0], exported).labels
    assert expected.max() > 0
    np.testing.assert_array_equal(predict(sample[0], package).labels, expected)

    segment = SegmentWidget(viewer)
    spec = segment.add_model_from_file(str(tmp_path / "tiny.zip"))
    assert spec == "tiny@v3" and segment.model.currentText() == spec
    assert registry.load_model(spec).sha256 == exported.sha256
    assert any("Imported the package tiny.zip" in m for m in messages(notifications, "info"))
    assert not segment.add_model_from_file(str(tmp_path / "broken.zip"))
    assert "no such package" in messages(notifications, "error")[-1]


def test_a_40_second_fine_tune_of_a_megapixel_image_trains_and_keeps_only_a_better_model(
    make_napari_viewer, qtbot, notifications
):
    """The issue's panel case: 1 megapixel, ~300 corrected nuclei, 40 s from the bundled model on 2 cores."""
    from napari_unet.core.data.synthetic import synthetic_nuclei
    from napari_unet.core.evaluate.metrics import evaluate_image, summary_row
    from napari_unet.core.models.registry import load_model
    from napari_unet.core.predict.segment import predict

    image, labels = synthetic_nuclei((1000, 1000), 300, seed=7101, kind="brightfield")
    viewer = make_napari_viewer()
    widget = FineTuneWidget(viewer)
    widget.image.set_layer(viewer.add_image(image, name="slide", rgb=True))
    widget.labels.set_layer(viewer.add_labels(labels.astype(np.int32), name="slide labels"))
    widget.start_model.select("default")
    widget.save_name.setText("slides")
    widget.resegment.setChecked(False)
    widget.budget_unit.setCurrentText("seconds")
    widget.budget.setValue(40)
    assert widget.start() is not None
    wait_until_idle(qtbot, widget, timeout=240_000)
    result = widget.last_outcome.result
    assert result.steps >= 60, f"{result.steps} steps in a 40 s budget"
    assert result.lineage["validation_seconds"] <= 0.15 * 40 + 1.0  # one last check may end past the share
    notice = messages(notifications, "info")[-1]
    if result.kept_parent:  # nothing saved, and the notice says why
        with pytest.raises(UserInputError, match="no user model named 'slides'"):
            registry.list_versions("slides")
        assert "starting model is kept" in notice
        return
    assert [v.version for v in registry.list_versions("slides")] == [1]
    assert f"{result.metrics_before['val_ap50']:.3f} before -> {result.metrics_after['val_ap50']:.3f} after" in notice
    assert result.metrics_after["val_ap50"] > result.metrics_before["val_ap50"]
    unseen, truth = synthetic_nuclei((256, 256), 35, seed=7102, kind="brightfield")

    def ap50(model_spec: str) -> float:
        return summary_row(evaluate_image(truth, predict(unseen, load_model(model_spec)).labels, (0.5,)))["AP@0.5"]

    assert ap50("slides@v1") > ap50("default")


def test_a_trained_model_is_not_fine_tuned_on_too_few_nuclei_to_check_and_the_panel_says_why(
    make_napari_viewer, qtbot, notifications
):
    from napari_unet.core.data.synthetic import synthetic_nuclei

    image, labels = synthetic_nuclei((128, 128), 2, seed=3, kind="fluorescence")
    nuclei = len(np.unique(labels)) - 1
    viewer = make_napari_viewer()
    widget = FineTuneWidget(viewer)
    widget.image.set_layer(viewer.add_image(image, name="few"))
    widget.labels.set_layer(viewer.add_labels(labels.astype(np.int32), name="few labels"))
    widget.start_model.select("default")
    widget.save_name.setText("few")
    assert widget.start() is not None
    wait_until_idle(qtbot, widget, timeout=120_000)
    assert widget.last_outcome.result.steps == 0
    with pytest.raises(UserInputError, match="no user model named 'few'"):
        registry.list_versions("few")
    notice = messages(notifications, "info")[-1]
    assert notice.startswith(f"No new version saved: no validation possible: {nuclei} annotated nuclei")
    assert notice.endswith(
        "nothing was trained and the starting model is kept (correct more nuclei, or add a corrected image)."
    )
    assert not messages(notifications, "error")


def test_the_notice_advises_a_resize_when_the_corrected_nuclei_are_far_larger_than_the_model_learned(
    make_napari_viewer, qtbot, notifications
):
    from napari_unet.core.data.synthetic import synthetic_nuclei
    from napari_unet.core.train.preparation import size_advice_text

    image, labels = synthetic_nuclei((96, 96), 3, seed=3, kind="fluorescence")
    image, labels = (np.kron(array, np.ones((8, 8), array.dtype)) for array in (image, labels))  # nuclei 8x wider
    viewer = make_napari_viewer()
    widget = FineTuneWidget(viewer)
    widget.image.set_layer(viewer.add_image(image, name="large"))
    widget.labels.set_layer(viewer.add_labels(labels.astype(np.int32), name="large labels"))
    widget.start_model.select("default")
    widget.save_name.setText("large")
    assert widget.start() is not None
    wait_until_idle(qtbot, widget, timeout=120_000)
    advice = widget.last_outcome.result.lineage["size_advice"]
    assert advice["factor"] < 1 and advice["diameter"] > advice["high"] * 1.25
    notice = messages(notifications, "info")[-1]
    assert notice.endswith(f" Note: {size_advice_text(advice)}.")
    assert f"resized by {advice['factor']:g} (the Segment panel's Estimate" in notice
    assert not messages(notifications, "error")


def test_the_weights_a_fine_tune_refused_can_be_saved_apart_from_the_panel(setup, qtbot, notifications, monkeypatch):
    from napari_unet.core.train import loop as training_loop

    calls: list[int] = []

    def start_best_then_worse(run) -> dict[str, float]:
        """Held-out AP@0.5 0.5 at the start, 0.8 at the first check, 0.3 after: the rule refuses the child."""
        calls.append(run.step)
        ap = 0.5 if len(calls) == 1 else 0.8 if len(calls) == 2 else 0.3
        scores = {"val_ap50": ap, "val_ap75": ap / 2, "val_f1": ap, "val_loss": 1.0 - ap}
        run.last_val = scores
        run._keep_if_best(scores)
        return scores

    monkeypatch.setattr(training_loop.TrainingRun, "_score_validation", start_best_then_worse)
    _, widget = setup
    widget.budget_unit.setCurrentText("steps")
    widget.budget.setValue(30)
    assert not widget.save_refused.isEnabled()
    assert widget.start() is not None
    wait_until_idle(qtbot, widget)
    result = widget.last_outcome.result
    assert result.kept_parent and result.refused is not None and len(calls) >= 3
    assert [v.version for v in registry.list_versions("tiny")] == [1]  # nothing new under 'Save as'
    assert "'Save the refused weights apart' keeps them as 'tiny-refused'" in messages(notifications, "info")[-1]
    assert widget.save_refused.isEnabled()
    widget.save_refused.click()
    assert [v.spec for v in registry.list_versions("tiny-refused")] == ["tiny-refused@v1"]
    saved = registry.load_model("tiny-refused@v1")
    assert saved.metadata["lineage"]["refused"]["step"] == result.refused.metadata["lineage"]["refused"]["step"] > 0
    assert saved.sha256 != registry.load_model("tiny@v1").sha256
    assert "Saved the refused fine-tuned weights as tiny-refused@v1" in messages(notifications, "info")[-1]
    assert not widget.save_refused.isEnabled() and not messages(notifications, "error")
