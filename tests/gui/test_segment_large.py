"""Segment widget on large or lazy images: streamed chunk by chunk into a lazily opened zarr Labels layer."""

from __future__ import annotations

import threading
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr

from napari_unet._widgets import SegmentWidget
from napari_unet._widgets import _segment_jobs as segment_jobs
from napari_unet.core.config import ModelConfig
from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.evaluate.metrics import match_instances
from napari_unet.core.io import read_labels
from napari_unet.core.models import registry as store_module
from napari_unet.core.models.bundle import ModelBundle
from napari_unet.core.models.registry import load_model
from napari_unet.core.predict import large_image
from napari_unet.core.predict.segment import predict
from tests.core.test_cluster import PixelNet
from tests.core.test_cluster import disc_image as _disc_image
from tests.gui.helpers import make_segment_widget, messages, wait_until_idle

pytestmark = pytest.mark.gui

SHAPE = (160, 200)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the large-result cache at a fresh folder."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("NAPARI_UNET_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def pixel_model(monkeypatch: pytest.MonkeyPatch) -> ModelBundle:
    """Make every model reference load the deterministic per-pixel network."""
    bundle = ModelBundle(network=PixelNet(), config=ModelConfig(depth=2, base_channels=4))
    monkeypatch.setattr(store_module, "load_model", lambda reference, device=None: bundle)
    return bundle


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """Read the image as a large one would be: chunks of 64 px with a 16 px halo (3 x 4 chunks for 160 x 200).

    The intensity statistics are read in bands of 64 rows too (same pixels, so the same statistics): a small
    image fits one 2048-row band, and a dask slice covering the whole array is the array itself.
    """
    monkeypatch.setattr(segment_jobs, "LARGE_CHUNK", 64)
    monkeypatch.setattr(segment_jobs, "LARGE_HALO", 16)
    original = large_image.strided_sample

    def banded(image, max_pixels=large_image.PERCENTILE_SAMPLE_PIXELS, band=2048):
        return original(image, max_pixels, band=64)

    monkeypatch.setattr(large_image, "strided_sample", banded)
    return 64, 16


def disc_image(shape=SHAPE, n=25, seed=0, radius=8) -> np.ndarray:
    """Bright discs on a dark background, sized for these widget tests."""
    return _disc_image(shape, n, seed, radius)


def in_memory_labels(widget: SegmentWidget, image: np.ndarray, bundle: ModelBundle) -> np.ndarray:
    """What the normal (in-memory) path computes with the widget's settings."""
    return predict(
        image, bundle, axes="YX", inference=widget.inference_config(), postprocess=widget.postprocess_config()
    ).labels


def assert_same_objects(result: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to a permutation of ids: every object matched one-to-one with IoU 1."""
    np.testing.assert_array_equal(result > 0, expected > 0)
    match = match_instances(expected, result, thresh=0.5)
    assert match.tp == match.n_true == match.n_pred
    assert all(iou == 1.0 for _, _, iou in match.matched_pairs)


class WholeArraySpy:
    """Watch ``np.asarray`` on instances of ``cls`` (dask or zarr arrays).

    Converting ``watched`` itself fails when done by the widget (inside :meth:`run`) or by its worker
    thread; napari's own display of a single-scale layer (main thread, outside ``run``) may load it.
    Shapes converted by the worker are kept in ``converted``.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cls: type, watched: object) -> None:
        self.watched = watched
        self.in_run = False
        self.converted: list[tuple[int, ...]] = []
        original = cls.__array__
        spy = self

        def array(self, *args, **kwargs):
            in_worker = threading.current_thread() is not threading.main_thread()
            if self is spy.watched and (in_worker or spy.in_run):
                raise AssertionError("the whole lazy image was loaded into memory")
            if in_worker:
                spy.converted.append(tuple(self.shape))
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__array__", array)

    def run(self, widget: SegmentWidget):
        """Press Segment with the spy armed for the widget's own (main-thread) code."""
        self.in_run = True
        try:
            return widget.run()
        finally:
            self.in_run = False


def test_large_numpy_image_becomes_a_lazy_zarr_labels_layer(
    make_napari_viewer, qtbot, tiny_model, cache, notifications, monkeypatch
):
    monkeypatch.setattr(large_image, "LARGE_IMAGE_PIXELS", 64 * 64)
    image, _ = synthetic_nuclei(SHAPE, n_nuclei=20, seed=5)
    viewer, widget = make_segment_widget(make_napari_viewer, tiny_model)
    viewer.add_image(image, name="big", scale=(0.5, 0.5))
    viewer.add_labels(np.zeros((10, 10), np.uint32), name="big labels")  # older, other shape: kept
    widget.image.set_layer("big")
    assert "chunk by chunk" in widget.axes_info.text()
    assert not widget.keep_probabilities.isEnabled()
    widget.keep_probabilities.setChecked(True)  # e.g. remembered from a small image

    assert widget.run() is not None
    wait_until_idle(qtbot, widget)

    assert viewer.layers["big labels"].data.shape == (10, 10)
    layer = viewer.layers["big labels [2]"]
    assert isinstance(layer.data, zarr.Array) and not isinstance(layer.data, np.ndarray)
    assert layer.data.shape == SHAPE and layer.data.dtype == np.uint32
    assert tuple(layer.scale) == (0.5, 0.5)
    expected = in_memory_labels(widget, image, load_model(tiny_model))
    assert expected.max() >= 2, "the tiny trained model finds several nuclei"
    assert_same_objects(layer.data[:], expected)

    meta = layer.metadata["napari_unet"]
    store = Path(meta["store"])
    assert store.parent == cache / "large" and store.name.startswith("big-") and store.suffix == ".zarr"
    np.testing.assert_array_equal(read_labels(store), layer.data[:])
    assert meta["model"] == tiny_model and meta["settings"]["chunk"] == segment_jobs.LARGE_CHUNK
    assert "prediction" not in meta
    infos = messages(notifications, "info")
    assert any(str(store) in m for m in infos)
    assert any("No probability map is kept" in m for m in infos)
    assert "big probability" not in viewer.layers

    assert widget.rerun_postprocessing() is None
    assert "not available for large images" in messages(notifications, "info")[-1]
    assert not messages(notifications, "error")


def test_dask_layer_is_streamed_chunk_by_chunk_and_updated_in_place(
    make_napari_viewer, qtbot, pixel_model, small_chunks, cache, notifications, monkeypatch
):
    image = disc_image()
    lazy = da.from_array(image, chunks=64)
    spy = WholeArraySpy(monkeypatch, da.Array, lazy)
    viewer, widget = make_segment_widget(make_napari_viewer, "pixel")
    viewer.add_image(lazy, name="lazy")
    events = []
    widget.jobs.progressed.connect(events.append)

    assert spy.run(widget) is not None
    wait_until_idle(qtbot, widget)

    layer = viewer.layers["lazy labels"]
    assert isinstance(layer.data, zarr.Array) and layer.data.shape == SHAPE
    expected = in_memory_labels(widget, image, pixel_model)
    assert expected.max() > 10
    assert_same_objects(layer.data[:], expected)
    chunk, halo = small_chunks
    qtbot.waitUntil(lambda: events[-1].done == events[-1].total, timeout=10_000)  # the last event may trail "idle"
    assert events[-1].done == events[-1].total == 1 + 2 * 3 * 4  # statistics, 12 chunks, 12 relabels
    assert (chunk + 2 * halo, chunk + 2 * halo) in spy.converted, "interior chunks are read with their halo"
    first_store = layer.metadata["napari_unet"]["store"]

    spy.run(widget)  # same image, same shape: the layer is updated, not duplicated
    wait_until_idle(qtbot, widget)
    assert viewer.layers["lazy labels"] is layer
    assert [lyr.name for lyr in viewer.layers] == ["lazy", "lazy labels"]
    assert layer.metadata["napari_unet"]["store"] != first_store
    assert not Path(first_store).exists(), "the store no layer shows any more is deleted"
    assert len(list((cache / "large").glob("lazy-*.zarr"))) == 1
    assert_same_objects(layer.data[:], expected)

    widget.new_layer.setChecked(True)  # a second layer keeps its own store; both stay
    spy.run(widget)
    wait_until_idle(qtbot, widget)
    assert [lyr.name for lyr in viewer.layers] == ["lazy", "lazy labels", "lazy labels [2]"]
    assert len(list((cache / "large").glob("lazy-*.zarr"))) == 2

    second_store = viewer.layers["lazy labels [2]"].metadata["napari_unet"]["store"]
    viewer.layers.remove("lazy labels [2]")  # the user's edits may be in it: kept, and the user told where
    assert Path(second_store).is_dir()
    assert "'lazy labels [2]' was removed; its labels stay on disk (" in messages(notifications, "info")[-1]
    assert second_store in messages(notifications, "info")[-1]
    viewer.layers.remove("lazy")  # not a cached labels layer: nothing to say
    assert "'lazy' was removed" not in messages(notifications, "info")[-1]
    assert not messages(notifications, "error")


def test_zarr_layer_is_segmented_lazily(
    make_napari_viewer, qtbot, tiny_model, cache, notifications, monkeypatch, tmp_path
):
    image, _ = synthetic_nuclei(SHAPE, n_nuclei=20, seed=7)
    data = zarr.open_array(str(tmp_path / "image.zarr"), mode="w", shape=SHAPE, chunks=(64, 64), dtype=image.dtype)
    data[:] = image
    spy = WholeArraySpy(monkeypatch, type(data), data)
    viewer, widget = make_segment_widget(make_napari_viewer, tiny_model)
    viewer.add_image(data, name="img", contrast_limits=(0, int(image.max())))

    assert spy.run(widget) is not None
    wait_until_idle(qtbot, widget)

    layer = viewer.layers["img labels"]
    assert isinstance(layer.data, zarr.Array) and layer.data.shape == SHAPE
    expected = in_memory_labels(widget, image, load_model(tiny_model))
    assert expected.max() >= 2
    assert_same_objects(layer.data[:], expected)
    assert not messages(notifications, "error")


def test_multiscale_layer_segments_its_full_resolution_level(
    make_napari_viewer, qtbot, pixel_model, small_chunks, cache, notifications, monkeypatch
):
    image = disc_image(seed=3)
    levels = [da.from_array(image, chunks=64), da.from_array(image[::2, ::2], chunks=64)]
    spy = WholeArraySpy(monkeypatch, da.Array, levels[0])
    viewer, widget = make_segment_widget(make_napari_viewer, "pixel")
    viewer.add_image(levels, name="pyramid", multiscale=True, contrast_limits=(0, 1000), scale=(2.0, 2.0))
    assert "shape (160, 200)" in widget.axes_info.text()

    assert spy.run(widget) is not None
    wait_until_idle(qtbot, widget)

    layer = viewer.layers["pyramid labels"]
    assert isinstance(layer.data, zarr.Array) and layer.data.shape == SHAPE
    assert tuple(layer.scale) == (2.0, 2.0)
    assert_same_objects(layer.data[:], in_memory_labels(widget, image, pixel_model))
    assert not messages(notifications, "error")


def test_cancel_stops_a_large_run_and_leaves_no_store(
    make_napari_viewer, qtbot, pixel_model, small_chunks, cache, notifications, monkeypatch
):
    viewer, widget = make_segment_widget(make_napari_viewer, "pixel")
    cancel_seen = threading.Event()

    def load_after_cancel(reference, device=None):
        for _ in range(600):  # the worker waits (at most 30 s) until Cancel was pressed
            if widget.jobs.cancel_requested():
                cancel_seen.set()
                break
            threading.Event().wait(0.05)
        return pixel_model

    monkeypatch.setattr(store_module, "load_model", load_after_cancel)
    viewer.add_image(da.from_array(disc_image(), chunks=64), name="lazy")

    assert widget.run() is not None
    widget.jobs.cancel()
    wait_until_idle(qtbot, widget)

    assert cancel_seen.is_set()
    assert "Segmentation cancelled." in messages(notifications, "info")
    assert "lazy labels" not in viewer.layers
    assert list((cache / "large").iterdir()) == []
    assert "cancelled" in widget.jobs.status.text()


def test_lazy_stacks_are_refused_with_a_notice(make_napari_viewer, qtbot, tiny_model, cache, notifications):
    viewer, widget = make_segment_widget(make_napari_viewer, tiny_model)
    viewer.add_image(da.from_array(np.stack([disc_image(), disc_image(seed=1)]), chunks=64), name="stack")

    assert widget.run() is None
    assert "lazy stacks are not supported yet" in messages(notifications, "error")[-1]
    assert "stack labels" not in viewer.layers
    assert not (cache / "large").exists()


def test_resegmenting_a_painted_large_layer_keeps_it_and_its_store(
    make_napari_viewer, qtbot, pixel_model, small_chunks, cache, notifications
):
    image = disc_image()
    viewer, widget = make_segment_widget(make_napari_viewer, "pixel")
    viewer.add_image(da.from_array(image, chunks=64), name="lazy")
    widget.run()
    wait_until_idle(qtbot, widget)
    layer = viewer.layers["lazy labels"]
    store = Path(layer.metadata["napari_unet"]["store"])
    with layer.block_history():  # a brush stroke: written straight into the store
        layer.data_setitem((np.array([3, 3]), np.array([4, 5])), 4242)

    widget.run()
    wait_until_idle(qtbot, widget)

    assert viewer.layers["lazy labels"] is layer and store.is_dir(), "the edited layer and its store stay"
    assert read_labels(store)[3, 4] == 4242
    fresh = viewer.layers["lazy labels [2]"]
    assert Path(fresh.metadata["napari_unet"]["store"]) != store
    assert any("holds your edits, so it was kept (hidden" in m for m in messages(notifications, "info"))
    assert fresh.visible and not layer.visible, "the new labels are shown, not blended with the edited ones"
    assert not messages(notifications, "error")
