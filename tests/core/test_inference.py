from __future__ import annotations

from collections.abc import Generator
from dataclasses import replace

import numpy as np
import pytest
import torch
from skimage.draw import disk
from torch import nn

from napari_unet.core.config import InferenceConfig, ModelConfig, NormalizeConfig, PostprocessConfig
from napari_unet.core.errors import Cancelled, UserInputError
from napari_unet.core.labels.extraction import foreground_probability, labels_from_probabilities
from napari_unet.core.models.bundle import ModelBundle
from napari_unet.core.models.network import UNet
from napari_unet.core.predict import runtime
from napari_unet.core.predict.memory import inference_bytes_per_pixel
from napari_unet.core.predict.planar import (
    GPU_BATCH_SIZE,
    MULTISCALE_FACTORS,
    _plan_tiles,
    effective_batch_size,
    predict_probabilities,
    resize_plane,
    scaled_shape,
)
from napari_unet.core.predict.runtime import (
    FLIPS_METADATA_KEY,
    Prediction,
    accelerator_names,
    inference_network,
    model_uses_flips,
    resolve_device,
    settings_for_model,
)
from napari_unet.core.predict.segment import iter_predict, predict
from napari_unet.core.progress import Progress, run_to_end

CPU = InferenceConfig(device="cpu", tile_size=64, overlap=0.125, batch_size=4)
POST = PostprocessConfig(min_size=5, min_seed_size=1)
CENTRES = ((14, 14), (14, 50), (40, 30))


class BrightIsNucleus(nn.Module):
    """A fixed 'network': interior where the normalised input is > 0.5, background elsewhere.

    Like the UNet it refuses inputs that are not a multiple of ``2**depth``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.scale = nn.Parameter(torch.tensor(20.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert all(s % self.config.size_multiple == 0 for s in x.shape[2:])
        signal = (x.mean(dim=1, keepdim=True) - 0.5) * self.scale
        return torch.cat([-signal, signal, torch.full_like(signal, -20.0)], dim=1)


def threshold_bundle(depth: int = 2, postprocess: PostprocessConfig = POST) -> ModelBundle:
    cfg = ModelConfig(depth=depth, base_channels=4, norm="none")
    return ModelBundle(
        network=BrightIsNucleus(cfg),
        config=cfg,
        normalize=NormalizeConfig(),
        postprocess=postprocess,
        metadata={"name": "test"},
    )


def unet_bundle(depth: int = 2, norm: str = "batch", in_channels: int = 1) -> ModelBundle:
    torch.manual_seed(0)
    cfg = ModelConfig(depth=depth, base_channels=4, norm=norm, in_channels=in_channels)
    return ModelBundle(
        network=UNet(cfg),
        config=cfg,
        normalize=NormalizeConfig(),
        postprocess=PostprocessConfig(),
        metadata={"name": "test"},
    )


def disc_masks(shape=(56, 64), centres=CENTRES, radius=7, shift=(0, 0)):
    masks = []
    for cy, cx in centres:
        mask = np.zeros(shape, dtype=bool)
        mask[disk((cy + shift[0], cx + shift[1]), radius, shape=shape)] = True
        masks.append(mask)
    return masks


def disc_image(shape=(56, 64), background=100, foreground=1000, shift=(0, 0)) -> np.ndarray:
    image = np.full(shape, background, dtype=np.uint16)
    for mask in disc_masks(shape, shift=shift):
        image[mask] = foreground
    return image


def progress_and_result(gen: Generator[Progress, None, Prediction]) -> tuple[list[Progress], Prediction]:
    """Every event a prediction generator yields, and what it returns."""
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value


def assert_discs_found(labels: np.ndarray, masks: list[np.ndarray]) -> None:
    assert labels.max() == len(masks)
    for mask in masks:
        ids = np.unique(labels[mask])
        assert len(ids) == 1 and ids[0] > 0
        np.testing.assert_array_equal(labels == ids[0], mask)


# --------------------------------------------------------------------------- devices


def test_resolve_device_cpu_and_auto_without_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "_mps_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UserInputError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(UserInputError, match="MPS is not available"):
        resolve_device("mps")
    with pytest.raises(UserInputError, match="Unknown device"):
        resolve_device("gpu")


def test_resolve_device_with_cuda_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("CUDA:1") == torch.device("cuda", 1)
    with pytest.raises(UserInputError, match=r"devices 0\.\.1"):
        resolve_device("cuda:2")


def test_accelerator_names_list_cuda_devices_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "_mps_available", lambda: False)
    assert accelerator_names() == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: f"GPU model {index}")
    monkeypatch.setattr(runtime, "_mps_available", lambda: True)
    assert accelerator_names() == ["cuda:0 GPU model 0", "cuda:1 GPU model 1", "Apple MPS"]


# --------------------------------------------------------------------------- tiling equals untiled


def calibrated_unet(depth: int, plane: np.ndarray) -> ModelBundle:
    """A random UNet whose batch-norm statistics come from ``plane``, used in eval mode.

    Eval-mode batch norm is a fixed affine map, so the network is shift-equivariant
    and tiles can be compared with the whole image (instance norm would not be).
    """
    bundle = unet_bundle(depth=depth, norm="batch")
    network = bundle.network
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None
            module.reset_running_stats()
    network.train()
    with torch.no_grad():
        network(torch.from_numpy(plane[np.newaxis, :, :192, :160].copy()))
    network.eval()
    return bundle


def smooth_noise(shape, seed=0) -> np.ndarray:
    from scipy import ndimage as ndi

    noise = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return ndi.gaussian_filter(noise, (0, 2, 2)) * 5


@pytest.mark.parametrize(
    ("depth", "overlap", "max_tol", "mean_tol"),
    [(1, 0.45, 2e-3, 1e-4), (2, 0.49, 0.05, 1e-3)],
)
def test_tiled_equals_untiled_within_tolerance(depth, overlap, max_tol, mean_tol):
    """Whole-plane vs 64-px tiles on 200x168, absolute probability difference.

    Tolerances: depth 1 (receptive field well inside half a tile) max 2e-3,
    mean 1e-4; depth 2 (receptive field about the tile size) max 0.05, mean
    1e-3.  What is left is missing context at tile edges (zero padding inside
    the network), which Gaussian blending weighs down; tile starts are aligned
    to ``2**depth`` so every tile sees the whole image's pooling grid.
    """
    plane = smooth_noise((1, 200, 168))
    bundle = calibrated_unet(depth=depth, plane=plane)
    whole_cfg = InferenceConfig(device="cpu", tile_size=256)  # the 200x168 plane runs as one piece
    tiled_cfg = InferenceConfig(device="cpu", tile_size=64, overlap=overlap, batch_size=5)
    whole = predict_probabilities(bundle, plane, whole_cfg)
    tiled = predict_probabilities(bundle, plane, tiled_cfg)
    assert whole.shape == tiled.shape == (3, 200, 168)
    assert whole.std(axis=(1, 2)).min() > 0.02  # the outputs vary, so the comparison means something
    difference = np.abs(whole - tiled)
    assert difference.max() < max_tol
    assert difference.mean() < mean_tol


def test_tiled_equals_untiled_exactly_for_a_pixelwise_network():
    plane = smooth_noise((1, 200, 168))
    bundle = threshold_bundle(depth=4)
    whole = predict_probabilities(bundle, plane, InferenceConfig(device="cpu", tile_size=256))
    tiled = predict_probabilities(bundle, plane, InferenceConfig(device="cpu", tile_size=64, overlap=0.2))
    np.testing.assert_allclose(whole, tiled, atol=1e-5)


@pytest.mark.parametrize("shape", [(37, 53), (3, 5), (70, 33)])
def test_odd_sizes_with_a_real_unet(shape):
    bundle = unet_bundle(depth=3)
    image = np.random.default_rng(1).integers(0, 255, size=shape, dtype=np.uint8)
    result = predict(image, bundle, inference=CPU)
    assert result.labels.shape == shape and result.labels.dtype == np.uint32
    assert result.probabilities.shape == (3, *shape) and result.probabilities.dtype == np.float32
    np.testing.assert_allclose(result.probabilities.sum(axis=0), 1.0, atol=1e-5)
    assert result.axes == "YX"


def test_probabilities_do_not_depend_on_batch_size():
    plane = smooth_noise((1, 130, 90), seed=3)
    bundle = unet_bundle(depth=2)
    one = predict_probabilities(bundle, plane, InferenceConfig(device="cpu", tile_size=64, batch_size=1))
    many = predict_probabilities(bundle, plane, InferenceConfig(device="cpu", tile_size=64, batch_size=7))
    np.testing.assert_allclose(one, many, atol=1e-5)


class MemoryLimited(nn.Module):
    """Wraps a network; a forward pass of more than ``most`` tiles raises an out-of-memory error, as CUDA does."""

    def __init__(self, network: nn.Module, most: int) -> None:
        super().__init__()
        self.network, self.most, self.passes = network, most, []

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.shape[0] > self.most:
            raise torch.OutOfMemoryError(f"{inputs.shape[0]} tiles do not fit")
        self.passes.append(inputs.shape[0])
        return self.network(inputs)


def test_a_batch_that_runs_out_of_memory_is_split_and_gives_the_same_probabilities(monkeypatch):
    from napari_unet.core.predict import planar

    plane = smooth_noise((1, 130, 90), seed=3)
    bundle = unet_bundle(depth=2)
    one = predict_probabilities(bundle, plane, InferenceConfig(device="cpu", tile_size=64, batch_size=1))
    real = planar.inference_network
    limited = []

    def memory_limited(network: nn.Module, device: torch.device) -> MemoryLimited:
        limited.append(MemoryLimited(real(network, device), 3))
        return limited[-1]

    monkeypatch.setattr(planar, "inference_network", memory_limited)
    split = predict_probabilities(bundle, plane, InferenceConfig(device="cpu", tile_size=64, batch_size=7))
    np.testing.assert_allclose(one, split, atol=1e-5)
    assert limited[0].passes == [3, 3]  # 6 tiles: the pass of 6 ran out of memory, halved to 3 (7 // 2)


def test_the_automatic_gpu_batch_starts_with_the_tiles_the_memory_estimate_fits():
    model = ModelConfig(base_channels=16, depth=4)
    plan = _plan_tiles((2048, 2048), model, InferenceConfig(tile_size=512))
    assert plan.tile_pixels == 512 * 512
    one_tile = plan.tile_pixels * inference_bytes_per_pixel(model)  # float32: amp off
    cuda, automatic = torch.device("cuda"), InferenceConfig(amp=False)
    assert effective_batch_size(automatic, cuda, plan, free_bytes=int(2 * 3 * one_tile)) == 3
    assert effective_batch_size(automatic, cuda, plan, free_bytes=10**12) == GPU_BATCH_SIZE
    assert effective_batch_size(replace(automatic, batch_size=5), cuda, plan, free_bytes=1) == 5, "a chosen size stands"
    assert effective_batch_size(automatic, torch.device("cpu"), plan, free_bytes=1) == 1


def test_one_tile_that_does_not_fit_is_the_error_the_user_sees(monkeypatch):
    from napari_unet.core.predict import planar

    real = planar.inference_network
    monkeypatch.setattr(planar, "inference_network", lambda net, dev: MemoryLimited(real(net, dev), 0))
    cfg = InferenceConfig(device="cpu", tile_size=64, batch_size=4)
    with pytest.raises(torch.OutOfMemoryError):
        predict_probabilities(unet_bundle(depth=2), smooth_noise((1, 130, 90), seed=3), cfg)


def test_amp_on_cpu_uses_bfloat16_only_where_the_processor_has_it(monkeypatch):
    from napari_unet.core.predict import runtime

    plane = smooth_noise((1, 64, 64), seed=4)
    bundle = unet_bundle(depth=2)
    without = predict_probabilities(bundle, plane, InferenceConfig(device="cpu", amp=False))
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    emulated = predict_probabilities(bundle, plane, InferenceConfig(device="cpu", amp=True))
    np.testing.assert_array_equal(emulated, without)  # no native bfloat16: float32, bit for bit
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    native = predict_probabilities(bundle, plane, InferenceConfig(device="cpu", amp=True))
    assert not np.array_equal(native, without), "bfloat16 really ran"
    np.testing.assert_allclose(native, without, atol=0.05)
    np.testing.assert_allclose(native.sum(axis=0), 1.0, atol=1e-5)  # the softmax stays float32


# --------------------------------------------------------------------------- whole images


def test_predict_finds_discs_in_a_grey_image():
    result = predict(disc_image(), threshold_bundle(), inference=CPU)
    assert isinstance(result, Prediction)
    assert result.labels.dtype == np.uint32 and result.labels.shape == (56, 64)
    assert result.axes == "YX" and result.image_axes == "YX"
    assert_discs_found(result.labels, disc_masks())


def test_predict_inverts_brightfield():
    result = predict(disc_image(background=1000, foreground=100), threshold_bundle(), inference=CPU)
    assert_discs_found(result.labels, disc_masks())


def test_predict_rgb_and_channels_first():
    grey = disc_image().astype(np.float32) / 4.0
    rgb = np.stack([grey, grey * 0.5, grey * 0.25], axis=-1)
    result = predict(rgb, threshold_bundle(), inference=CPU)
    assert result.image_axes == "YXC" and result.labels.shape == (56, 64)
    assert_discs_found(result.labels, disc_masks())
    channels_first = np.ascontiguousarray(np.moveaxis(rgb, -1, 0))
    result = predict(channels_first, threshold_bundle(), axes="CYX", inference=CPU)
    assert result.image_axes == "CYX" and result.labels.shape == (56, 64)
    assert_discs_found(result.labels, disc_masks())


def test_z_stack_links_objects_across_slices():
    stack = np.stack([disc_image(shift=(0, s)) for s in (0, 1, 2)])
    result = predict(stack, threshold_bundle(), inference=CPU)
    assert result.axes == "ZYX" and result.image_axes == "ZYX"
    assert result.labels.shape == (3, 56, 64) and result.labels.dtype == np.uint32
    assert result.probabilities.shape == (3, 3, 56, 64)
    assert set(np.unique(result.labels)) == {0, 1, 2, 3}  # three 3D nuclei
    for z, shift in enumerate((0, 1, 2)):
        assert_discs_found(result.labels[z], disc_masks(shift=(0, shift)))
    for cy, cx in CENTRES:
        assert result.labels[0, cy, cx] == result.labels[1, cy, cx + 1] == result.labels[2, cy, cx + 2]


def test_time_lapse_ids_are_unique_but_not_linked():
    stack = np.stack([disc_image(shift=(0, s)) for s in (0, 1, 2)])
    result = predict(stack, threshold_bundle(), axes="TYX", inference=CPU)
    assert result.axes == "TYX"
    assert set(np.unique(result.labels)) == set(range(10))  # 3 frames x 3 nuclei, all distinct
    for t in range(3):
        frame_ids = set(np.unique(result.labels[t])) - {0}
        assert len(frame_ids) == 3


def test_postprocess_none_uses_the_bundle_settings():
    bundle = threshold_bundle(postprocess=PostprocessConfig(min_size=10**6))
    assert predict(disc_image(), bundle, inference=CPU).labels.max() == 0
    assert predict(disc_image(), bundle, inference=CPU, postprocess=POST).labels.max() == 3


def test_progress_counts_tiles_and_batches():
    image = np.zeros((200, 168), dtype=np.uint8)
    image[50:60, 50:60] = 200
    cfg = InferenceConfig(device="cpu", tile_size=64, overlap=0.125, batch_size=5)
    events, result = progress_and_result(iter_predict(image, threshold_bundle(depth=2), inference=cfg))
    # 200 -> starts 0/44/92/136 and 168 -> 0/52/104 (aligned to 4): 12 tiles in batches of 5
    assert [e.done for e in events] == [0, 5, 10, 12]
    assert {e.total for e in events} == {12}
    assert {e.stage for e in events} == {"predict"}
    assert result.labels.max() == 1


def test_cancel_between_batches_restores_the_network_mode():
    bundle = unet_bundle(depth=2)
    bundle.network.train()
    events = []
    gen = iter_predict(
        np.random.default_rng(0).random((150, 150)),
        bundle,
        inference=InferenceConfig(device="cpu", tile_size=64, batch_size=2),
        cancel=lambda: len(events) >= 2,
    )
    with pytest.raises(Cancelled):
        for event in gen:
            events.append(event)
    assert [e.done for e in events] == [0, 2]
    assert bundle.network.training  # eval mode was only borrowed


def test_inference_runs_a_cached_folded_copy_and_leaves_the_network_alone():
    bundle = unet_bundle(depth=2)
    bundle.network.train()
    state = {k: v.clone() for k, v in bundle.network.state_dict().items()}
    cpu = torch.device("cpu")
    first = inference_network(bundle.network, cpu)
    predict(disc_image(), bundle, inference=CPU)
    assert inference_network(bundle.network, cpu) is first, "reused while the weights stay the same"
    assert bundle.network.training, "the bundle's network keeps its mode"
    for key, value in bundle.network.state_dict().items():
        assert torch.equal(value, state[key]), key
    with torch.no_grad():
        next(bundle.network.parameters()).add_(0.1)  # fine-tuning changes weights in place
    assert inference_network(bundle.network, cpu) is not first


def test_folded_batch_norm_computes_the_same_logits():
    from napari_unet.core.models.network import GreyColourUNet, fold_batch_norm

    torch.manual_seed(0)
    for network in (
        UNet(ModelConfig(depth=2, base_channels=8)),
        GreyColourUNet(ModelConfig(in_channels=3, depth=2, base_channels=8, branches="gray_colour")),
    ):
        for module in network.modules():  # non-trivial running statistics and affine parameters
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.uniform_(-0.5, 0.5)
        network.eval()
        folded = fold_batch_norm(network)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        x = torch.randn(2, network.config.in_channels, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(folded(x), network(x), atol=1e-4, rtol=1e-4)


def test_input_errors_surface_as_user_errors():
    bundle = threshold_bundle()
    with pytest.raises(UserInputError, match="boolean"):
        predict(np.ones((32, 32), dtype=bool), bundle, inference=CPU)
    with pytest.raises(UserInputError, match="2 channels but the model reads 1"):
        predict(np.random.default_rng(0).random((32, 32, 2)), bundle, axes="YXC", inference=CPU)
    with pytest.raises(UserInputError, match="pass them explicitly"):
        predict(np.random.default_rng(0).random((2, 32, 32, 5)), bundle, inference=CPU)


def test_run_to_end_matches_predict():
    bundle = threshold_bundle()
    direct = predict(disc_image(), bundle, inference=CPU)
    drained = run_to_end(iter_predict(disc_image(), bundle, inference=CPU))
    np.testing.assert_array_equal(direct.labels, drained.labels)
    np.testing.assert_array_equal(direct.probabilities, drained.probabilities)


# --------------------------------------------------------------------------- post-processing cached probabilities


def test_labels_from_probabilities_reproduce_predict_for_planes_and_stacks():
    bundle = threshold_bundle()
    single = predict(disc_image(), bundle, inference=CPU)
    stack = np.stack([disc_image(shift=(0, s)) for s in (0, 1, 2)])
    for result in (single, predict(stack, bundle, inference=CPU), predict(stack, bundle, axes="TYX", inference=CPU)):
        labels = labels_from_probabilities(result.probabilities, result.axes, POST)
        assert labels.dtype == np.uint32
        np.testing.assert_array_equal(labels, result.labels)


def test_labels_from_probabilities_link_z_but_not_t():
    probabilities = np.zeros((2, 3, 20, 20), dtype=np.float32)
    probabilities[:, 0] = 1.0
    probabilities[:, :, 5:12, 5:12] = np.array([0.0, 1.0, 0.0], dtype=np.float32)[:, None, None]
    linked = labels_from_probabilities(probabilities, "ZYX", POST)
    assert set(np.unique(linked)) == {0, 1} and linked[0, 8, 8] == linked[1, 8, 8] == 1
    frames = labels_from_probabilities(probabilities, "TYX", POST)
    assert set(np.unique(frames)) == {0, 1, 2} and frames[0, 8, 8] != frames[1, 8, 8]
    strict = labels_from_probabilities(probabilities[0], "YX", PostprocessConfig(min_size=50, min_seed_size=1))
    assert strict.max() == 0  # the 49-pixel object is below the new minimum size


def test_labels_from_probabilities_checks_axes_and_cancel():
    probabilities = np.full((2, 3, 8, 8), 1 / 3, dtype=np.float32)
    with pytest.raises(UserInputError, match="do not fit labels axes 'YX'"):
        labels_from_probabilities(probabilities, "YX", POST)
    with pytest.raises(UserInputError, match="'CYX'"):
        labels_from_probabilities(probabilities[0], "CYX", POST)
    with pytest.raises(Cancelled):
        labels_from_probabilities(probabilities, "ZYX", POST, cancel=lambda: True)


def test_foreground_probability_is_interior_plus_boundary():
    probabilities = np.array([0.2, 0.5, 0.3], dtype=np.float32)[:, None, None] * np.ones((3, 2, 4), np.float32)
    foreground = foreground_probability(probabilities)
    assert foreground.shape == (2, 4) and foreground.dtype == np.float32
    np.testing.assert_allclose(foreground, 0.8)
    assert foreground_probability(np.stack([probabilities] * 3)).shape == (3, 2, 4)


def test_tta_averages_the_flipped_predictions():
    bundle = unet_bundle(depth=2)
    plane = smooth_noise((1, 32, 48))
    plain = predict_probabilities(bundle, plane, CPU)
    flipped = [
        np.flip(predict_probabilities(bundle, np.ascontiguousarray(np.flip(plane, axis)), CPU), axis)
        for axis in ((2,), (1,), (1, 2))
    ]
    expected = (plain + sum(flipped)) / 4
    tta = predict_probabilities(bundle, plane, InferenceConfig(device="cpu", tile_size=64, tta=True))
    assert np.abs(tta - expected).max() < 1e-5
    assert np.abs(tta - plain).max() > 1e-4  # a random UNet is not flip-invariant: TTA really changed something


class RecordingBrightIsNucleus(BrightIsNucleus):
    """:class:`BrightIsNucleus` that remembers the spatial shape of every batch it saw."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape[2:]))
        return super().forward(x)


def test_scale_resizes_what_the_network_sees_and_labels_keep_the_image_shape():
    bundle = threshold_bundle()
    bundle.network = RecordingBrightIsNucleus(bundle.config)
    one_tile = InferenceConfig(device="cpu", tile_size=512)
    result = predict(disc_image(), bundle, inference=replace(one_tile, scale=2.0))
    assert inference_network(bundle.network, torch.device("cpu")).seen == [(112, 128)]
    assert result.labels.shape == result.probabilities.shape[1:] == (56, 64)
    assert_discs_found(result.labels, disc_masks())
    np.testing.assert_allclose(result.probabilities.sum(axis=0), 1.0, atol=1e-5)

    inference_network(bundle.network, torch.device("cpu")).seen.clear()
    predict(np.stack([disc_image(), disc_image()]), bundle, axes="ZYX", inference=replace(one_tile, scale=1.5))
    seen = inference_network(bundle.network, torch.device("cpu")).seen
    assert seen == [(84, 96), (84, 96)]  # each slice is resized in Y and X only


def test_resize_plane_keeps_probabilities_summing_to_one():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 20, 30)).astype(np.float32)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=0)
    assert resize_plane(probabilities, (20, 30)) is probabilities
    for shape in ((47, 13), (9, 61)):  # shrink one axis and grow the other
        resized = resize_plane(probabilities, shape)
        assert resized.shape == (3, *shape) and resized.dtype == np.float32
        np.testing.assert_allclose(resized.sum(axis=0), 1.0, atol=1e-5)
        assert resized.min() >= 0


def test_scaled_shape_and_its_limits():
    assert scaled_shape((56, 64), 1.5) == (84, 96)
    assert scaled_shape((3, 5), 0.1) == (1, 1)
    with pytest.raises(ValueError, match="scale"):
        InferenceConfig(scale=0.0)
    with pytest.raises(ValueError, match="scale"):
        InferenceConfig(scale=100.0)


def test_multiscale_averages_the_predictions_at_three_sizes():
    bundle = unet_bundle(depth=2)
    plane = smooth_noise((1, 40, 48))
    one_tile = InferenceConfig(device="cpu", tile_size=512, scale=1.5)
    sizes = [predict_probabilities(bundle, plane, replace(one_tile, scale=1.5 * f)) for f in MULTISCALE_FACTORS]
    averaged = predict_probabilities(bundle, plane, replace(one_tile, multiscale=True))
    assert averaged.shape == (3, 40, 48)
    assert np.abs(averaged - sum(sizes) / 3).max() < 1e-5
    assert np.abs(averaged - sizes[1]).max() > 1e-4  # a random UNet is not scale-invariant: it really changed


def test_multiscale_progress_counts_the_tiles_of_every_size():
    bundle = threshold_bundle()
    bundle.network = RecordingBrightIsNucleus(bundle.config)
    cfg = InferenceConfig(device="cpu", tile_size=512, multiscale=True)
    events, result = progress_and_result(iter_predict(disc_image(), bundle, inference=cfg))
    # 56x64 at 0.71 / 1 / 1.41 -> 40x45, 56x64, 79x91, padded to multiples of 4 and at least 64
    assert inference_network(bundle.network, torch.device("cpu")).seen == [(64, 64), (64, 64), (80, 92)]
    assert [e.done for e in events] == [0, 1, 2, 3] and events[-1].total == 3
    assert_discs_found(result.labels, disc_masks())


def test_a_model_tuned_with_flips_runs_with_them_unless_told_otherwise():
    bundle = unet_bundle(depth=2)
    plane = smooth_noise((1, 32, 48))
    plain = predict_probabilities(bundle, plane, replace(CPU, tta=False))
    flipped = predict_probabilities(bundle, plane, replace(CPU, tta=True))
    assert CPU.tta is None and not model_uses_flips(bundle.metadata)
    np.testing.assert_array_equal(predict_probabilities(bundle, plane, CPU), plain)

    bundle.metadata = {**bundle.metadata, FLIPS_METADATA_KEY: True}
    assert settings_for_model(CPU, bundle).tta is True
    assert settings_for_model(replace(CPU, tta=False), bundle).tta is False
    np.testing.assert_array_equal(predict_probabilities(bundle, plane, CPU), flipped)
    np.testing.assert_array_equal(predict_probabilities(bundle, plane, replace(CPU, tta=False)), plain)
    image = plane[0]  # iter_predict resolves the model's choice too
    by_default = predict(image, bundle, "YX", CPU).probabilities
    np.testing.assert_array_equal(by_default, predict(image, bundle, "YX", replace(CPU, tta=True)).probabilities)
    assert np.abs(by_default - predict(image, bundle, "YX", replace(CPU, tta=False)).probabilities).max() > 1e-4
