"""Correct widget: helpers beside napari's own paint / erase / fill tools.

Every edit is computed by :mod:`napari_unet.core.labels.editing` on a copy of the
labels and written back with ``Labels.data_setitem`` inside
``Labels.block_history()``, so one press of Ctrl+Z undoes one helper.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Points, Shapes
from qtpy.QtWidgets import (
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_unet._widgets._common import (
    LayerCombo,
    check_labels_layer,
    fit_narrow,
    info,
    layer_meta,
    load_settings,
    notify_exception,
    save_settings,
    scroll_layout,
)
from napari_unet.core.errors import UserInputError
from napari_unet.core.labels import editing

SETTINGS = "correct"
POINTS_NAME = "correction points"
REVIEWED_SUFFIX = " reviewed"


def apply_edit(layer: Labels, new: np.ndarray) -> int:
    """Write ``new`` into ``layer`` as one undoable step; return the number of changed pixels."""
    indices, values = editing.changed_pixels(np.asarray(layer.data), new)
    if values.size:
        with layer.block_history():
            layer.data_setitem(indices, values)
    return int(values.size)


def reviewed_layer_name(labels_name: str) -> str:
    """Name of the Shapes layer holding the reviewed regions of a labels layer."""
    return labels_name + REVIEWED_SUFFIX


class CorrectWidget(QWidget):
    """Label-correction helpers: delete small, merge, split, fill holes, relabel, next label, reviewed regions."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.labels = LayerCombo(napari_viewer, (Labels,))
        self.min_size = QSpinBox()
        self.min_size.setRange(0, 10**7)
        self.merge_ids = QLineEdit()
        self.merge_ids.setPlaceholderText("e.g. 3, 7 (empty: labels under the clicked points)")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self._build_layout()
        fit_narrow(self)
        self.min_size.setValue(int(load_settings(SETTINGS).get("min_size", 30)))

    # ------------------------------------------------------------------ layout

    def _button(self, text: str, slot: Callable[[], Any], tip: str) -> QPushButton:
        button = QPushButton(text)
        button.setToolTip(tip)
        button.clicked.connect(slot)
        return button

    def _build_layout(self) -> None:
        form = QFormLayout()
        form.addRow("Labels", self.labels)
        hint = QLabel("Paint, erase and fill with napari's layer controls; Ctrl+Z undoes any helper below.")
        hint.setWordWrap(True)
        layout = scroll_layout(self)
        layout.addLayout(form)
        layout.addWidget(hint)
        layout.addWidget(self._objects_box())
        layout.addWidget(self._points_box())
        layout.addWidget(self._review_box())
        layout.addWidget(self.status)
        layout.addStretch(1)

    def _objects_box(self) -> QGroupBox:
        box = QGroupBox("Whole layer")
        small = QHBoxLayout()
        small.addWidget(QLabel("Delete objects smaller than"))
        small.addWidget(self.min_size)
        small.addWidget(self._button("Delete", self.delete_small, "Remove every object below this many pixels"))
        rows = QVBoxLayout(box)
        rows.addLayout(small)
        buttons = QHBoxLayout()
        buttons.addWidget(self._button("Fill holes", self.fill_holes, "Fill background holes inside every object"))
        buttons.addWidget(self._button("Relabel 1..N", self.relabel, "Renumber objects sequentially"))
        buttons.addWidget(
            self._button("Next free label", self.next_free_label, "Select an unused label and switch to painting")
        )
        rows.addLayout(buttons)
        return box

    def _points_box(self) -> QGroupBox:
        box = QGroupBox("Merge / split")
        rows = QVBoxLayout(box)
        rows.addWidget(
            self._button("Click points...", self.start_points, f"Add a '{POINTS_NAME}' layer and click inside objects")
        )
        merge = QHBoxLayout()
        merge.addWidget(self.merge_ids, 1)
        merge.addWidget(self._button("Merge", self.merge, "Merge the listed labels, or those under the points"))
        rows.addLayout(merge)
        split = QHBoxLayout()
        split.addWidget(
            self._button("Split at points", self.split_at_points, "Watershed from two or more points in one object")
        )
        split.addWidget(
            self._button("Split selected", self.split_selected, "Watershed from the distance map of the selected label")
        )
        rows.addLayout(split)
        return box

    def _review_box(self) -> QGroupBox:
        box = QGroupBox("Partial annotation")
        rows = QVBoxLayout(box)
        rows.addWidget(
            self._button(
                "Mark region as reviewed",
                self.mark_reviewed,
                "Draw rectangles/polygons around areas you have checked; Fine-tune's 'ROIs' mode trains only there",
            )
        )
        return box

    # ------------------------------------------------------------------ helpers

    def _edit(self, action: str, compute: Callable[[np.ndarray], np.ndarray]) -> int | None:
        """Run one editing function on the chosen layer and write the result back undoably."""
        try:
            layer = check_labels_layer(self.labels.layer())
            changed = apply_edit(layer, compute(np.asarray(layer.data)))
        except Exception as exc:
            notify_exception(exc, action)
            return None
        self.status.setText(f"{action}: {changed} pixel(s) changed" if changed else f"{action}: nothing to change")
        return changed

    def delete_small(self) -> int | None:
        """Delete objects smaller than the chosen size."""
        save_settings(SETTINGS, {"min_size": self.min_size.value()})
        return self._edit(
            "Delete small objects", lambda data: editing.delete_small_objects(data, self.min_size.value())
        )

    def fill_holes(self) -> int | None:
        """Fill background holes inside objects."""
        return self._edit("Fill holes", editing.fill_holes)

    def relabel(self) -> int | None:
        """Renumber objects 1..N."""
        return self._edit("Relabel", editing.relabel_sequential)

    def merge(self) -> int | None:
        """Merge the typed labels, or the labels under the clicked points."""

        def compute(data: np.ndarray) -> np.ndarray:
            ids = self._typed_ids() or editing.labels_at(data, self._points_in(self.labels.layer()))
            return editing.merge_labels(data, ids)

        changed = self._edit("Merge", compute)
        if changed is not None:
            self._clear_points()
        return changed

    def split_at_points(self) -> int | None:
        """Split the object holding the clicked points, one piece per point."""

        def compute(data: np.ndarray) -> np.ndarray:
            points = self._points_in(self.labels.layer())
            ids = set(editing.labels_at(data, points)) - {0}
            if len(ids) != 1 or len(points) < 2:
                found = sorted(ids) or "background only"
                raise UserInputError(f"click two or more points inside ONE object to split it (points hit: {found})")
            return editing.split_label(data, ids.pop(), seeds=points, image=self._nuclei_brightness(data.shape))

        changed = self._edit("Split", compute)
        if changed is not None:
            self._clear_points()
        return changed

    def split_selected(self) -> int | None:
        """Split the layer's selected label in two, at the two highest maxima of its distance map."""
        layer = self.labels.layer()
        label_id = int(layer.selected_label) if isinstance(layer, Labels) else 0
        return self._edit(
            "Split", lambda data: editing.split_label(data, label_id, image=self._nuclei_brightness(data.shape))
        )

    def _nuclei_brightness(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """Return the labels' source image normalised with nuclei bright (for the cut); None when not at hand.

        The image is the layer the labels were segmented from (their
        metadata names it); only a 2D image of the labels' shape is used.
        """
        from napari_unet.core.config import NormalizeConfig
        from napari_unet.core.data.normalize import normalize_plane

        labels = self.labels.layer()
        name = layer_meta(labels).get("image") if labels is not None else None
        image = self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401 (no LayerList.get)
        if not isinstance(image, Image) or len(shape) != 2 or image.multiscale:
            return None
        data = np.asarray(image.data)
        if data.shape[:2] != shape or data.ndim not in (2, 3):
            return None
        return normalize_plane(data, NormalizeConfig(), 1)[0]

    def next_free_label(self) -> int | None:
        """Select the first unused label and switch the layer to painting."""
        try:
            layer = check_labels_layer(self.labels.layer())
            value = editing.next_free_label(np.asarray(layer.data))
        except Exception as exc:
            notify_exception(exc, "Next free label")
            return None
        layer.selected_label = value
        layer.mode = "paint"
        self.viewer.layers.selection.active = layer
        self.status.setText(f"Painting with new label {value}")
        return value

    # ------------------------------------------------------------------ points and reviewed regions

    def start_points(self) -> Points | None:
        """Add (or activate) the points layer used by merge and split."""
        try:
            labels = check_labels_layer(self.labels.layer())
        except UserInputError as exc:
            notify_exception(exc, "Click points")
            return None
        if POINTS_NAME in self.viewer.layers and isinstance(self.viewer.layers[POINTS_NAME], Points):
            points = self.viewer.layers[POINTS_NAME]
        else:
            points = self.viewer.add_points(
                name=POINTS_NAME, ndim=labels.ndim, size=4, face_color="yellow", border_color="black"
            )
        self.viewer.layers.selection.active = points
        points.mode = "add"
        return points

    def _points_in(self, labels: Labels | None) -> list[tuple[float, ...]]:
        """Clicked points in the data coordinates of ``labels``."""
        if labels is None or POINTS_NAME not in self.viewer.layers:
            raise UserInputError("no points clicked: press 'Click points...' and click inside the objects first")
        points = self.viewer.layers[POINTS_NAME]
        coords = [tuple(labels.world_to_data(points.data_to_world(p))) for p in np.asarray(points.data)]
        if not coords:
            raise UserInputError("no points clicked: click inside the objects on the 'correction points' layer")
        return coords

    def _clear_points(self) -> None:
        """Empty the points layer and make the labels layer active again, so Ctrl+Z undoes the edit."""
        if POINTS_NAME in self.viewer.layers:
            self.viewer.layers[POINTS_NAME].data = np.empty((0, self.viewer.layers[POINTS_NAME].ndim))
        labels = self.labels.layer()
        if labels is not None and labels in self.viewer.layers:
            self.viewer.layers.selection.active = labels

    def _typed_ids(self) -> list[int]:
        text = self.merge_ids.text().replace(";", ",").replace(" ", ",")
        try:
            return [int(part) for part in text.split(",") if part.strip()]
        except ValueError as exc:
            raise UserInputError(f"'{self.merge_ids.text()}' is not a list of label numbers, e.g. '3, 7'") from exc

    def mark_reviewed(self) -> Shapes | None:
        """Add (or activate) the Shapes layer of reviewed regions of the chosen labels layer."""
        try:
            labels = check_labels_layer(self.labels.layer())
        except UserInputError as exc:
            notify_exception(exc, "Mark region as reviewed")
            return None
        name = reviewed_layer_name(labels.name)
        if name in self.viewer.layers and isinstance(self.viewer.layers[name], Shapes):
            shapes = self.viewer.layers[name]
        else:
            shapes = self.viewer.add_shapes(
                name=name,
                ndim=labels.ndim,
                edge_color="lime",
                face_color="transparent",
                edge_width=2,
                scale=tuple(labels.scale),
                translate=tuple(labels.translate),
            )
        layer_meta(labels)["reviewed_layer"] = name
        self.viewer.layers.selection.active = shapes
        shapes.mode = "add_rectangle"
        info("Draw rectangles (or polygons) around the regions you have reviewed.")
        return shapes
