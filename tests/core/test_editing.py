from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_unet.core.config import NormalizeConfig
from napari_unet.core.data.normalize import normalize_plane
from napari_unet.core.errors import UserInputError
from napari_unet.core.io import read_annotated_folder
from napari_unet.core.labels import editing


def two_blobs() -> np.ndarray:
    """Two touching discs of radius 6 (centres (10, 10) and (10, 20)) as label 3, plus a 2-pixel object 7."""
    yy, xx = np.mgrid[:20, :32]
    labels = np.zeros((20, 32), dtype=np.uint16)
    labels[((yy - 10) ** 2 + (xx - 10) ** 2 <= 36) | ((yy - 10) ** 2 + (xx - 20) ** 2 <= 36)] = 3
    labels[0, 0:2] = 7
    return labels


def test_delete_small_objects_removes_only_small_ones():
    labels = np.array([[1, 1, 1, 0], [0, 2, 0, 3], [0, 0, 0, 3]], dtype=np.int32)
    out = editing.delete_small_objects(labels, min_size=2)
    expected = np.array([[1, 1, 1, 0], [0, 0, 0, 3], [0, 0, 0, 3]], dtype=np.int32)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.int32
    assert labels[1, 1] == 2, "input must not be modified"


def test_delete_small_objects_rejects_negative_size():
    with pytest.raises(UserInputError, match="minimum size"):
        editing.delete_small_objects(np.zeros((3, 3), np.uint8), -1)


def test_merge_labels_uses_smallest_id():
    labels = np.array([[1, 2, 3], [0, 2, 4]], dtype=np.uint8)
    out = editing.merge_labels(labels, [4, 2])
    np.testing.assert_array_equal(out, [[1, 2, 3], [0, 2, 2]])
    out = editing.merge_labels(labels, [1, 3], target=9)
    np.testing.assert_array_equal(out, [[9, 2, 9], [0, 2, 4]])


@pytest.mark.parametrize(("ids", "message"), [([2], "at least two"), ([2, 8], "not in the layer"), ([0, 2], "two")])
def test_merge_labels_bad_choice(ids, message):
    labels = np.array([[1, 2, 3]], dtype=np.uint8)
    with pytest.raises(UserInputError, match=message):
        editing.merge_labels(labels, ids)


def test_split_label_with_two_clicks_gives_two_halves():
    labels = two_blobs()
    out = editing.split_label(labels, 3, seeds=[(10, 9), (10, 21)])
    assert out[10, 10] == 3
    assert out[10, 20] == 8  # next free label after 7
    assert set(np.unique(out)) == {0, 3, 7, 8}
    # pixels of the old object are all kept, nothing else changes
    np.testing.assert_array_equal(out > 0, labels > 0)
    np.testing.assert_array_equal(out[labels == 7], 7)
    # the cut lies between the two centres (x = 15)
    assert np.all(out[10, 5:15] == 3)
    assert np.all(out[10, 16:26] == 8)


def test_split_label_from_distance_map():
    out = editing.split_label(two_blobs(), 3, min_distance=4)
    assert {out[10, 10], out[10, 20]} == {3, 8}


def test_split_label_errors():
    labels = two_blobs()
    with pytest.raises(UserInputError, match="not inside"):
        editing.split_label(labels, 3, seeds=[(10, 10), (0, 31)])
    with pytest.raises(UserInputError, match="two different points"):
        editing.split_label(labels, 3, seeds=[(10, 10), (10, 10)])
    with pytest.raises(UserInputError, match="not in the layer"):
        editing.split_label(labels, 5, seeds=[(10, 10), (10, 20)])
    disc = (labels == 3).astype(np.uint8)
    disc[:, 15:] = 0
    with pytest.raises(UserInputError, match="single centre"):
        editing.split_label(disc, 1, min_distance=20)


def test_fill_holes_fills_background_only():
    labels = np.zeros((7, 7), dtype=np.int32)
    labels[1:6, 1:6] = 1
    labels[2, 2] = 0  # a background hole
    labels[4, 4] = 2  # another object inside: must stay
    out = editing.fill_holes(labels)
    assert out[2, 2] == 1
    assert out[4, 4] == 2
    assert out[0, 0] == 0
    only_two = editing.fill_holes(labels, label_id=2)
    assert only_two[2, 2] == 0


def test_relabel_sequential_and_next_free_label():
    labels = np.array([[0, 5, 5], [9, 9, 0]], dtype=np.uint16)
    out = editing.relabel_sequential(labels)
    np.testing.assert_array_equal(out, [[0, 1, 1], [2, 2, 0]])
    assert out.dtype == np.uint16
    assert editing.next_free_label(labels) == 10
    assert editing.next_free_label(np.zeros((2, 2), np.uint8)) == 1
    assert editing.label_ids(labels) == [5, 9]


def test_labels_at_and_outside():
    labels = np.array([[0, 5], [9, 9]], dtype=np.uint16)
    assert editing.labels_at(labels, [(0.2, 1.4), (1, 0)]) == [5, 9]
    with pytest.raises(UserInputError, match="outside"):
        editing.labels_at(labels, [(3, 0)])


def test_float_image_is_rejected():
    with pytest.raises(UserInputError, match="Labels layer"):
        editing.next_free_label(np.zeros((2, 2), np.float32))


def test_changed_pixels_round_trip():
    old = np.array([[0, 1], [2, 2]], dtype=np.uint8)
    new = np.array([[0, 1], [3, 0]], dtype=np.uint8)
    indices, values = editing.changed_pixels(old, new)
    np.testing.assert_array_equal(indices[0], [1, 1])
    np.testing.assert_array_equal(indices[1], [0, 1])
    np.testing.assert_array_equal(values, [3, 0])
    patched = old.copy()
    patched[indices] = values
    np.testing.assert_array_equal(patched, new)


def test_works_on_stacks():
    labels = np.zeros((2, 4, 4), dtype=np.uint32)
    labels[0, :2, :2] = 1
    labels[1, 0, 0] = 2
    out = editing.delete_small_objects(labels, 2)
    assert out[1, 0, 0] == 0 and out[0, 0, 0] == 1


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize(
    ("radii", "gap", "clicks"),
    [
        ((12, 6), 16, "centres"),  # unequal sizes, a narrow neck
        ((10, 10), 17, "centres"),  # equal sizes, a wide neck
        ((12, 6), 16, "off-centre"),  # clicks away from the centres (as a hurried user clicks)
        ((15, 8), 18, "centres"),  # a convex blob: no neck to speak of
    ],
)
def test_split_at_two_clicks_recovers_both_nuclei(radii, gap, clicks):
    yy, xx = np.mgrid[:64, :72]
    centres = [(32, 20), (32, 20 + gap)]
    discs = [(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r for (cy, cx), r in zip(centres, radii, strict=True)]
    truth = [discs[0], discs[1] & ~discs[0]]
    labels = (discs[0] | discs[1]).astype(np.int32) * 4
    seeds = centres if clicks == "centres" else [(35, 14), (30, 20 + gap + 2)]
    out = editing.split_label(labels, 4, seeds=seeds)
    pieces = [out == value for value in np.unique(out) if value]
    assert len(pieces) == 2
    for nucleus in truth:
        assert max(_iou(piece, nucleus) for piece in pieces) >= 0.8


def test_split_refuses_clicks_it_cannot_honour_and_changes_nothing():
    labels = two_blobs()
    with pytest.raises(UserInputError, match="nothing was changed"):
        editing.split_label(labels, 3, seeds=[(10, 4), (10, 5)])  # two neighbouring pixels at one end


def test_split_selected_makes_two_pieces_not_three():
    yy, xx = np.mgrid[:40, :90]
    blob = np.zeros((40, 90), np.int32)
    for cx in (18, 45, 72):
        blob[(yy - 20) ** 2 + (xx - cx) ** 2 <= 12**2] = 1
    out = editing.split_label(blob, 1, min_distance=5)
    assert len([v for v in np.unique(out) if v]) == 2


@pytest.mark.skipif(
    not (Path(__file__).resolve().parents[3] / "shared" / "data" / "dsb2018" / "val").is_dir(),
    reason="needs ../shared/data (absent in a fresh clone)",
)
def test_split_recovers_real_fused_nuclei():
    """Touching nuclei of the DSB validation images, merged, then split at their centroids with the image."""
    from benchmarks import bench_split

    report_rng = np.random.default_rng(0)
    cases = []
    data = Path(__file__).resolve().parents[3] / "shared" / "data" / "dsb2018" / "val"
    for _, image, labels in read_annotated_folder(data):
        plane = normalize_plane(image, NormalizeConfig(), 1)[0]
        cases += [(plane, labels, a, b) for a, b in bench_split.touching_pairs(labels, 4, 60, report_rng)]
    assert len(cases) >= 10
    current = bench_split.score(bench_split.current_split, cases, 0.0)
    previous = bench_split.score(bench_split.previous_split, cases, 0.0)
    assert current["success_rate"] >= 0.75
    assert current["mean_worse_iou"] > previous["mean_worse_iou"] + 0.05
