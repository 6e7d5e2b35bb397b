"""Compare widget: score the UNet and classical baselines against a ground-truth Labels layer."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils.colormaps import DirectLabelColormap
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_unet._widgets._common import (
    JobPanel,
    LayerCombo,
    ModelCombo,
    check_image_layer,
    check_labels_layer,
    fit_narrow,
    ground_truth_rank,
    image_axes_hint,
    info,
    layer_z_spacing,
    load_settings,
    notify_exception,
    save_settings,
    scroll_layout,
    set_layer_data,
    snapshot,
)
from napari_unet._widgets._plot import MiniPlot
from napari_unet.core.data.normalize import infer_axes, spatial_shape
from napari_unet.core.errors import UserInputError
from napari_unet.core.evaluate.baselines import BASELINE_METHODS
from napari_unet.core.progress import Progress, check_cancel

SETTINGS = "compare"
UNET_CURRENT = "UNet"
UNET_PREVIOUS = "UNet (previous version)"
BASELINE_TITLES = {"otsu": "Otsu", "li": "Li", "local": "Local threshold", "watershed": "Watershed"}
COLUMNS = ("Method", "AP@0.5", "AP@0.75", "F1@0.5", "PQ@0.5", "Dice", "Objects", "Seconds")
ERROR_COLORS = {1: "#2ecc71", 2: "#e74c3c", 3: "#f1c40f", 4: "#00e5ff", 5: "#ff8c00"}  # metrics.error_class_map codes
ERROR_LEGEND = "Error layers: green TP, red FP, yellow FN (missed), cyan split GT object, orange merged prediction"


@dataclass
class MethodScore:
    """One row of the comparison: the method's table row, labels and error class map."""

    method: str
    row: dict[str, float | int]
    seconds: float
    labels: np.ndarray
    errors: np.ndarray  # 0 none, 1 TP, 2 FP, 3 FN, 4 split, 5 merge (later classes drawn on top)


class CompareWidget(QWidget):
    """Compare the UNet (current and previous version) with Otsu / Li / local threshold / watershed."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.ground_truth = LayerCombo(napari_viewer, (Labels,), prefer=ground_truth_rank)  # not a raw prediction
        self.image = LayerCombo(napari_viewer, (Image,))
        self.model = ModelCombo()
        self.method_boxes = {UNET_CURRENT: QCheckBox("UNet (model above)"), UNET_PREVIOUS: QCheckBox(UNET_PREVIOUS)}
        self.method_boxes.update({BASELINE_TITLES[m]: QCheckBox(BASELINE_TITLES[m]) for m in BASELINE_METHODS})
        self.error_layers = QCheckBox("Add error layers (TP / FP / FN / split / merge)")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.chart = MiniPlot(height=2.0)
        self.jobs = JobPanel("Comparison")
        self.scores: list[MethodScore] = []
        self._build_layout()
        fit_narrow(self)
        self._restore_settings()

    # ------------------------------------------------------------------ layout

    def _build_layout(self) -> None:
        form = QFormLayout()
        form.addRow("Ground truth", self.ground_truth)
        form.addRow("Image", self.image)
        form.addRow("Model", self.model)
        methods = QGroupBox("Methods")
        boxes = QVBoxLayout(methods)
        for box in self.method_boxes.values():
            boxes.addWidget(box)
        run, save = QPushButton("Compare"), QPushButton("Save table as CSV...")
        run.clicked.connect(self.run)
        save.clicked.connect(self._choose_csv)
        legend = QLabel(ERROR_LEGEND)
        legend.setWordWrap(True)
        layout = scroll_layout(self)
        layout.addLayout(form)
        layout.addWidget(methods)
        layout.addWidget(self.error_layers)
        layout.addWidget(run)
        layout.addWidget(self.jobs)
        layout.addWidget(self.table)
        layout.addWidget(save)
        layout.addWidget(self.chart)
        layout.addWidget(legend)
        layout.addStretch(1)

    def _restore_settings(self) -> None:
        saved = load_settings(SETTINGS)
        chosen = set(saved.get("methods", [UNET_CURRENT, "Otsu", "Watershed"]))
        for name, box in self.method_boxes.items():
            box.setChecked(name in chosen)
        self.error_layers.setChecked(bool(saved.get("error_layers", True)))

    def chosen_methods(self) -> list[str]:
        """Return the ticked method names (table titles)."""
        return [name for name, box in self.method_boxes.items() if box.isChecked()]

    def set_methods(self, names: list[str]) -> None:
        """Tick exactly the methods in ``names``."""
        for name, box in self.method_boxes.items():
            box.setChecked(name in names)

    # ------------------------------------------------------------------ run

    def run(self) -> Any:
        """Segment with every ticked method and score it in a worker; return the worker (None if not started)."""
        try:
            gt_layer = check_labels_layer(self.ground_truth.layer(), "ground truth")
            image_layer = check_image_layer(self.image.layer())
            methods = self.chosen_methods()
            if not methods:
                raise UserInputError("tick at least one method to compare")
            image, ground_truth = snapshot(image_layer), snapshot(gt_layer)
            axes = _check_shapes(image, ground_truth, image_axes_hint(image_layer), gt_layer.name, image_layer.name)
            model = self.model.reference() if {UNET_CURRENT, UNET_PREVIOUS} & set(methods) else ""
            save_settings(SETTINGS, {"methods": methods, "error_layers": self.error_layers.isChecked()})
            job = _compare_job(image, ground_truth, axes, methods, model, layer_z_spacing(image_layer, axes))
            return self.jobs.start(job, lambda scores: self._on_scored(scores, image_layer))
        except Exception as exc:
            notify_exception(exc, "Comparison")
            return None

    def _on_scored(self, result: tuple[list[MethodScore], list[str]], image_layer: Image) -> None:
        self.scores, skipped = result
        for note in skipped:
            info(note)
        self._fill_table()
        self.chart.bars([s.method for s in self.scores], [float(s.row["AP@0.5"]) for s in self.scores], "AP@0.5")
        if self.error_layers.isChecked():
            for score in self.scores:
                self._write_error_layer(score, image_layer)

    def _fill_table(self) -> None:
        self.table.setRowCount(len(self.scores))
        for row, score in enumerate(self.scores):
            for column, value in enumerate(table_row(score)):
                self.table.setItem(row, column, QTableWidgetItem(_format(value)))
        self.table.resizeColumnsToContents()
        self._fit_table_height()

    def _fit_table_height(self) -> None:
        """Make the table exactly tall enough for all its rows (the panel scrolls, not the table)."""
        table = self.table
        rows = sum(table.rowHeight(row) for row in range(table.rowCount()))
        scrollbar = table.horizontalScrollBar().sizeHint().height()
        table.setFixedHeight(table.horizontalHeader().height() + rows + 2 * table.frameWidth() + scrollbar)

    def _write_error_layer(self, score: MethodScore, like: Image) -> None:
        colormap = DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", **ERROR_COLORS})
        layer = set_layer_data(
            self.viewer, f"{score.method} errors", score.errors, "labels", like=like, colormap=colormap, opacity=0.6
        )
        layer.visible = score is self.scores[0]

    # ------------------------------------------------------------------ CSV

    def _choose_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save comparison", "comparison.csv", "CSV (*.csv)")
        if path:
            self.save_csv(path, overwrite=True)  # the file dialog already asked before replacing

    def save_csv(self, path: str | Path, overwrite: bool = False) -> Path | None:
        """Write the table to ``path`` (CSV, one row per method); return the path or None on error."""
        from napari_unet.core.io import write_csv

        try:
            if not self.scores:
                raise UserInputError("nothing to save: press 'Compare' first")
            rows = [table_row(score) for score in self.scores]
            table = {column: [row[i] for row in rows] for i, column in enumerate(COLUMNS)}
            written = write_csv(table, path, overwrite=overwrite)
        except Exception as exc:
            notify_exception(exc, "Save table")
            return None
        info(f"Saved the comparison to {written}")
        return written


# ---------------------------------------------------------------------- engine calls (worker thread)


def _compare_job(
    image: np.ndarray,
    ground_truth: np.ndarray,
    axes: str,
    methods: list[str],
    model: str,
    z_spacing: float | None = None,
) -> Callable[[Callable[[], bool]], Generator[Progress, None, tuple[list[MethodScore], list[str]]]]:
    """Build the generator the worker runs: segment with each method, time it, score it."""

    def job(cancel: Callable[[], bool]) -> Generator[Progress, None, tuple[list[MethodScore], list[str]]]:
        from napari_unet.core.evaluate.metrics import error_class_map, error_maps, evaluate_image, summary_row

        scores, skipped = [], []
        for done, method in enumerate(methods):
            check_cancel(cancel)
            yield Progress("compare", done, len(methods), f"{method}: segmenting")
            started = time.perf_counter()
            labels = _segment(method, image, axes, model, cancel, z_spacing)
            seconds = time.perf_counter() - started
            if labels is None:
                skipped.append(f"{method} skipped: the model '{model}' has no parent or previous version")
                continue
            row = summary_row(evaluate_image(ground_truth, labels))
            errors = error_class_map(error_maps(ground_truth, labels))
            scores.append(MethodScore(method, row, seconds, labels, errors))
        yield Progress("compare", len(methods), len(methods), "comparison finished")
        return scores, skipped

    return job


def _segment(
    method: str, image: np.ndarray, axes: str, model: str, cancel: Callable[[], bool], z_spacing: float | None = None
) -> np.ndarray | None:
    """Labels of one method (None when the previous model version does not exist).

    On a Z-stack the classical methods find 3D objects too: threshold and
    watershed run on the volume (distances in physical units when the layer's
    scale gives the Z step), the local threshold per plane with slices linked.
    """
    from napari_unet.core.evaluate.baselines import VOLUME_BASELINE_METHODS, segment_baseline, segment_volume_baseline
    from napari_unet.core.labels.postprocess import link_slices
    from napari_unet.core.models.registry import load_model, previous_version
    from napari_unet.core.predict.segment import predict

    if method in (UNET_CURRENT, UNET_PREVIOUS):
        reference = model if method == UNET_CURRENT else previous_version(model)
        if reference is None:
            return None
        return predict(image, load_model(reference), axes, cancel=cancel, z_spacing=z_spacing).labels
    key = next(key for key, title in BASELINE_TITLES.items() if title == method)
    if axes == "ZYX":
        if key in VOLUME_BASELINE_METHODS:
            return segment_volume_baseline(image, key, z_spacing=z_spacing or 1.0)
        return link_slices(segment_baseline(image, key, axes))
    return segment_baseline(image, key, axes)


def _check_shapes(image: np.ndarray, ground_truth: np.ndarray, hint: str | None, gt_name: str, image_name: str) -> str:
    axes = infer_axes(image.shape, hint)
    spatial = spatial_shape(image.shape, axes)
    if ground_truth.shape != spatial:
        raise UserInputError(
            f"ground truth '{gt_name}' has shape {ground_truth.shape} but '{image_name}' has spatial shape {spatial}; "
            "choose the labels drawn on this image"
        )
    return axes


def table_row(score: MethodScore) -> list[Any]:
    """Values of one table / CSV row in :data:`COLUMNS` order."""
    row = score.row
    return [
        score.method,
        row["AP@0.5"],
        row["AP@0.75"],
        row["F1@0.5"],
        row["PQ@0.5"],
        row["Dice"],
        int(row["n_pred"]),
        round(score.seconds, 3),
    ]


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)
