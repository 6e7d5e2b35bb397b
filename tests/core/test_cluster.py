from __future__ import annotations

from dataclasses import replace

import dask.array as da
import numpy as np
import pytest
import tifffile
import torch
import zarr
from skimage.draw import disk
from torch import nn

from napari_unet.core.config import InferenceConfig, ModelConfig, NormalizeConfig
from napari_unet.core.data.normalize import normalize_plane
from napari_unet.core.errors import Cancelled, UserInputError
from napari_unet.core.io import read_labels
from napari_unet.core.models.bundle import ModelBundle, save_model
from napari_unet.core.predict import dask_cluster
from napari_unet.core.predict import planar as inference_module
from napari_unet.core.predict.dask_cluster import parse_scheduler
from napari_unet.core.predict.folder import output_path_for, predict_folder
from napari_unet.core.predict.large_image import GlobalNormalizer, open_large_image, predict_large, strided_sample
from napari_unet.core.predict.segment import predict
from napari_unet.core.progress import run_to_end

CPU = InferenceConfig(device="cpu", tile_size=128)


class PixelNet(nn.Module):
    """A deterministic per-pixel 'UNet': bright (normalised > 0.5) is interior, no boundary."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(20.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = self.gain * (x[:, :1] - 0.5)
        return torch.cat([-score, score, torch.full_like(score, -10.0)], dim=1)


def disc_image(shape=(300, 260), n=25, seed=0, radius=8):
    rng = np.random.default_rng(seed)
    image = np.full(shape, 100, np.uint16)
    for cy, cx in rng.integers(0, shape, size=(n, 2)):
        rr, cc = disk((cy, cx), radius, shape=shape)
        image[rr, cc] = 1000
    return image


def assert_same_partition(result, expected):
    np.testing.assert_array_equal(result == 0, expected == 0)
    fg = expected > 0
    pairs = np.unique(np.stack([result[fg], expected[fg]]), axis=1)
    assert pairs.shape[1] == len(np.unique(result[fg])) == len(np.unique(expected[fg]))


@pytest.fixture
def pixel_bundle():
    return ModelBundle(network=PixelNet(), config=ModelConfig(depth=2, base_channels=4))


@pytest.fixture(scope="module")
def saved_unet(tmp_path_factory):
    bundle = ModelBundle.new(ModelConfig(depth=2, base_channels=4, norm="instance"), seed=0)
    return save_model(bundle, tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # dask workers run single-threaded; compare like with like
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- schedulers


@pytest.mark.parametrize(
    ("spec", "kind", "workers", "address"),
    [
        (None, "inprocess", 0, ""),
        ("local:3", "local", 3, ""),
        (" LOCAL:1 ", "local", 1, ""),
        ("tcp://10.0.0.5:8786", "address", 0, "tcp://10.0.0.5:8786"),
        ("tls://scheduler.lab.org:8786", "address", 0, "tls://scheduler.lab.org:8786"),
    ],
)
def test_parse_scheduler_accepts_the_documented_forms(spec, kind, workers, address):
    parsed = parse_scheduler(spec)
    assert (parsed.kind, parsed.n_workers, parsed.address) == (kind, workers, address)


def test_parse_scheduler_local_uses_the_cores_but_at_most_eight():
    assert 1 <= parse_scheduler("local").n_workers <= 8


@pytest.mark.parametrize("spec", ["local:0", "local:x", "local:-2", "http://host:80", "host:8786", "tcp://h:99999", 3])
def test_parse_scheduler_rejects_bad_specs(spec):
    with pytest.raises(UserInputError, match=r"scheduler|port"):
        parse_scheduler(spec)


# ----------------------------------------------------------------------------- lazy images


def test_tiff_is_read_lazily_through_zarr(tmp_path):
    image = disc_image((90, 70))
    tifffile.imwrite(tmp_path / "big.tif", image, tile=(32, 32))
    with open_large_image(tmp_path / "big.tif") as lazy:
        assert isinstance(lazy.array, zarr.Array)
        assert lazy.shape == (90, 70) and lazy.axes == "YX"
        np.testing.assert_array_equal(lazy[(slice(10, 50), slice(5, 9))], image[10:50, 5:9])


def test_ome_zarr_channels_first_is_seen_channels_last(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, (3, 40, 50), dtype=np.uint8)
    root = zarr.open_group(str(tmp_path / "img.zarr"), mode="w", zarr_format=2)
    root.create_array("0", shape=(1, 3, 40, 50), chunks=(1, 3, 16, 16), dtype="u1")[:] = rgb[None]
    axes = [{"name": n, "type": t} for n, t in zip("tcyx", ["time", "channel", "space", "space"], strict=True)]
    root.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": [{"path": "0"}]}]
    lazy = open_large_image(tmp_path / "img.zarr")
    assert (lazy.axes, lazy.shape) == ("CYX", (40, 50, 3))
    np.testing.assert_array_equal(lazy[(slice(0, 10), slice(20, 30))], np.moveaxis(rgb[:, :10, 20:30], 0, -1))


def test_npy_is_memory_mapped_and_dask_arrays_work(tmp_path):
    image = disc_image((50, 40))
    np.save(tmp_path / "a.npy", image)
    assert isinstance(open_large_image(tmp_path / "a.npy").array, np.memmap)
    lazy = open_large_image(da.from_array(image, chunks=16))
    np.testing.assert_array_equal(lazy[(slice(3, 20), slice(0, 40))], image[3:20])


def test_open_large_image_rejects_stacks_and_missing_files(tmp_path):
    with pytest.raises(UserInputError, match="2D images"):
        open_large_image(np.zeros((5, 30, 30)), axes="ZYX")
    with pytest.raises(UserInputError, match="cannot tell the axes"):
        open_large_image(np.zeros((5, 6, 30, 30)))
    with pytest.raises(UserInputError, match="no such file"):
        open_large_image(tmp_path / "nope.zarr")


# ----------------------------------------------------------------------------- global normalisation


@pytest.mark.parametrize("shape", [(60, 50), (60, 50, 3)])
def test_global_normalizer_equals_normalize_plane_on_a_whole_image(shape):
    image = np.random.default_rng(2).gamma(2.0, 300.0, size=shape).astype(np.uint16)
    cfg = NormalizeConfig()
    normalizer = GlobalNormalizer.from_image(open_large_image(image), cfg, in_channels=1)
    np.testing.assert_allclose(normalizer(image), normalize_plane(image, cfg, 1), rtol=1e-6, atol=1e-6)


def test_global_normalizer_decides_inversion_like_normalize_plane_on_colour():
    image = np.zeros((40, 40, 3), dtype=np.uint8)
    image[...] = (0, 0, 255)  # bright by max(R, G, B) though dark by luminance
    image[5:14, 5:14] = (0, 200, 0)
    normalizer = GlobalNormalizer.from_image(open_large_image(image), NormalizeConfig(), in_channels=1)
    assert normalizer.stats.invert
    np.testing.assert_array_equal(normalizer(image), normalize_plane(image, NormalizeConfig(), 1))


def test_global_percentiles_do_not_follow_the_chunk():
    image = np.zeros((64, 64), np.float32)
    image[:, 32:] = 100.0  # a bright right half: per-chunk percentiles would map both halves to 0
    normalizer = GlobalNormalizer.from_image(open_large_image(image), NormalizeConfig(invert="never"), 1)
    assert (normalizer.stats.low, normalizer.stats.high) == (0.0, 100.0)
    np.testing.assert_allclose(normalizer(image[:, 40:]), 1.0)
    np.testing.assert_allclose(normalizer(image[:, :20]), 0.0)


def test_strided_sample_reads_a_regular_subgrid_band_by_band():
    image = np.arange(100 * 90).reshape(100, 90)
    sample = strided_sample(open_large_image(image), max_pixels=100, band=16)
    np.testing.assert_array_equal(sample, image[::10, ::10])


# ----------------------------------------------------------------------------- large prediction


def test_predict_large_equals_in_memory_prediction(tmp_path, pixel_bundle):
    image = disc_image()
    expected = predict(image, pixel_bundle, inference=CPU).labels
    gen = predict_large(image, pixel_bundle, tmp_path / "out.zarr", chunk=128, halo=32, inference=CPU)
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            path = stop.value
            break
    labels = read_labels(path)
    assert labels.dtype == np.uint32 and labels.shape == image.shape
    assert expected.max() > 15
    assert_same_partition(labels, expected)
    assert events[-1].done == events[-1].total == 1 + 2 * 9
    group = zarr.open_group(str(path), mode="r")
    assert group["labels"].attrs["labels"] == ["labels"]
    assert group["labels/labels/0"].chunks == (128, 128)


def test_predict_large_at_a_scale_equals_in_memory_prediction(tmp_path, pixel_bundle):
    image = disc_image()
    scaled = replace(CPU, scale=2.0)
    expected = predict(image, pixel_bundle, inference=scaled).labels
    path = run_to_end(predict_large(image, pixel_bundle, tmp_path / "out.zarr", chunk=128, halo=32, inference=scaled))
    labels = read_labels(path)
    assert labels.shape == image.shape
    assert expected.max() > 15
    assert_same_partition(labels, expected)


def test_predict_large_handles_rgb_images(tmp_path, pixel_bundle):
    grey = disc_image((140, 130), n=8, seed=2)
    rgb = np.stack([grey // 8, grey // 4, grey // 8], axis=-1).astype(np.uint8)
    path = run_to_end(predict_large(rgb, pixel_bundle, tmp_path / "rgb.zarr", chunk=64, halo=24, inference=CPU))
    expected = predict(rgb, pixel_bundle, inference=CPU).labels
    assert expected.max() > 4
    assert_same_partition(read_labels(path), expected)


def test_predict_large_reads_a_tiff_lazily_and_refuses_to_overwrite(tmp_path, pixel_bundle):
    image = disc_image((150, 140), n=10, seed=4)
    tifffile.imwrite(tmp_path / "img.tif", image, tile=(64, 64))
    out = tmp_path / "out.zarr"
    run_to_end(predict_large(tmp_path / "img.tif", pixel_bundle, out, chunk=64, halo=24, inference=CPU))
    assert_same_partition(read_labels(out), predict(image, pixel_bundle, inference=CPU).labels)
    with pytest.raises(UserInputError, match="exists"):
        run_to_end(predict_large(tmp_path / "img.tif", pixel_bundle, out, chunk=64, halo=24, inference=CPU))


def test_predict_large_cancel_leaves_no_output(tmp_path, pixel_bundle):
    events = []
    gen = predict_large(
        disc_image(),
        pixel_bundle,
        tmp_path / "out.zarr",
        chunk=64,
        halo=16,
        inference=CPU,
        cancel=lambda: len(events) > 3,
    )
    with pytest.raises(Cancelled):
        for event in gen:
            events.append(event)
    assert not (tmp_path / "out.zarr").exists()


def test_predict_large_falls_back_to_cpu_when_the_gpu_runs_out_of_memory(tmp_path, pixel_bundle, monkeypatch):
    real = inference_module.predict_probabilities
    seen = []

    def flaky(bundle, plane, cfg, cancel=None):
        seen.append((cfg.device, cfg.tile_size))
        if cfg.device == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(bundle, plane, cfg, cancel)

    monkeypatch.setattr(inference_module, "predict_probabilities", flaky)
    image = disc_image((150, 140), n=10)
    gpu = InferenceConfig(device="cuda", tile_size=128)
    with pytest.warns(UserWarning, match="falling back to the CPU"):
        path = run_to_end(predict_large(image, pixel_bundle, tmp_path / "o.zarr", chunk=64, halo=24, inference=gpu))
    assert seen[:4] == [("cuda", 128), ("cuda", 64), ("cuda", 32), ("cpu", 128)]
    assert all(device == "cpu" for device, _ in seen[4:])  # later chunks stay on the CPU
    monkeypatch.setattr(inference_module, "predict_probabilities", real)
    assert_same_partition(read_labels(path), predict(image, pixel_bundle, inference=CPU).labels)


def test_predict_large_on_a_cluster_equals_the_local_run(tmp_path, saved_unet, client, one_torch_thread):
    from napari_unet.core.models.registry import load_model

    image = np.random.default_rng(5).gamma(2.0, 300.0, size=(200, 170)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "img.tif", image)
    bundle = load_model(saved_unet)
    kwargs = {"chunk": 96, "halo": 32, "inference": CPU}
    here = read_labels(run_to_end(predict_large(tmp_path / "img.tif", bundle, tmp_path / "a.zarr", **kwargs)))
    there_path = predict_large(tmp_path / "img.tif", bundle, tmp_path / "b.zarr", scheduler=client, **kwargs)
    there = read_labels(run_to_end(there_path))
    assert here.max() > 5
    assert_same_partition(there, here)


def test_predict_large_on_a_cluster_needs_a_path(tmp_path, pixel_bundle):
    with pytest.raises(UserInputError, match="as a path"):
        run_to_end(predict_large(disc_image(), pixel_bundle, tmp_path / "o.zarr", scheduler="local:1", inference=CPU))


# ----------------------------------------------------------------------------- folders


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    paths = []
    for seed in range(3):
        image = np.random.default_rng(seed).gamma(2.0, 300.0, size=(80, 72)).astype(np.uint16)
        tifffile.imwrite(folder / f"img{seed}.tif", image)
        paths.append(folder / f"img{seed}.tif")
    (folder / "broken.tif").write_bytes(b"not a tiff")
    return [*paths, folder / "broken.tif"]


def run_folder(paths, out, spec, scheduler):
    out.mkdir()
    return run_to_end(predict_folder(paths, out, spec, scheduler=scheduler, inference=CPU))


def test_output_names_and_collisions(tmp_path):
    assert output_path_for("/x/a_image.tif", tmp_path) == tmp_path / "a_image_labels.tif"
    assert output_path_for("/x/b.ome.zarr", tmp_path, "zarr") == tmp_path / "b_labels.zarr"
    with pytest.raises(UserInputError, match="label format"):
        output_path_for("/x/a.tif", tmp_path, "csv")
    with pytest.raises(UserInputError, match="both be written"):
        run_to_end(predict_folder([tmp_path / "a.tif", tmp_path / "a.png"], tmp_path, "unused"))


def test_predict_folder_in_process_reports_failures(tmp_path, image_folder, saved_unet):
    summary = run_folder(image_folder, tmp_path / "out", str(saved_unet), None)
    assert [r.input for r in summary.done] == [str(p) for p in image_folder[:3]]
    assert [f.input for f in summary.failed] == [str(image_folder[3])]
    assert "broken.tif" in summary.failed[0].reason
    from napari_unet.core.models.registry import load_model

    bundle = load_model(saved_unet)
    for result, path in zip(summary.done, image_folder, strict=False):
        expected = predict(tifffile.imread(path), bundle, inference=CPU).labels
        assert_same_partition(read_labels(result.outputs[0]), expected)
        assert result.n_objects == len(np.unique(expected[expected > 0])) > 5


def test_predict_folder_on_a_cluster_matches_one_process(tmp_path, image_folder, saved_unet, client, one_torch_thread):
    here = run_folder(image_folder, tmp_path / "here", str(saved_unet), None)
    there = run_folder(image_folder, tmp_path / "there", str(saved_unet), client)
    assert [f.input for f in there.failed] == [str(image_folder[3])]
    assert len(there.done) == 3
    for a, b in zip(here.done, there.done, strict=True):
        assert a.input == b.input
        assert_same_partition(read_labels(b.outputs[0]), read_labels(a.outputs[0]))
    assert client.run(lambda: __import__("torch").get_num_threads()) == dict.fromkeys(
        client.scheduler_info()["workers"], 1
    )


def test_worker_model_cache_loads_once(saved_unet, monkeypatch):
    from napari_unet.core.models import registry

    calls = []
    real = registry.load_model
    monkeypatch.setattr(registry, "load_model", lambda spec: calls.append(spec) or real(spec))
    monkeypatch.setattr(dask_cluster, "_BUNDLE_CACHE", {})
    sha = real(saved_unet).sha256
    first = dask_cluster.cached_bundle(str(saved_unet), sha, torch_threads=None)
    assert dask_cluster.cached_bundle(str(saved_unet), sha, torch_threads=None) is first
    assert calls == [str(saved_unet)]
    with pytest.raises(UserInputError, match="changed on disk"):
        dask_cluster.cached_bundle(str(saved_unet), "0" * 64, torch_threads=None)
