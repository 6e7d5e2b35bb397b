"""Metrics against hand-computed cases (stardist conventions, see napari_unet.core.evaluate.metrics)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from napari_unet.core.errors import UserInputError
from napari_unet.core.evaluate import metrics
from napari_unet.core.evaluate.metrics import (
    SCORE_NAMES,
    THRESHOLDS,
    error_class_map,
    error_maps,
    evaluate_dataset,
    evaluate_image,
    match_instances,
    pixel_scores,
    summary_row,
)


def three_squares() -> tuple[np.ndarray, np.ndarray]:
    """gt: three 4x4 squares; pred: two exact copies (other ids) + one shifted right by 1 px.

    Shifted square: intersection 4x3 = 12, union 16 + 16 - 12 = 20 -> IoU 0.6.
    """
    gt = np.zeros((20, 20), dtype=np.uint16)
    gt[2:6, 2:6] = 1
    gt[10:14, 10:14] = 2
    gt[2:6, 12:16] = 3
    pred = np.zeros_like(gt)
    pred[2:6, 2:6] = 5
    pred[10:14, 10:14] = 9
    pred[2:6, 13:17] = 7
    return gt, pred


def test_three_squares_at_0_5_all_match() -> None:
    gt, pred = three_squares()
    result = match_instances(gt, pred, 0.5)
    assert (result.tp, result.fp, result.fn) == (3, 0, 0)
    assert result.accuracy == result.f1 == result.precision == result.recall == 1.0
    # PQ = (1 + 1 + 0.6) / (3 + 0 + 0)
    assert result.panoptic_quality == pytest.approx(2.6 / 3)
    assert result.mean_true_score == pytest.approx(2.6 / 3)
    assert result.mean_matched_score == pytest.approx(2.6 / 3)
    assert result.sum_matched_score == pytest.approx(2.6)
    assert (result.n_true, result.n_pred) == (3, 3)
    assert [(g, p) for g, p, _ in result.matched_pairs] == [(1, 5), (2, 9), (3, 7)]
    assert [iou for _, _, iou in result.matched_pairs] == pytest.approx([1.0, 1.0, 0.6])


def test_three_squares_at_0_75_shifted_square_fails() -> None:
    gt, pred = three_squares()
    result = match_instances(gt, pred, 0.75)
    # TP 2, FP 1 (pred 7), FN 1 (gt 3)
    assert (result.tp, result.fp, result.fn) == (2, 1, 1)
    assert result.precision == pytest.approx(2 / 3)
    assert result.recall == pytest.approx(2 / 3)
    assert result.accuracy == pytest.approx(2 / 4)  # 2 / (2 + 1 + 1)
    assert result.f1 == pytest.approx(4 / 6)  # 2*2 / (2*2 + 1 + 1)
    assert result.panoptic_quality == pytest.approx(2 / 3)  # (1 + 1) / (2 + 0.5 + 0.5)
    assert result.mean_true_score == pytest.approx(2 / 3)  # (1 + 1) / 3
    assert result.mean_matched_score == pytest.approx(1.0)


def test_threshold_is_inclusive_like_stardist() -> None:
    gt, pred = three_squares()
    assert match_instances(gt, pred, 0.6).tp == 3  # IoU 0.6 >= 0.6
    assert match_instances(gt, pred, 0.6 + 1e-9).tp == 2


def test_evaluate_image_three_squares() -> None:
    gt, pred = three_squares()
    result = evaluate_image(gt, pred)
    assert result["thresholds"] == list(THRESHOLDS)
    accuracies = [row["accuracy"] for row in result["per_threshold"]]
    # thresholds 0.5, 0.55, 0.6 keep the IoU-0.6 match (accuracy 1), 0.65 ... 0.95 lose it (2/4)
    assert accuracies == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    assert result["dsb_score"] == pytest.approx((3 * 1 + 7 * 0.5) / 10)
    # foreground: 48 px each, overlap 16 + 16 + 12 = 44 px
    assert result["dice"] == pytest.approx(2 * 44 / 96)
    assert result["iou"] == pytest.approx(44 / 52)
    assert (result["n_true"], result["n_pred"]) == (3, 3)


def test_thresholds_constant() -> None:
    assert pytest.approx([0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]) == THRESHOLDS


def test_dsb_score_uses_standard_thresholds_even_for_custom_ones() -> None:
    gt, pred = three_squares()
    result = evaluate_image(gt, pred, thresholds=[0.3])
    assert [row["thresh"] for row in result["per_threshold"]] == [0.3]
    assert result["dsb_score"] == pytest.approx(0.65)


def test_perfect_prediction_with_other_ids_scores_one() -> None:
    gt, _ = three_squares()
    pred = np.where(gt > 0, 100 - gt.astype(np.int64), 0)
    result = evaluate_image(gt, pred)
    for row in result["per_threshold"]:
        for name in SCORE_NAMES:
            assert row[name] == 1.0, name
        assert (row["tp"], row["fp"], row["fn"]) == (3, 0, 0)
    assert result["dsb_score"] == 1.0
    assert result["dice"] == result["iou"] == 1.0


def test_both_empty_scores_one_by_convention() -> None:
    empty = np.zeros((8, 8), dtype=np.uint8)
    result = match_instances(empty, empty)
    assert (result.tp, result.fp, result.fn, result.n_true, result.n_pred) == (0, 0, 0, 0, 0)
    for name in SCORE_NAMES:
        assert getattr(result, name) == 1.0
    assert pixel_scores(empty, empty) == {"dice": 1.0, "iou": 1.0}
    assert evaluate_image(empty, empty)["dsb_score"] == 1.0


def test_one_side_empty_scores_zero() -> None:
    empty = np.zeros((8, 8), dtype=np.uint8)
    one = empty.copy()
    one[2:5, 2:5] = 4
    only_pred = match_instances(empty, one)
    assert (only_pred.tp, only_pred.fp, only_pred.fn) == (0, 1, 0)
    only_gt = match_instances(one, empty)
    assert (only_gt.tp, only_gt.fp, only_gt.fn) == (0, 0, 1)
    for result in (only_pred, only_gt):
        for name in SCORE_NAMES:
            assert getattr(result, name) == 0.0
    assert pixel_scores(one, empty) == {"dice": 0.0, "iou": 0.0}


def test_one_prediction_covering_two_objects_counts_once() -> None:
    gt = np.zeros((10, 12), dtype=np.int32)
    gt[2:6, 2:6] = 1
    gt[2:6, 6:10] = 2
    pred = np.zeros_like(gt)
    pred[2:6, 2:10] = 1  # IoU with each gt square: 16 / 32 = 0.5
    result = match_instances(gt, pred, 0.5)
    assert (result.tp, result.fp, result.fn) == (1, 0, 1)
    assert result.accuracy == pytest.approx(1 / 2)
    assert result.f1 == pytest.approx(2 / 3)  # 2 / (2 + 0 + 1)
    assert result.panoptic_quality == pytest.approx(0.5 / 1.5)  # 0.5 / (1 + 0 + 0.5)
    assert len(result.matched_pairs) == 1


def interval_case() -> tuple[np.ndarray, np.ndarray]:
    """1-row images: gt A=[0,10) B=[10,20); pred Q=[0,2) P=[2,14).

    IoU(A,P) = 8/14, IoU(A,Q) = 2/10, IoU(B,P) = 4/18, IoU(B,Q) = 0.
    """
    gt = np.zeros((1, 24), dtype=np.uint8)
    gt[0, 0:10] = 1  # A
    gt[0, 10:20] = 2  # B
    pred = np.zeros_like(gt)
    pred[0, 0:2] = 3  # Q
    pred[0, 2:14] = 4  # P
    return gt, pred


def test_low_threshold_maximises_number_of_matches_not_greedy_iou() -> None:
    gt, pred = interval_case()
    # At 0.15 all three pairs qualify; greedy (A,P) would give 1 match, the assignment gives A-Q and B-P.
    result = match_instances(gt, pred, 0.15)
    assert (result.tp, result.fp, result.fn) == (2, 0, 0)
    assert [(g, p) for g, p, _ in result.matched_pairs] == [(1, 3), (2, 4)]
    assert result.sum_matched_score == pytest.approx(2 / 10 + 4 / 18)
    assert result.panoptic_quality == pytest.approx((2 / 10 + 4 / 18) / 2)
    # At 0.5 only (A, P) qualifies
    strict = match_instances(gt, pred, 0.5)
    assert (strict.tp, strict.fp, strict.fn) == (1, 1, 1)
    assert strict.matched_pairs[0][:2] == (1, 4)
    assert strict.matched_pairs[0][2] == pytest.approx(8 / 14)


def brute_force_best(gt: np.ndarray, pred: np.ndarray, thresh: float) -> tuple[int, float]:
    """Best (match count, IoU sum) over every one-to-one matching, by enumeration."""
    gt_ids = [i for i in np.unique(gt) if i]
    pred_ids = [i for i in np.unique(pred) if i]

    def iou(g: int, p: int) -> float:
        a, b = gt == g, pred == p
        return np.count_nonzero(a & b) / np.count_nonzero(a | b)

    table = {(g, p): iou(g, p) for g in gt_ids for p in pred_ids}
    best = (0, 0.0)
    for choice in itertools.product([None, *pred_ids], repeat=len(gt_ids)):
        used = [p for p in choice if p is not None]
        if len(used) != len(set(used)):
            continue
        pairs = [(g, p) for g, p in zip(gt_ids, choice, strict=True) if p is not None]
        if any(table[pair] < thresh for pair in pairs):
            continue
        score = (len(pairs), sum(table[pair] for pair in pairs))
        if score[0] > best[0] or (score[0] == best[0] and score[1] > best[1] + 1e-12):
            best = score
    return best


def random_rectangles(rng: np.random.Generator, n: int, shape: tuple[int, int]) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.int32)
    for label in range(1, n + 1):
        y, x = rng.integers(0, shape[0] - 3), rng.integers(0, shape[1] - 3)
        h, w = rng.integers(2, 6, size=2)
        labels[y : y + h, x : x + w] = label
    return labels


@pytest.mark.parametrize("thresh", [0.1, 0.3, 0.5])
def test_assignment_is_optimal_against_brute_force(thresh: float) -> None:
    rng = np.random.default_rng(7)
    for _ in range(15):
        gt = random_rectangles(rng, 4, (12, 12))
        pred = random_rectangles(rng, 4, (12, 12))
        result = match_instances(gt, pred, thresh)
        count, total = brute_force_best(gt, pred, thresh)
        assert result.tp == count
        assert result.sum_matched_score == pytest.approx(total)
        matched_gt = [g for g, _, _ in result.matched_pairs]
        matched_pred = [p for _, p, _ in result.matched_pairs]
        assert len(set(matched_gt)) == len(matched_gt) and len(set(matched_pred)) == len(matched_pred)


def test_sparse_and_dense_overlap_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    gt = random_rectangles(rng, 6, (16, 16))
    pred = random_rectangles(rng, 6, (16, 16))
    dense = evaluate_image(gt, pred)
    monkeypatch.setattr(metrics, "_DENSE_PAIR_LIMIT", 0)
    monkeypatch.setattr(metrics, "_LOOKUP_LIMIT", 0)
    assert evaluate_image(gt, pred) == dense


def test_pooled_differs_from_per_image_mean() -> None:
    first = np.zeros((10, 10), dtype=np.uint8)
    first[1:4, 1:4] = 1
    second = np.zeros((10, 10), dtype=np.uint8)
    second[1:3, 1:3], second[5:7, 5:7], second[1:3, 6:8] = 1, 2, 3
    # image 1: perfect (accuracy 1); image 2: 3 objects, nothing predicted (accuracy 0)
    result = evaluate_dataset([first, second], [first, np.zeros_like(second)])
    mean_05 = result["mean"]["per_threshold"][0]
    pooled_05 = result["pooled"]["per_threshold"][0]
    assert mean_05["accuracy"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert pooled_05["accuracy"] == pytest.approx(0.25)  # TP 1 / (1 + 0 + 3)
    assert (pooled_05["tp"], pooled_05["fp"], pooled_05["fn"]) == (1, 0, 3)
    assert pooled_05["recall"] == pytest.approx(0.25)
    assert mean_05["recall"] == pytest.approx(0.5)
    assert pooled_05["precision"] == 1.0
    assert mean_05["precision"] == pytest.approx(0.5)  # image 2: precision 0 by the one-side-empty rule
    assert result["dsb_score"] == pytest.approx(0.5)
    assert result["pooled"]["dsb_score"] == pytest.approx(0.25)
    # pixel Dice: mean of (1, 0) vs pooled 2*9 / (9+12 + 9)
    assert result["mean"]["dice"] == pytest.approx(0.5)
    assert result["pooled"]["dice"] == pytest.approx(18 / 30)
    assert result["n_images"] == 2 and len(result["per_image"]) == 2


def test_summary_row_keys_and_values() -> None:
    gt, pred = three_squares()
    row = summary_row(evaluate_dataset([gt, gt], [pred, gt]))
    assert list(row) == [
        "AP@0.5",
        "AP@0.75",
        "F1@0.5",
        "PQ@0.5",
        "Precision@0.5",
        "Recall@0.5",
        "Dice",
        "DSB",
        "n_true",
        "n_pred",
    ]
    assert row["AP@0.5"] == 1.0
    assert row["AP@0.75"] == pytest.approx((0.5 + 1.0) / 2)
    assert row["PQ@0.5"] == pytest.approx((2.6 / 3 + 1.0) / 2)
    assert row["DSB"] == pytest.approx((0.65 + 1.0) / 2)
    assert row["Dice"] == pytest.approx((88 / 96 + 1.0) / 2)
    assert (row["n_true"], row["n_pred"]) == (6, 6)
    image_row = summary_row(evaluate_image(gt, pred))
    assert image_row["AP@0.75"] == pytest.approx(0.5)
    assert np.isnan(summary_row(evaluate_image(gt, pred, thresholds=[0.5]))["AP@0.75"])


def test_error_maps_classify_objects() -> None:
    gt = np.zeros((12, 30), dtype=np.uint16)
    gt[1:5, 1:5] = 1  # predicted exactly -> TP (pred 10)
    gt[1:5, 8:16] = 2  # split into two halves (preds 20, 21)
    gt[7:11, 1:5], gt[7:11, 5:9] = 3, 4  # merged by pred 30
    gt[7:11, 20:24] = 5  # missed -> FN
    pred = np.zeros_like(gt)
    pred[1:5, 1:5] = 10
    pred[1:5, 8:12], pred[1:5, 12:16] = 20, 21
    pred[7:11, 1:9] = 30
    pred[1:4, 25:28] = 40  # nothing there -> FP
    maps = error_maps(gt, pred, 0.5)
    assert set(maps) == {"true_positive", "false_positive", "false_negative", "split", "merge"}
    # halves: IoU 16/32 = 0.5 with gt 2 -> one of them matches; pred 30 matches one of gt 3/4 (IoU 0.5)
    tp_ids = set(np.unique(maps["true_positive"])) - {0}
    assert 10 in tp_ids and 30 in tp_ids and len(tp_ids & {20, 21}) == 1
    assert set(np.unique(maps["false_positive"])) - {0} == {40} | ({20, 21} - tp_ids)
    fn_ids = set(np.unique(maps["false_negative"])) - {0}
    assert 5 in fn_ids and len(fn_ids & {3, 4}) == 1 and 2 not in fn_ids
    assert set(np.unique(maps["split"])) == {0, 2}
    assert set(np.unique(maps["merge"])) == {0, 30}
    np.testing.assert_array_equal(maps["split"] > 0, gt == 2)
    np.testing.assert_array_equal(maps["merge"] > 0, pred == 30)
    for image in maps.values():
        assert image.shape == gt.shape and np.issubdtype(image.dtype, np.integer)


def test_error_maps_at_strict_threshold() -> None:
    gt, pred = three_squares()
    maps = error_maps(gt, pred, 0.75)
    assert set(np.unique(maps["true_positive"])) == {0, 5, 9}
    assert set(np.unique(maps["false_positive"])) == {0, 7}
    assert set(np.unique(maps["false_negative"])) == {0, 3}
    assert not maps["split"].any() and not maps["merge"].any()


def test_error_class_map_codes_each_pixel_with_the_last_class_on_top() -> None:
    gt, pred = three_squares()
    classes = error_class_map(error_maps(gt, pred, 0.75))
    assert classes.dtype == np.uint8 and classes.shape == gt.shape
    expected = np.zeros(gt.shape, dtype=np.uint8)
    expected[2:6, 2:6] = expected[10:14, 10:14] = 1  # true positives (preds 5 and 9)
    expected[2:6, 13:17] = 2  # the shifted pred 7 is a false positive ...
    expected[2:6, 12:16] = 3  # ... drawn under the missed gt 3 (false negatives come later, so they win)
    np.testing.assert_array_equal(classes, expected)
    split_and_merge = {key: np.zeros((2, 2), np.uint16) for key in metrics.ERROR_CLASSES}
    split_and_merge["split"][0, 0] = split_and_merge["merge"][0, 0] = split_and_merge["true_positive"][1, 1] = 7
    np.testing.assert_array_equal(error_class_map(split_and_merge), [[5, 0], [0, 1]])


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int32, np.uint32, np.int64, np.uint64])
def test_any_integer_dtype(dtype: type) -> None:
    gt, pred = three_squares()
    result = match_instances(gt.astype(dtype), pred.astype(dtype), 0.5)
    assert (result.tp, result.fp, result.fn) == (3, 0, 0)


def test_integral_float_and_bool_accepted() -> None:
    gt, pred = three_squares()
    assert match_instances(gt.astype(np.float32), pred.astype(np.float64)).tp == 3
    assert pixel_scores(gt > 0, pred > 0)["dice"] == pytest.approx(88 / 96)


def test_huge_label_ids() -> None:
    gt, pred = three_squares()
    big = np.where(pred > 0, pred.astype(np.uint64) + np.uint64(2**40), 0)
    result = match_instances(gt, big, 0.5)
    assert [p for _, p, _ in result.matched_pairs] == [2**40 + 5, 2**40 + 9, 2**40 + 7]
    assert result.panoptic_quality == pytest.approx(2.6 / 3)


def test_three_dimensional_labels() -> None:
    gt = np.zeros((4, 6, 6), dtype=np.uint8)
    gt[0:2, 1:4, 1:4] = 1  # 18 voxels
    pred = np.zeros_like(gt)
    pred[0:3, 1:4, 1:4] = 2  # 27 voxels, overlap 18 -> IoU 18/27
    result = match_instances(gt, pred, 0.5)
    assert result.tp == 1
    assert result.matched_pairs[0][2] == pytest.approx(18 / 27)


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(UserInputError, match=r"\(4, 5\).*\(5, 4\)"):
        match_instances(np.zeros((4, 5), int), np.zeros((5, 4), int))
    with pytest.raises(UserInputError, match=r"\(4, 5\).*\(5, 4\)"):
        pixel_scores(np.zeros((4, 5), int), np.zeros((5, 4), int))


def test_rejects_non_label_arrays() -> None:
    labels = np.zeros((4, 4), dtype=np.int32)
    with pytest.raises(UserInputError, match="non-integer"):
        evaluate_image(labels, np.full((4, 4), 0.5))
    with pytest.raises(UserInputError, match="negative"):
        match_instances(labels, labels - 1)
    with pytest.raises(UserInputError, match="NaN"):
        match_instances(labels, np.full((4, 4), np.nan))
    with pytest.raises(UserInputError, match="integers"):
        match_instances(labels, labels.astype(complex))


@pytest.mark.parametrize("thresh", [0.0, -0.1, 1.5])
def test_rejects_threshold_outside_unit_interval(thresh: float) -> None:
    labels = np.ones((3, 3), dtype=np.uint8)
    with pytest.raises(UserInputError, match="threshold"):
        match_instances(labels, labels, thresh)


def test_dataset_input_checks() -> None:
    labels = np.ones((3, 3), dtype=np.uint8)
    with pytest.raises(UserInputError, match="2 ground-truth images but 1 prediction"):
        evaluate_dataset([labels, labels], [labels])
    with pytest.raises(UserInputError, match="no images"):
        evaluate_dataset([], [])


def test_results_are_json_serialisable() -> None:
    import json

    gt, pred = three_squares()
    text = json.dumps(evaluate_dataset([gt], [pred]))
    assert json.loads(text)["per_image"][0]["per_threshold"][0]["tp"] == 3
    as_dict = match_instances(gt, pred).to_dict(with_pairs=True)
    assert json.loads(json.dumps(as_dict))["matched_pairs"][2] == [3, 7, pytest.approx(0.6)]
