from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.core.data.synthetic import (
    NucleiLayout,
    draw_nuclei,
    ellipse_footprint,
    random_layout,
    resolve_fragments,
    synthetic_nuclei,
    synthetic_timelapse,
    synthetic_zstack,
)
from napari_unet.core.errors import UserInputError

SHAPE = (128, 128)
N = 20


@pytest.fixture(scope="module")
def fluorescence():
    return synthetic_nuclei(SHAPE, n_nuclei=N, seed=3)


@pytest.fixture(scope="module")
def brightfield():
    return synthetic_nuclei(SHAPE, n_nuclei=N, seed=3, kind="brightfield")


@pytest.fixture(scope="module")
def zstack():
    return synthetic_zstack((12, 96, 96), n_nuclei=10, seed=5, z_spacing=2.0)


@pytest.fixture(scope="module")
def timelapse():
    return synthetic_timelapse(n_frames=4, shape=(96, 96), n_nuclei=12, seed=7)


def components_per_label(labels: np.ndarray) -> dict[int, int]:
    """Number of face-connected components of every label."""
    counts = {}
    for index, box in enumerate(ndi.find_objects(labels)):
        if box is not None:
            counts[index + 1] = ndi.label(labels[box] == index + 1)[1]
    return counts


def adjacent_label_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of different non-zero labels that share a face."""
    pairs = set()
    for axis in range(labels.ndim):
        a = np.moveaxis(labels, axis, 0)[:-1].ravel()
        b = np.moveaxis(labels, axis, 0)[1:].ravel()
        touching = (a != b) & (a > 0) & (b > 0)
        pairs |= {tuple(sorted(p)) for p in zip(a[touching].tolist(), b[touching].tolist(), strict=True)}
    return pairs


# ----------------------------------------------------------------------------- geometry


def test_footprint_of_a_circle_holds_the_lattice_points_of_the_disc():
    image_slices, _, rho = ellipse_footprint((10.0, 10.0), (3.0, 3.0), 0.0, (21, 21))
    # Gauss circle problem: 29 integer points (dy, dx) with dy^2 + dx^2 <= 9.
    assert int((rho <= 1).sum()) == 29
    mask = np.zeros((21, 21), bool)
    mask[image_slices] = rho <= 1
    assert mask[10, 13] and mask[7, 10] and mask[12, 12] and not mask[12, 13]


def test_footprint_rotation_turns_the_major_axis():
    for angle, inside, outside in [(0.0, (13, 10), (10, 13)), (np.pi / 2, (10, 13), (13, 10))]:
        image_slices, _, rho = ellipse_footprint((10.0, 10.0), (4.0, 2.0), angle, (21, 21))
        mask = np.zeros((21, 21), bool)
        mask[image_slices] = rho <= 1
        assert mask[inside] and not mask[outside]


def test_footprint_is_clipped_at_the_border_and_none_outside():
    image_slices, box_slices, rho = ellipse_footprint((0.0, 0.0), (3.0, 3.0), 0.0, (21, 21))
    assert image_slices == (slice(0, 5), slice(0, 5))
    assert box_slices == (slice(4, 9), slice(4, 9))  # the box is 9 wide, starting at -4
    assert int((rho <= 1).sum()) == 11  # quarter disc incl. axes, rows dy=0..3: 4 + 3 + 3 + 1 points
    assert ellipse_footprint((-30.0, 5.0), (3.0, 3.0), 0.0, (21, 21)) is None


def test_resolve_fragments_gives_cut_off_pieces_to_the_nucleus_that_cut_them():
    labels = np.array(
        [
            [1, 1, 1, 2, 1, 0],
            [1, 1, 1, 2, 1, 0],
            [1, 1, 1, 2, 0, 0],
            [0, 0, 0, 0, 0, 3],
            [0, 0, 0, 0, 3, 0],
        ],
        dtype=np.uint16,
    )
    expected = labels.copy()
    expected[0:2, 4] = 2  # the small piece of 1 right of 2 goes to 2
    expected[4, 4] = 0  # of 3's two equal pieces the first (row 3) is kept, the other borders nothing
    resolve_fragments(labels)
    np.testing.assert_array_equal(labels, expected)
    assert set(components_per_label(labels).values()) == {1}


# ----------------------------------------------------------------------------- 2D images


@pytest.mark.parametrize("kind", ["fluorescence", "brightfield"])
def test_same_seed_gives_the_same_arrays_and_another_seed_does_not(kind):
    image_a, labels_a = synthetic_nuclei((64, 80), n_nuclei=8, seed=11, kind=kind)
    image_b, labels_b = synthetic_nuclei((64, 80), n_nuclei=8, seed=11, kind=kind)
    image_c, labels_c = synthetic_nuclei((64, 80), n_nuclei=8, seed=12, kind=kind)
    np.testing.assert_array_equal(image_a, image_b)
    np.testing.assert_array_equal(labels_a, labels_b)
    assert not np.array_equal(labels_a, labels_c)
    assert not np.array_equal(image_a, image_c)


def test_both_kinds_of_one_seed_show_the_same_nuclei(fluorescence, brightfield):
    np.testing.assert_array_equal(fluorescence[1], brightfield[1])


def test_fluorescence_dtypes_shapes_and_bright_nuclei(fluorescence):
    image, labels = fluorescence
    assert image.shape == SHAPE and image.dtype == np.uint16
    assert labels.shape == SHAPE and labels.dtype == np.uint16
    far = ~ndi.binary_dilation(labels > 0, iterations=4)
    assert np.median(image[labels > 0]) > np.median(image[far]) + 100
    # noisy, not flat: the background has Poisson + read noise and a camera offset
    assert image[far].std() > 3 and image[far].min() > 50


def test_labels_are_proper_instances_with_all_placed_nuclei(fluorescence):
    _, labels = fluorescence
    layout = random_layout(SHAPE, N, seed=3)
    ids = np.unique(labels[labels > 0])
    # sequential ids, one per placed nucleus (larger ones are drawn first, so none is hidden)
    np.testing.assert_array_equal(ids, np.arange(1, layout.n_nuclei + 1))
    assert layout.n_nuclei >= 0.9 * N
    assert set(components_per_label(labels).values()) == {1}


def test_nucleus_sizes_and_shapes_vary(fluorescence):
    _, labels = fluorescence
    areas = np.bincount(labels.ravel())[1:]
    radii = np.sqrt(areas / np.pi)
    assert radii.max() - radii.min() > 4
    assert np.median(radii) > 5 and np.median(radii) < 15


def test_touching_and_overlapping_nuclei_exist_and_the_top_one_owns_the_overlap():
    shape = (256, 256)
    layout = random_layout(shape, 40, seed=0)
    coverage = np.zeros(shape, np.int32)
    top = np.zeros(shape, np.int32)
    for i in layout.draw_order():
        image_slices, _, rho = ellipse_footprint(layout.centers[i], layout.semi_axes[i], layout.angles[i], shape)
        coverage[image_slices] += rho <= 1
        top[image_slices][rho <= 1] = i + 1
    _, labels = synthetic_nuclei(shape, n_nuclei=40, seed=0)
    overlap = coverage >= 2
    assert ndi.label(overlap)[1] >= 3  # several overlapping pairs
    assert np.mean(labels[overlap] == top[overlap]) > 0.95
    assert len(adjacent_label_pairs(labels)) >= 5  # touching pairs (overlaps touch too)


def test_brightfield_is_rgb_with_dark_purple_nuclei_on_a_light_background(brightfield):
    image, labels = brightfield
    assert image.shape == (*SHAPE, 3) and image.dtype == np.uint8
    assert labels.shape == SHAPE and labels.dtype == np.uint16
    grey = image.astype(float).mean(axis=-1)
    nuclei = labels > 0
    far = ~ndi.binary_dilation(nuclei, iterations=4)
    assert grey[nuclei].mean() < grey[far].mean() - 50
    assert np.median(grey[far]) > 170
    red, green, blue = (image[..., c][nuclei].astype(float).mean() for c in range(3))
    assert blue > red > green  # hematoxylin: purple-blue
    red, green, blue = (image[..., c][far].astype(float).mean() for c in range(3))
    assert red > green + 10 and blue > green + 10  # eosin: pink around the nuclei


def test_empty_image_has_no_labels():
    image, labels = synthetic_nuclei((32, 32), n_nuclei=0, seed=1)
    assert image.shape == (32, 32) and not labels.any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "phase"}, "kind must be one of"),
        ({"shape": (4, 64)}, "shape must be 2 sizes"),
        ({"shape": (64, 64, 64)}, "shape must be 2 sizes"),
        ({"n_nuclei": -1}, "n_nuclei must be"),
        ({"radius_range": (8, 4)}, "radius_range"),
    ],
)
def test_bad_arguments_raise_a_clear_user_input_error(kwargs, message):
    with pytest.raises(UserInputError, match=message):
        synthetic_nuclei(**{"shape": (64, 64), "n_nuclei": 3, **kwargs})


def test_draw_nuclei_adds_overlapping_density():
    two = NucleiLayout(
        centers=np.array([[32.0, 28.0], [32.0, 36.0]]),
        semi_axes=np.array([[6.0, 6.0], [5.0, 5.0]]),
        angles=np.zeros(2),
        brightness=np.ones(2),
    )
    density, labels = draw_nuclei(two, (64, 64))
    assert labels[32, 32] == 2  # the smaller nucleus is drawn on top
    assert labels[32, 24] == 1 and labels[32, 40] == 2
    # both nuclei cover (32, 32): rho = 4/6 and 4/5, dome profile 1 - 0.35 rho^2
    expected = (1 - 0.35 * (4 / 6) ** 2) + (1 - 0.35 * (4 / 5) ** 2)
    assert density[32, 32] == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- 3D and time


def test_zstack_shapes_dtypes_and_determinism(zstack):
    image, labels = zstack
    assert image.shape == labels.shape == (12, 96, 96)
    assert image.dtype == labels.dtype == np.uint16
    again = synthetic_zstack((12, 96, 96), n_nuclei=10, seed=5, z_spacing=2.0)
    np.testing.assert_array_equal(image, again[0])
    np.testing.assert_array_equal(labels, again[1])
    assert image[labels > 0].mean() > image[labels == 0].mean() + 50


def test_zstack_labels_are_3d_consistent(zstack):
    _, labels = zstack
    assert set(components_per_label(labels).values()) == {1}  # one 6-connected object each
    for index, box in enumerate(ndi.find_objects(labels)):
        mask = labels[box] == index + 1
        planes = np.flatnonzero(mask.any(axis=(1, 2)))
        assert planes.size >= 2
        np.testing.assert_array_equal(planes, np.arange(planes[0], planes[-1] + 1))  # no gaps in Z
        for z in range(mask.shape[0] - 1):  # consecutive cross-sections overlap
            assert (mask[z] & mask[z + 1]).any()
        # flattened nuclei sampled every 2 pixels: far fewer planes than pixels across
        assert planes.size < max(mask.shape[1:])


def test_timelapse_ids_persist_and_nuclei_move(timelapse):
    image, labels = timelapse
    assert image.shape == labels.shape == (4, 96, 96)
    assert image.dtype == labels.dtype == np.uint16
    first, last = set(np.unique(labels[0])) - {0}, set(np.unique(labels[-1])) - {0}
    assert len(first & last) >= 0.8 * len(first)
    shifts = []
    for t in range(labels.shape[0] - 1):
        for label in set(np.unique(labels[t])) & set(np.unique(labels[t + 1])) - {0}:
            now, after = labels[t] == label, labels[t + 1] == label
            # the label that overlaps this nucleus most in the next frame is the same id
            overlapping = labels[t + 1][now]
            assert np.bincount(overlapping[overlapping > 0]).argmax() == label
            shifts.append(np.hypot(*np.subtract(ndi.center_of_mass(after), ndi.center_of_mass(now))))
    assert 0.5 < np.median(shifts) < 5


def test_timelapse_is_deterministic_and_ids_are_not_renumbered():
    image_a, labels_a = synthetic_timelapse(n_frames=2, shape=(48, 48), n_nuclei=4, seed=2)
    image_b, labels_b = synthetic_timelapse(n_frames=2, shape=(48, 48), n_nuclei=4, seed=2)
    np.testing.assert_array_equal(image_a, image_b)
    np.testing.assert_array_equal(labels_a, labels_b)
    with pytest.raises(UserInputError, match="n_frames"):
        synthetic_timelapse(n_frames=0)
