"""Panel pieces: a scrolling layout, layer and model pickers, and the bus that tells pickers of new models."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from napari.layers import Layer
from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QFrame,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from napari_unet._widgets._layers import get_layer
from napari_unet._widgets._notify import warn
from napari_unet.core.errors import UserInputError

logger = logging.getLogger("napari_unet")


def scroll_layout(panel: QWidget) -> QVBoxLayout:
    """Put a vertical scroll area in ``panel`` and return the layout of its content.

    A docked panel then asks napari for little height, so all five panels
    fit a 1080 px screen stacked in one dock column and every control stays
    reachable by scrolling.  The scroll area is ``panel.scroll_area``.
    """
    outer = QVBoxLayout(panel)
    outer.setContentsMargins(0, 0, 0, 0)
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    content = QWidget()
    scroll.setWidget(content)
    outer.addWidget(scroll)
    panel.scroll_area = scroll  # type: ignore[attr-defined]
    return QVBoxLayout(content)


COMBO_MIN_CHARACTERS = 12
"""Characters a drop-down shows at its narrowest (it grows with the dock)."""


def fit_narrow(panel: QWidget) -> None:
    """Let ``panel`` fit a narrow dock: form fields go below their labels, long drop-down entries do not widen it.

    Call it once the panel's rows are built.  Every control still shows its
    whole text (a test docks all panels at 1366 x 768 and checks).
    """
    for form in panel.findChildren(QFormLayout):
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
    for combo in panel.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(COMBO_MIN_CHARACTERS)


class LayerCombo(QComboBox):
    """A combo box listing the viewer's layers of some types, kept up to date.

    Parameters
    ----------
    viewer : napari.Viewer
    layer_types : tuple of layer classes
    allow_none : bool
        Offer a first ``(none)`` entry.

    """

    def __init__(
        self,
        viewer: Any,
        layer_types: tuple[type, ...],
        allow_none: bool = False,
        prefer: Callable[[Layer], float] | None = None,
    ) -> None:
        super().__init__()
        self._viewer = viewer
        self._types = layer_types
        self._allow_none = allow_none
        self._prefer = prefer
        self._chosen_by_user = False
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed, viewer.layers.events.reordered):
            event.connect(self.refresh)
        self.activated.connect(self._on_user_choice)
        self.refresh()

    def _on_user_choice(self, *_: Any) -> None:
        self._chosen_by_user = True

    def refresh(self, *_: Any) -> None:
        """Re-list matching layers, keeping the selection when it still exists.

        Until the user picks a layer, the layer ``prefer`` ranks highest
        (above 0; the first of equals) is selected, also when it is added
        later: e.g. a ground truth over corrected labels over a raw prediction.
        """
        current = self.currentText()
        self.blockSignals(True)
        self.clear()
        if self._allow_none:
            self.addItem("(none)")
        layers = [layer for layer in self._viewer.layers if isinstance(layer, self._types)]
        names = [layer.name for layer in layers]
        self.addItems(names)
        ranks = {layer.name: float(self._prefer(layer)) if self._prefer is not None else 0.0 for layer in layers}
        best = max(ranks.values(), default=0.0)
        if best > 0 and not self._chosen_by_user and ranks.get(current, 0.0) < best:
            self.setCurrentText(next(name for name in names if ranks[name] == best))
        elif current in names:
            self.setCurrentText(current)
        self.blockSignals(False)
        if self.currentText() != current:
            self.currentTextChanged.emit(self.currentText())

    def layer(self) -> Layer | None:
        """Return the selected layer, or None."""
        return get_layer(self._viewer, self.currentText())

    def set_layer(self, layer: Layer | str) -> None:
        """Select ``layer`` (a layer or its name), as if the user had picked it."""
        self._chosen_by_user = True
        self.refresh()
        self.setCurrentText(layer if isinstance(layer, str) else layer.name)


class _Bus(QObject):
    """Signals shared between widgets (one instance per process)."""

    model_saved = Signal(str)  # the new model reference, e.g. "my-nuclei@v3"


bus = _Bus()

FILE_ITEM = "Load from file..."


class ModelCombo(QComboBox):
    """Choose a model: bundled and user models (all versions) plus folders/files picked by the user."""

    def __init__(self) -> None:
        super().__init__()
        self._paths: list[str] = []
        self.refresh()
        bus.model_saved.connect(self._on_model_saved)

    def refresh(self) -> None:
        """Re-list the models in the store, keeping the selection."""
        current = self.currentText()
        self.blockSignals(True)
        self.clear()
        self.addItems(model_references() + self._paths)
        if current:
            self.select(current)
        self.blockSignals(False)

    def showPopup(self) -> None:  # noqa: N802 (Qt override)
        """Re-list the store before opening (another widget may have saved a version)."""
        self.refresh()
        super().showPopup()

    def select(self, reference: str) -> None:
        """Select ``reference``, adding it to the list when it is new (e.g. a path)."""
        if self.findText(reference) < 0:
            self._paths.append(reference)
            self.addItem(reference)
        self.setCurrentText(reference)

    def reference(self) -> str:
        """Return the selected model reference for :func:`napari_unet.core.models.registry.load_model`."""
        text = self.currentText()
        if not text:
            raise UserInputError("no model to use: train one with Fine-tune or load one from a file")
        return text

    def _on_model_saved(self, reference: str) -> None:
        self.refresh()
        self.select(reference)


def model_references() -> list[str]:
    """Model references the store knows (bundled first), e.g. ``["default", "my-nuclei@v2", ...]``."""
    from napari_unet.core.models import registry

    try:
        infos = registry.list_models()
    except Exception as exc:  # a broken store must not break the widget
        logger.warning("could not list models", exc_info=True)
        warn(f"Could not list the saved models ({type(exc).__name__}: {exc}); models can still be loaded from files.")
        return []
    return [info.spec for info in infos]
