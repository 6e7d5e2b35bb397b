from __future__ import annotations

import numpy as np
import pytest
import zarr
from skimage.draw import disk
from skimage.measure import label
from skimage.segmentation import clear_border, relabel_sequential

from napari_unet.core.errors import Cancelled, UserInputError
from napari_unet.core.predict.stitching import (
    Stitcher,
    UnionFind,
    intersect,
    iter_segment_tiled,
    match_labels,
    plan_chunks,
    segment_tiled,
)


def threshold_segmenter(window: np.ndarray) -> np.ndarray:
    """Deterministic stand-in for the UNet: threshold + 8-connected components."""
    return label(window > 0.5, connectivity=2)


def identity_segmenter(window: np.ndarray) -> np.ndarray:
    """Treats the source as ground-truth labels: same ids in a window = same object."""
    return relabel_sequential(window.astype(np.int64))[0]


def assert_same_partition(result: np.ndarray, expected: np.ndarray) -> None:
    """Labels equal up to a one-to-one renaming of ids (background stays background)."""
    assert result.shape == expected.shape
    np.testing.assert_array_equal(result == 0, expected == 0)
    fg = expected > 0
    pairs = np.unique(np.stack([result[fg], expected[fg]]), axis=1)
    assert pairs.shape[1] == len(np.unique(result[fg])) == len(np.unique(expected[fg]))


def disc_image(shape, centres, radius):
    image = np.zeros(shape, np.float32)
    for cy, cx in centres:
        rr, cc = disk((cy, cx), radius, shape=shape)
        image[rr, cc] = 1.0
    return image


def test_plan_chunks_cores_tile_the_image_and_windows_add_the_halo():
    plans = plan_chunks((300, 260), chunk=128, halo=32)
    assert [p.index for p in plans[:4]] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert len(plans) == 3 * 3
    covered = np.zeros((300, 260), int)
    for p in plans:
        covered[p.core] += 1
    assert (covered == 1).all()
    middle = plans[4]
    assert middle.core == (slice(128, 256), slice(128, 256))
    assert middle.window == (slice(96, 288), slice(96, 260))
    assert middle.core_in_window == (slice(32, 160), slice(32, 160))
    assert plans[0].window == (slice(0, 160), slice(0, 160))


def test_chunking_arguments_are_validated():
    with pytest.raises(UserInputError, match="chunk size"):
        plan_chunks((10, 10), chunk=0, halo=2)
    with pytest.raises(UserInputError, match="halo"):
        plan_chunks((10, 10), chunk=4, halo=-1)


def test_intersect_regions():
    assert intersect((slice(0, 10), slice(0, 10)), (slice(5, 20), slice(8, 9))) == (slice(5, 10), slice(8, 9))
    assert intersect((slice(0, 10), slice(0, 10)), (slice(10, 20), slice(0, 10))) is None


def test_match_labels_joins_same_object_and_keeps_touching_neighbours_apart():
    a = np.array([[1, 1, 1, 2, 2, 2]])
    b = np.array([[5, 5, 5, 5, 7, 7]])
    # 1 and 5 share 3 px (all of 1); 2 and 5 share 1 px (1/3 of 2); 2 and 7 share 2 px.
    assert match_labels(a, b, min_overlap=0.5) == [(1, 5), (2, 7)]
    assert match_labels(a, b, min_overlap=0.2) == [(1, 5), (2, 5), (2, 7)]
    # an object split in two on one side joins both halves
    assert match_labels(np.array([[1, 1, 1, 1]]), np.array([[3, 3, 4, 4]])) == [(1, 3), (1, 4)]
    assert match_labels(np.zeros((2, 2), int), b[:, :2].repeat(2, 0)) == []


def test_union_find_roots_are_smallest_ids():
    uf = UnionFind()
    uf.union(7, 3)
    uf.union(9, 7)
    uf.union(4, 5)
    assert uf.find(9) == 3
    assert uf.find(5) == 4
    assert uf.find(11) == 11


def test_disc_on_a_corner_and_on_borders_keeps_one_id():
    image = disc_image((256, 256), [(128, 128), (64, 128), (128, 200)], radius=10)
    result = segment_tiled(image, threshold_segmenter, chunk=128, halo=16)
    assert set(np.unique(result)) == {0, 1, 2, 3}
    assert len(np.unique(result[disk((128, 128), 10)])) == 1


def test_tiled_result_equals_whole_image_result_on_random_discs():
    rng = np.random.default_rng(0)
    centres = rng.integers(0, [300, 260], size=(40, 2))
    centres = np.vstack([centres, [[128, 128], [256, 128], [128, 256 - 3], [0, 128]]])
    image = disc_image((300, 260), centres, radius=9)
    expected = threshold_segmenter(image)
    result = segment_tiled(image, threshold_segmenter, chunk=128, halo=32)
    assert_same_partition(result, expected)
    assert result.dtype == np.uint32
    np.testing.assert_array_equal(np.unique(result), np.arange(expected.max() + 1))


def whole_objects_segmenter(window: np.ndarray) -> np.ndarray:
    """A segmenter that needs context: it drops objects cut by its window's edge (as a UNet misreads cut nuclei)."""
    return clear_border(threshold_segmenter(window))


def test_halo_gives_every_window_the_whole_of_each_object_crossing_its_core_border():
    radius, chunk = 9, 64
    on_borders = [(64, 100), (128, 40), (100, 128), (192, 64), (150, 192), (64, 64), (128, 128), (192, 192)]
    centres = list(on_borders)
    rng = np.random.default_rng(5)
    while len(centres) < 30:  # separate discs: no object is larger than one disc
        candidate = rng.integers(2 * radius, [256 - 2 * radius, 224 - 2 * radius])
        if min(np.hypot(*(candidate - centre)) for centre in centres) > 2 * radius + 2:
            centres.append(tuple(candidate))
    image = disc_image((256, 224), centres, radius)
    expected = whole_objects_segmenter(image)  # objects touching the image edge are dropped here too
    assert all(expected[y, x] > 0 for y, x in on_borders), "the discs crossing core borders and corners are found"

    result = segment_tiled(image, whole_objects_segmenter, chunk=chunk, halo=2 * radius + 2)  # halo > diameter
    assert_same_partition(result, expected)

    too_small = segment_tiled(image, whole_objects_segmenter, chunk=chunk, halo=radius // 2)
    assert (too_small > 0).sum() < (expected > 0).sum(), "without enough context the cut discs are lost"


def test_touching_objects_meeting_on_a_border_stay_two_objects():
    truth = np.zeros((64, 64), np.int64)
    truth[10:30, 20:32] = 4  # ends exactly at the core border x = 32
    truth[10:30, 32:44] = 9  # starts there
    truth[40:60, 26:38] = 2  # crosses it
    result = segment_tiled(truth, identity_segmenter, chunk=32, halo=8)
    assert_same_partition(result, truth)
    assert result.max() == 3


def test_object_longer_than_the_halo_spanning_many_chunks_keeps_one_id():
    truth = np.zeros((80, 200), np.int64)
    truth[30:36, 5:195] = 1  # a bar across 7 chunks, far longer than the halo
    truth[36:80, 100:103] = 2  # a separate vertical bar that touches it from below, across two chunk rows
    result = segment_tiled(truth, identity_segmenter, chunk=32, halo=4)
    assert_same_partition(result, truth)


def test_chunk_order_does_not_change_the_partition():
    rng = np.random.default_rng(3)
    image = disc_image((200, 180), rng.integers(0, [200, 180], size=(30, 2)), radius=8)
    stitcher = Stitcher((200, 180), chunk=64, halo=20)
    out = np.zeros((200, 180), np.uint32)
    plans = plan_chunks((200, 180), 64, 20)
    for plan in reversed(plans):
        out[plan.core] = stitcher.add_chunk(plan, threshold_segmenter(image[plan.window]))
    out = stitcher.lookup_table()[out]
    assert_same_partition(out, threshold_segmenter(image))
    assert stitcher._bands == {}


def test_segmenter_with_wrong_shape_is_reported():
    with pytest.raises(ValueError, match="segmenter returned shape"):
        segment_tiled(np.zeros((40, 40)), lambda w: np.zeros((3, 3), int), chunk=16, halo=4)


def test_iter_segment_tiled_writes_a_zarr_and_reports_progress(tmp_path):
    image = disc_image((100, 90), [(50, 45), (10, 10), (32, 32)], radius=6)
    source = zarr.open_array(str(tmp_path / "img.zarr"), mode="w", shape=image.shape, chunks=(32, 32), dtype="f4")
    source[:] = image
    output = zarr.open_array(str(tmp_path / "lab.zarr"), mode="w", shape=image.shape, chunks=(32, 32), dtype="u4")
    events = []
    gen = iter_segment_tiled(source, threshold_segmenter, output, chunk=32, halo=8)
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            n_objects = stop.value
            break
    assert n_objects == 3
    assert len(events) == 2 * 4 * 3
    assert events[-1].done == events[-1].total == 24
    assert_same_partition(np.asarray(zarr.open_array(str(tmp_path / "lab.zarr"), mode="r")[:]), label(image > 0.5))


def test_iter_segment_tiled_can_be_cancelled():
    calls = []
    gen = iter_segment_tiled(
        np.zeros((64, 64)), threshold_segmenter, np.zeros((64, 64), np.uint32), chunk=32, halo=4, cancel=lambda: calls
    )
    next(gen)
    calls.append(1)
    with pytest.raises(Cancelled):
        next(gen)


def test_multichannel_source_windows_keep_channels():
    image = np.zeros((64, 64, 3), np.float32)
    image[20:40, 20:40, 1] = 1.0
    seen = []

    def green(window):
        seen.append(window.shape[-1])
        return label(window[..., 1] > 0.5)

    result = segment_tiled(image, green, chunk=32, halo=8)
    assert set(seen) == {3}
    assert result.max() == 1
    assert (result > 0).sum() == 400
