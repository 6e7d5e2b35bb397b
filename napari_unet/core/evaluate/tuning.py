"""Choose post-processing thresholds for a model on annotated images.

The network runs once per image; every threshold combination then only
re-runs the (fast) post-processing on the cached probabilities, and the
combination with the best mean per-image AP@0.5 (ties: AP@0.75) wins.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from napari_unet.core.config import InferenceConfig, PostprocessConfig
from napari_unet.core.errors import UserInputError
from napari_unet.core.evaluate.metrics import evaluate_dataset, summary_row
from napari_unet.core.labels.extraction import foreground_probability
from napari_unet.core.labels.postprocess import probabilities_to_labels, remove_unconfident_objects
from napari_unet.core.models.bundle import ModelBundle
from napari_unet.core.predict.segment import predict
from napari_unet.core.progress import CancelFlag, Progress, check_cancel

FOREGROUND_THRESHOLDS = (0.4, 0.5, 0.6)
SEED_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
MIN_SIZES = (0, 20)
MIN_RELATIVE_SIZES = (0.0, 0.2, 0.3)
SPLIT_DISTANCES = (0, 4, 7)
MIN_CONFIDENCES = (0.0, 0.85, 0.9)


@dataclass(frozen=True)
class TuningResult:
    """Outcome of :func:`iter_tune_postprocess`.

    Attributes
    ----------
    best : PostprocessConfig
        The winning settings.
    best_scores : dict
        ``summary_row`` of the winning settings.
    baseline_scores : dict
        ``summary_row`` of the model's current settings.
    table : list of dict
        Every tried combination with its AP@0.5 and AP@0.75.

    """

    best: PostprocessConfig
    best_scores: dict[str, float]
    baseline_scores: dict[str, float]
    table: list[dict[str, float]]


def candidate_configs(
    start: PostprocessConfig,
    foreground: Sequence[float] = FOREGROUND_THRESHOLDS,
    seeds: Sequence[float] = SEED_THRESHOLDS,
    min_sizes: Sequence[int] = MIN_SIZES,
    split_distances: Sequence[int] = SPLIT_DISTANCES,
    min_relative_sizes: Sequence[float] = MIN_RELATIVE_SIZES,
    min_confidences: Sequence[float] = MIN_CONFIDENCES,
) -> list[PostprocessConfig]:
    """Return the grid of settings to try (``start``'s other fields are kept).

    ``min_confidence`` varies fastest, so neighbouring candidates share one
    watershed (see :class:`_SharedWatershed`).
    """
    grid = itertools.product(foreground, seeds, min_sizes, split_distances, min_relative_sizes, min_confidences)
    return [
        replace(
            start,
            foreground_threshold=f,
            seed_threshold=s,
            min_size=m,
            split_distance=d,
            min_relative_size=r,
            min_confidence=c,
        )
        for f, s, m, d, r, c in grid
    ]


def iter_tune_postprocess(
    bundle: ModelBundle,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    inference: InferenceConfig | None = None,
    candidates: Sequence[PostprocessConfig] | None = None,
    cancel: CancelFlag = None,
) -> Generator[Progress, None, TuningResult]:
    """Find the post-processing settings that score best on annotated 2D images.

    Parameters
    ----------
    bundle : ModelBundle
        The model whose probabilities are post-processed.
    images : sequence of arrays (Y, X) or (Y, X, C)
        Images, any dtype.
    labels : sequence of int arrays (Y, X)
        Their ground-truth instance labels.
    inference : InferenceConfig, optional
        Tiling/device settings for the single network pass per image.
    candidates : sequence of PostprocessConfig, optional
        Settings to try (default: :func:`candidate_configs` around the bundle's).
    cancel : callable, optional
        Checked between images and between candidates.

    Yields
    ------
    Progress
        ``stage="predict"`` per image, then ``stage="tune"`` per candidate.

    Returns
    -------
    TuningResult

    """
    if not images or len(images) != len(labels):
        raise UserInputError(f"tuning needs images with labels; got {len(images)} image(s), {len(labels)} label(s)")
    candidates = list(candidates or candidate_configs(bundle.postprocess))
    probabilities = []
    for index, image in enumerate(images):
        check_cancel(cancel)
        prediction = predict(image, bundle, inference=inference)
        if prediction.probabilities.ndim != 3:
            raise UserInputError("post-processing tuning works on 2D images; give single planes, not stacks")
        probabilities.append(prediction.probabilities)
        yield Progress("predict", index + 1, len(images), f"image {index + 1}/{len(images)}")
    return (yield from iter_choose_postprocess(probabilities, labels, candidates, bundle.postprocess, cancel))


def iter_choose_postprocess(
    probabilities: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    candidates: Sequence[PostprocessConfig],
    current: PostprocessConfig,
    cancel: CancelFlag = None,
) -> Generator[Progress, None, TuningResult]:
    """Score every candidate on cached network probabilities and return the best.

    Parameters
    ----------
    probabilities : sequence of float arrays (K, Y, X)
        Class probabilities of each image (see :func:`napari_unet.core.predict.segment.predict`).
    labels : sequence of int arrays (Y, X)
        Ground-truth instance labels of each image.
    candidates : sequence of PostprocessConfig
        Settings to try; ties in AP@0.5 go to the higher AP@0.75, then to the earlier candidate.
    current : PostprocessConfig
        The settings in use now, scored as ``baseline_scores``.
    cancel : callable, optional
        Checked between candidates.

    Yields
    ------
    Progress
        ``stage="tune"`` per candidate.

    Returns
    -------
    TuningResult

    Raises
    ------
    UserInputError
        Without candidates, or when probabilities and labels do not pair up.

    """
    if not candidates:
        raise UserInputError("no post-processing settings to try; give at least one candidate")
    if not probabilities or len(probabilities) != len(labels):
        raise UserInputError(
            f"choosing settings needs probabilities with labels; got {len(probabilities)} and {len(labels)}"
        )
    watershed = _SharedWatershed(list(probabilities))

    def score(config: PostprocessConfig) -> dict[str, float]:
        return {k: float(v) for k, v in summary_row(evaluate_dataset(list(labels), watershed(config))).items()}

    table = []
    for index, config in enumerate(candidates):
        check_cancel(cancel)
        row = score(config)
        table.append({**config.to_dict(), "AP@0.5": row["AP@0.5"], "AP@0.75": row["AP@0.75"]})
        yield Progress("tune", index + 1, len(candidates), f"AP@0.5 {row['AP@0.5']:.3f}")
    best_index = max(range(len(table)), key=lambda i: (table[i]["AP@0.5"], table[i]["AP@0.75"]))
    best = candidates[best_index]
    return TuningResult(best=best, best_scores=score(best), baseline_scores=score(current), table=table)


class _SharedWatershed:
    """Labels of every image for a config; configs differing only in ``min_confidence`` share one watershed.

    Only the last watershed is kept (one label image per image), so memory does not grow with the grid.
    """

    def __init__(self, probabilities: list[np.ndarray]) -> None:
        self.probabilities = probabilities
        self.foregrounds = [foreground_probability(p) for p in probabilities]  # once, not once per candidate
        self._key: PostprocessConfig | None = None
        self._labels: list[np.ndarray] = []

    def __call__(self, config: PostprocessConfig) -> list[np.ndarray]:
        key = replace(config, min_confidence=0.0)
        if key != self._key:
            self._key, self._labels = key, [probabilities_to_labels(p, key) for p in self.probabilities]
        return [
            remove_unconfident_objects(labels, foreground, config.min_confidence)
            for labels, foreground in zip(self._labels, self.foregrounds, strict=True)
        ]
