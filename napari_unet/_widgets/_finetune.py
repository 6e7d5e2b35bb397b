"""Fine-tune widget: train the UNet on corrected labels in the background and save a new model version."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from napari.layers import Image, Labels, Shapes
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_unet._widgets._common import (
    META_KEY,
    JobPanel,
    LayerCombo,
    ModelCombo,
    bus,
    check_image_layer,
    check_labels_layer,
    fit_narrow,
    get_layer,
    image_axes_hint,
    info,
    layer_meta,
    layer_z_spacing,
    load_model_step,
    load_settings,
    notify_exception,
    save_settings,
    scroll_layout,
    set_layer_data,
    snapshot,
)
from napari_unet._widgets._correct import reviewed_layer_name
from napari_unet._widgets._plot import MiniPlot
from napari_unet.core.config import InferenceConfig, TrainingConfig
from napari_unet.core.data.normalize import infer_axes, spatial_shape
from napari_unet.core.errors import Cancelled, UserInputError
from napari_unet.core.predict.volumetric import VOLUME_AXES
from napari_unet.core.progress import Progress
from napari_unet.core.train.fine_tune import FINE_TUNE_LEARNING_RATE
from napari_unet.core.train.outcome import notice_of

SETTINGS = "finetune"
CHANGED_AREAS = "Changed areas"
MODES = {"Whole image": "full", "Reviewed regions (ROIs)": "rois", CHANGED_AREAS: "changed"}
RESEGMENTED_SUFFIX = " re-segmented"
PLOT_EVERY = 5  # redraw the live plot every this many steps (and on every validation)
FINETUNE_LEARNING_RATE = FINE_TUNE_LEARNING_RATE
"""Default learning rate when starting from a trained model (the benchmarked fine-tuning rate)."""


@dataclass
class TrainingData:
    """Snapshots taken when fine-tuning starts: per 2D plane an image, its labels and optional ROIs/prediction."""

    images: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    rois: list[list[np.ndarray] | None] = field(default_factory=list)
    previous: list[np.ndarray | None] = field(default_factory=list)
    sources: list[tuple[np.ndarray, str, str, float]] = field(default_factory=list)  # (image, axes, layer, scale)
    z_spacings: list[float | None] = field(default_factory=list)  # Z-stacks for a 3D model: each layer's Z step


@dataclass
class FineTuneOutcome:
    """What the worker hands back: the training result and any re-segmentations."""

    result: Any  # napari_unet.core.train.outcome.TrainResult
    resegmented: list[tuple[str, Any, float]]  # (image layer name, Prediction, scale it was predicted at)
    name: str = ""  # the run's 'Save as' name


class FineTuneWidget(QWidget):
    """Fine-tune a model on (image, corrected labels) pairs with a live loss / validation plot."""

    running: ClassVar[Any] = None  # job state of the last fine-tuning started: one at a time per session

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.image = LayerCombo(napari_viewer, (Image,))
        self.labels = LayerCombo(napari_viewer, (Labels,))
        self.pairs = QListWidget()
        self.pairs.setMaximumHeight(80)
        self.mode = QComboBox()
        self.mode.addItems(list(MODES))
        self.budget_unit = QComboBox()
        self.budget_unit.addItems(["seconds", "steps"])
        self.budget = QSpinBox()
        self.budget.setRange(1, 10**6)
        self.learning_rate = QDoubleSpinBox()
        self.learning_rate.setDecimals(5)
        self.learning_rate.setRange(1e-5, 0.1)
        self.learning_rate.setSingleStep(1e-4)
        self.learning_rate.setValue(FINETUNE_LEARNING_RATE)
        self.augment = QCheckBox("Augmentation (flips, rotations, elastic, intensity)")
        self.start_model = ModelCombo()
        self.save_name = QLineEdit()
        self.resegment = QCheckBox("Re-segment the images with the new model")
        self.save_refused = QPushButton("Save the refused weights apart")
        self.save_refused.setToolTip(
            "When validation kept the starting model, save the fine-tuned weights it refused as '<Save as>-refused' "
            "to compare on your other images; the starting model stays as it was"
        )
        self.save_refused.setEnabled(False)
        self.save_refused.clicked.connect(self.save_refused_weights)
        self.jobs = JobPanel("Fine-tuning")
        self.plot = MiniPlot()
        self.history = QListWidget()
        self.history.setMaximumHeight(100)
        self.last_outcome: FineTuneOutcome | None = None
        self._curves: dict[str, tuple[list[float], list[float]]] = {}
        self._build_layout()
        fit_narrow(self)
        self._restore_settings()
        self.jobs.progressed.connect(self._on_progress)
        self.save_name.editingFinished.connect(self.refresh_history)
        self.start_model.currentTextChanged.connect(self._offer_modes)
        self._offer_modes()
        self.refresh_history()

    # ------------------------------------------------------------------ layout

    def _build_layout(self) -> None:
        layout = scroll_layout(self)
        layout.addWidget(self._data_box())
        form = QFormLayout()
        form.addRow("Annotation", self.mode)
        budget = QHBoxLayout()
        budget.addWidget(self.budget, 1)
        budget.addWidget(self.budget_unit)
        form.addRow("Budget", budget)
        form.addRow("Learning rate", self.learning_rate)
        form.addRow(self.augment)
        form.addRow("Start from", self.start_model)
        form.addRow("Save as", self.save_name)
        form.addRow(self.resegment)
        layout.addLayout(form)
        start = QPushButton("Fine-tune")
        start.clicked.connect(self.start)
        layout.addWidget(start)
        layout.addWidget(self.jobs)
        layout.addWidget(self.save_refused)
        layout.addWidget(self.plot)
        layout.addWidget(self._history_box())
        layout.addStretch(1)

    def _data_box(self) -> QGroupBox:
        box = QGroupBox("Training data")
        form = QFormLayout(box)
        form.addRow("Image", self.image)
        form.addRow("Corrected labels", self.labels)
        buttons = QHBoxLayout()
        add, remove = QPushButton("Add pair"), QPushButton("Remove pair")
        add.clicked.connect(lambda: self.add_pair(self.image.layer(), self.labels.layer()))
        remove.clicked.connect(self._remove_selected_pair)
        buttons.addWidget(add)
        buttons.addWidget(remove)
        form.addRow(buttons)
        form.addRow("Pairs", self.pairs)
        hint = QLabel("With no pair listed, the image and labels chosen above are used.")
        hint.setWordWrap(True)
        form.addRow(hint)
        return box

    def _history_box(self) -> QGroupBox:
        box = QGroupBox("Model history (versions of 'Save as')")
        rows = QVBoxLayout(box)
        rows.addWidget(self.history)
        buttons = QHBoxLayout()
        refresh, revert = QPushButton("Refresh"), QPushButton("Revert to selected")
        export = QPushButton("Export model...")
        export.setToolTip("Write the selected version as a bioimage.io package (.zip) other tools can run")
        refresh.clicked.connect(self.refresh_history)
        revert.clicked.connect(self.revert_selected)
        export.clicked.connect(self._choose_package)
        buttons.addWidget(refresh)
        buttons.addWidget(revert)
        buttons.addWidget(export)
        rows.addLayout(buttons)
        return box

    def _restore_settings(self) -> None:
        saved = load_settings(SETTINGS)
        self.mode.setCurrentText(str(saved.get("mode", "Whole image")))
        self.budget_unit.setCurrentText(str(saved.get("budget_unit", "seconds")))
        self.budget.setValue(int(saved.get("budget", 60)))
        self.learning_rate.setValue(float(saved.get("learning_rate", FINETUNE_LEARNING_RATE)))
        self.augment.setChecked(bool(saved.get("augment", True)))
        self.save_name.setText(str(saved.get("save_name", "my-nuclei")))
        self.resegment.setChecked(bool(saved.get("resegment", True)))
        if saved.get("start_model"):
            self.start_model.select(str(saved["start_model"]))

    def _save_settings(self) -> None:
        save_settings(
            SETTINGS,
            {
                "mode": self.mode.currentText(),
                "budget_unit": self.budget_unit.currentText(),
                "budget": self.budget.value(),
                "learning_rate": self.learning_rate.value(),
                "augment": self.augment.isChecked(),
                "save_name": self.save_name.text(),
                "resegment": self.resegment.isChecked(),
                "start_model": self.start_model.currentText(),
            },
        )

    # ------------------------------------------------------------------ pairs

    def add_pair(self, image: Any, labels: Any) -> bool:
        """Add an (image layer, labels layer) pair after checking it; return True when added."""
        try:
            _check_pair(check_image_layer(image), check_labels_layer(labels, "corrected labels"))
        except UserInputError as exc:
            notify_exception(exc, "Add pair")
            return False
        text = _pair_text(image.name, labels.name)
        if not self.pairs.findItems(text, Qt.MatchFlag.MatchExactly):
            self.pairs.addItem(text)
        return True

    def _remove_selected_pair(self) -> None:
        for item in self.pairs.selectedItems():
            self.pairs.takeItem(self.pairs.row(item))

    def _offer_modes(self) -> None:
        """Offer *Changed areas* only for a 2D starting model (3D fine-tuning learns from whole stacks or ROIs)."""
        from napari_unet.core.models.registry import is_3d_model

        reference = self.start_model.currentText()
        try:
            volumetric = bool(reference) and is_3d_model(reference)
        except Exception:  # an unreadable model is reported when fine-tuning starts
            volumetric = False
        changed = self.mode.model().item(self.mode.findText(CHANGED_AREAS))
        changed.setEnabled(not volumetric)
        if volumetric and self.mode.currentText() == CHANGED_AREAS:
            self.mode.setCurrentText(next(iter(MODES)))

    def chosen_pairs(self) -> list[tuple[Image, Labels]]:
        """Return the listed pairs as layers (or the pair chosen in the combos when none is listed)."""
        if self.pairs.count() == 0:
            return [
                (check_image_layer(self.image.layer()), check_labels_layer(self.labels.layer(), "corrected labels"))
            ]
        pairs = []
        for row in range(self.pairs.count()):
            image_name, labels_name = self.pairs.item(row).text().split(" → ")
            if image_name not in self.viewer.layers or labels_name not in self.viewer.layers:
                raise UserInputError(f"the pair '{self.pairs.item(row).text()}' names a deleted layer; remove it")
            pairs.append((self.viewer.layers[image_name], self.viewer.layers[labels_name]))
        return pairs

    # ------------------------------------------------------------------ run

    def training_config(self) -> TrainingConfig:
        """Training settings from the form."""
        seconds = self.budget_unit.currentText() == "seconds"
        return TrainingConfig(
            max_seconds=float(self.budget.value()) if seconds else None,
            max_steps=None if seconds else self.budget.value(),
            learning_rate=self.learning_rate.value(),
            augment=self.augment.isChecked(),
            annotation_mode=MODES[self.mode.currentText()],
        )

    def start(self) -> Any:
        """Snapshot the data and fine-tune in a worker; return the worker (None if nothing started)."""
        try:
            if FineTuneWidget.running is not None and FineTuneWidget.running.worker is not None:
                raise UserInputError("a fine-tuning is already running; wait for it to finish or press its Cancel")
            cfg = self.training_config()
            name, start = self.save_name.text().strip(), self.start_model.reference()
            from napari_unet.core.models.registry import is_3d_model

            volumetric = is_3d_model(start)
            snapshot_pairs = self._snapshot_stacks if volumetric else self._snapshot_data
            data = snapshot_pairs(cfg.annotation_mode)
            if not name:
                raise UserInputError("type a name under 'Save as' for the fine-tuned model")
            self._save_settings()
            self._reset_plot()
            self.save_refused.setEnabled(False)
            job = _finetune_job(data, cfg, start, name, self.resegment.isChecked())
            worker = self.jobs.start(job, self._on_trained, self._on_failed, keep_result_if_cancelled=True)
        except Exception as exc:
            notify_exception(exc, "Fine-tuning")
            return None
        FineTuneWidget.running = self.jobs.state
        scales = sorted({scale for *_, scale in data.sources if scale != 1})
        at_scale = f" resized {', '.join(f'{x:g}x' for x in scales)} as they were segmented" if scales else ""
        what = "Z-stack(s) in 3D" if volumetric else "plane(s)"
        info(f"Fine-tuning {start} on {len(data.images)} {what}{at_scale}; you can keep editing meanwhile.")
        return worker

    def _snapshot_data(self, mode: str) -> TrainingData:
        data = TrainingData()
        for image_layer, labels_layer in self.chosen_pairs():
            _check_pair(image_layer, labels_layer)
            image, labels = snapshot(image_layer), snapshot(labels_layer)
            axes = infer_axes(image.shape, image_axes_hint(image_layer))
            rois = self._rois_for(labels_layer) if mode == "rois" else None
            previous = self._previous_for(labels_layer) if mode == "changed" else None
            scale = segmentation_scale(labels_layer)
            _add_planes(data, image, labels, axes, rois, previous, scale)
            data.sources.append((image, axes, image_layer.name, scale))
        if not data.images:
            raise UserInputError("the labels hold no objects in any plane: paint or segment some nuclei first")
        return data

    def _snapshot_stacks(self, mode: str) -> TrainingData:
        """Whole Z-stacks for a 3D model; in 'Reviewed regions' mode only the shapes' planes and areas count."""
        if mode == "changed":
            raise UserInputError(
                "a 3D model learns from whole stacks or reviewed regions; choose 'Whole image' or "
                "'Reviewed regions (ROIs)'"
            )
        data = TrainingData()
        for image_layer, labels_layer in self.chosen_pairs():
            _check_pair(image_layer, labels_layer)
            image, labels = snapshot(image_layer), snapshot(labels_layer)
            axes = infer_axes(image.shape, image_axes_hint(image_layer))
            if axes not in VOLUME_AXES:
                raise UserInputError(
                    f"'{image_layer.name}' is {axes}; the 3D model learns from Z-stacks (ZYX, or ZYXC for colour). "
                    "Choose a Z-stack, or a 2D model to start from"
                )
            reviewed = reviewed_voxels(self._shapes_for(labels_layer), labels.shape) if mode == "rois" else None
            data.images.append(image)
            data.labels.append(labels)
            data.rois.append(reviewed)
            data.sources.append((image, axes, image_layer.name, 1.0))
            data.z_spacings.append(layer_z_spacing(image_layer, axes))
        return data

    def _shapes_for(self, labels_layer: Labels) -> list[np.ndarray]:
        """Vertices of the shapes in the labels layer's 'reviewed' Shapes layer, as napari holds them."""
        name = layer_meta(labels_layer).get("reviewed_layer", reviewed_layer_name(labels_layer.name))
        layer = get_layer(self.viewer, name)
        if not isinstance(layer, Shapes) or len(layer.data) == 0:
            raise UserInputError(
                f"'Reviewed regions' mode needs shapes in '{name}': use Correct > 'Mark region as reviewed' first"
            )
        return [np.asarray(shape) for shape in layer.data]

    def _rois_for(self, labels_layer: Labels) -> list[np.ndarray]:
        return [vertices[:, -2:] for vertices in self._shapes_for(labels_layer)]

    def _previous_for(self, labels_layer: Labels) -> np.ndarray:
        previous = layer_meta(labels_layer).get("prediction")
        if previous is None or np.shape(previous) != np.shape(labels_layer.data):
            raise UserInputError(
                f"'Changed areas' mode needs the prediction '{labels_layer.name}' was corrected from; "
                "segment with the Segment widget into this layer first, or choose 'Whole image'"
            )
        return np.asarray(previous).copy()

    # ------------------------------------------------------------------ progress and results

    def _reset_plot(self) -> None:
        self._curves = {"loss": ([], []), "validation AP@0.5": ([], [])}
        self.plot.clear()

    def _on_progress(self, event: Progress) -> None:
        metrics = event.metrics or {}
        if event.stage != "train" or not metrics:
            return
        if metrics.get("loss") is not None and event.done:
            self._curves["loss"][0].append(event.done)
            self._curves["loss"][1].append(float(metrics["loss"]))
        validated = bool(metrics.get("validated")) and metrics.get("val_ap50") is not None
        if validated:
            steps, scores = self._curves["validation AP@0.5"]
            if steps and steps[-1] == event.done:  # the final validation of the last step replaces its point
                scores[-1] = float(metrics["val_ap50"])
            else:
                steps.append(event.done)
                scores.append(float(metrics["val_ap50"]))
        if validated or event.done % PLOT_EVERY == 0:
            self.plot.lines(self._curves, xlabel="step", secondary="validation AP@0.5")
        if metrics.get("eta_s") is not None and not self.jobs.cancel_requested():
            self.jobs.status.setText(f"{event.message}  (about {float(metrics['eta_s']):.0f} s left)")

    def _on_trained(self, outcome: FineTuneOutcome) -> None:
        self.last_outcome = outcome
        result = outcome.result
        self.plot.lines(self._curves, xlabel="step", secondary="validation AP@0.5")
        if result.saved is None:
            head = "No new version saved"
            if result.steps:
                head = f"Fine-tuned for {result.steps} steps ({result.seconds:.0f} s); no new version saved"
            refused = result.refused is not None  # 3D runs refuse nothing
            offer = f" 'Save the refused weights apart' keeps them as '{outcome.name}-refused'." if refused else ""
            self.save_refused.setEnabled(refused)
            info(f"{head}: {notice_of(result)}{offer}")
            return
        for image_name, prediction, scale in outcome.resegmented:
            self._write_resegmented(image_name, prediction, result.saved.spec, scale)
        bus.model_saved.emit(result.saved.spec)
        self.refresh_history()
        info(_summary(result))

    def _on_failed(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):
            info("Fine-tuning cancelled: no new version was saved, the previous model is kept.")

    def _write_resegmented(self, image_name: str, prediction: Any, spec: str, scale: float) -> None:
        like = get_layer(self.viewer, image_name)
        layer = set_layer_data(self.viewer, image_name + RESEGMENTED_SUFFIX, prediction.labels, "labels", like=like)
        layer_meta(layer).update(
            image=image_name,
            method="unet",
            model=spec,
            axes=prediction.axes,
            prediction=prediction.labels.copy(),
            settings={"inference": {"scale": scale}},  # fine-tuning on its corrections resizes the same way
        )

    # ------------------------------------------------------------------ history

    def refresh_history(self) -> None:
        """List the saved versions of the 'Save as' model."""
        from napari_unet.core.models import registry

        self.history.clear()
        name = self.save_name.text().strip()
        try:
            versions = registry.list_versions(name) if name else []
        except UserInputError:  # not an error: nothing saved under this name yet
            versions = []
        for version in reversed(versions):
            self.history.addItem(_version_text(version))

    def save_refused_weights(self) -> Any:
        """Save the weights the last fine-tune refused as a version of '<Save as>-refused'; return its ModelInfo."""
        from napari_unet.core.models.registry import save_version

        outcome = self.last_outcome
        try:
            if outcome is None or outcome.result.refused is None:
                raise UserInputError("the last fine-tune refused no weights: there is nothing to save apart")
            refused = outcome.result.refused
            saved = save_version(refused, f"{outcome.name}-refused", refused.metadata["lineage"])
        except Exception as exc:
            notify_exception(exc, "Save refused weights")
            return None
        self.save_refused.setEnabled(False)
        bus.model_saved.emit(saved.spec)
        info(
            f"Saved the refused fine-tuned weights as {saved.spec}: segment with it to compare; {outcome.name} "
            "is unchanged."
        )
        return saved

    def revert_selected(self) -> Any:
        """Make the selected version the newest again (a copy; history is kept)."""
        from napari_unet.core.models import registry

        items = self.history.selectedItems()
        try:
            if not items:
                raise UserInputError("select a version in the model history to revert to")
            name, _, version = items[0].text().split()[0].partition("@v")
            saved = registry.revert(name, int(version))
        except Exception as exc:
            notify_exception(exc, "Revert")
            return None
        bus.model_saved.emit(saved.spec)
        self.refresh_history()
        info(f"Reverted: {saved.spec} is a copy of {name}@v{version}.")
        return saved

    def _choose_package(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export model", "model.zip", "bioimage.io package (*.zip)")
        if path:
            self.export_selected(path, overwrite=True)  # the file dialog already asked before replacing

    def export_selected(self, path: str | Path, overwrite: bool = False) -> Any:
        """Write the selected history version as a bioimage.io package in a worker; return the worker."""
        try:
            items = self.history.selectedItems()
            if not items:
                raise UserInputError("select a version in the model history to export")
            reference = items[0].text().split()[0]
            job = _export_job(reference, Path(path), overwrite)
            return self.jobs.start(
                job, lambda written: info(f"Exported {reference} to {written}."), action="Exporting the model"
            )
        except Exception as exc:
            notify_exception(exc, "Export model")
            return None


# ---------------------------------------------------------------------- engine calls (worker thread)


def _export_job(
    reference: str, path: Path, overwrite: bool
) -> Callable[[Callable[[], bool]], Generator[Progress, None, Path]]:
    """Build the generator the worker runs: load the version, write its bioimage.io package."""

    def job(cancel: Callable[[], bool]) -> Generator[Progress, None, Path]:
        from napari_unet.core.models.bioimageio import export_bioimageio

        bundle = yield from load_model_step(reference)
        yield Progress("export", 0, 0, f"Packaging {reference} (weights as PyTorch, TorchScript and ONNX)")
        return export_bioimageio(bundle, path, overwrite=overwrite)

    return job


def _finetune_job(
    data: TrainingData, cfg: TrainingConfig, start: str, name: str, resegment: bool
) -> Callable[[Callable[[], bool]], Generator[Progress, None, FineTuneOutcome]]:
    """Build the generator the worker runs: load, fine-tune (2D or 3D) and save, then optionally re-segment."""

    def job(cancel: Callable[[], bool]) -> Generator[Progress, None, FineTuneOutcome]:
        from napari_unet.core.predict.segment import iter_predict
        from napari_unet.core.train.fine_tune import fine_tune_and_save, fine_tune_recipe
        from napari_unet.core.train.volumetric import VOLUME_BATCH_SIZE

        bundle = yield from load_model_step(start)
        volumetric = bundle.config.spatial_dims == 3
        recipe = fine_tune_recipe(bundle, cfg, keep_learning_rate=True)  # the learning rate is the panel's
        result = yield from fine_tune_and_save(
            bundle,
            data.images,
            data.labels,
            replace(recipe, batch_size=VOLUME_BATCH_SIZE) if volumetric else recipe,
            name=name,
            rois=data.rois,
            previous=None if volumetric else data.previous,
            z_spacings=data.z_spacings if volumetric else None,
            cancel=cancel,
        )
        resegmented = []
        if resegment and result.saved is not None:
            inference = InferenceConfig(device=cfg.device)
            z_spacings = data.z_spacings if volumetric else [None] * len(data.sources)
            for (image, axes, image_name, scale), z_spacing in zip(data.sources, z_spacings, strict=True):
                scaled = inference if volumetric else replace(inference, scale=scale)
                prediction = yield from iter_predict(image, result.bundle, axes, scaled, None, cancel, z_spacing)
                resegmented.append((image_name, prediction, scale))
        return FineTuneOutcome(result, resegmented, name)

    return job


def reviewed_voxels(shapes: list[np.ndarray], shape_zyx: tuple[int, ...]) -> np.ndarray:
    """``(Z, Y, X)`` bool: the areas of napari shapes drawn on planes of a Z-stack.

    Parameters
    ----------
    shapes : list of arrays (N, 3)
        Shape vertices ``(z, y, x)`` as a 3D Shapes layer holds them (each
        shape lies in one plane); ``(N, 2)`` shapes count on every plane.
    shape_zyx : tuple of int
        The stack's shape.

    """
    from napari_unet.core.train.pixel_classes import rasterize_rois

    mask = np.zeros(shape_zyx, dtype=bool)
    for vertices in shapes:
        area = rasterize_rois([vertices[:, -2:]], shape_zyx[1:])
        if vertices.shape[1] == 2:
            mask |= area[None]
            continue
        plane = round(float(vertices[0, 0]))
        if 0 <= plane < shape_zyx[0]:
            mask[plane] |= area
    if not mask.any():
        raise UserInputError("no reviewed region lies inside the stack: draw the regions on its planes")
    return mask


def _add_planes(
    data: TrainingData,
    image: np.ndarray,
    labels: np.ndarray,
    axes: str,
    rois: list[np.ndarray] | None,
    previous: np.ndarray | None,
    scale: float = 1.0,
) -> None:
    """Append the 2D planes of one pair that hold objects (channels last, as training expects).

    Planes are resized by ``scale``, the factor the labels were segmented at, so
    the model learns nuclei at the size it sees them when segmenting.
    """
    from napari_unet.core.predict.object_size import rescale_training_plane

    if "C" in axes:
        image = np.moveaxis(image, axes.index("C"), -1)
    if axes[0] not in "ZT":  # one plane
        image, labels = image[None], labels[None]
        previous = None if previous is None else previous[None]
    for index in range(labels.shape[0]):
        if not labels[index].any():
            continue
        plane_previous = None if previous is None else previous[index]
        plane = rescale_training_plane(image[index], labels[index], scale, plane_previous, rois)
        data.images.append(plane[0])
        data.labels.append(plane[1])
        data.previous.append(plane[2])
        data.rois.append(plane[3])


def segmentation_scale(labels_layer: Labels) -> float:
    """``InferenceConfig.scale`` the Segment widget used for ``labels_layer`` (1 for labels made otherwise)."""
    settings = labels_layer.metadata.get(META_KEY, {}).get("settings", {})
    return float(settings.get("inference", {}).get("scale", 1.0))


def _check_pair(image_layer: Image, labels_layer: Labels) -> None:
    """Refuse pairs whose shapes differ or whose labels are empty, with a message saying what to do."""
    image_shape = np.shape(image_layer.data)
    spatial = spatial_shape(image_shape, infer_axes(image_shape, image_axes_hint(image_layer)))
    labels_shape = tuple(np.shape(labels_layer.data))
    if labels_shape != spatial:
        raise UserInputError(
            f"'{labels_layer.name}' has shape {labels_shape} but '{image_layer.name}' needs labels of shape {spatial}; "
            "choose the labels made for this image"
        )
    if not np.any(np.asarray(labels_layer.data)):
        raise UserInputError(
            f"'{labels_layer.name}' is empty (all zero): paint some nuclei or segment the image before fine-tuning"
        )


def _pair_text(image_name: str, labels_name: str) -> str:
    return f"{image_name} → {labels_name}"


def _version_text(version: Any) -> str:
    score = version.metrics.get("val_ap50") if isinstance(version.metrics, dict) else None
    parts = [version.spec]
    if score is not None:
        parts.append(f"AP@0.5 {score:.3f}")
    if version.created:
        parts.append(str(version.created)[:16].replace("T", " "))
    return "   ".join(parts)


def _summary(result: Any) -> str:
    """Describe a fine-tune that saved a version: steps, time, the version, what validation said."""
    head = f"Fine-tuned for {result.steps} steps ({result.seconds:.0f} s) and saved {result.saved.spec}."
    return f"{head} {notice_of(result)}"
