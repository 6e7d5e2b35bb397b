from __future__ import annotations

import numpy as np
import pytest

from napari_unet._widgets import SegmentWidget
from tests.gui.helpers import messages, wait_until_idle

pytestmark = pytest.mark.gui


def make_widget(make_napari_viewer, model: str):
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model.select(model)
    return viewer, widget


def test_segment_writes_labels_and_updates_in_place(make_napari_viewer, qtbot, tiny_model, sample, notifications):
    viewer, widget = make_widget(make_napari_viewer, tiny_model)
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
    viewer, widget = make_widget(make_napari_viewer, tiny_model)
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


def test_segment_zstack_slice_by_slice_with_notice(make_napari_viewer, qtbot, tiny_model, sample, notifications):
    viewer, widget = make_widget(make_napari_viewer, tiny_model)
    stack = np.stack([sample[0], sample[0][::-1]])  # 2 planes, ZYX
    viewer.add_image(stack, name="stack")
    widget.run()
    wait_until_idle(qtbot, widget)
    labels = viewer.layers["stack labels"].data
    assert labels.shape == (2, 96, 96)
    assert labels[0].max() > 0 and labels[1].max() > 0
    assert any("slice by slice" in m for m in messages(notifications, "info"))


def test_segment_bad_inputs_are_notified(make_napari_viewer, qtbot, tiny_model, notifications):
    viewer, widget = make_widget(make_napari_viewer, tiny_model)
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
    _, widget = make_widget(make_napari_viewer, tiny_model)
    assert widget.device_info.text().startswith("found: ")
    widget.device.setCurrentText("cuda")
    assert widget.inference_config().device == "cuda"
