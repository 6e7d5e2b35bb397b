from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtWidgets import QPushButton

from napari_unet._widgets import SegmentWidget
from napari_unet._widgets._common import save_settings
from napari_unet.core.config import InferenceConfig, ModelConfig, PostprocessConfig
from napari_unet.core.models import bundle as bundle_format
from napari_unet.core.models import registry
from tests.gui.helpers import make_segment_widget, messages, wait_until_idle

pytestmark = pytest.mark.gui


def test_segment_writes_labels_and_updates_in_place(make_napari_viewer, qtbot, tiny_model, sample, notifications):
    viewer, widget = make_segment_widget(make_napari_viewer, tiny_model)
    image_layer = viewer.add_image(sample[0], name="nuclei", scale=(0.5, 0.5))
    widget.image.set_layer(image_layer)
    widget.keep_probabilities.setChecked(True)
    widget.min_size.setValue(5)

    assert widget.run() is not None
    wait_until_idle(qtbot, widget)

    labels_layer = viewer.layers["nuclei labels"]
    assert labels_layer.data.shape == (96, 96)
    assert labels_layer.data.max() >= 2, "the tiny trained model finds several nuclei"
    assert tuple(labels_layer.scale) == (0.5, 0.5)
    meta = labels_layer.metadata["napari_unet"]
    assert meta["model"] == tiny_model and meta["image"] == "nuclei"
    np.testing.assert_array_equal(meta["prediction"], labels_layer.data)
    probability = viewer.layers["nuclei probability"]
    assert probability.data.shape == (96, 96)
    assert probability.data.min() >= 0.0 and probability.data.max() <= 1.0

    # re-running updates the same layer instead of adding one
    n_layers = len(viewer.layers)
    widget.run()
    wait_until_idle(qtbot, widget)
    assert len(viewer.layers) == n_layers
    assert viewer.layers["nuclei labels"] is labels_layer

    # unless a new layer is asked for
    widget.new_layer.setChecked(True)
    widget.run()
    wait_until_idle(qtbot, widget)
    assert "nuclei labels [2]" in viewer.layers
    assert not messages(notifications, "error")


def test_rerun_postprocessing_uses_cached_probabilities(make_napari_viewer, qtbot, tiny_model, sample, notifications):
    viewer, widget = make_segment_widget(make_napari_viewer, tiny_model)
    viewer.add_image(sample[0], name="nuclei")
    assert widget.rerun_postprocessing() is None
    assert "press 'Segment' first" in messages(notifications, "error")[-1]

    widget.min_size.setValue(0)
    widget.run()
    wait_until_idle(qtbot, widget)
    layer = viewer.layers["nuclei labels"]
    before = layer.data.max()
    assert before >= 2

    widget.min_size.setValue(10**6)  # nothing is that large: every object goes
    assert widget.rerun_postprocessing() is layer
    assert layer.data.max() == 0
    assert layer.metadata["napari_unet"]["settings"]["postprocess"]["min_size"] == 10**6

    widget.min_size.setValue(0)
    widget.rerun_postprocessing()
    assert layer.data.max() == before

    widget.split_distance.setValue(7)
    widget.rerun_postprocessing()
    assert layer.metadata["napari_unet"]["settings"]["postprocess"]["split_distance"] == 7

    widget.split_distance.setValue(0)
    widget.min_size.setValue(5)
    widget.rerun_postprocessing()
    without_specks = layer.data.max()
    widget.min_relative_size.setValue(0.9)  # objects under 0.9 x the median area go
    widget.rerun_postprocessing()
    assert layer.metadata["napari_unet"]["settings"]["postprocess"]["min_relative_size"] == 0.9
    assert 0 < layer.data.max() < without_specks


def test_segment_zstack_slice_by_slice_with_notice(make_napari_viewer, qtbot, tiny_model, sample, notifications):
    viewer, widget = make_segment_widget(make_napari_viewer, tiny_model)
    stack = np.stack([sample[0], sample[0][::-1]])  # 2 planes, ZYX
    viewer.add_image(stack, name="stack")
    widget.run()
    wait_until_idle(qtbot, widget)
    labels = viewer.layers["stack labels"].data
    assert labels.shape == (2, 96, 96)
    assert labels[0].max() > 0 and labels[1].max() > 0
    assert any("slice by slice" in m for m in messages(notifications, "info"))


def test_segment_bad_inputs_are_notified(make_napari_viewer, qtbot, tiny_model, notifications):
    viewer, widget = make_segment_widget(make_napari_viewer, tiny_model)
    assert widget.run() is None
    assert "no image layer" in messages(notifications, "error")[-1]

    viewer.add_image(np.zeros((4, 5, 32, 32), np.uint16), name="ambiguous 4D")
    widget.image.set_layer("ambiguous 4D")
    assert widget.run() is None
    assert "axes" in messages(notifications, "error")[-1].lower()
    assert "choose the axes" in widget.axes_info.text()

    widget.axes.setCurrentText("TYX")  # three letters for a 4D image
    assert widget.run() is None
    assert "TYX" in messages(notifications, "error")[-1]

    widget.axes.setCurrentText("auto")
    viewer.add_image(np.random.default_rng(0).random((64, 64)), name="noise")
    widget.image.set_layer("noise")
    widget.model.select("no-such-model")
    assert widget.run() is not None  # the unknown model is found in the worker and reported there
    wait_until_idle(qtbot, widget)
    assert "no-such-model" in messages(notifications, "error")[-1]
    assert "noise labels" not in viewer.layers


def test_device_line_names_what_torch_sees(make_napari_viewer, tiny_model):
    _, widget = make_segment_widget(make_napari_viewer, tiny_model)
    assert widget.device_info.text().startswith("found: ")
    widget.device.setCurrentText("cuda")
    assert widget.inference_config().device == "cuda"


TUNED = PostprocessConfig(
    foreground_threshold=0.35,
    seed_threshold=0.75,
    min_seed_size=9,
    min_size=33,
    fill_holes=False,
    split_distance=5,
    min_confidence=0.85,
)


def save_untrained(folder, postprocess: PostprocessConfig):
    """Save a tiny untrained model whose model.json holds ``postprocess``; return the folder."""
    untrained = bundle_format.ModelBundle.new(ModelConfig(depth=1, base_channels=2), postprocess=postprocess, seed=0)
    return bundle_format.save_model(untrained, folder)


def form_values(widget: SegmentWidget) -> tuple:
    return (
        widget.foreground.value(),
        widget.seed.value(),
        widget.min_size.value(),
        widget.split_distance.value(),
        widget.fill_holes.isChecked(),
        widget.min_confidence.value(),
    )


@pytest.fixture
def no_bundled_model(isolated_dirs, monkeypatch):
    """Hide the bundled model so the store lists only the models a test saves."""
    monkeypatch.setattr(registry, "bundled_model_dir", lambda name="default": isolated_dirs / "no-bundled" / name)


def button(widget: SegmentWidget, text: str) -> QPushButton:
    (found,) = [b for b in widget.findChildren(QPushButton) if b.text() == text]
    return found


def test_fields_follow_the_selected_models_postprocessing(
    make_napari_viewer, isolated_dirs, no_bundled_model, notifications
):
    tuned = save_untrained(isolated_dirs / "tuned", TUNED)
    plain = save_untrained(isolated_dirs / "plain", PostprocessConfig())
    registry.save_version(registry.load_model(tuned), "tuned")
    tuned_values = (0.35, 0.75, 33, 5, False, 0.85)
    default_values = (0.5, 0.6, 15, 0, True, 0.0)

    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    assert widget.model.currentText() == "tuned@v1"
    assert form_values(widget) == tuned_values, "filled from the model at start"
    assert widget.postprocess_config() == TUNED, "min_seed_size (not in the form) comes from the model too"

    widget.model.select(str(plain))
    assert form_values(widget) == default_values
    widget.model.select(str(tuned))
    assert form_values(widget) == tuned_values

    widget.foreground.setValue(0.9)
    widget.split_distance.setValue(0)
    assert widget.postprocess_config().foreground_threshold == 0.9
    button(widget, "Model defaults").click()
    assert form_values(widget) == tuned_values
    assert widget.postprocess_config() == TUNED

    widget.foreground.setValue(0.9)
    widget.model.select("no-such-model")
    assert form_values(widget) == (0.9, *tuned_values[1:]), "an unreadable model keeps the current values"
    assert "no-such-model" in messages(notifications, "warning")[-1]
    assert not messages(notifications, "error")


def test_test_time_flips_follow_the_selected_model(make_napari_viewer, isolated_dirs, no_bundled_model):
    plain = save_untrained(isolated_dirs / "plain", PostprocessConfig())
    bundle = registry.load_model(save_untrained(isolated_dirs / "flips-source", TUNED))
    bundle.metadata = {**bundle.metadata, "tuned_with_flips": True}
    flips = bundle_format.save_model(bundle, isolated_dirs / "flips")

    widget = SegmentWidget(make_napari_viewer())
    widget.model.select(str(flips))
    assert widget.augment.currentText() == "flips (4x slower)"
    assert widget.inference_config().tta is True
    widget.model.select(str(plain))
    assert widget.augment.currentText() == "off" and widget.inference_config().tta is False

    widget.augment.setCurrentText("sizes (3.5x slower)")
    widget.model.select(str(flips))
    assert widget.augment.currentText() == "flips and sizes (14x slower)", "the choice of sizes is kept"
    widget.augment.setCurrentText("off")
    button(widget, "Model defaults").click()
    assert widget.augment.currentText() == "flips (4x slower)"


def test_saved_settings_keep_tiling_but_not_thresholds(make_napari_viewer, isolated_dirs):
    tuned = save_untrained(isolated_dirs / "tuned", TUNED)
    save_settings(
        "segment", {"model": str(tuned), "tile_size": 256, "device": "cpu", "foreground_threshold": 0.9, "min_size": 1}
    )
    widget = SegmentWidget(make_napari_viewer())
    assert (widget.tile_size.value(), widget.device.currentText()) == (256, "cpu")
    assert widget.model.currentText() == str(tuned)
    assert widget.postprocess_config() == TUNED


def test_defaults_without_models_or_settings(make_napari_viewer, no_bundled_model, notifications):
    widget = SegmentWidget(make_napari_viewer())
    assert widget.model.currentText() == ""
    assert widget.overlap.value() == InferenceConfig().overlap
    assert widget.inference_config().overlap == InferenceConfig().overlap
    assert widget.postprocess_config() == PostprocessConfig()
    widget.split_distance.setValue(4)
    assert widget.postprocess_config().split_distance == 4
    button(widget, "Model defaults").click()
    assert "no model selected" in messages(notifications, "warning")[-1]
    assert widget.postprocess_config().split_distance == 4


def test_segment_at_a_scale_keeps_the_image_shape_and_is_not_remembered(make_napari_viewer, qtbot, tiny_model, sample):
    viewer, widget = make_segment_widget(make_napari_viewer, tiny_model)
    viewer.add_image(sample[0], name="nuclei")
    widget.scale.setValue(1.5)
    widget.run()
    wait_until_idle(qtbot, widget)
    layer = viewer.layers["nuclei labels"]
    assert layer.data.shape == (96, 96) and layer.data.max() > 0
    assert layer.metadata["napari_unet"]["settings"]["inference"]["scale"] == 1.5
    assert SegmentWidget(viewer).scale.value() == 1.0  # a magnification-specific choice starts fresh


def test_estimate_sets_the_scale_from_the_nuclei(make_napari_viewer, qtbot, notifications):
    from napari_unet.core.data.synthetic import synthetic_nuclei

    viewer, widget = make_segment_widget(make_napari_viewer, "default")
    image, _ = synthetic_nuclei(shape=(192, 192), n_nuclei=80, seed=3, radius_range=(2.5, 3.5))
    viewer.add_image(image, name="tiny nuclei")
    assert widget.estimate_scale() is not None
    wait_until_idle(qtbot, widget)
    assert widget.scale.value() > 1.25, "nuclei about 6 px across are enlarged toward the model's 12-39 px"
    assert "nucleus diameter about" in widget.scale_info.text()
    assert any("tiny nuclei" in message and "-> scale" in message for message in messages(notifications, "info"))
    assert not messages(notifications, "error")


def test_estimate_without_an_image_is_notified(make_napari_viewer, tiny_model, notifications):
    _viewer, widget = make_segment_widget(make_napari_viewer, tiny_model)
    assert widget.estimate_scale() is None
    assert "image" in messages(notifications, "error")[-1]


def test_the_notice_gives_the_models_measured_accuracy(make_napari_viewer, qtbot, tiny_model, sample, notifications):
    from napari_unet.core.models.registry import list_models, load_model, save_version

    viewer, widget = make_segment_widget(make_napari_viewer, "default")
    widget.image.set_layer(viewer.add_image(sample[0], name="nuclei"))
    widget.run()
    wait_until_idle(qtbot, widget)
    measured = list_models()[0].metrics  # the bundled model's, from its model card
    count = len(np.unique(viewer.layers["nuclei labels"].data)) - 1
    assert messages(notifications, "info")[-1].startswith(f"{count} objects in 'nuclei labels' (segmented 'nuclei'")
    assert messages(notifications, "info")[-1].endswith(
        f"Its measured AP@0.5 on held-out test images with its default settings: {measured['test_ap50_grey']:.2f} "
        "grey (fluorescence, "
        f"brightfield), {measured['test_ap50_colour']:.2f} colour (H&E-like), {measured['test_ap50_tissue']:.2f} "
        "tissue sections; images unlike these may score lower (its model card has the details)."
    )

    trained = save_version(load_model(tiny_model), "tiny", {"metrics": {"val_ap50": 0.62}})  # as training records
    widget.model.refresh()
    widget.model.select(trained.spec)
    widget.run()
    wait_until_idle(qtbot, widget)
    assert messages(notifications, "info")[-1].endswith(
        "It scored AP@0.5 0.62 on its validation data when it was trained."
    )
    assert not messages(notifications, "error")


def test_cancel_pressed_right_after_segment_discards_the_result(
    make_napari_viewer, qtbot, tiny_model, sample, notifications
):
    viewer, widget = make_segment_widget(make_napari_viewer, tiny_model)
    widget.image.set_layer(viewer.add_image(sample[0], name="nuclei"))
    assert widget.run() is not None
    widget.jobs.cancel()  # before the worker reached any check: the model may still be loading
    wait_until_idle(qtbot, widget)
    assert "nuclei labels" not in viewer.layers
    assert widget.jobs.status.text() == "Segmentation: cancelled"
    assert not any(m.startswith("Segmented") for m in messages(notifications, "info"))


def test_progress_reaches_listeners_in_order_when_showing_one_event_delivers_the_next(make_napari_viewer, monkeypatch):
    from napari_unet.core.progress import Progress

    _, widget = make_segment_widget(make_napari_viewer, "default")
    panel, passed_on = widget.jobs, []
    panel.progressed.connect(passed_on.append)
    first, second, third = (Progress("predict", done, 3, f"chunk {done}") for done in (1, 2, 3))
    update_napari_progress = panel._update_napari_progress

    def with_nested_event_loop(event: Progress) -> None:
        update_napari_progress(event)
        if event is first:  # napari's progress bar calls processEvents: the job's next events arrive now
            panel._handle_progress(second)
            panel._handle_progress(third)

    monkeypatch.setattr(panel, "_update_napari_progress", with_nested_event_loop)
    panel._handle_progress(first)
    assert [event.done for event in passed_on] == [1, 2, 3]
    assert panel.bar.value() == 3 and panel.status.text() == "chunk 3"
