"""Experiment widget: step through a folder of images, correct them, fine-tune on them, segment the rest.

The state of the experiment lives in :class:`napari_unet.core.experiment.Experiment`
(records and labels in the folder's ``napari-unet/`` subfolder); this panel
shows it, moves between images and runs the long jobs in the background.
Edits of the shown labels are saved before another image replaces them.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from napari_unet._widgets._common import (
    JobPanel,
    ModelCombo,
    bus,
    fit_narrow,
    get_layer,
    holds_edits,
    info,
    load_model_step,
    mark_written,
    notify_exception,
    scroll_layout,
)
from napari_unet._widgets._plot import MiniPlot
from napari_unet.core.config import TrainingConfig
from napari_unet.core.errors import UserInputError
from napari_unet.core.experiment import (
    STATE_DIR,
    Experiment,
    ImageRecord,
    iter_export_experiment,
    iter_fine_tune_experiment,
    iter_segment_experiment,
)
from napari_unet.core.progress import Progress
from napari_unet.core.train.outcome import notice_of

IMAGE_LAYER = "experiment image"
LABELS_LAYER = "experiment labels"
COLUMNS = ("Image", "Status", "Objects", "Prediction AP@0.5")
DEFAULT_BUDGET_S = 120

Job = Callable[[Callable[[], bool]], Generator[Progress, None, Any]]


class ExperimentWidget(QWidget):
    """A folder of images as one experiment: status table, Next / Previous, fine-tune, segment the rest, export."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.experiment: Experiment | None = None
        self.current: int | None = None
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("folder of images")
        self.model = ModelCombo()
        self.budget = QSpinBox()
        self.budget.setRange(5, 3600)
        self.budget.setValue(DEFAULT_BUDGET_S)
        self.budget.setSuffix(" s")
        self.auto_fine_tune = QCheckBox("Fine-tune after each save")
        self.auto_fine_tune.setToolTip("Start a fine-tuning on all saved images whenever you save one (if none runs)")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.cellDoubleClicked.connect(lambda row, _column: self.show_image(row))
        self.suggestion = QLabel("")
        self.suggestion.setWordWrap(True)
        self.curve = MiniPlot(height=1.6)
        self.image_job = JobPanel("Segmenting")  # the shown image
        self.train_job = JobPanel("Fine-tuning")  # runs beside the other jobs
        self.jobs = JobPanel("Experiment")  # the rest of the folder, export
        self.last_result: Any = None  # the last fine-tuning's TrainResult
        self._build_layout()
        fit_narrow(self)
        bus.model_saved.connect(self._refresh_table)
        self.image_job.finished.connect(self._segment_shown_if_new)
        self._segmented_last: int | None = None  # the image the last "this image" job was for

    # ------------------------------------------------------------------ layout

    def _build_layout(self) -> None:
        layout = scroll_layout(self)
        form = QFormLayout()
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder, 1)
        folder_row.addWidget(_button("Browse...", self._choose_folder))
        folder_row.addWidget(_button("Open", lambda: self.open_folder(self.folder.text())))
        form.addRow("Folder", folder_row)
        form.addRow("Model", self.model)
        form.addRow("Fine-tune for", self.budget)
        form.addRow(self.auto_fine_tune)
        layout.addLayout(form)
        layout.addWidget(self.table)
        layout.addWidget(self.suggestion)
        layout.addLayout(_row(_button("Previous", self.previous), _button("Next", self.next)))
        layout.addWidget(_button("Correct next (suggested)", self.correct_next))
        layout.addLayout(_row(_button("Segment this image", self.segment_current), _button("Save labels", self.save)))
        layout.addWidget(_button("Fine-tune on the saved images", self.fine_tune))
        export = _button("Export...", self._choose_export)
        layout.addLayout(_row(_button("Segment the rest", self.segment_rest), export))
        for panel in (self.image_job, self.train_job, self.jobs):
            layout.addWidget(panel)
        curve_title = QLabel("How much you changed the model's prediction, image by image")
        curve_title.setWordWrap(True)
        layout.addWidget(curve_title)
        layout.addWidget(self.curve)
        layout.addStretch(1)

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of images")
        if folder:
            self.folder.setText(folder)
            self.open_folder(folder)

    def _choose_export(self) -> None:
        if self.experiment is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export the experiment to a new folder")
        if path:
            self.export(path)

    # ------------------------------------------------------------------ folder and images

    def open_folder(self, folder: str | Path) -> bool:
        """Open a folder as the experiment (its records come back from ``napari-unet/``); False on a bad folder."""
        try:
            if not str(folder).strip():
                raise UserInputError("choose a folder of images first")
            self._save_shown_edits()
            self.experiment = Experiment.open(folder)
        except Exception as exc:
            notify_exception(exc, "Opening the experiment")
            return False
        self.folder.setText(str(folder))
        if self.experiment.model:
            self.model.select(self.experiment.model)
        self.current = None
        self._refresh_table()
        saved = len(self.experiment.saved_indices())
        info(f"Experiment: {len(self.experiment.records)} images, {saved} with saved labels.")
        return True

    def show_image(self, index: int) -> None:
        """Show image ``index`` with its saved labels, else its prediction, else segment it in the background."""
        try:
            experiment = self._require_experiment()
            self._save_shown_edits()
            image = experiment.read_image(index)
        except Exception as exc:
            notify_exception(exc, "Opening the image")
            return
        self.current = index
        record = experiment.records[index]
        old = get_layer(self.viewer, IMAGE_LAYER)
        if old is not None:  # an image from the folder: nothing is lost by removing its layer
            self.viewer.layers.remove(old)
        self.viewer.add_image(image, name=IMAGE_LAYER, rgb=image.ndim == 3)
        labels = experiment.saved_labels(index)
        labels = labels if labels is not None else experiment.prediction(index)
        self._show_labels(labels if labels is not None else np.zeros(image.shape[:2], np.uint32))
        self.table.selectRow(index)
        if record.status == "new" and not self.image_job.busy:  # else it follows when the running one ends
            self.segment_current()

    def _show_labels(self, labels: np.ndarray) -> None:
        layer = get_layer(self.viewer, LABELS_LAYER)
        if layer is None:
            layer = self.viewer.add_labels(labels, name=LABELS_LAYER)
        else:
            layer.data = labels
            self.viewer.layers.move(self.viewer.layers.index(layer), len(self.viewer.layers) - 1)
        mark_written(layer)
        self.viewer.layers.selection.active = layer

    def _save_shown_edits(self) -> None:
        """Save the shown labels when the user edited them (before another image or folder replaces them)."""
        layer = get_layer(self.viewer, LABELS_LAYER)
        if self.experiment is None or self.current is None or layer is None or not holds_edits(layer):
            return
        record = self._store_labels(self.experiment, layer)
        info(f"Your edits of {record.name} were saved ({record.status}).")

    def _store_labels(self, experiment: Experiment, layer: Any) -> ImageRecord:
        """Save ``layer``'s labels as the shown image's, mark them as written, refresh the table."""
        record = experiment.record_labels(self.current, np.asarray(layer.data))
        mark_written(layer)
        self._refresh_table()
        return record

    def next(self) -> None:
        """Show the next image in folder order."""
        self._step(+1)

    def previous(self) -> None:
        """Show the previous image in folder order."""
        self._step(-1)

    def _step(self, direction: int) -> None:
        if self.experiment is None:
            notify_exception(UserInputError("open a folder first"), "Next image")
            return
        count = len(self.experiment.records)
        self.show_image(0 if self.current is None else (self.current + direction) % count)

    def correct_next(self) -> None:
        """Show the image the experiment suggests correcting next, and say why."""
        suggestions = self.experiment.suggestions() if self.experiment is not None else []
        if not suggestions:
            info("Every image of the experiment has saved labels." if self.experiment else "Open a folder first.")
            return
        index, reason = suggestions[0]
        self.show_image(index)
        info(f"Suggested: {self.experiment.records[index].name} ({reason}).")

    def save(self) -> None:
        """Save the shown labels as the user's labels of the shown image."""
        layer = get_layer(self.viewer, LABELS_LAYER)
        try:
            experiment = self._require_experiment()
            if self.current is None or layer is None:
                raise UserInputError("show an image of the experiment first (Next)")
            record = self._store_labels(experiment, layer)
        except Exception as exc:
            notify_exception(exc, "Saving the labels")
            return
        changed = "" if record.prediction_ap50 is None else f"; prediction AP@0.5 {record.prediction_ap50:.3f}"
        info(f"Saved {record.name} ({record.status}, {record.objects} objects{changed}).")
        if self.auto_fine_tune.isChecked() and not self.train_job.busy:
            self.fine_tune()

    # ------------------------------------------------------------------ background jobs

    def segment_current(self) -> Any:
        """Segment the shown image in the background and show the prediction when it arrives."""
        if self.experiment is None or self.current is None:
            return None
        index, experiment, reference = self.current, self.experiment, self.model.currentText() or "default"

        def job(cancel: Callable[[], bool]) -> Generator[Progress, None, list[int]]:
            bundle = yield from load_model_step(reference)
            return (yield from iter_segment_experiment(experiment, bundle, [index], cancel))

        worker = self._start(self.image_job, job, lambda done: self._on_segmented(done, index))
        if worker is not None:
            self._segmented_last = index
        return worker

    def _segment_shown_if_new(self) -> None:
        """After a job for another image: segment the shown image if it is new (the user moved on meanwhile)."""
        if self.experiment is None or self.current is None or self.current == self._segmented_last:
            return
        if self.experiment.records[self.current].status == "new":
            self.segment_current()

    def _on_segmented(self, done: list[int], index: int) -> None:
        self._refresh_table()
        layer = get_layer(self.viewer, LABELS_LAYER)
        if self.experiment is None or index not in done or self.current != index:
            return
        if layer is not None and holds_edits(layer):
            info("The prediction arrived after you started editing; your edits were kept (Save labels keeps them).")
            return
        if self.experiment.saved_labels(index) is not None:
            info("The new prediction is saved; your saved labels of this image stay shown (its status is unchanged).")
            return
        self._show_labels(np.asarray(self.experiment.prediction(index)))

    def fine_tune(self) -> Any:
        """Fine-tune the model on every saved image of the experiment (the fine-tuning recipe) in the background."""
        if self.experiment is None:
            return None
        self._save_shown_edits()
        experiment, reference = self.experiment, self.model.currentText() or "default"
        cfg = TrainingConfig(max_seconds=float(self.budget.value()), max_steps=None)

        def job(cancel: Callable[[], bool]) -> Generator[Progress, None, Any]:
            bundle = yield from load_model_step(reference)
            return (yield from iter_fine_tune_experiment(experiment, bundle, cfg, cancel))

        return self._start(self.train_job, job, self._on_fine_tuned)

    def _on_fine_tuned(self, result: Any) -> None:
        self.last_result = result
        if result.saved is None:
            info(f"No new model version saved: {notice_of(result)}")
            return
        bus.model_saved.emit(result.saved.spec)
        info(f"Saved {result.saved.spec}; the experiment now segments with it. {notice_of(result)}")

    def segment_rest(self) -> Any:
        """Segment, in the background, every image without saved labels except the shown one."""
        if self.experiment is None:
            return None
        experiment, reference = self.experiment, self.model.currentText() or "default"
        indices = [i for i in experiment.unsaved_indices() if i != self.current]

        def job(cancel: Callable[[], bool]) -> Generator[Progress, None, list[int]]:
            bundle = yield from load_model_step(reference)
            return (yield from iter_segment_experiment(experiment, bundle, indices, cancel))

        return self._start(self.jobs, job, lambda done: self._done(f"Segmented {len(done)} images"), "Segmenting")

    def export(self, path: str | Path, overwrite: bool = False) -> Any:
        """Export the experiment's labels, measurements and summary to the new folder ``path`` in the background."""
        if self.experiment is None:
            return None
        experiment = self.experiment

        def job(cancel: Callable[[], bool]) -> Generator[Progress, None, Path]:
            return (yield from iter_export_experiment(experiment, path, overwrite, cancel))

        return self._start(self.jobs, job, lambda out: self._done(f"Exported the experiment to {out}"), "Exporting")

    def _start(self, panel: JobPanel, job: Job, on_done: Callable[[Any], None], action: str | None = None) -> Any:
        try:
            self._require_experiment()
            return panel.start(job, on_done, keep_result_if_cancelled=True, action=action)
        except Exception as exc:
            notify_exception(exc, action or panel.action)
            return None

    def _done(self, message: str) -> None:
        self._refresh_table()
        info(message + ".")

    def _require_experiment(self) -> Experiment:
        if self.experiment is None:
            raise UserInputError("open a folder of images first (Folder, then Open)")
        return self.experiment

    # ------------------------------------------------------------------ table, suggestion, learning curve

    def _refresh_table(self, *_: Any) -> None:
        experiment = self.experiment
        if experiment is None:
            return
        self.table.setRowCount(len(experiment.records))
        for row, record in enumerate(experiment.records):
            ap = "" if record.prediction_ap50 is None else f"{record.prediction_ap50:.3f}"
            cells = (record.name, record.status, "" if record.objects is None else str(record.objects), ap)
            for column, text in enumerate(cells):
                self.table.setItem(row, column, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        suggestions = experiment.suggestions()
        if suggestions:
            index, reason = suggestions[0]
            self.suggestion.setText(f"Correct next: {experiment.records[index].name} ({reason}).")
        else:
            self.suggestion.setText(f"Every image has saved labels (in {experiment.folder / STATE_DIR}).")
        self._draw_curve()

    def _draw_curve(self) -> None:
        points = self.experiment.learning_curve() if self.experiment is not None else []
        if not points:
            self.curve.clear()
            return
        orders = [float(order) for order, _, _ in points]
        self.curve.lines({"prediction AP@0.5 (1 = nothing to change)": (orders, [ap for *_, ap in points])}, "saved")


def _button(text: str, slot: Callable[[], Any]) -> QPushButton:
    button = QPushButton(text)
    button.clicked.connect(lambda *_: slot())
    return button


def _row(*widgets: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    for widget in widgets:
        row.addWidget(widget)
    return row
