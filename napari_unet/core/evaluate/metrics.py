"""Segmentation scores: pixel Dice/IoU and stardist-compatible instance matching.

Instance matching follows ``stardist.matching.matching`` (Schmidt et al. 2018,
Weigert et al. 2020):

* The IoU of every overlapping (ground truth, prediction) pair is computed from
  a sparse overlap table (one pass over the pixels; no Python loop over pairs).
* A pair can match when ``IoU >= thresh``.  Objects are matched one-to-one with
  the Hungarian algorithm (:func:`scipy.optimize.linear_sum_assignment`): first
  the number of matches is maximised, then the sum of matched IoUs.  For
  ``thresh > 0.5`` the candidate pairs are already one-to-one, so the result is
  unique; for lower thresholds the assignment matters.  (stardist adds the IoU
  of below-threshold pairs to its tie-break term; we only count matched pairs.
  The number of true positives is identical; the matched IoU sum can only be
  higher here, and only in contrived ties.)
* ``accuracy = TP / (TP + FP + FN)`` is what stardist reports as "AP" and what
  the 2018 Data Science Bowl averaged over ``THRESHOLDS`` (0.5, 0.55, ..., 0.95)
  per image (:func:`evaluate_image` ``["dsb_score"]``).
* ``panoptic_quality = sum(matched IoU) / (TP + FP/2 + FN/2)`` (Kirillov et al. 2019).

Empty images (our convention; stardist returns 0 for these):

* no ground-truth object **and** no predicted object: every score
  (precision, recall, accuracy, F1, PQ, mean true/matched score, Dice, IoU) is
  1.0 -- predicting nothing where there is nothing is perfect;
* only one side empty: every score is 0.0.

Label images are arrays of any integer dtype (bool and integral floats are
accepted too); 0 is background, every other value is one object.  The
arrays may have any number of dimensions (a ZYX volume is scored as 3D
objects); score independent 2D images with :func:`evaluate_dataset`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from napari_unet.core.errors import UserInputError

THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
"""IoU thresholds 0.5, 0.55, ..., 0.95 of the DSB 2018 score."""

SCORE_NAMES: tuple[str, ...] = (
    "precision",
    "recall",
    "accuracy",
    "f1",
    "panoptic_quality",
    "mean_true_score",
    "mean_matched_score",
)
"""Per-threshold scores of a :class:`MatchResult` (all in [0, 1])."""

_DENSE_PAIR_LIMIT = 2**22  # count overlaps with a dense bincount up to this many (gt, pred) pairs ...
_LOOKUP_LIMIT = 2**24  # ... and relabel through a lookup table below this largest label;
_DENSE_SLACK = 2**16  # both only while the dense table is at most ~4x the pixel count + this


# ----------------------------------------------------------------------------- validation


def as_label_image(array: Any, name: str = "labels") -> np.ndarray:
    """Return ``array`` as a non-negative integer label image.

    Parameters
    ----------
    array : array-like
        Labels of any shape: integer, bool, or float holding whole numbers only.
    name : str
        What to call the array in error messages.

    Returns
    -------
    np.ndarray
        The same values with an integer dtype (integer input is returned as is,
        bool as uint8, integral floats as int64).

    Raises
    ------
    UserInputError
        For non-numeric arrays, floats with fractions or NaN, and negative labels.

    """
    labels = np.asarray(array)
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if np.issubdtype(labels.dtype, np.floating):
        labels = _integral_float_to_int(labels, name)
    elif not np.issubdtype(labels.dtype, np.integer):
        raise UserInputError(
            f"{name} has dtype {labels.dtype}; a label image must hold integers (0 = background, 1, 2, ... = objects)"
        )
    if labels.size and np.issubdtype(labels.dtype, np.signedinteger) and labels.min() < 0:
        raise UserInputError(f"{name} holds negative values (min {labels.min()}); labels must be >= 0 (0 = background)")
    return labels


def _integral_float_to_int(labels: np.ndarray, name: str) -> np.ndarray:
    if labels.size == 0:
        return labels.astype(np.int64)
    if not np.isfinite(labels).all():
        raise UserInputError(f"{name} holds NaN or infinite values; pass an integer label image")
    if not np.array_equal(labels, np.floor(labels)):
        raise UserInputError(
            f"{name} is a float image with non-integer values; pass an instance label image "
            "(integers: 0 = background, 1, 2, ... = objects), not probabilities or intensities"
        )
    return labels.astype(np.int64)


def _check_pair(gt: Any, pred: Any) -> tuple[np.ndarray, np.ndarray]:
    gt_labels = as_label_image(gt, "ground truth")
    pred_labels = as_label_image(pred, "prediction")
    if gt_labels.shape != pred_labels.shape:
        raise UserInputError(
            f"ground truth has shape {gt_labels.shape} but prediction has shape {pred_labels.shape}; "
            "score each prediction against the labels of the same image"
        )
    return gt_labels, pred_labels


def _check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(t) for t in np.atleast_1d(np.asarray(thresholds, dtype=float)))
    if not values:
        raise UserInputError("no IoU thresholds given; pass values in (0, 1], e.g. 0.5")
    for value in values:
        if not 0.0 < value <= 1.0:
            raise UserInputError(f"IoU threshold {value} is outside (0, 1]; use e.g. 0.5")
    return values


# ----------------------------------------------------------------------------- overlap table


@dataclass(frozen=True)
class _Overlap:
    """Sparse overlap table between two label images.

    ``gt_ids`` / ``pred_ids`` are the object ids (sorted); objects are indexed
    0..n-1 in that order.  ``rows``, ``cols``, ``intersection`` and ``iou``
    list every overlapping pair (gt index, pred index).
    """

    gt_ids: np.ndarray
    pred_ids: np.ndarray
    gt_area: np.ndarray
    pred_area: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    intersection: np.ndarray
    iou: np.ndarray

    @property
    def n_true(self) -> int:
        return len(self.gt_ids)

    @property
    def n_pred(self) -> int:
        return len(self.pred_ids)


def _sequential(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relabel to 0..n (0 kept as background).

    Returns
    -------
    (index, ids, areas)
        ``index`` is the flattened image with object k (1-based) = ``ids[k-1]``;
        ``areas[k-1]`` is its pixel count.

    """
    flat = labels.ravel()
    top = int(flat.max()) if flat.size else 0
    if top < min(_LOOKUP_LIMIT, 4 * flat.size + _DENSE_SLACK):
        counts = np.bincount(flat.astype(np.intp, copy=False), minlength=1)
        ids = np.flatnonzero(counts)
        ids = ids[ids > 0]
        lookup = np.zeros(top + 1, dtype=np.intp)
        lookup[ids] = np.arange(1, len(ids) + 1)
        return lookup[flat], ids.astype(np.int64), counts[ids]
    uniq, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    inverse = inverse.ravel().astype(np.intp)
    if uniq[0] == 0:
        return inverse, uniq[1:].astype(np.int64), counts[1:]
    return inverse + 1, uniq.astype(np.int64), counts


def _overlap(gt: np.ndarray, pred: np.ndarray) -> _Overlap:
    gt_index, gt_ids, gt_area = _sequential(gt)
    pred_index, pred_ids, pred_area = _sequential(pred)
    both = (gt_index > 0) & (pred_index > 0)
    rows = gt_index[both] - 1
    cols = pred_index[both] - 1
    n_pred = len(pred_ids)
    keys = rows.astype(np.int64) * max(n_pred, 1) + cols
    if len(gt_ids) * n_pred <= min(_DENSE_PAIR_LIMIT, 4 * len(keys) + _DENSE_SLACK):
        counts = np.bincount(keys, minlength=1)
        keys = np.flatnonzero(counts)
        intersection = counts[keys]
    else:
        keys, intersection = np.unique(keys, return_counts=True)
    rows, cols = np.divmod(keys, max(n_pred, 1))
    union = gt_area[rows] + pred_area[cols] - intersection
    iou = intersection / union if len(union) else np.zeros(0)
    return _Overlap(gt_ids, pred_ids, gt_area, pred_area, rows, cols, intersection, iou)


# ----------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class MatchResult:
    """Instance matching of one label image pair at one IoU threshold.

    Attributes
    ----------
    thresh : float
        IoU a pair needs to count as a match.
    tp, fp, fn : int
        Matched pairs, unmatched predictions, unmatched ground-truth objects.
    precision, recall : float
        ``TP / (TP + FP)`` and ``TP / (TP + FN)``.
    accuracy : float
        ``TP / (TP + FP + FN)`` (stardist's "AP"; the DSB 2018 per-threshold score).
    f1 : float
        ``2 TP / (2 TP + FP + FN)``.
    panoptic_quality : float
        ``sum(matched IoU) / (TP + FP/2 + FN/2)``.
    mean_true_score : float
        ``sum(matched IoU) / n_true`` (an unmatched true object scores 0).
    mean_matched_score : float
        ``sum(matched IoU) / TP``.
    sum_matched_score : float
        ``sum(matched IoU)`` (for pooling over images).
    n_true, n_pred : int
        Objects in the ground truth and in the prediction.
    matched_pairs : tuple of (int, int, float)
        ``(gt id, pred id, IoU)`` of every match, sorted by gt id.

    Notes
    -----
    When both images are empty every score is 1.0; when only one is, 0.0.

    """

    thresh: float
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    accuracy: float
    f1: float
    panoptic_quality: float
    mean_true_score: float
    mean_matched_score: float
    sum_matched_score: float
    n_true: int
    n_pred: int
    matched_pairs: tuple[tuple[int, int, float], ...] = ()

    def to_dict(self, with_pairs: bool = False) -> dict[str, Any]:
        """Return the fields as a JSON-ready dict (``matched_pairs`` only if asked)."""
        data = asdict(self)
        if with_pairs:
            data["matched_pairs"] = [list(pair) for pair in self.matched_pairs]
        else:
            del data["matched_pairs"]
        return data


def _assign(rows: np.ndarray, cols: np.ndarray, iou: np.ndarray) -> np.ndarray:
    """One-to-one matching of candidate pairs: maximise the number of matches, then their IoU sum.

    Parameters
    ----------
    rows, cols, iou : (n_pairs,) arrays
        Candidate pairs (gt index, pred index) and their IoU; each pair listed once.

    Returns
    -------
    np.ndarray
        Indices of the chosen pairs.  Pairs whose gt and pred objects take
        part in no other candidate pair are chosen directly; the remaining
        connected groups are solved with the Hungarian algorithm, one small
        dense problem per group.

    """
    if len(rows) == 0:
        return np.zeros(0, dtype=np.intp)
    alone = (np.bincount(rows)[rows] == 1) & (np.bincount(cols)[cols] == 1)
    chosen = [np.flatnonzero(alone)]
    contested = np.flatnonzero(~alone)
    if len(contested):
        group = _pair_groups(rows[contested], cols[contested])
        order = np.argsort(group, kind="stable")
        for edges in np.split(contested[order], np.flatnonzero(np.diff(group[order])) + 1):
            chosen.append(edges[_hungarian(rows[edges], cols[edges], iou[edges])])
    return np.sort(np.concatenate(chosen))


def _pair_groups(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Connected-component id of every pair in the bipartite graph the pairs form."""
    uniq_rows, row_index = np.unique(rows, return_inverse=True)
    _, col_index = np.unique(cols, return_inverse=True)
    n_nodes = len(uniq_rows) + int(col_index.max()) + 1
    graph = coo_matrix((np.ones(len(rows)), (row_index, len(uniq_rows) + col_index)), shape=(n_nodes, n_nodes))
    _, component = connected_components(graph, directed=False)
    return component[row_index]


def _hungarian(rows: np.ndarray, cols: np.ndarray, iou: np.ndarray) -> np.ndarray:
    """Solve one connected group of candidate pairs; return the indices of the chosen pairs."""
    _, row_index = np.unique(rows, return_inverse=True)
    _, col_index = np.unique(cols, return_inverse=True)
    shape = (int(row_index.max()) + 1, int(col_index.max()) + 1)
    # Each match is worth 1; the IoU tie-break sums to < 0.5, so the count always dominates (as in stardist).
    cost = np.zeros(shape)
    cost[row_index, col_index] = -1.0 - iou / (2.0 * min(shape))
    pair_at = np.full(shape, -1, dtype=np.intp)
    pair_at[row_index, col_index] = np.arange(len(rows))
    sel_rows, sel_cols = linear_sum_assignment(cost)
    chosen = pair_at[sel_rows, sel_cols]
    return chosen[chosen >= 0]


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator > 0 else 0.0


def _scores(tp: int, n_true: int, n_pred: int, sum_iou: float) -> dict[str, float]:
    """Scores from counts; both empty -> 1.0 everywhere, one side empty -> 0.0."""
    if n_true == 0 and n_pred == 0:
        return dict.fromkeys(SCORE_NAMES, 1.0)
    fp, fn = n_pred - tp, n_true - tp
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "accuracy": _ratio(tp, tp + fp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "panoptic_quality": _ratio(sum_iou, tp + fp / 2 + fn / 2),
        "mean_true_score": _ratio(sum_iou, n_true),
        "mean_matched_score": _ratio(sum_iou, tp),
    }


def _match(overlap: _Overlap, thresh: float) -> MatchResult:
    candidate = overlap.iou >= thresh
    rows, cols, iou = overlap.rows[candidate], overlap.cols[candidate], overlap.iou[candidate]
    chosen = _assign(rows, cols, iou)  # sorted, and the table is sorted by gt index
    rows, cols, iou = rows[chosen], cols[chosen], iou[chosen]
    tp = len(rows)
    sum_iou = float(iou.sum())
    pairs = tuple(
        (int(g), int(p), float(v)) for g, p, v in zip(overlap.gt_ids[rows], overlap.pred_ids[cols], iou, strict=True)
    )
    return MatchResult(
        thresh=float(thresh),
        tp=tp,
        fp=overlap.n_pred - tp,
        fn=overlap.n_true - tp,
        sum_matched_score=sum_iou,
        n_true=overlap.n_true,
        n_pred=overlap.n_pred,
        matched_pairs=pairs,
        **_scores(tp, overlap.n_true, overlap.n_pred, sum_iou),
    )


def match_instances(gt: Any, pred: Any, thresh: float = 0.5) -> MatchResult:
    """Match ground-truth and predicted objects one-to-one at an IoU threshold.

    Parameters
    ----------
    gt, pred : array-like, same shape (any dimensionality)
        Instance label images (0 = background).
    thresh : float
        Minimum IoU of a match, in (0, 1].

    Returns
    -------
    MatchResult
        Counts, scores and matched pairs (see the module docstring for the rules).

    Raises
    ------
    UserInputError
        On shape mismatch, non-label arrays or a threshold outside (0, 1].

    """
    (thresh,) = _check_thresholds([thresh])
    gt_labels, pred_labels = _check_pair(gt, pred)
    return _match(_overlap(gt_labels, pred_labels), thresh)


# ----------------------------------------------------------------------------- pixel scores


def _pixel_counts(overlap: _Overlap) -> tuple[int, int, int]:
    """Return (foreground intersection, gt foreground, pred foreground) pixel counts."""
    return int(overlap.intersection.sum()), int(overlap.gt_area.sum()), int(overlap.pred_area.sum())


def _pixel_from_counts(intersection: int, gt_size: int, pred_size: int) -> dict[str, float]:
    if gt_size == 0 and pred_size == 0:
        return {"dice": 1.0, "iou": 1.0}
    return {
        "dice": _ratio(2 * intersection, gt_size + pred_size),
        "iou": _ratio(intersection, gt_size + pred_size - intersection),
    }


def pixel_scores(gt: Any, pred: Any) -> dict[str, float]:
    """Foreground Dice and IoU, ignoring which object a pixel belongs to.

    Parameters
    ----------
    gt, pred : array-like, same shape
        Label images; every value > 0 is foreground.

    Returns
    -------
    dict
        ``{"dice": 2|G∩P| / (|G|+|P|), "iou": |G∩P| / |G∪P|}``; both 1.0 when
        neither image has foreground.

    """
    gt_labels, pred_labels = _check_pair(gt, pred)
    gt_fg, pred_fg = gt_labels > 0, pred_labels > 0
    intersection = int(np.count_nonzero(gt_fg & pred_fg))
    return _pixel_from_counts(intersection, int(np.count_nonzero(gt_fg)), int(np.count_nonzero(pred_fg)))


# ----------------------------------------------------------------------------- evaluation


def _threshold_index(thresholds: Sequence[float], value: float) -> int | None:
    for index, thresh in enumerate(thresholds):
        if math.isclose(thresh, value, abs_tol=1e-9):
            return index
    return None


def _dsb(matches: dict[float, MatchResult]) -> float:
    return float(np.mean([matches[t].accuracy for t in THRESHOLDS]))


def evaluate_image(gt: Any, pred: Any, thresholds: Sequence[float] = THRESHOLDS) -> dict[str, Any]:
    """Score one prediction against its ground truth at several IoU thresholds.

    Parameters
    ----------
    gt, pred : array-like, same shape
        Instance label images.
    thresholds : sequence of float
        IoU thresholds in (0, 1].

    Returns
    -------
    dict
        JSON-ready::

            {"thresholds": [t, ...],
             "per_threshold": [MatchResult.to_dict() for each t],
             "dice": float, "iou": float,        # pixel scores
             "n_true": int, "n_pred": int,
             "dsb_score": float,                 # mean accuracy over THRESHOLDS (always 0.5..0.95)
             "pixel_counts": {"intersection", "gt", "pred"}}

    """
    thresholds = _check_thresholds(thresholds)
    gt_labels, pred_labels = _check_pair(gt, pred)
    overlap = _overlap(gt_labels, pred_labels)
    matches = {t: _match(overlap, t) for t in (*thresholds, *THRESHOLDS)}
    intersection, gt_size, pred_size = _pixel_counts(overlap)
    pixel = _pixel_from_counts(intersection, gt_size, pred_size)
    return {
        "thresholds": list(thresholds),
        "per_threshold": [matches[t].to_dict() for t in thresholds],
        "dice": pixel["dice"],
        "iou": pixel["iou"],
        "n_true": overlap.n_true,
        "n_pred": overlap.n_pred,
        "dsb_score": _dsb(matches),
        "pixel_counts": {"intersection": intersection, "gt": gt_size, "pred": pred_size},
    }


def _mean_section(per_image: list[dict[str, Any]], thresholds: tuple[float, ...]) -> dict[str, Any]:
    per_threshold = []
    for index, thresh in enumerate(thresholds):
        entries = [image["per_threshold"][index] for image in per_image]
        row: dict[str, Any] = {"thresh": thresh}
        for key in ("tp", "fp", "fn", "n_true", "n_pred"):
            row[key] = int(sum(e[key] for e in entries))
        row["sum_matched_score"] = float(sum(e["sum_matched_score"] for e in entries))
        for name in SCORE_NAMES:
            row[name] = float(np.mean([e[name] for e in entries]))
        per_threshold.append(row)
    return {
        "thresholds": list(thresholds),
        "per_threshold": per_threshold,
        "dice": float(np.mean([image["dice"] for image in per_image])),
        "iou": float(np.mean([image["iou"] for image in per_image])),
        "n_true": int(sum(image["n_true"] for image in per_image)),
        "n_pred": int(sum(image["n_pred"] for image in per_image)),
        "dsb_score": float(np.mean([image["dsb_score"] for image in per_image])),
    }


def _pooled_row(entries: list[dict[str, Any]], thresh: float) -> dict[str, Any]:
    tp = int(sum(e["tp"] for e in entries))
    n_true = int(sum(e["n_true"] for e in entries))
    n_pred = int(sum(e["n_pred"] for e in entries))
    sum_iou = float(sum(e["sum_matched_score"] for e in entries))
    return {
        "thresh": thresh,
        "tp": tp,
        "fp": n_pred - tp,
        "fn": n_true - tp,
        "n_true": n_true,
        "n_pred": n_pred,
        "sum_matched_score": sum_iou,
        **_scores(tp, n_true, n_pred, sum_iou),
    }


def _pooled_section(per_image: list[dict[str, Any]], thresholds: tuple[float, ...]) -> dict[str, Any]:
    per_threshold = [
        _pooled_row([image["per_threshold"][index] for image in per_image], thresh)
        for index, thresh in enumerate(thresholds)
    ]
    counts = {key: sum(image["pixel_counts"][key] for image in per_image) for key in ("intersection", "gt", "pred")}
    pixel = _pixel_from_counts(counts["intersection"], counts["gt"], counts["pred"])
    dsb_rows = {t: per_threshold[_threshold_index(thresholds, t)] for t in THRESHOLDS if t in thresholds}
    return {
        "thresholds": list(thresholds),
        "per_threshold": per_threshold,
        "dice": pixel["dice"],
        "iou": pixel["iou"],
        "n_true": int(sum(image["n_true"] for image in per_image)),
        "n_pred": int(sum(image["n_pred"] for image in per_image)),
        "dsb_score": float(np.mean([r["accuracy"] for r in dsb_rows.values()])) if dsb_rows else math.nan,
    }


def evaluate_dataset(
    gts: Sequence[Any], preds: Sequence[Any], thresholds: Sequence[float] = THRESHOLDS
) -> dict[str, Any]:
    """Score a list of predictions against their ground truths.

    Parameters
    ----------
    gts, preds : sequences of array-like
        Ground-truth and predicted label images, paired by position; each pair
        must have the same shape (pairs may differ from each other).
    thresholds : sequence of float
        IoU thresholds in (0, 1].

    Returns
    -------
    dict
        JSON-ready::

            {"n_images": int,
             "per_image": [evaluate_image(...) for each pair],
             "mean":   {...},   # each score averaged over images (the stardist/DSB convention)
             "pooled": {...},   # TP/FP/FN (and pixel counts) summed over images, then scored
             "dsb_score": float}  # per-image DSB score averaged over images

        ``mean`` and ``pooled`` have the layout of an :func:`evaluate_image`
        result (``thresholds``, ``per_threshold``, ``dice``, ``iou``,
        ``n_true``, ``n_pred``, ``dsb_score``); their ``tp``/``fp``/``fn``/
        ``n_true``/``n_pred`` are totals.  Pooled ``dsb_score`` averages the
        pooled accuracy over those of 0.5..0.95 present in ``thresholds``.

    """
    gts, preds = list(gts), list(preds)
    if not gts:
        raise UserInputError("no images to evaluate; pass at least one (ground truth, prediction) pair")
    if len(gts) != len(preds):
        raise UserInputError(
            f"{len(gts)} ground-truth images but {len(preds)} predictions; pass one prediction per ground truth"
        )
    thresholds = _check_thresholds(thresholds)
    per_image = [evaluate_image(gt, pred, thresholds) for gt, pred in zip(gts, preds, strict=True)]
    mean = _mean_section(per_image, thresholds)
    return {
        "n_images": len(per_image),
        "per_image": per_image,
        "mean": mean,
        "pooled": _pooled_section(per_image, thresholds),
        "dsb_score": mean["dsb_score"],
    }


def summary_row(result: dict[str, Any]) -> dict[str, float | int]:
    """One table row from an :func:`evaluate_dataset` or :func:`evaluate_image` result.

    Parameters
    ----------
    result : dict
        A dataset result (its per-image ``mean`` section is used) or an image result.

    Returns
    -------
    dict
        Exactly the keys ``AP@0.5``, ``AP@0.75`` (accuracy TP/(TP+FP+FN),
        stardist's "AP"), ``F1@0.5``, ``PQ@0.5``, ``Precision@0.5``,
        ``Recall@0.5``, ``Dice`` (pixel), ``DSB``, ``n_true``, ``n_pred``.
        Scores at thresholds the result does not hold are NaN.

    """
    section = result.get("mean", result)
    thresholds = section["thresholds"]

    def score(name: str, thresh: float) -> float:
        index = _threshold_index(thresholds, thresh)
        return math.nan if index is None else float(section["per_threshold"][index][name])

    return {
        "AP@0.5": score("accuracy", 0.5),
        "AP@0.75": score("accuracy", 0.75),
        "F1@0.5": score("f1", 0.5),
        "PQ@0.5": score("panoptic_quality", 0.5),
        "Precision@0.5": score("precision", 0.5),
        "Recall@0.5": score("recall", 0.5),
        "Dice": float(section["dice"]),
        "DSB": float(section["dsb_score"]),
        "n_true": int(section["n_true"]),
        "n_pred": int(section["n_pred"]),
    }


# ----------------------------------------------------------------------------- error maps


def _keep_ids(index: np.ndarray, labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Labels where ``keep[index - 1]`` is true, else 0 (``index`` = sequential flat labels)."""
    table = np.concatenate([[False], keep])
    return np.where(table[index], labels.ravel(), 0).reshape(labels.shape).astype(labels.dtype, copy=False)


def _shared_objects(
    owner: np.ndarray, other: np.ndarray, fraction: np.ndarray, n_owner: int, min_fraction: float
) -> np.ndarray:
    """Objects of one side whose area is shared (>= min_fraction each) by 2+ objects of the other side."""
    big_share = fraction >= min_fraction
    return np.bincount(owner[big_share], minlength=n_owner) >= 2


def error_maps(gt: Any, pred: Any, thresh: float = 0.5, min_fraction: float = 0.2) -> dict[str, np.ndarray]:
    """Label images of the matching's errors, for overlays.

    Parameters
    ----------
    gt, pred : array-like, same shape
        Instance label images.
    thresh : float
        IoU threshold of a match (as in :func:`match_instances`).
    min_fraction : float
        Share of an object's area another object must cover to count in a
        split or merge.

    Returns
    -------
    dict of str -> np.ndarray (input shape, integer)
        ``true_positive``: matched predictions (pred ids);
        ``false_positive``: unmatched predictions (pred ids);
        ``false_negative``: unmatched ground-truth objects (gt ids);
        ``split``: ground-truth objects (gt ids) with >= 2 predictions each
        covering >= ``min_fraction`` of the object's area;
        ``merge``: predictions (pred ids) with >= 2 ground-truth objects each
        covering >= ``min_fraction`` of the prediction's area.

    """
    (thresh,) = _check_thresholds([thresh])
    gt_labels, pred_labels = _check_pair(gt, pred)
    overlap = _overlap(gt_labels, pred_labels)
    result = _match(overlap, thresh)
    gt_index, _, _ = _sequential(gt_labels)
    pred_index, _, _ = _sequential(pred_labels)
    matched_gt = np.isin(overlap.gt_ids, [g for g, _, _ in result.matched_pairs])
    matched_pred = np.isin(overlap.pred_ids, [p for _, p, _ in result.matched_pairs])
    split = _shared_objects(
        overlap.rows, overlap.cols, overlap.intersection / overlap.gt_area[overlap.rows], overlap.n_true, min_fraction
    )
    merge = _shared_objects(
        overlap.cols, overlap.rows, overlap.intersection / overlap.pred_area[overlap.cols], overlap.n_pred, min_fraction
    )
    return {
        "true_positive": _keep_ids(pred_index, pred_labels, matched_pred),
        "false_positive": _keep_ids(pred_index, pred_labels, ~matched_pred),
        "false_negative": _keep_ids(gt_index, gt_labels, ~matched_gt),
        "split": _keep_ids(gt_index, gt_labels, split),
        "merge": _keep_ids(pred_index, pred_labels, merge),
    }


ERROR_CLASSES = ("true_positive", "false_positive", "false_negative", "split", "merge")
"""Keys of :func:`error_maps`, in the order of their codes 1..5 in :func:`error_class_map`."""


def error_class_map(maps: dict[str, np.ndarray]) -> np.ndarray:
    """Merge the label images of :func:`error_maps` into one class image for display.

    Parameters
    ----------
    maps : dict of str -> np.ndarray
        The result of :func:`error_maps` (all the same shape).

    Returns
    -------
    np.ndarray
        uint8, same shape: 0 no error, then 1 true positive, 2 false positive,
        3 false negative, 4 split, 5 merge (:data:`ERROR_CLASSES` order); where
        classes overlap the later one wins (a split or merge is drawn over the
        TP/FP/FN class of the same pixels).

    """
    classes = np.zeros(maps[ERROR_CLASSES[0]].shape, dtype=np.uint8)
    for code, key in enumerate(ERROR_CLASSES, start=1):
        classes[maps[key] > 0] = code
    return classes
