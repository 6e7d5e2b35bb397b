"""Post-processing in chunks by worker threads: same objects as one pass, consistent ids, cancellable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.core.config import PostprocessConfig
from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.errors import Cancelled
from napari_unet.core.evaluate.metrics import evaluate_image, summary_row
from napari_unet.core.labels import chunked
from napari_unet.core.labels.chunked import chunk_edge, labels_in_chunks, postprocess_workers
from napari_unet.core.labels.postprocess import probabilities_to_labels


def probabilities_of(labels: np.ndarray) -> np.ndarray:
    """``(3, Y, X)`` probabilities a good network would give for ``labels``: interiors, thin boundaries, background."""
    from skimage.segmentation import find_boundaries

    boundary = find_boundaries(labels, mode="inner")
    interior = (labels > 0) & ~boundary
    probs = np.stack([labels == 0, interior, boundary]).astype(np.float32) * 0.9 + 0.1 / 3
    return probs / probs.sum(axis=0, keepdims=True)


@pytest.fixture(scope="module")
def plane() -> tuple[np.ndarray, np.ndarray]:
    _, truth = synthetic_nuclei((640, 704), 220, seed=5)
    return truth, probabilities_of(truth)


def ap50(reference: np.ndarray, labels: np.ndarray) -> float:
    return summary_row(evaluate_image(reference, labels, (0.5,)))["AP@0.5"]


def test_one_worker_on_a_small_plane_is_exactly_the_single_pass(plane):
    _, probs = plane
    cfg = PostprocessConfig()
    np.testing.assert_array_equal(labels_in_chunks(probs, cfg, workers=1), probabilities_to_labels(probs, cfg))


@pytest.mark.parametrize("workers", [1, 2])
def test_chunks_stitch_into_the_objects_of_one_pass_with_consecutive_ids(plane, workers):
    truth, probs = plane
    cfg = PostprocessConfig()
    whole = probabilities_to_labels(probs, cfg)
    tiled = labels_in_chunks(probs, cfg, workers=workers, chunk=160, halo=48)  # 20 chunks, many border crossings
    assert tiled.dtype == np.uint32 and tiled.shape == whole.shape
    ids = np.unique(tiled)
    np.testing.assert_array_equal(ids, np.arange(len(ids)))  # 0 and 1..N, no gaps
    assert ap50(whole, tiled) >= 0.99
    assert abs(int(tiled.max()) - int(whole.max())) <= 0.01 * whole.max()
    assert ap50(truth, tiled) >= 0.95


def test_cancel_between_chunks_raises_and_drops_the_rest(plane, monkeypatch):
    _, probs = plane
    calls = []
    real = chunked.probabilities_to_labels
    monkeypatch.setattr(chunked, "probabilities_to_labels", lambda *args: calls.append(1) or real(*args))
    with pytest.raises(Cancelled):
        labels_in_chunks(probs, PostprocessConfig(), workers=1, chunk=160, halo=48, cancel=lambda: len(calls) >= 2)
    assert len(calls) < 20


def test_worker_count_and_chunk_edge_follow_the_machine_and_the_plane(monkeypatch):
    monkeypatch.setattr(chunked, "usable_cores", lambda: 6)
    assert postprocess_workers(0) == 6 and postprocess_workers(3) == 3
    assert chunk_edge((4096, 4096), 2) == 2048  # two chunks per worker
    assert chunk_edge((4096, 4096), 16) == chunked.MIN_CHUNK


def test_final_rows_arrive_in_order_once_each_and_equal_the_returned_probabilities(tiny_model_folder):
    from napari_unet.core.config import InferenceConfig
    from napari_unet.core.data.normalize import normalize_plane
    from napari_unet.core.models.registry import load_model
    from napari_unet.core.predict.planar import iter_scaled_plane_probabilities, plan_scales
    from napari_unet.core.predict.runtime import inference_network
    from napari_unet.core.progress import run_to_end

    bundle = load_model(str(tiny_model_folder))
    image, _ = synthetic_nuclei((300, 410), 40, seed=8)  # padded to the network's multiple, then cropped back
    plane = normalize_plane(image, bundle.normalize, bundle.config.in_channels)
    cfg = InferenceConfig(tile_size=96, overlap=0.25, device="cpu")
    plans = plan_scales(image.shape, bundle.config, cfg)
    bands: list[tuple[int, np.ndarray]] = []
    cpu = torch.device("cpu")
    network = inference_network(bundle.network, cpu)
    on_rows = lambda band, start: bands.append((start, band.copy()))  # noqa: E731
    assert run_to_end(iter_scaled_plane_probabilities(network, plane, plans, cfg, cpu, None, on_rows)) is None
    probabilities = run_to_end(iter_scaled_plane_probabilities(network, plane, plans, cfg, cpu, None))
    starts = [start for start, _ in bands]
    assert starts == sorted(starts) and starts[0] == 0 and len(bands) > 2
    assert sum(band.shape[1] for _, band in bands) == image.shape[0]
    np.testing.assert_array_equal(np.concatenate([band for _, band in bands], axis=1), probabilities)


def test_prediction_labels_chunks_while_the_network_runs_and_agrees_with_one_pass(tiny_model_folder, monkeypatch):
    from napari_unet.core.config import InferenceConfig
    from napari_unet.core.models.registry import load_model
    from napari_unet.core.predict.segment import predict

    monkeypatch.setattr(chunked, "MIN_PARALLEL_PIXELS", 0)  # chunk this small plane as a large one would be
    monkeypatch.setattr(chunked, "MIN_CHUNK", 128)
    bundle = load_model(str(tiny_model_folder))
    image, _ = synthetic_nuclei((512, 448), 120, seed=9)
    one_pass = predict(image, bundle, inference=InferenceConfig(workers=1, tile_size=128, device="cpu"))
    pipelined = predict(image, bundle, inference=InferenceConfig(workers=2, tile_size=128, device="cpu"))
    np.testing.assert_array_equal(pipelined.probabilities, one_pass.probabilities)
    same_chunks = labels_in_chunks(
        one_pass.probabilities, bundle.postprocess, workers=2, chunk=chunk_edge((512, 448), 2)
    )
    np.testing.assert_array_equal(pipelined.labels, same_chunks)
    # 128-pixel chunks and a tiny model's coarse objects: far more border crossings than real chunks
    # (bench_pipeline measures the agreement at real sizes)
    assert ap50(one_pass.labels, pipelined.labels) >= 0.95
