"""Glue shared by the napari-unet widgets: settings, notifications, layer pickers, workers.

Nothing here computes on image data; it only moves data between napari layers,
Qt widgets and the engine in :mod:`napari_unet.core`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import weakref
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Layer
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from napari_unet.core.errors import Cancelled, UserInputError
from napari_unet.core.progress import Progress

logger = logging.getLogger("napari_unet")

CONFIG_ENV = "NAPARI_UNET_CONFIG_DIR"
CACHE_ENV = "NAPARI_UNET_CACHE_DIR"
SETTINGS_FILE = "widgets.json"
META_KEY = "napari_unet"

__all__ = [
    "META_KEY",
    "JobPanel",
    "LayerCombo",
    "ModelCombo",
    "bus",
    "cache_dir",
    "config_dir",
    "layer_meta",
    "load_settings",
    "notify_exception",
    "save_settings",
    "snapshot",
]


# --------------------------------------------------------------------------- settings


def config_dir() -> Path:
    """Folder of the widget settings (``$NAPARI_UNET_CONFIG_DIR`` or the platform's user config dir)."""
    override = os.environ.get(CONFIG_ENV)
    if override:
        return Path(override)
    from platformdirs import user_config_dir

    return Path(user_config_dir("napari-unet", appauthor=False))


def cache_dir() -> Path:
    """Folder for bulky results kept on disk (``$NAPARI_UNET_CACHE_DIR`` or the platform's user cache dir)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("napari-unet", appauthor=False))


def _read_all() -> dict[str, Any]:
    path = config_dir() / SETTINGS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        logger.warning("ignoring the unreadable napari-unet settings file %s", path, exc_info=True)
        return {}
    return data if isinstance(data, dict) else {}


def load_settings(section: str) -> dict[str, Any]:
    """Return the settings a widget saved last time (empty when none or unreadable)."""
    values = _read_all().get(section, {})
    return values if isinstance(values, dict) else {}


def save_settings(section: str, values: dict[str, Any]) -> None:
    """Remember ``values`` for ``section`` (best effort: a failure is only logged)."""
    data = _read_all()
    data[section] = values
    path = config_dir() / SETTINGS_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        tmp.replace(path)
    except OSError:
        logger.warning("could not save napari-unet settings to %s", path, exc_info=True)


# --------------------------------------------------------------------------- notifications


def notify_exception(exc: BaseException, action: str) -> None:
    """Show ``exc`` as a napari notification, never as a traceback.

    :class:`UserInputError` shows its own message, :class:`Cancelled` an info
    line; anything else a short error while the traceback goes to the log.
    """
    if isinstance(exc, Cancelled):
        show_info(f"{action} cancelled.")
    elif isinstance(exc, UserInputError):
        show_error(str(exc))
    else:
        logger.error("%s failed", action, exc_info=(type(exc), exc, exc.__traceback__))
        show_error(f"{action} failed: {type(exc).__name__}: {exc}. See the log for details.")


def warn(message: str) -> None:
    """Show a warning notification."""
    show_warning(message)


def error(message: str) -> None:
    """Show an error notification."""
    show_error(message)


def info(message: str) -> None:
    """Show an info notification."""
    show_info(message)


# --------------------------------------------------------------------------- layers


SNAPSHOT_MEMORY_FRACTION = 0.5
"""Largest share of the free RAM one layer copy may take (the rest is for the job working on it)."""


def snapshot(layer: Layer) -> np.ndarray:
    """Copy a layer's data into memory so the user may keep editing it meanwhile.

    Multiscale layers give their full-resolution level.

    Raises
    ------
    UserInputError
        If the copy would take more than :data:`SNAPSHOT_MEMORY_FRACTION` of
        the free memory (a lazy layer far larger than RAM would otherwise
        freeze the machine while it is read).

    """
    from napari_unet.core.memory import system_available_bytes

    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    needed = int(np.prod(np.shape(data), dtype=np.int64)) * np.dtype(data.dtype).itemsize
    available = system_available_bytes()
    if needed > SNAPSHOT_MEMORY_FRACTION * available:
        raise UserInputError(
            f"'{layer.name}' needs {_size_text(needed)} in memory, more than half of the "
            f"{_size_text(available)} free; work on a cropped region instead (add a slice of the layer's data "
            "as a new layer, e.g. viewer.add_labels(layer.data[:4096, :4096]))"
        )
    return np.array(data, copy=True)


def _size_text(n_bytes: int) -> str:
    """``'67 MB'`` or ``'2.1 GB'``."""
    return f"{n_bytes / 1e9:.1f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:.0f} MB"


def get_layer(viewer: Any, name: str) -> Layer | None:
    """Return the viewer's layer called ``name``, or None."""
    return viewer.layers[name] if name in viewer.layers else None  # noqa: SIM401 (LayerList has no .get)


def layer_meta(layer: Layer) -> dict[str, Any]:
    """Return the napari-unet entry of ``layer.metadata`` (created when missing)."""
    return layer.metadata.setdefault(META_KEY, {})


def check_labels_layer(layer: Layer | None, what: str = "labels") -> Labels:
    """Return ``layer`` if it is a Labels layer, else raise a clear :class:`UserInputError`."""
    if layer is None:
        raise UserInputError(f"no {what} layer: add or choose a Labels layer first")
    if not isinstance(layer, Labels):
        kind = "an RGB image" if getattr(layer, "rgb", False) else f"a {type(layer).__name__} layer"
        raise UserInputError(f"'{layer.name}' is {kind}, not labels; choose a Labels layer for {what}")
    return layer


def check_image_layer(layer: Layer | None) -> Image:
    """Return ``layer`` if it is an Image layer, else raise a clear :class:`UserInputError`."""
    if layer is None:
        raise UserInputError("no image layer: open an image (or File > Open Sample > napari-unet) first")
    if not isinstance(layer, Image):
        raise UserInputError(f"'{layer.name}' is a {type(layer).__name__} layer; choose an Image layer")
    return layer


def image_axes_hint(layer: Image) -> str | None:
    """Axes napari already knows: ``YXC`` for RGB layers, else None (let the engine guess)."""
    return "YXC" if layer.rgb else None


def set_layer_data(viewer: Any, name: str, data: Any, kind: str, like: Layer | None = None, **kwargs: Any):
    """Update layer ``name`` in place, or add it (``kind`` ``"labels"`` or ``"image"``) aligned with ``like``.

    A Labels layer that holds edits (:func:`holds_edits`) is never overwritten:
    the data goes to a new layer (``name [2]``, ...) and a notice says so.
    Labels this function writes are remembered (:func:`mark_written`), so a
    later call replaces them as long as nobody edited them.

    Returns the layer.
    """
    existing = viewer.layers[name] if name in viewer.layers else None  # noqa: SIM401 (LayerList.get differs)
    if existing is not None and _kind_of(existing) == kind:
        if kind != "labels" or not holds_edits(existing):
            existing.data = data
            if kind == "labels":
                mark_written(existing)
            return existing
        info(f"'{name}' holds edits, so it was kept; the new labels are in '{unique_name(viewer, name)}'.")
    if like is not None:
        kwargs.setdefault("scale", tuple(like.scale)[-data.ndim :])
        kwargs.setdefault("translate", tuple(like.translate)[-data.ndim :])
    adder = viewer.add_labels if kind == "labels" else viewer.add_image
    layer = adder(data, name=unique_name(viewer, name), **kwargs)
    if kind == "labels":
        mark_written(layer)
    return layer


WRITTEN_KEY = "written_digest"
"""``layer_meta`` key: digest of the labels napari-unet last wrote into the layer (``"lazy"`` for on-disk labels)."""
EDITED_KEY = "edited"
"""``layer_meta`` key: True once the layer was painted, filled or changed by a Correct helper."""


def labels_digest(data: Any) -> str:
    """Return a digest of in-memory labels (shape, dtype and bytes); ``"lazy"`` for arrays that are not NumPy."""
    if not isinstance(data, np.ndarray):
        return "lazy"
    digest = hashlib.blake2b(np.ascontiguousarray(data).view(np.uint8).ravel(), digest_size=16)
    return f"{data.shape}:{data.dtype}:{digest.hexdigest()}"


def mark_written(layer: Labels) -> None:
    """Remember that napari-unet wrote ``layer``'s current data, and watch it for edits from now on."""
    meta = layer_meta(layer)
    meta[WRITTEN_KEY] = labels_digest(layer.data)
    meta[EDITED_KEY] = False
    if layer not in _WATCHED:
        _WATCHED.add(layer)
        layer.events.paint.connect(_mark_edited)


_WATCHED: weakref.WeakSet[Labels] = weakref.WeakSet()
"""Labels layers whose paint events mark them edited."""


def _mark_edited(event: Any) -> None:
    layer_meta(event.source)[EDITED_KEY] = True


def holds_edits(layer: Labels) -> bool:
    """Whether ``layer`` holds labels napari-unet did not write: painted, corrected, or made by someone else.

    In-memory labels are compared with the digest of what napari-unet last
    wrote; on-disk (lazy) labels count as edited once a paint, fill or
    Correct helper touched them.
    """
    meta = layer.metadata.get(META_KEY, {})
    written = meta.get(WRITTEN_KEY)
    if written is None or meta.get(EDITED_KEY, False):
        return True
    return written != "lazy" and written != labels_digest(layer.data)


def _kind_of(layer: Layer) -> str:
    return "labels" if isinstance(layer, Labels) else "image" if isinstance(layer, Image) else "other"


def unique_name(viewer: Any, name: str) -> str:
    """``name``, or ``name [2]``, ``name [3]``... whichever is not yet a layer."""
    candidate, n = name, 1
    while candidate in viewer.layers:
        n += 1
        candidate = f"{name} [{n}]"
    return candidate


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
        prefer: Callable[[Layer], bool] | None = None,
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

        Until the user picks a layer, a layer ``prefer`` accepts is selected
        over one it does not (e.g. corrected labels over a raw prediction).
        """
        current = self.currentText()
        self.blockSignals(True)
        self.clear()
        if self._allow_none:
            self.addItem("(none)")
        layers = [layer for layer in self._viewer.layers if isinstance(layer, self._types)]
        names = [layer.name for layer in layers]
        self.addItems(names)
        preferred = [layer.name for layer in layers if self._prefer is not None and self._prefer(layer)]
        if preferred and not self._chosen_by_user and current not in preferred:
            self.setCurrentText(preferred[0])
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


# --------------------------------------------------------------------------- models


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
        """Return the selected model reference for :func:`napari_unet.core.store.load_model`."""
        text = self.currentText()
        if not text:
            raise UserInputError("no model to use: train one with Fine-tune or load one from a file")
        return text

    def _on_model_saved(self, reference: str) -> None:
        self.refresh()
        self.select(reference)


def model_references() -> list[str]:
    """Model references the store knows (bundled first), e.g. ``["default", "my-nuclei@v2", ...]``."""
    from napari_unet.core import store

    try:
        infos = store.list_models()
    except Exception as exc:  # a broken store must not break the widget
        logger.warning("could not list models", exc_info=True)
        warn(f"Could not list the saved models ({type(exc).__name__}: {exc}); models can still be loaded from files.")
        return []
    return [info.spec for info in infos]


# --------------------------------------------------------------------------- workers


class _JobState:
    """Plain-Python record of the running worker.

    Kept apart from the Qt widget so the worker's ``finished`` signal still
    clears it when the widget was deleted first (viewer closed mid-run).
    """

    def __init__(self) -> None:
        self.worker: Any = None
        self.cancel = threading.Event()

    def finished(self) -> None:
        """Forget the worker (connected to its ``finished`` signal)."""
        self.worker = None

    def cancel_requested(self) -> bool:
        """Return True once Cancel was pressed or napari asked the worker to quit (e.g. the viewer closed)."""
        worker = self.worker
        return self.cancel.is_set() or (worker is not None and worker.abort_requested)


class JobPanel(QWidget):
    """Progress bar, status line and Cancel button running one engine generator at a time.

    The engine generator receives ``cancel`` (a callable returning True once
    Cancel was pressed or the viewer closed) and yields
    :class:`~napari_unet.core.progress.Progress`; its return value goes to
    ``on_done``.  Errors become notifications.
    """

    progressed = Signal(object)  # every Progress event

    def __init__(self, action: str) -> None:
        super().__init__()
        self.action = action
        self._state = _JobState()
        self._on_done: Callable[[Any], None] = lambda _result: None
        self._on_failed: Callable[[BaseException], None] | None = None
        self._keep_result_if_cancelled = False
        self.bar = QProgressBar()
        self.bar.setTextVisible(True)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row = QHBoxLayout()
        row.addWidget(self.bar, 1)
        row.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.status)

    @property
    def busy(self) -> bool:
        """True while a job runs."""
        return self._state.worker is not None

    @property
    def state(self) -> _JobState:
        """The plain-Python job record (outlives the widget)."""
        return self._state

    @property
    def worker(self) -> Any:
        """The running napari worker, or None."""
        return self._state.worker

    def start(
        self,
        make_generator: Callable[[Callable[[], bool]], Generator[Progress, None, Any]],
        on_done: Callable[[Any], None],
        on_failed: Callable[[BaseException], None] | None = None,
        keep_result_if_cancelled: bool = False,
    ) -> Any:
        """Run ``make_generator(cancel)`` in a napari thread worker and return the worker.

        A result that arrives after Cancel was pressed (the job finished
        before it checked) is discarded and the job reported as cancelled,
        unless ``keep_result_if_cancelled`` (jobs whose result is already on
        disk, such as a saved model or written files, report it anyway).

        Raises
        ------
        UserInputError
            If a job of this panel is already running.

        """
        if self.busy:
            raise UserInputError(f"{self.action} is already running; wait for it or press Cancel")
        state = self._state
        state.cancel.clear()
        self._on_done, self._on_failed = on_done, on_failed
        self._keep_result_if_cancelled = keep_result_if_cancelled

        def job() -> Generator[Progress, None, Any]:
            return (yield from make_generator(state.cancel_requested))

        worker = create_worker(job, _progress={"desc": self.action}, _ignore_errors=True)
        # bound methods only: Qt drops them if this widget is deleted (viewer closed) before the worker ends
        worker.yielded.connect(self._handle_progress)
        worker.returned.connect(self._handle_result)
        worker.errored.connect(self._handle_error)
        worker.aborted.connect(self._handle_abort)
        worker.finished.connect(self._state.finished)  # a plain-Python slot: runs even after the panel is deleted
        worker.finished.connect(self._handle_finished)
        self._state.worker = worker
        self.bar.setRange(0, 0)
        self.status.setText(f"{self.action}: starting...")
        self.cancel_button.setEnabled(True)
        worker.start()
        return worker

    def cancel_requested(self) -> bool:
        """Return True once Cancel was pressed or napari asked the worker to quit."""
        return self._state.cancel_requested()

    def cancel(self) -> None:
        """Ask the running job to stop at its next check."""
        if self._state.worker is not None:
            self._state.cancel.set()
            self.status.setText(f"{self.action}: cancelling...")

    def _handle_progress(self, event: Progress) -> None:
        if event.total:
            self.bar.setRange(0, event.total)
            self.bar.setValue(min(event.done, event.total))
        self.status.setText(event.message or f"{event.stage} {event.done}/{event.total}")
        self._update_napari_progress(event)
        self.progressed.emit(event)

    def _update_napari_progress(self, event: Progress) -> None:
        pbar = getattr(self.worker, "pbar", None)
        if pbar is None or not event.total:
            return
        if pbar.total != event.total:
            pbar.total = event.total
        pbar.update(max(0, min(event.done, event.total) - pbar.n))
        if event.message:
            pbar.set_description(event.message)

    def _handle_result(self, result: Any) -> None:
        if self._state.cancel.is_set() and not self._keep_result_if_cancelled:
            self.status.setText(f"{self.action}: cancelled")
            info(f"{self.action} cancelled: its result was discarded, nothing was changed.")
            return
        self.status.setText(f"{self.action}: done")
        try:
            self._on_done(result)
        except Exception as exc:  # turning results into layers must not crash napari
            notify_exception(exc, self.action)

    def _handle_error(self, exc: BaseException) -> None:
        notify_exception(exc, self.action)
        self.status.setText(f"{self.action}: cancelled" if isinstance(exc, Cancelled) else f"{self.action}: failed")
        if self._on_failed is not None:
            self._on_failed(exc)

    def _handle_abort(self) -> None:
        self.status.setText(f"{self.action}: stopped")

    def _handle_finished(self) -> None:
        self.cancel_button.setEnabled(False)
        self.bar.setRange(0, 1)
        self.bar.setValue(0 if self._state.cancel.is_set() else 1)
