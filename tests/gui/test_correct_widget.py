from __future__ import annotations

import numpy as np
import pytest

from napari_unet._widgets import CorrectWidget
from tests.gui.helpers import messages

pytestmark = pytest.mark.gui


def touching_discs() -> np.ndarray:
    """Label 3: two touching discs (centres (20, 15) and (20, 27)); label 5: a 4-pixel speck; label 8: a disc."""
    yy, xx = np.mgrid[:48, :48]
    labels = np.zeros((48, 48), dtype=np.int32)
    labels[((yy - 20) ** 2 + (xx - 15) ** 2 <= 49) | ((yy - 20) ** 2 + (xx - 27) ** 2 <= 49)] = 3
    labels[40:42, 2:4] = 5
    labels[((yy - 38) ** 2 + (xx - 38) ** 2 <= 16)] = 8
    return labels


@pytest.fixture
def corrected(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = CorrectWidget(viewer)
    viewer.window.add_dock_widget(widget)
    layer = viewer.add_labels(touching_discs(), name="cells")
    widget.labels.set_layer(layer)
    return viewer, widget, layer


def test_delete_small_then_undo(corrected, notifications):
    _, widget, layer = corrected
    original = layer.data.copy()
    widget.min_size.setValue(5)
    assert widget.delete_small() == 4
    assert 5 not in layer.data and 3 in layer.data and 8 in layer.data
    layer.undo()
    np.testing.assert_array_equal(layer.data, original)
    layer.redo()
    assert 5 not in layer.data


def test_merge_typed_ids_is_one_undo_step(corrected):
    _, widget, layer = corrected
    original = layer.data.copy()
    widget.merge_ids.setText("3, 8")
    changed = widget.merge()
    assert changed == int((original == 8).sum())
    assert set(np.unique(layer.data)) == {0, 3, 5}
    layer.undo()
    np.testing.assert_array_equal(layer.data, original)


def test_merge_and_split_with_clicked_points(corrected, notifications):
    _viewer, widget, layer = corrected
    points = widget.start_points()
    assert points.name == "correction points" and points.mode == "add"

    points.data = np.array([[20, 12], [20, 30]])  # both inside label 3
    widget.split_at_points()
    assert layer.data[20, 12] == 3 and layer.data[20, 30] == 9  # next free label after 8
    assert len(points.data) == 0, "points are cleared after use"

    points.data = np.array([[20, 12], [38, 38]])  # labels 3 and 8
    before_merge = layer.data.copy()
    widget.merge()
    assert layer.data[38, 38] == 3 and layer.data[20, 12] == 3
    assert not messages(notifications, "error")
    assert _viewer.layers.selection.active is layer, "the labels are active again, so Ctrl+Z undoes the merge"
    layer.undo()
    np.testing.assert_array_equal(layer.data, before_merge)


def test_split_that_cannot_honour_the_clicks_changes_nothing(corrected, notifications):
    _viewer, widget, layer = corrected
    original = layer.data.copy()
    points = widget.start_points()
    points.data = np.array([[20, 9], [20, 10]])  # two clicks side by side at the rim of one disc
    assert widget.split_at_points() is None
    np.testing.assert_array_equal(layer.data, original)
    assert "nothing was changed" in messages(notifications, "error")[-1]


def test_split_follows_the_dark_seam_of_the_image(make_napari_viewer, notifications):
    """Two nuclei of unequal size fused into one convex blob: only the image shows where one ends."""
    yy, xx = np.mgrid[:60, :60]
    big, small = (yy - 30) ** 2 + (xx - 24) ** 2 <= 14**2, (yy - 30) ** 2 + (xx - 41) ** 2 <= 7**2
    image = np.where(big | small, 200.0, 10.0)
    seam = np.abs(np.sqrt((yy - 30) ** 2 + (xx - 24) ** 2) - 14.5) < 1.2
    image[seam & small] = 60.0  # the dim rim between the two nuclei
    viewer = make_napari_viewer()
    widget = CorrectWidget(viewer)
    viewer.add_image(image, name="fused")
    layer = viewer.add_labels(
        (big | small).astype(np.int32), name="fused labels", metadata={"napari_unet": {"image": "fused"}}
    )
    widget.labels.set_layer(layer)
    widget.start_points().data = np.array([[30, 22], [30, 43]])
    widget.split_at_points()
    pieces = [layer.data == value for value in (1, 2)]
    truth = [big, small & ~big]
    for piece, nucleus in zip(pieces, truth, strict=True):
        assert (piece & nucleus).sum() / (piece | nucleus).sum() >= 0.8
    assert not messages(notifications, "error")


def test_split_selected_from_distance_map(corrected):
    _, widget, layer = corrected
    layer.selected_label = 3
    widget.split_selected()
    assert {int(layer.data[20, 15]), int(layer.data[20, 27])} == {3, 9}


def test_fill_holes_relabel_and_next_free_label(corrected):
    _viewer, widget, layer = corrected
    layer.data_setitem((np.array([20]), np.array([15])), 0)  # punch a hole
    widget.fill_holes()
    assert layer.data[20, 15] == 3
    widget.relabel()
    assert set(np.unique(layer.data)) == {0, 1, 2, 3}
    assert widget.next_free_label() == 4
    assert layer.selected_label == 4 and layer.mode == "paint"


def test_mark_region_reviewed_adds_shapes_layer(corrected):
    _viewer, widget, layer = corrected
    shapes = widget.mark_reviewed()
    assert shapes.name == "cells reviewed"
    assert shapes.mode == "add_rectangle"
    assert layer.metadata["napari_unet"]["reviewed_layer"] == "cells reviewed"
    assert widget.mark_reviewed() is shapes  # reused, not duplicated


def test_correct_bad_inputs(make_napari_viewer, notifications):
    viewer = make_napari_viewer()
    widget = CorrectWidget(viewer)
    assert widget.merge() is None
    assert "no labels layer" in messages(notifications, "error")[-1]
    layer = viewer.add_labels(touching_discs(), name="cells")
    widget.labels.set_layer(layer)
    widget.merge_ids.setText("3")
    assert widget.merge() is None
    assert "at least two" in messages(notifications, "error")[-1]
    widget.merge_ids.setText("three")
    assert widget.merge() is None
    assert "not a list of label numbers" in messages(notifications, "error")[-1]
    widget.merge_ids.setText("")
    assert widget.split_at_points() is None
    assert "no points clicked" in messages(notifications, "error")[-1]
    points = widget.start_points()
    points.data = np.array([[20, 12], [0, 0]])  # one inside, one on background
    assert widget.split_at_points() is None
    assert "not inside the selected object" in messages(notifications, "error")[-1]
    points.data = np.array([[20, 12], [38, 38]])  # two different objects
    assert widget.split_at_points() is None
    assert "ONE object" in messages(notifications, "error")[-1]
    np.testing.assert_array_equal(layer.data, touching_discs())  # nothing was changed or lost
