"""An experiment: a folder of images of one kind, segmented, corrected and learnt from image by image.

Everything napari-unet keeps about an experiment lives in the folder's
``napari-unet/`` subfolder (:data:`STATE_DIR`): ``experiment.json`` (one record
per image: status, object count, how much the user changed, the model used)
and, per image, ``<image file name>.prediction.tif`` (what the model gave) and
``<image file name>.labels.tif`` (the labels the user saved).  Nothing is
written anywhere else in the folder, every write is atomic, and a file in
``napari-unet/`` is replaced only when ``experiment.json`` lists it as written
by napari-unet.  Reopening the folder brings the statuses and labels back.

Statuses (:data:`STATUSES`): ``new`` (nothing yet), ``segmented`` (a
prediction is saved), ``corrected`` (the user saved labels that differ from
the prediction) and ``reviewed`` (the user saved the prediction unchanged).
For each saved image, AP@0.5 of the model's prediction against the saved
labels says how much the user had to change (1.0: nothing); in the order the
images were saved it is the experiment's learning curve.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.errors import UserInputError
from napari_unet.core.io.atomic import not_ours_message
from napari_unet.core.io.jsonio import write_json
from napari_unet.core.io.labels import count_objects, export_labels
from napari_unet.core.progress import Progress, check_cancel

PathLike = str | os.PathLike

STATE_DIR = "napari-unet"
"""Subfolder of an experiment folder that holds everything napari-unet writes there."""

STATE_FILE = "experiment.json"
"""The experiment's records inside :data:`STATE_DIR`."""

STATUSES = ("new", "segmented", "corrected", "reviewed")
"""What an image of an experiment went through, in order."""

STATE_WHAT = "napari-unet experiment"
"""The ``what`` entry of every ``experiment.json`` napari-unet writes (how it knows the file is its own)."""

PREDICTION_SUFFIX = ".prediction.tif"
LABELS_SUFFIX = ".labels.tif"

UNSURE_BACKGROUND = 0.9
"""Pixels whose background probability is below this count towards an image's uncertainty."""


@dataclass
class ImageRecord:
    """What napari-unet knows about one image of an experiment.

    Attributes
    ----------
    name : str
        File name inside the experiment folder.
    status : str
        One of :data:`STATUSES`.
    objects : int or None
        Objects in the saved labels, else in the prediction.
    prediction_ap50 : float or None
        AP@0.5 of the prediction against the saved labels (1.0: the user
        changed nothing); None until labels are saved over a prediction.
    uncertainty : float or None
        Mean normalised entropy of the class probabilities over the pixels
        that may belong to a nucleus (0: sure everywhere, 1: no idea).
    model : str or None
        The model (``name`` or ``name:version``) that made the prediction.
    saved_order : int or None
        1 for the first image whose labels were saved, 2 for the next, ...
    written : list of str
        Files napari-unet wrote for this image (names inside :data:`STATE_DIR`).

    """

    name: str
    status: str = "new"
    objects: int | None = None
    prediction_ap50: float | None = None
    uncertainty: float | None = None
    model: str | None = None
    saved_order: int | None = None
    written: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageRecord:
        """Build a record from its JSON form (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
        record = cls(**{key: value for key, value in data.items() if key in known})
        if record.status not in STATUSES:
            raise UserInputError(f"{STATE_FILE}: image {record.name!r} has an unknown status {record.status!r}")
        return record


class Experiment:
    """A folder of images with napari-unet's records of them (thread-safe: one lock guards state and files).

    Use :meth:`open`; the constructor takes already-read records.
    """

    def __init__(self, folder: Path, records: list[ImageRecord], model: str | None = None) -> None:
        self.folder = folder
        self.records = records
        self.model = model  # the model to segment and fine-tune with (the latest fine-tuned version once there is one)
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, folder: PathLike) -> Experiment:
        """Open an experiment folder: its images (sorted by name) with the records saved in ``napari-unet/``.

        Raises
        ------
        UserInputError
            When ``folder`` is not a folder, holds no image, or its
            ``napari-unet/experiment.json`` is unreadable.

        """
        from napari_unet.core.io.reading import list_images

        folder = Path(folder)
        images = [path.name for path in list_images(folder) if path.is_file()]
        if not images:
            raise UserInputError(f"{folder} holds no image napari-unet can read (TIFF, PNG, JPEG, ...)")
        saved, model = cls._read_state(folder / STATE_DIR / STATE_FILE)
        records = [saved.get(name, ImageRecord(name)) for name in images]
        return cls(folder, records, model)

    @staticmethod
    def _read_state(path: Path) -> tuple[dict[str, ImageRecord], str | None]:
        import json

        if not path.is_file():
            return {}, None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            records = [ImageRecord.from_dict(item) for item in data["images"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserInputError(f"cannot read {path} ({exc}); move it away to start the experiment afresh") from exc
        if data.get("what") != STATE_WHAT:
            raise UserInputError(not_ours_message(path))
        return {record.name: record for record in records}, data.get("model")

    # ------------------------------------------------------------------ files

    @property
    def state_dir(self) -> Path:
        """The folder's ``napari-unet/`` subfolder (created on the first write)."""
        return self.folder / STATE_DIR

    def index_of(self, name: str) -> int:
        """Position of the image file ``name``."""
        for index, record in enumerate(self.records):
            if record.name == name:
                return index
        raise UserInputError(f"{name} is not an image of the experiment in {self.folder}")

    def read_image(self, index: int) -> np.ndarray:
        """Read image ``index`` from its file: ``(Y, X)`` or ``(Y, X, C)``.

        Raises
        ------
        UserInputError
            When the file is unreadable or not a 2D image (experiments are 2D).

        """
        from napari_unet.core.io.reading import read_image

        image = read_image(self.folder / self.records[index].name)
        if image.ndim == 3 and image.shape[-1] in (3, 4):
            return image
        if image.ndim != 2:
            raise UserInputError(
                f"{self.records[index].name} has shape {image.shape}: an experiment holds 2D images "
                "(grey or RGB); segment stacks from the Segment panel"
            )
        return image

    def prediction(self, index: int) -> np.ndarray | None:
        """Return the saved prediction ``(Y, X)`` of image ``index``, or None."""
        return self._read_own(index, PREDICTION_SUFFIX)

    def saved_labels(self, index: int) -> np.ndarray | None:
        """Return the labels ``(Y, X)`` the user saved for image ``index``, or None."""
        return self._read_own(index, LABELS_SUFFIX)

    def _read_own(self, index: int, suffix: str) -> np.ndarray | None:
        from napari_unet.core.io.reading import read_labels

        name = self.records[index].name + suffix
        if name not in self.records[index].written or not (self.state_dir / name).is_file():
            return None
        return read_labels(self.state_dir / name)

    def _write_labels(self, record: ImageRecord, suffix: str, labels: np.ndarray) -> None:
        """Atomically write ``labels (Y, X)`` to ``napari-unet/<name><suffix>`` (replacing only our own file)."""
        name = record.name + suffix
        target = self.state_dir / name
        ours = name in record.written
        if target.exists() and not ours:
            raise UserInputError(not_ours_message(target))
        self.state_dir.mkdir(exist_ok=True)
        export_labels(labels, target, fmt="tif", overwrite=ours)
        if not ours:
            record.written.append(name)

    def save_state(self) -> Path:
        """Atomically write ``napari-unet/experiment.json`` (replacing only one napari-unet wrote)."""
        path = self.state_dir / STATE_FILE
        with self._lock:
            self.state_dir.mkdir(exist_ok=True)
            data = {"what": STATE_WHAT, "model": self.model, "images": [asdict(r) for r in self.records]}
            if path.exists() and not _is_own_state(path):
                raise UserInputError(not_ours_message(path))
            return write_json(path, data, overwrite=path.exists())

    # ------------------------------------------------------------------ records

    def record_prediction(self, index: int, labels: np.ndarray, probabilities: np.ndarray | None, model: str) -> None:
        """Save the model's prediction ``labels (Y, X)`` for image ``index`` (its status becomes ``segmented``).

        ``probabilities (3, Y, X)`` give the image's uncertainty.  An image whose
        labels were saved keeps its status and labels.
        """
        with self._lock:
            record = self.records[index]
            self._write_labels(record, PREDICTION_SUFFIX, labels)
            record.model = model
            if probabilities is not None:
                record.uncertainty = uncertainty(probabilities)
            if record.status == "new":
                record.status = "segmented"
                record.objects = count_objects(labels)
            self.save_state()

    def record_labels(self, index: int, labels: np.ndarray) -> ImageRecord:
        """Save the user's labels ``(Y, X)`` for image ``index``: ``corrected``, or ``reviewed`` when unchanged.

        AP@0.5 of the saved prediction against them is recorded (how much the
        user changed); an image saved again keeps its place in the learning curve.
        """
        from napari_unet.core.evaluate.metrics import match_instances

        labels = np.asarray(labels)
        with self._lock:
            record = self.records[index]
            prediction = self.prediction(index)
            if prediction is not None and prediction.shape != labels.shape:
                raise UserInputError(
                    f"the labels have shape {labels.shape} but {record.name}'s prediction has {prediction.shape}"
                )
            self._write_labels(record, LABELS_SUFFIX, labels)
            unchanged = prediction is not None and np.array_equal(prediction, labels)
            record.status = "reviewed" if unchanged else "corrected"
            record.objects = count_objects(labels)
            if prediction is not None:
                record.prediction_ap50 = float(match_instances(labels, prediction, 0.5).accuracy)
            if record.saved_order is None:
                record.saved_order = 1 + max((r.saved_order or 0 for r in self.records), default=0)
            self.save_state()
            return record

    def saved_indices(self) -> list[int]:
        """Images whose labels the user saved (``corrected`` or ``reviewed``), in folder order."""
        return [i for i, r in enumerate(self.records) if r.status in ("corrected", "reviewed")]

    def unsaved_indices(self) -> list[int]:
        """Images the user has not saved labels for, in folder order."""
        return [i for i, r in enumerate(self.records) if r.status in ("new", "segmented")]

    def training_data(self) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray | None]]:
        """Images, saved labels and predictions (None where there is none) of every saved image, to fine-tune on."""
        indices = self.saved_indices()
        if not indices:
            raise UserInputError("no image of this experiment has saved labels yet: correct one and save it")
        return (
            [self.read_image(i) for i in indices],
            [np.asarray(self.saved_labels(i)) for i in indices],
            [self.prediction(i) for i in indices],
        )

    def learning_curve(self) -> list[tuple[int, str, float]]:
        """``(order saved, image name, AP@0.5 of its prediction)`` for every saved image with a prediction."""
        points = [(r.saved_order, r.name, r.prediction_ap50) for r in self.records]
        return sorted((o, n, a) for o, n, a in points if o is not None and a is not None)

    def suggestions(self) -> list[tuple[int, str]]:
        """Images to correct next, most uncertain first, each with the reason it is suggested.

        Segmented images come first, by :attr:`ImageRecord.uncertainty`;
        images not segmented yet follow in folder order.
        """
        unsaved = self.unsaved_indices()
        scored = sorted((i for i in unsaved if self.records[i].uncertainty is not None), key=self._uncertainty_key)
        rest = [i for i in unsaved if self.records[i].uncertainty is None]
        ranked = [(i, f"the model is unsure on it (uncertainty {self.records[i].uncertainty:.2f})") for i in scored]
        return ranked + [(i, "not segmented yet") for i in rest]

    def _uncertainty_key(self, index: int) -> float:
        return -float(self.records[index].uncertainty or 0.0)


def _is_own_state(path: Path) -> bool:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8")).get("what") == STATE_WHAT
    except (OSError, ValueError, AttributeError):
        return False


def uncertainty(probabilities: np.ndarray) -> float:
    """Mean normalised entropy of ``probabilities (3, Y, X)`` over pixels whose background probability is below 0.9.

    0 when no pixel may belong to a nucleus.
    """
    probabilities = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-7, 1.0)
    maybe_nucleus = probabilities[0] < UNSURE_BACKGROUND
    if not maybe_nucleus.any():
        return 0.0
    entropy = -(probabilities * np.log(probabilities)).sum(axis=0) / np.log(probabilities.shape[0])
    return float(entropy[maybe_nucleus].mean())


def iter_segment_experiment(
    experiment: Experiment,
    bundle: Any,
    indices: Sequence[int],
    cancel: Callable[[], bool] | None = None,
) -> Generator[Progress, None, list[int]]:
    """Segment the images ``indices`` of ``experiment`` with ``bundle`` and save each prediction as it comes.

    Yields one :class:`Progress` per image (``stage="experiment"``); returns
    the indices segmented.  Cancelling stops before the next image; what was
    saved stays saved.  An image that cannot be read is reported and skipped.
    """
    from napari_unet.core.predict.segment import predict

    done: list[int] = []
    model = bundle.spec
    for position, index in enumerate(indices):
        check_cancel(cancel)
        name = experiment.records[index].name
        try:
            image = experiment.read_image(index)
        except UserInputError as exc:
            yield Progress("experiment", position + 1, len(indices), f"skipped {name}: {exc}")
            continue
        result = predict(image, bundle, cancel=cancel)
        experiment.record_prediction(index, result.labels, result.probabilities, model)
        done.append(index)
        objects = experiment.records[index].objects
        yield Progress("experiment", position + 1, len(indices), f"segmented {name}: {objects} objects")
    return done


def model_name_for(folder: Path) -> str:
    """Return the name an experiment's fine-tuned versions are saved under: ``experiment-<folder name>``."""
    cleaned = "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "-" for c in folder.name)
    cleaned = cleaned.strip("-")[:50] or "folder"  # a valid model name: ASCII, at most 64 characters
    return f"experiment-{cleaned}"


def iter_fine_tune_experiment(
    experiment: Experiment, bundle: Any, cfg: Any, cancel: Callable[[], bool] | None = None
) -> Generator[Progress, None, Any]:
    """Fine-tune ``bundle`` on every saved image of ``experiment`` with the fine-tuning recipe; save a better model.

    The images' predictions weigh the pixels the user changed
    (``previous``).  A new version of :func:`model_name_for` is saved only
    when it validates better (:func:`~napari_unet.core.train.fine_tune.fine_tune_and_save`);
    it then becomes the experiment's model.

    Returns
    -------
    TrainResult
        With ``saved`` None when the starting model was kept.

    """
    from napari_unet.core.train.fine_tune import fine_tune_and_save, fine_tune_recipe

    images, labels, previous = experiment.training_data()
    yield Progress("train", 0, 0, f"fine-tuning {bundle.spec} on the {len(images)} saved image(s)")
    recipe = fine_tune_recipe(bundle, cfg)
    name = model_name_for(experiment.folder)
    result = yield from fine_tune_and_save(bundle, images, labels, recipe, name=name, previous=previous, cancel=cancel)
    if result.saved is not None:
        experiment.model = result.saved.spec
        experiment.save_state()
    return result


EXPORT_MARKER = "experiment_export.json"
"""File inside every experiment export folder (its provenance); only such folders are replaced."""


def iter_export_experiment(
    experiment: Experiment,
    out_dir: PathLike,
    overwrite: bool = False,
    cancel: Callable[[], bool] | None = None,
) -> Generator[Progress, None, Path]:
    """Export every segmented or saved image of ``experiment`` into the new folder ``out_dir``.

    Per image ``<stem>_labels.tif`` and ``<stem>_measurements.csv`` (the saved
    labels, else the prediction), then ``summary.csv`` (one row per image:
    status, objects, mean area, model, AP@0.5 of the prediction against the
    saved labels) and :data:`EXPORT_MARKER` (provenance).  The folder appears
    only when complete; ``overwrite`` replaces only an earlier export.

    Returns
    -------
    Path
        ``out_dir``.

    """
    from napari_unet.core.io.atomic import atomic_write_dir
    from napari_unet.core.io.measurements import write_csv
    from napari_unet.core.io.provenance import provenance

    indices = [i for i, record in enumerate(experiment.records) if record.status != "new"]
    if not indices:
        raise UserInputError("nothing to export yet: segment or correct an image of the experiment first")
    rows: list[dict[str, Any]] = []
    with atomic_write_dir(out_dir, overwrite, replaceable=lambda path: (path / EXPORT_MARKER).is_file()) as temp:
        for position, index in enumerate(indices):
            check_cancel(cancel)
            record = experiment.records[index]
            saved = experiment.saved_labels(index)
            labels = saved if saved is not None else experiment.prediction(index)
            if labels is None:
                continue
            image = experiment.read_image(index)
            stem = Path(record.name).stem
            export_labels(labels, temp / f"{stem}_labels.tif")
            export_labels(labels, temp / f"{stem}_measurements.csv", image=image)
            rows.append(summary_row_of(record, labels, saved is not None))
            yield Progress("export", position + 1, len(indices), f"exported {record.name}")
        write_csv({key: [row[key] for row in rows] for key in rows[0]}, temp / "summary.csv")
        write_json(temp / EXPORT_MARKER, provenance(model=experiment.model, inputs=[experiment.folder], method="unet"))
    return Path(out_dir)


def summary_row_of(record: ImageRecord, labels: np.ndarray, saved: bool) -> dict[str, Any]:
    """One ``summary.csv`` row: image, status, labels source, objects, mean area (px), model, prediction AP@0.5."""
    sizes = np.bincount(labels.ravel().astype(np.int64))[1:]
    sizes = sizes[sizes > 0]
    return {
        "image": record.name,
        "status": record.status,
        "labels": "saved by the user" if saved else "prediction",
        "objects": int(sizes.size),
        "mean_area_px": float(sizes.mean()) if sizes.size else 0.0,
        "model": record.model or "",
        "prediction_ap50": "" if record.prediction_ap50 is None else round(record.prediction_ap50, 4),
    }
