"""Re-segmenting never destroys edits: a labels layer that was painted, filled or corrected is kept."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet._widgets._common import holds_edits
from tests.gui.helpers import make_segment_widget, messages, wait_until_idle

pytestmark = pytest.mark.gui


def _segment(widget, qtbot) -> None:
    assert widget.run() is not None
    wait_until_idle(qtbot, widget)


def _paint_square(layer, value: int) -> np.ndarray:
    """Paint a 6x6 square with ``value`` the way the brush does (one undoable step); return the edited data."""
    indices = tuple(np.mgrid[2:8, 2:8].reshape(2, -1))
    with layer.block_history():
        layer.data_setitem(indices, value)
    return np.array(layer.data, copy=True)


def test_resegmenting_keeps_a_painted_layer_and_writes_a_new_one(
    make_napari_viewer, qtbot, tiny_model, sample, notifications
):
    viewer, widget = make_segment_widget(make_napari_viewer, tiny_model)
    image = viewer.add_image(sample[0], name="nuclei")
    widget.image.set_layer(image)
    _segment(widget, qtbot)
    labels = viewer.layers["nuclei labels"]
    assert not holds_edits(labels)
    edited = _paint_square(labels, 99)
    assert holds_edits(labels)

    _segment(widget, qtbot)

    assert viewer.layers["nuclei labels"] is labels, "the edited layer stays"
    np.testing.assert_array_equal(labels.data, edited)
    fresh = viewer.layers["nuclei labels [2]"]
    assert 99 not in np.unique(fresh.data), "the new prediction is in its own layer"
    assert any("holds your edits, so it was kept (hidden" in m for m in messages(notifications, "info"))
    assert fresh.visible and not labels.visible, "the canvas shows the new labels, not a blend of both"
    assert viewer.layers.selection.active is fresh

    # the fresh layer has no edits: segmenting again updates it in place, and the edited one still stays
    n_layers = len(viewer.layers)
    _segment(widget, qtbot)
    assert len(viewer.layers) == n_layers and viewer.layers["nuclei labels [2]"] is fresh
    np.testing.assert_array_equal(labels.data, edited)
    assert not messages(notifications, "error")


def test_a_labels_layer_napari_unet_did_not_write_is_never_replaced(
    make_napari_viewer, qtbot, tiny_model, sample, notifications
):
    viewer, widget = make_segment_widget(make_napari_viewer, tiny_model)
    image = viewer.add_image(sample[0], name="nuclei")
    drawn = viewer.add_labels(sample[1].astype(np.int32), name="nuclei labels")  # hand-made, same name
    widget.image.set_layer(image)
    _segment(widget, qtbot)
    np.testing.assert_array_equal(drawn.data, sample[1])
    assert "nuclei labels [2]" in viewer.layers


def test_rerun_postprocessing_keeps_edits(make_napari_viewer, qtbot, tiny_model, sample, notifications):
    viewer, widget = make_segment_widget(make_napari_viewer, tiny_model)
    widget.image.set_layer(viewer.add_image(sample[0], name="nuclei"))
    widget.min_size.setValue(0)
    _segment(widget, qtbot)
    labels = viewer.layers["nuclei labels"]
    edited = _paint_square(labels, 77)

    widget.min_size.setValue(10**6)
    result = widget.rerun_postprocessing()

    assert result is not labels and result.data.max() == 0
    np.testing.assert_array_equal(labels.data, edited)
    assert result.metadata["napari_unet"]["model"] == labels.metadata["napari_unet"]["model"]
    # the new layer is now the cached one: re-running again updates it, not the edited layer
    widget.min_size.setValue(0)
    assert widget.rerun_postprocessing() is result and result.data.max() >= 2
    np.testing.assert_array_equal(labels.data, edited)


def test_undoing_every_edit_is_still_treated_as_edited(make_napari_viewer, qtbot, tiny_model, sample):
    viewer, widget = make_segment_widget(make_napari_viewer, tiny_model)
    widget.image.set_layer(viewer.add_image(sample[0], name="nuclei"))
    _segment(widget, qtbot)
    labels = viewer.layers["nuclei labels"]
    _paint_square(labels, 5)
    labels.undo()
    assert holds_edits(labels), "the user touched the layer: keep it rather than guess"
