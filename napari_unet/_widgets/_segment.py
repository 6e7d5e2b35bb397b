"""Segment widget: run a UNet on an image layer and write an editable Labels layer.

The panel only: its engine calls are in :mod:`._segment_jobs`; large or lazy
images (segmented chunk by chunk into an OME-Zarr store) in :mod:`._large_outputs`.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QWidget,
)

from napari_unet._widgets._common import (
    EDITED_KEY,
    WRITTEN_KEY,
    JobPanel,
    LayerCombo,
    ModelCombo,
    check_image_layer,
    fit_narrow,
    get_layer,
    holds_edits,
    image_axes_hint,
    info,
    layer_meta,
    layer_z_spacing,
    load_settings,
    notify_exception,
    save_settings,
    scroll_layout,
    set_layer_data,
    snapshot,
    unique_name,
    warn,
)
from napari_unet._widgets._large_outputs import (
    LAZY_STACK_MESSAGE,
    delete_unused_store,
    full_resolution,
    is_large,
    large_store_path,
    layer_store,
    removed_store_notice,
)
from napari_unet._widgets._segment_jobs import (
    LargeSegmentResult,
    SegmentResult,
    accuracy_note,
    estimate_job,
    how_it_ran,
    labels_metadata,
    segment_job,
    segment_large_job,
)
from napari_unet.core.config import MAX_SCALE, MIN_SCALE, InferenceConfig, PostprocessConfig
from napari_unet.core.data.normalize import SUPPORTED_AXES, infer_axes
from napari_unet.core.errors import UserInputError
from napari_unet.core.labels.editing import label_ids
from napari_unet.core.predict.large_image import LARGE_AXES

if TYPE_CHECKING:
    from napari_unet.core.predict.object_size import SizeEstimate

SETTINGS = "segment"
AUTO = "auto"
DEVICES = ("auto", "cpu", "cuda", "mps")
LABELS_SUFFIX = " labels"
PROBABILITY_SUFFIX = " probability"


def labels_layer_name(image_name: str) -> str:
    """Name of the Labels layer a segmentation of ``image_name`` writes."""
    return image_name + LABELS_SUFFIX


TEST_TIME_AUGMENTATION: dict[str, dict[str, bool]] = {
    "off": {"tta": False, "multiscale": False},
    "flips (4x slower)": {"tta": True, "multiscale": False},
    "sizes (3.5x slower)": {"tta": False, "multiscale": True},
    "flips and sizes (14x slower)": {"tta": True, "multiscale": True},
}
"""Choices of the Segment widget's test-time augmentation, as ``InferenceConfig`` fields."""


class SegmentWidget(QWidget):
    """Segment nuclei: image, axes, model, device, tiling and post-processing -> Labels layer.

    The post-processing fields and the test-time flips follow the selected
    model: they are filled from the values saved in its ``model.json`` (tuned
    by ``napari-unet tune``, with or without flips) whenever the model
    changes, and the "Model defaults" button restores them.
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.image = LayerCombo(napari_viewer, (Image,))
        self.axes = QComboBox()
        self.axes.addItems([AUTO, *SUPPORTED_AXES])
        self.axes_info = QLabel("")
        self.model = ModelCombo()
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device_info = QLabel(describe_devices())
        inference = InferenceConfig()
        self.tile_size = _spin(32, 8192, inference.tile_size, step=32)
        self.overlap = _float_spin(0.0, 0.45, inference.overlap, step=0.025)
        self.scale = _float_spin(MIN_SCALE, MAX_SCALE, inference.scale, step=0.25)
        self.augment = QComboBox()
        self.augment.addItems(list(TEST_TIME_AUGMENTATION))
        self.augment.setToolTip(
            "Average the predictions of flipped and/or resized copies, at the cost shown. Choosing a model sets "
            "flips on or off as its thresholds were tuned (on for the bundled default model); averaged "
            "probabilities are smoother, so with flips added to a model tuned without them try a higher seed "
            "threshold (e.g. 0.9), and a lower one the other way round"
        )
        self.scale.setToolTip(
            "Resize the image by this factor before the network (labels keep the image's size): "
            "above 1 when nuclei are smaller than the model saw in training, below 1 when larger. "
            "Not remembered between sessions."
        )
        self.scale_info = QLabel("")
        for line in (self.axes_info, self.device_info, self.scale_info):
            line.setWordWrap(True)
        self.model_postprocess = PostprocessConfig()  # the selected model's saved values (see reset_postprocessing)
        self.foreground = _float_spin(0.0, 1.0, self.model_postprocess.foreground_threshold)
        self.seed = _float_spin(0.0, 1.0, self.model_postprocess.seed_threshold)
        self.min_size = _spin(0, 10**6, self.model_postprocess.min_size)
        self.min_relative_size = _float_spin(0.0, 1.0, self.model_postprocess.min_relative_size)
        self.min_relative_size.setToolTip(
            "Remove objects smaller than this fraction of the image's median object area (fragments, debris; 0 = off)"
        )
        self.min_confidence = _float_spin(0.0, 1.0, self.model_postprocess.min_confidence)
        self.min_confidence.setToolTip(
            "Remove objects whose mean foreground probability is below this: look-alikes (debris, stained "
            "cytoplasm) the network is unsure of as a whole (0 = off)"
        )
        self.split_distance = _spin(0, 1000, self.model_postprocess.split_distance)
        self.split_distance.setToolTip(
            "Split seed regions holding several nuclei whose centres lie at least this many pixels apart (0 = off)"
        )
        self.fill_holes = QCheckBox("Fill holes")
        self.fill_holes.setChecked(self.model_postprocess.fill_holes)
        self.keep_probabilities = QCheckBox("Keep probability map as a layer")
        self.new_layer = QCheckBox("Write a new labels layer (do not update)")
        self.jobs = JobPanel("Segmentation")
        self.last_labels_layer: Labels | None = None
        self._cache: dict[str, Any] | None = None
        self._build_layout()
        fit_narrow(self)
        self._restore_settings()
        self.model.currentTextChanged.connect(self._on_model_changed)
        self._on_model_changed()
        self.image.currentTextChanged.connect(self._show_axes)
        self.axes.currentTextChanged.connect(self._show_axes)
        self._show_axes()
        napari_viewer.layers.events.removed.connect(self._on_layer_removed)

    # ------------------------------------------------------------------ layout

    def _build_layout(self) -> None:
        browse = QPushButton("File...")
        browse.clicked.connect(self._browse_model)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model, 1)
        model_row.addWidget(browse)
        form = QFormLayout()
        form.addRow("Image", self.image)
        form.addRow("Axes", self.axes)
        form.addRow(self.axes_info)
        form.addRow("Model", model_row)
        form.addRow("Device", self.device)
        form.addRow(self.device_info)
        form.addRow("Tile size", self.tile_size)
        form.addRow("Tile overlap", self.overlap)
        estimate = QPushButton("Estimate")
        estimate.setToolTip(
            "Measure the nuclei of the image with the model (2 to 4 quick passes on its centre) and set the scale "
            "that brings them to the sizes the model was trained on"
        )
        estimate.clicked.connect(self.estimate_scale)
        scale_row = QHBoxLayout()
        scale_row.addWidget(self.scale, 1)
        scale_row.addWidget(estimate)
        form.addRow("Scale (x)", scale_row)
        form.addRow(self.scale_info)
        form.addRow("Test-time augmentation", self.augment)
        run = QPushButton("Segment")
        run.clicked.connect(self.run)
        rerun = QPushButton("Re-run post-processing only")
        rerun.setToolTip("Re-segment from the cached probabilities with the thresholds below (instant)")
        rerun.clicked.connect(self.rerun_postprocessing)
        layout = scroll_layout(self)
        layout.addLayout(form)
        layout.addWidget(self._postprocess_box())
        layout.addWidget(self.keep_probabilities)
        layout.addWidget(self.new_layer)
        layout.addWidget(run)
        layout.addWidget(rerun)
        layout.addWidget(self.jobs)
        layout.addStretch(1)

    def _postprocess_box(self) -> QGroupBox:
        box = QGroupBox("Post-processing")
        form = QFormLayout(box)
        form.addRow("Foreground threshold", self.foreground)
        form.addRow("Seed threshold", self.seed)
        form.addRow("Minimum size (px)", self.min_size)
        form.addRow("Minimum size (x median)", self.min_relative_size)
        form.addRow("Minimum confidence", self.min_confidence)
        form.addRow("Split fused nuclei (px, 0 = off)", self.split_distance)
        form.addRow(self.fill_holes)
        reset = QPushButton("Model defaults")
        reset.setToolTip("Reset the post-processing (and test-time flips) to those saved with the selected model")
        reset.clicked.connect(self.reset_postprocessing)
        form.addRow(reset)
        return box

    def _browse_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Model file", "", "napari-unet model (model.json *.safetensors);;bioimage.io package (*.zip)"
        )
        if path:
            self.add_model_from_file(path)

    def add_model_from_file(self, path: str) -> str | None:
        """Select a model folder file; a bioimage.io package napari-unet made is imported as a user model first.

        Returns the selected model reference (None when the package could not be imported).
        """
        if not str(path).lower().endswith(".zip"):
            self.model.select(path)
            return path
        from napari_unet.core.models.bioimageio import import_bioimageio
        from napari_unet.core.models.registry import save_version

        try:
            bundle = import_bioimageio(path)
            name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).stem).strip("-._") or "imported"
            name = f"{name}-imported" if name == "default" else name  # the bundled model's name is taken
            lineage = {**bundle.metadata.get("lineage", {}), "imported_from": str(Path(path).resolve())}
            saved = save_version(bundle, name, lineage=lineage)
        except Exception as exc:
            notify_exception(exc, "Add model")
            return None
        self.model.refresh()
        self.model.select(saved.spec)
        info(f"Imported the package {Path(path).name} as {saved.spec}.")
        return saved.spec

    def _restore_settings(self) -> None:
        """Restore model, tiling and device; post-processing comes from the model (:meth:`_on_model_changed`)."""
        saved = load_settings(SETTINGS)
        defaults = InferenceConfig()
        self.tile_size.setValue(int(saved.get("tile_size", defaults.tile_size)))
        self.overlap.setValue(float(saved.get("overlap", defaults.overlap)))
        self.device.setCurrentText(str(saved.get("device", AUTO)))
        self.keep_probabilities.setChecked(bool(saved.get("keep_probabilities", False)))
        chosen = {"tta": bool(saved.get("tta", False)), "multiscale": bool(saved.get("multiscale", False))}
        self._show_augmentation(chosen)
        if saved.get("model"):
            self.model.select(str(saved["model"]))

    def _save_settings(self) -> None:
        values = self.inference_config().to_dict()
        values.update(model=self.model.currentText(), keep_probabilities=self.keep_probabilities.isChecked())
        save_settings(SETTINGS, values)

    # ------------------------------------------------------------------ the model's post-processing

    def _on_model_changed(self, *_: Any) -> None:
        if self.model.currentText():
            self.reset_postprocessing()

    def reset_postprocessing(self) -> bool:
        """Fill the post-processing fields with the selected model's saved values (no weights are loaded).

        Returns True when they were read; otherwise the fields keep their values and a warning is shown.
        """
        from napari_unet.core.models.registry import model_metadata, model_postprocess
        from napari_unet.core.predict.runtime import model_uses_flips

        reference = self.model.currentText()
        try:
            if not reference:
                raise UserInputError("no model selected")
            config = model_postprocess(reference)
            flips = model_uses_flips(model_metadata(reference))
        except Exception as exc:  # a model that cannot be read is reported when Segment is pressed
            warn(f"Could not read the post-processing settings of model '{reference}' ({exc}); kept the current ones.")
            return False
        self.model_postprocess = config
        self._show_postprocess(config)
        self._show_flips(flips)
        return True

    def _show_flips(self, flips: bool) -> None:
        """Set the test-time flips as the model's thresholds were tuned, keeping the choice of sizes."""
        self._show_augmentation({**TEST_TIME_AUGMENTATION[self.augment.currentText()], "tta": flips})

    def _show_augmentation(self, chosen: dict[str, bool]) -> None:
        """Select the test-time augmentation whose ``InferenceConfig`` fields are ``chosen``."""
        self.augment.setCurrentText(next(k for k, v in TEST_TIME_AUGMENTATION.items() if v == chosen))

    def _show_postprocess(self, config: PostprocessConfig) -> None:
        self.foreground.setValue(config.foreground_threshold)
        self.seed.setValue(config.seed_threshold)
        self.min_size.setValue(config.min_size)
        self.min_relative_size.setValue(config.min_relative_size)
        self.min_confidence.setValue(config.min_confidence)
        self.split_distance.setValue(config.split_distance)
        self.fill_holes.setChecked(config.fill_holes)

    def _show_axes(self, *_: Any) -> None:
        self.scale_info.setText("")  # a size measured on another image no longer applies
        layer = self.image.layer()
        if layer is None:
            self.axes_info.setText("no image layer")
            return
        shape = tuple(full_resolution(layer).shape)
        try:
            axes = infer_axes(shape, self.chosen_axes(layer))
        except UserInputError as exc:
            self.axes_info.setText(f"choose the axes: {exc}")
            return
        large = is_large(layer, axes)
        note = "; large: segmented chunk by chunk, labels kept on disk" if large else ""
        self.axes_info.setText(f"{axes}, shape {shape}{note}")
        self.keep_probabilities.setEnabled(not large)

    # ------------------------------------------------------------------ parameters

    def chosen_axes(self, layer: Image) -> str | None:
        """Axes picked by the user, else what napari knows (RGB), else None (the engine guesses)."""
        text = self.axes.currentText()
        return image_axes_hint(layer) if text == AUTO else text

    def inference_config(self) -> InferenceConfig:
        """Tiling and device settings from the form."""
        return InferenceConfig(
            tile_size=self.tile_size.value(),
            overlap=self.overlap.value(),
            device=self.device.currentText(),
            scale=self.scale.value(),
            **TEST_TIME_AUGMENTATION[self.augment.currentText()],
        )

    def postprocess_config(self) -> PostprocessConfig:
        """Post-processing settings from the form (fields the form lacks keep the model's values)."""
        return replace(
            self.model_postprocess,
            foreground_threshold=self.foreground.value(),
            seed_threshold=self.seed.value(),
            min_size=self.min_size.value(),
            min_relative_size=self.min_relative_size.value(),
            min_confidence=self.min_confidence.value(),
            split_distance=self.split_distance.value(),
            fill_holes=self.fill_holes.isChecked(),
        )

    # ------------------------------------------------------------------ run

    def run(self) -> Any:
        """Segment the chosen image in a worker; return the worker (None if nothing started)."""
        try:
            layer = check_image_layer(self.image.layer())
            axes = infer_axes(tuple(full_resolution(layer).shape), self.chosen_axes(layer))
            if is_large(layer, axes):
                return self._run_large(layer, axes)
            image = snapshot(layer)
            model, inference, postprocess = self.model.reference(), self.inference_config(), self.postprocess_config()
            job = segment_job(image, axes, model, inference, postprocess, layer_z_spacing(layer, axes))
            self._save_settings()
            return self.jobs.start(job, lambda result: self._on_segmented(layer, result))
        except Exception as exc:
            notify_exception(exc, "Segmentation")
            return None

    def estimate_scale(self) -> Any:
        """Measure the chosen image's nuclei in a worker and set the scale from them; return the worker."""
        try:
            layer = check_image_layer(self.image.layer())
            source = full_resolution(layer)  # lazy data stays lazy: only the central window is read
            axes = infer_axes(tuple(source.shape), self.chosen_axes(layer))
            model = self.model.reference()
            job = estimate_job(source, axes, model, self.inference_config(), self.postprocess_config())
            return self.jobs.start(job, lambda estimate: self._on_estimated(layer, estimate))
        except Exception as exc:
            notify_exception(exc, "Scale estimate")
            return None

    def _on_estimated(self, layer: Image, estimate: SizeEstimate) -> None:
        self.scale.setValue(estimate.scale)
        self.scale_info.setText(estimate.describe())
        info(f"'{layer.name}': {estimate.describe()}. Press 'Segment' to use it.")

    def _run_large(self, layer: Image, axes: str) -> Any:
        """Segment a large or lazy 2D layer chunk by chunk into a zarr store; return the worker."""
        if axes not in LARGE_AXES:
            raise UserInputError(LAZY_STACK_MESSAGE)
        store = large_store_path(layer.name)
        store.parent.mkdir(parents=True, exist_ok=True)
        job = segment_large_job(
            full_resolution(layer),
            axes,
            self.model.reference(),
            self.inference_config(),
            self.postprocess_config(),
            store,
        )
        self._save_settings()
        skipped = " No probability map is kept for large images." if self.keep_probabilities.isChecked() else ""
        info(f"'{layer.name}' is large or lazy: segmenting it chunk by chunk into {store}.{skipped}")
        return self.jobs.start(job, lambda result: self._on_large_segmented(layer, result))

    def _on_segmented(self, image_layer: Image, result: SegmentResult) -> None:
        prediction = result.prediction
        meta = labels_metadata(image_layer.name, result, prediction.axes)
        layer = self._write_labels(image_layer, prediction.labels, meta)
        self._cache = {
            "probabilities": prediction.probabilities,
            "axes": prediction.axes,
            "volumetric": prediction.volumetric,
            "layer": layer,
        }
        how = how_it_ran(result.model, prediction)
        if how:
            info(how)
        if self.keep_probabilities.isChecked():
            self._write_probability(image_layer, prediction.probabilities)
        n_objects = len(label_ids(prediction.labels))
        info(  # the count first: a long accuracy note must not push it out of the notification's view
            f"{n_objects} objects in '{layer.name}' (segmented '{image_layer.name}' with {result.model})."
            f"{accuracy_note(result.model_sha256)}"
        )

    def _on_large_segmented(self, image_layer: Image, result: LargeSegmentResult) -> None:
        meta = labels_metadata(image_layer.name, result, "YX", store=str(result.store))
        layer = self._write_large_labels(image_layer, result.labels, meta)
        self._cache = {"large": True, "layer": layer}
        info(
            f"Segmented '{image_layer.name}' with {result.model} chunk by chunk into '{layer.name}'; "
            f"the labels stay on disk (edits are saved there): {result.store}.{accuracy_note(result.model_sha256)}"
        )

    def _write_large_labels(self, image_layer: Image, labels: Any, meta: dict[str, Any]) -> Labels:
        """Show lazily opened labels: update the same-named layer of the same shape, else add a new layer."""
        name = self._labels_target(image_layer)
        existing = get_layer(self.viewer, name)
        same_shape = isinstance(existing, Labels) and tuple(existing.data.shape) == tuple(labels.shape)
        if existing is not None and not same_shape:
            name = unique_name(self.viewer, name)
        replaced = get_layer(self.viewer, name)
        old_store = layer_store(replaced)
        layer = set_layer_data(self.viewer, name, labels, "labels", like=image_layer)
        layer_meta(layer).pop("prediction", None)  # a whole-image copy is what large images must avoid
        layer_meta(layer).update(meta)
        self.last_labels_layer = layer
        if old_store and old_store != meta.get("store"):
            delete_unused_store(self.viewer, Path(old_store))
        return layer

    def _on_layer_removed(self, event: Any) -> None:
        """Say where the labels of a removed large-image layer stay on disk, and how much space they take.

        They are not deleted: they may hold edits the user has not exported.
        """
        notice = removed_store_notice(self.viewer, event.value)
        if notice:
            info(notice)

    def _labels_target(self, image_layer: Image) -> str:
        """Name of the Labels layer a segmentation of ``image_layer`` goes to.

        ``<image> labels``, unless it holds edits (:func:`holds_edits`): then
        the newest unedited ``<image> labels [N]`` napari-unet wrote for this
        image, or a new layer (:func:`set_layer_data` adds it and says so).
        """
        base = labels_layer_name(image_layer.name)
        if self.new_layer.isChecked():
            return unique_name(self.viewer, base)
        existing = get_layer(self.viewer, base)
        if not isinstance(existing, Labels) or not holds_edits(existing):
            return base
        for layer in reversed(list(self.viewer.layers)):
            same_image = layer_meta(layer).get("image") == image_layer.name if isinstance(layer, Labels) else False
            if same_image and layer.name.startswith(f"{base} [") and not holds_edits(layer):
                info(f"'{base}' holds edits, so it was kept; the new labels are in '{layer.name}'.")
                return layer.name
        return base

    def _write_labels(self, image_layer: Image, labels: np.ndarray, meta: dict[str, Any]) -> Labels:
        name = self._labels_target(image_layer)
        layer = set_layer_data(self.viewer, name, labels, "labels", like=image_layer)
        layer_meta(layer).update(meta, prediction=labels.copy())
        self.last_labels_layer = layer
        return layer

    def _write_probability(self, image_layer: Image, probabilities: np.ndarray) -> None:
        from napari_unet.core.labels.extraction import foreground_probability

        layer = set_layer_data(
            self.viewer,
            image_layer.name + PROBABILITY_SUFFIX,
            foreground_probability(probabilities),
            "image",
            like=image_layer,
            colormap="magma",
            blending="additive",
            contrast_limits=(0.0, 1.0),
        )
        layer_meta(layer)["image"] = image_layer.name

    # ------------------------------------------------------------------ post-processing only

    def rerun_postprocessing(self) -> Labels | None:
        """Re-segment from the cached probabilities with the current thresholds (no network)."""
        from napari_unet.core.labels.extraction import labels_from_probabilities

        if self._cache is not None and self._cache.get("large"):
            info(
                "Re-running post-processing is not available for large images (their probabilities are not kept); "
                "change the thresholds and press 'Segment' again."
            )
            return None
        try:
            layer = self._cached_layer()
            config = self.postprocess_config()
            cache = self._cache
            labels = labels_from_probabilities(
                cache["probabilities"], cache["axes"], config, volumetric=cache.get("volumetric", False)
            )
        except Exception as exc:
            notify_exception(exc, "Post-processing")
            return None
        edited = holds_edits(layer)
        meta = dict(layer_meta(layer)) if edited else layer_meta(layer)
        layer = set_layer_data(self.viewer, layer.name, labels, "labels", like=layer)
        if edited:  # a new layer: same provenance, this post-processing
            layer_meta(layer).update({k: v for k, v in meta.items() if k not in (WRITTEN_KEY, EDITED_KEY)})
            self._cache["layer"] = layer
        meta = layer_meta(layer)
        meta["prediction"] = labels.copy()
        meta.setdefault("settings", {})["postprocess"] = config.to_dict()
        self._save_settings()
        info(f"Re-processed '{layer.name}': {len(label_ids(labels))} objects.")
        return layer

    def _cached_layer(self) -> Labels:
        """Return the labels layer of the last segmentation (its probabilities are cached)."""
        if self._cache is None:
            raise UserInputError("nothing to re-process: press 'Segment' first (probabilities are kept in memory)")
        layer = self._cache["layer"]
        if layer not in self.viewer.layers:
            raise UserInputError(f"the layer '{layer.name}' was deleted; press 'Segment' again")
        return layer


# ---------------------------------------------------------------------- form helpers


def describe_devices() -> str:
    """One line naming the compute devices PyTorch can see."""
    from napari_unet.core.predict.runtime import accelerator_names

    found = accelerator_names()
    return "found: " + (", ".join(found) if found else "CPU only (no GPU visible to PyTorch)")


def _spin(low: int, high: int, value: int, step: int = 1) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setValue(value)
    return box


def _float_spin(low: float, high: float, value: float, step: float = 0.05) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(low, high)
    box.setDecimals(3)
    box.setSingleStep(step)
    box.setValue(value)
    return box
