"""Rehearsal: annotated crops of a model's own training images, mixed into fine-tuning batches.

A fine-tune on a few corrected images of one kind pulls the whole network
towards that kind and wipes out what it knew about others (a 2-image
fine-tune took a held-out kind from 0.83 to 0.13 AP@0.5).  The bundled
default model ships ``replay.npz`` beside its weights (made by
``training/make_replay_set.py`` from CC0 images of its training split);
``metadata["replay_set"]`` names the bundled model whose set a model uses, and
fine-tuned children inherit it with the rest of their parent's metadata.
:class:`~napari_unet.core.config.TrainingConfig` ``replay_fraction`` of every
batch's patches come from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from napari_unet.core.errors import UserInputError

REPLAY_FILE = "replay.npz"
"""File name of a replay set inside a model folder."""

REPLAY_METADATA_KEY = "replay_set"
"""Model metadata: the bundled model whose replay set fine-tuning mixes in."""

CHECK_EVERY = 4
"""One crop in 4 of a replay set is kept out of rehearsal and checks the fine-tuned model on other kinds
(those ``replay.json`` marks ``"check": true``; in a set without marks, every 4th)."""

FORGETTING_LIMIT = 0.05
"""Largest AP@0.5 a fine-tuned model may lose on the check crops (other kinds), pooled, before
:func:`~napari_unet.core.train.guard.guard_other_kinds` weighs it against the averages with its parent and
the parent itself (the notice warns when what is kept still lost more)."""

GROUP_FORGETTING_LIMIT = 0.10
"""Largest AP@0.5 a fine-tuned model may lose on the check crops of any one group (kind) of the replay set."""

UNGROUPED = "reference"
"""Group of the crops of a replay set that names no groups."""


class Crops(NamedTuple):
    """Annotated crops: images ``(Y, X)`` or ``(Y, X, 3)`` uint8, labels ``(Y, X)`` uint16, and each crop's group."""

    images: list[np.ndarray]
    labels: list[np.ndarray]
    groups: list[str]

    def subset(self, indices: list[int]) -> Crops:
        """Return the crops at ``indices``, in that order."""
        return Crops(*([part[i] for i in indices] for part in self))


@dataclass(frozen=True)
class CheckScore:
    """AP@0.5 of a model on the check crops: pooled over all of them, and per group."""

    pooled: float
    groups: dict[str, float] = field(default_factory=dict)

    def lost_too_much(self, after: CheckScore) -> bool:
        """Whether ``after`` lost over :data:`FORGETTING_LIMIT` pooled, or :data:`GROUP_FORGETTING_LIMIT` in a group."""
        if self.pooled - after.pooled > FORGETTING_LIMIT:
            return True
        return any(
            score - after.groups.get(group, score) > GROUP_FORGETTING_LIMIT for group, score in self.groups.items()
        )


def replay_set_path(bundle: Any) -> Path | None:
    """Return the replay set a model fine-tunes with, or None.

    Parameters
    ----------
    bundle : ModelBundle
        A loaded model: its own folder's ``replay.npz`` when present, else the
        one of the bundled model named by ``metadata["replay_set"]``.

    """
    from napari_unet.core.models.registry import bundled_model_dir

    own = Path(bundle.path) / REPLAY_FILE if getattr(bundle, "path", None) else None
    if own is not None and own.is_file():
        return own
    name = bundle.metadata.get(REPLAY_METADATA_KEY)
    if not name:
        return None
    shipped = bundled_model_dir(str(name)) / REPLAY_FILE
    return shipped if shipped.is_file() else None


def load_replay_set(path: Path) -> Crops:
    """Read a replay set: images ``(Y, X)`` or ``(Y, X, 3)`` uint8, their ``(Y, X)`` uint16 labels, their groups.

    Groups come from ``replay.json`` beside the set (made with it by
    ``training/make_replay_set.py``); without it every crop is :data:`UNGROUPED`.

    Raises
    ------
    UserInputError
        When the file is unreadable or its images and labels do not pair up.

    """
    try:
        with np.load(path) as archive:
            count = sum(1 for key in archive.files if key.startswith("image_"))
            images = [archive[f"image_{i}"] for i in range(count)]
            labels = [archive[f"labels_{i}"] for i in range(count)]
    except (OSError, KeyError, ValueError) as exc:
        raise UserInputError(f"cannot read the replay set {path} ({exc}); reinstall napari-unet") from exc
    if any(image.shape[:2] != label.shape for image, label in zip(images, labels, strict=True)):
        raise UserInputError(f"the replay set {path} pairs images with labels of another shape; reinstall napari-unet")
    return Crops(images, labels, replay_groups(path, len(images)))


def replay_groups(path: Path, count: int) -> list[str]:
    """Return the group of each of the ``count`` crops of the replay set ``path`` (from ``replay.json`` beside it)."""
    groups = _crop_entries(path, count, "group")
    return [str(group) for group in groups] if groups is not None else [UNGROUPED] * count


def replay_check_flags(path: Path, count: int) -> list[bool]:
    """Return, for each of the ``count`` crops of the replay set ``path``, whether it is a check crop.

    ``replay.json`` beside the set may mark them (``"check": true`` on every
    crop that checks, ``false`` on the others); a set without marks on every
    crop, the shipped one included, uses every :data:`CHECK_EVERY`-th crop
    (``benchmarks/bench_check_crops.py`` measured marking the densest crops
    instead, and why it is not shipped).
    """
    marks = _crop_entries(path, count, "check")
    if marks is None or not all(isinstance(mark, bool) for mark in marks):
        return _every_check_every(count)
    return list(marks)


def _every_check_every(count: int) -> list[bool]:
    """Check marks for ``count`` crops without marks of their own: every :data:`CHECK_EVERY`-th crop."""
    return [i % CHECK_EVERY == CHECK_EVERY - 1 for i in range(count)]


def _crop_entries(path: Path, count: int, key: str) -> list[Any] | None:
    """Return the ``key`` entry of each of the ``count`` crops in ``replay.json`` beside ``path`` (None if missing)."""
    try:
        crops = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))["crops"]
        entries = [crop[key] for crop in crops]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return entries if len(entries) == count else None


def split_replay_set(crops: Crops, check: list[bool] | None = None) -> tuple[Crops, Crops]:
    """Split a replay set into rehearsal crops and check crops, never both.

    Parameters
    ----------
    crops : Crops
        The whole set.
    check : list of bool, optional
        Which crops check (:func:`replay_check_flags`); by default every :data:`CHECK_EVERY`-th.

    """
    if check is None:
        check = _every_check_every(len(crops.images))
    if len(check) != len(crops.images):
        raise ValueError(f"{len(check)} check marks for {len(crops.images)} crops")
    return (
        crops.subset([i for i, is_check in enumerate(check) if not is_check]),
        crops.subset([i for i, is_check in enumerate(check) if is_check]),
    )


def check_score(bundle: Any, crops: Crops) -> CheckScore:
    """AP@0.5 of a model on the check crops, pooled and per group, with the model's own test-time settings."""
    from napari_unet.core.predict.segment import predict

    predictions = [predict(image, bundle).labels for image in crops.images]
    groups = {
        group: pooled_ap50(
            [(t, p) for t, p, g in zip(crops.labels, predictions, crops.groups, strict=True) if g == group]
        )
        for group in sorted(set(crops.groups))
    }
    return CheckScore(pooled_ap50(list(zip(crops.labels, predictions, strict=True))), groups)


def pooled_ap50(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """AP@0.5 pooled over ``(truth, prediction)`` label pairs."""
    from napari_unet.core.evaluate.metrics import evaluate_dataset, summary_row

    truths, predictions = zip(*pairs, strict=True)
    return float(summary_row(evaluate_dataset(list(truths), list(predictions))["pooled"])["AP@0.5"])
