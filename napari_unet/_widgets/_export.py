"""Export widget: write Labels layers as TIFF/PNG/NPY/OME-Zarr, ImageJ ROIs, measurements and provenance."""

from __future__ import annotations

import re
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_unet._widgets._common import (
    JobPanel,
    LayerCombo,
    error,
    fit_narrow,
    info,
    layer_meta,
    load_settings,
    notify_exception,
    save_settings,
    scroll_layout,
    snapshot,
    warn,
)
from napari_unet.core import io
from napari_unet.core.errors import UserInputError
from napari_unet.core.progress import Progress

SETTINGS = "export"

# format key -> (check box text, file name suffix appended to the layer name)
FORMATS: dict[str, tuple[str, str]] = {
    "tif": ("TIFF (ImageJ)", ".tif"),
    "png": ("PNG (16-bit, 2D only)", ".png"),
    "npy": ("NumPy .npy", ".npy"),
    "zarr": ("OME-Zarr", ".ome.zarr"),
    "roi": ("ImageJ ROI zip", "_rois.zip"),
    "csv": ("Measurements CSV", "_measurements.csv"),
}


@dataclass(frozen=True)
class ExportItem:
    """One file to write: a snapshot of a layer in one format."""

    layer_name: str
    labels: np.ndarray
    fmt: str
    path: Path
    image: np.ndarray | None
    provenance: dict[str, Any] | None

    def outputs(self) -> list[Path]:
        """Paths this item writes (the export, then its provenance file)."""
        return [self.path] + ([io.provenance_path(self.path)] if self.provenance is not None else [])


class ExportWidget(QWidget):
    """Export Labels layers to the formats other tools read."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.layer_list = QListWidget()
        self.folder = QLineEdit()
        self.image = LayerCombo(napari_viewer, (Image,), allow_none=True)
        self.format_boxes = {key: QCheckBox(text) for key, (text, _) in FORMATS.items()}
        self.provenance = QCheckBox("Provenance JSON beside each file")
        self.jobs = JobPanel("Export")
        self.last_written: list[Path] = []
        self._build_layout()
        fit_narrow(self)
        self._restore_settings()
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self.refresh_layers)
        self.refresh_layers()

    # ------------------------------------------------------------------ layout

    def _build_layout(self) -> None:
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse_folder)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder, 1)
        folder_row.addWidget(browse)
        select_all = QPushButton("Select all labels layers")
        select_all.clicked.connect(self.select_all_layers)
        export = QPushButton("Export")
        export.clicked.connect(self.export)
        form = QFormLayout()
        form.addRow("Labels layers", self.layer_list)
        form.addRow(select_all)
        form.addRow("Folder", folder_row)
        form.addRow("Intensity image", self.image)
        formats = QVBoxLayout()
        for box in self.format_boxes.values():
            formats.addWidget(box)
        formats.addWidget(self.provenance)
        form.addRow("Formats", formats)
        layout = scroll_layout(self)
        layout.addLayout(form)
        layout.addWidget(export)
        layout.addWidget(self.jobs)
        layout.addStretch(1)

    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export folder", self.folder.text())
        if folder:
            self.folder.setText(folder)

    def _restore_settings(self) -> None:
        saved = load_settings(SETTINGS)
        self.folder.setText(str(saved.get("folder", Path.home())))
        chosen = set(saved.get("formats", ["tif", "csv"]))
        for key, box in self.format_boxes.items():
            box.setChecked(key in chosen)
        self.provenance.setChecked(bool(saved.get("provenance", True)))

    def _save_settings(self) -> None:
        save_settings(
            SETTINGS,
            {"folder": self.folder.text(), "formats": self.chosen_formats(), "provenance": self.provenance.isChecked()},
        )

    # ------------------------------------------------------------------ layer list

    def refresh_layers(self, *_: Any) -> None:
        """List the viewer's Labels layers as check boxes, keeping the ticks."""
        ticked = set(self.chosen_layer_names())
        self.layer_list.clear()
        for layer in self.viewer.layers:
            if isinstance(layer, Labels):
                item = QListWidgetItem(layer.name)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Checked if layer.name in ticked else Qt.CheckState.Unchecked)
                self.layer_list.addItem(item)

    def select_all_layers(self) -> None:
        """Tick every Labels layer (batch export)."""
        for row in range(self.layer_list.count()):
            self.layer_list.item(row).setCheckState(Qt.CheckState.Checked)

    def set_chosen_layers(self, names: list[str]) -> None:
        """Tick exactly the layers in ``names``."""
        for row in range(self.layer_list.count()):
            item = self.layer_list.item(row)
            item.setCheckState(Qt.CheckState.Checked if item.text() in names else Qt.CheckState.Unchecked)

    def chosen_layer_names(self) -> list[str]:
        """Return the names of the ticked layers."""
        items = (self.layer_list.item(row) for row in range(self.layer_list.count()))
        return [item.text() for item in items if item.checkState() == Qt.CheckState.Checked]

    def chosen_formats(self) -> list[str]:
        """Return the ticked format keys (see :data:`FORMATS`)."""
        return [key for key, box in self.format_boxes.items() if box.isChecked()]

    # ------------------------------------------------------------------ export

    def export(self) -> Any:
        """Export the ticked layers in the ticked formats; return the worker (None if nothing started)."""
        try:
            items = self._collect_items()
            existing = [path for item in items for path in item.outputs() if path.exists()]
            if existing and not self.ask_overwrite(existing):
                info("Export skipped: nothing was overwritten.")
                return None
            self._save_settings()
            job = lambda cancel: _write_items(items, bool(existing), cancel)  # noqa: E731
            return self.jobs.start(job, self._on_written, keep_result_if_cancelled=True)
        except Exception as exc:
            notify_exception(exc, "Export")
            return None

    def ask_overwrite(self, existing: list[Path]) -> bool:
        """Ask before replacing files (tests replace this method)."""
        names = "\n".join(str(path) for path in existing[:8]) + ("\n..." if len(existing) > 8 else "")
        answer = QMessageBox.question(
            self,
            "Overwrite files?",
            f"{len(existing)} file(s) already exist:\n{names}\n\nReplace them?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def _collect_items(self) -> list[ExportItem]:
        names, formats = self.chosen_layer_names(), self.chosen_formats()
        if not names:
            raise UserInputError("no Labels layer ticked: tick the layers to export (or 'Select all labels layers')")
        if not formats:
            raise UserInputError("no format ticked: tick at least one of TIFF, PNG, NumPy, OME-Zarr, ROI zip or CSV")
        folder = Path(self.folder.text()).expanduser()
        if not self.folder.text().strip() or (folder.exists() and not folder.is_dir()):
            raise UserInputError(f"'{self.folder.text()}' is not a folder; choose an export folder")
        _check_writable(folder)
        image = self._intensity_image()
        return [self._item(self.viewer.layers[name], fmt, folder, image) for name in names for fmt in formats]

    def _intensity_image(self) -> np.ndarray | None:
        layer = self.image.layer()
        return None if layer is None else snapshot(layer)

    def _item(self, layer: Labels, fmt: str, folder: Path, image: np.ndarray | None) -> ExportItem:
        labels = snapshot(layer)
        path = folder / (safe_file_name(layer.name) + FORMATS[fmt][1])
        record = self._provenance(layer, labels, image) if self.provenance.isChecked() else None
        return ExportItem(layer.name, labels, fmt, path, image if fmt in ("zarr", "csv") else None, record)

    def _provenance(self, layer: Labels, labels: np.ndarray, image: np.ndarray | None) -> dict[str, Any]:
        meta = layer_meta(layer)
        inputs = [image] if image is not None else []
        settings = {"layer": layer.name, **meta.get("settings", {})}
        return io.provenance(
            model=meta.get("model"), settings=settings, inputs=inputs, method=meta.get("method", "manual")
        )

    def _on_written(self, result: tuple[list[Path], list[str]]) -> None:
        """Report the export once: what was written, and the problems in one message."""
        self.last_written, problems = result
        more = f" (and {len(problems) - 1} more problem(s) like it)" if len(problems) > 1 else ""
        if problems and not self.last_written:
            error(f"Export failed, nothing was exported: {problems[0]}{more}")
            self.jobs.status.setText(f"Export: failed ({len(problems)} problem(s))")
            return
        if problems:
            warn(f"Some files were not exported: {problems[0]}{more}")
            self.jobs.status.setText(f"Export: partly done ({len(problems)} problem(s))")
        info(f"Exported {len(self.last_written)} file(s) to {self.folder.text()}")


def _check_writable(folder: Path) -> None:
    """Refuse, before any work, an export folder (or its nearest existing parent) that does not accept files."""
    import tempfile

    existing = next(p for p in (folder, *folder.parents) if p.exists())
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise UserInputError(
            f"cannot write to {existing} ({exc.strerror or exc}); choose an export folder you can write to"
        ) from exc


def _write_items(
    items: list[ExportItem], overwrite: bool, cancel: Callable[[], bool]
) -> Generator[Progress, None, tuple[list[Path], list[str]]]:
    """Write every item; a format a layer cannot hold is reported, the others are still written."""
    written: list[Path] = []
    problems: list[str] = []
    for done, item in enumerate(items):
        if cancel():
            problems.append(f"Export cancelled after {done} of {len(items)} files.")
            break
        yield Progress("export", done, len(items), f"writing {item.path.name}")
        try:
            item.path.parent.mkdir(parents=True, exist_ok=True)
            written += io.export_labels(
                item.labels, item.path, item.fmt, overwrite=overwrite, image=item.image, provenance=item.provenance
            )
        except (UserInputError, OSError) as exc:
            problems.append(f"{item.layer_name} ({item.fmt}) not exported: {exc}")
    yield Progress("export", len(items), len(items), "export finished")
    return written, problems


def safe_file_name(name: str) -> str:
    """Turn a layer name into a portable file name stem."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return stem or "labels"
