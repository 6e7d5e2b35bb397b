"""3D models: the network, 3D targets and post-processing, volume inference, 3D training and the 3D baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.core.config import ConfigError, InferenceConfig, ModelConfig, PostprocessConfig, TrainingConfig
from napari_unet.core.data.synthetic import random_zstack, synthetic_zstack
from napari_unet.core.errors import UserInputError
from napari_unet.core.evaluate.baselines import segment_volume_baseline
from napari_unet.core.evaluate.metrics import evaluate_image, summary_row
from napari_unet.core.labels.extraction import labels_from_probabilities
from napari_unet.core.labels.postprocess import fill_label_holes, probabilities_to_labels
from napari_unet.core.models.bundle import ModelBundle, save_model
from napari_unet.core.models.network import build_model
from napari_unet.core.models.registry import load_model
from napari_unet.core.predict.segment import predict
from napari_unet.core.predict.tiling import gaussian_weights
from napari_unet.core.predict.volumetric import resample, volume_tiles
from napari_unet.core.progress import run_to_end
from napari_unet.core.train.pixel_classes import BOUNDARY, INTERIOR, labels_to_classes
from napari_unet.core.train.volumetric import annotated_mask, iter_train_volume, sparse_classes

SMALL_3D = ModelConfig(spatial_dims=3, depth=2, base_channels=4, xy_only_levels=1, norm="group")


def two_touching_balls(shape: tuple[int, int, int] = (12, 24, 36)) -> np.ndarray:
    """``(Z, Y, X)`` labels: two balls of radius 5 whose surfaces touch along X."""
    z, y, x = np.indices(shape)
    labels = np.zeros(shape, dtype=np.int32)
    labels[(z - 6) ** 2 + (y - 12) ** 2 + (x - 11) ** 2 <= 25] = 1
    labels[(z - 6) ** 2 + (y - 12) ** 2 + (x - 22) ** 2 <= 25] = 2
    return labels


def ideal_probabilities(labels: np.ndarray) -> np.ndarray:
    """``(3, Z, Y, X)`` one-hot probabilities of the 3-class targets of ``labels``."""
    classes = labels_to_classes(labels)
    return np.stack([(classes == k).astype(np.float32) for k in range(3)])


def test_3d_unet_pools_z_only_after_its_xy_only_levels() -> None:
    config = ModelConfig(spatial_dims=3, depth=3, base_channels=4, xy_only_levels=1)
    assert config.size_multiples == (4, 8, 8)
    network = build_model(config).eval()
    with torch.no_grad():
        out = network(torch.zeros(1, 1, 4, 16, 24))
    assert out.shape == (1, 3, 4, 16, 24)
    with pytest.raises(ValueError, match="multiple"):
        network(torch.zeros(1, 1, 6, 16, 24))


def test_xy_only_levels_are_for_3d_models_and_at_most_the_depth() -> None:
    with pytest.raises(ConfigError, match="xy_only_levels"):
        ModelConfig(xy_only_levels=1)
    with pytest.raises(ConfigError, match="xy_only_levels"):
        ModelConfig(spatial_dims=3, depth=2, xy_only_levels=3)


def test_3d_targets_separate_touching_balls_and_cap_them_with_boundary() -> None:
    labels = two_touching_balls()
    classes = labels_to_classes(labels)
    assert classes.shape == labels.shape
    assert classes[6, 12, 16] == BOUNDARY and classes[6, 12, 17] == BOUNDARY  # the contact plane
    assert classes[1, 12, 11] == BOUNDARY  # the top of the ball (a 2D rim would call it interior)
    assert classes[6, 12, 11] == INTERIOR


def test_3d_postprocessing_finds_each_ball_as_one_3d_object() -> None:
    labels = probabilities_to_labels(ideal_probabilities(two_touching_balls()), PostprocessConfig(min_size=10))
    assert labels.shape == (12, 24, 36)
    assert labels.max() == 2
    assert summary_row(evaluate_image(two_touching_balls(), labels, (0.5,)))["AP@0.5"] == 1.0


def test_3d_hole_filling_fills_an_enclosed_cavity_only() -> None:
    labels = np.zeros((7, 7, 7), dtype=np.int32)
    labels[1:6, 1:6, 1:6] = 3
    labels[3, 3, 3] = 0
    filled = fill_label_holes(labels)
    assert filled[3, 3, 3] == 3 and filled[0, 0, 0] == 0


def test_3d_tiles_cover_the_volume_with_blending_weights_in_3d() -> None:
    tiles = volume_tiles((64, 256, 256), (4, 8, 8), overlap=0.25)
    covered = np.zeros((64, 256, 256), dtype=bool)
    for tile in tiles:
        covered[tile] = True
        assert tuple(s.stop - s.start for s in tile) == (32, 128, 128)
    assert covered.all()
    weights = gaussian_weights((4, 8, 8))
    assert weights.shape == (4, 8, 8) and weights.max() == pytest.approx(1.0) and weights.min() > 0


def test_resample_returns_to_the_original_shape() -> None:
    array = np.random.default_rng(0).random((3, 10, 20, 20)).astype(np.float32)
    stretched = resample(array, (2.0, 1.0, 1.0))
    assert stretched.shape == (3, 20, 20, 20)
    assert resample(stretched, (0.5, 1.0, 1.0), shape_zyx=(10, 20, 20)).shape == (3, 10, 20, 20)


@pytest.fixture(scope="module")
def small_3d_model() -> ModelBundle:
    return ModelBundle.new(SMALL_3D, metadata={"name": "small-3d", "z_spacing": 2.0}, seed=0)


def test_a_3d_model_segments_a_stack_as_one_volume_at_any_z_step(small_3d_model: ModelBundle) -> None:
    image, _ = synthetic_zstack((10, 40, 48), n_nuclei=6, seed=3)
    for z_spacing in (None, 1.0, 3.5):
        prediction = predict(image, small_3d_model, "ZYX", InferenceConfig(device="cpu"), z_spacing=z_spacing)
        assert prediction.volumetric and prediction.axes == "ZYX"
        assert prediction.labels.shape == image.shape
        assert prediction.probabilities.shape == (10, 3, 40, 48)
        np.testing.assert_allclose(prediction.probabilities.sum(axis=1), 1.0, atol=1e-4)
    again = labels_from_probabilities(prediction.probabilities, "ZYX", small_3d_model.postprocess, volumetric=True)
    np.testing.assert_array_equal(again, prediction.labels)
    cpu = InferenceConfig(device="cpu")
    own, same, other = (predict(image, small_3d_model, "ZYX", cpu, z_spacing=z).probabilities for z in (None, 2.0, 4.0))
    np.testing.assert_array_equal(own, same)  # the model's own Z step: nothing is resampled
    assert not np.allclose(own, other, atol=1e-3)  # another step: the network sees the stack stretched along Z


def test_a_3d_model_refuses_a_single_image_with_what_to_do(small_3d_model: ModelBundle) -> None:
    with pytest.raises(UserInputError, match=r"3D model.*Z-stacks"):
        predict(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64), small_3d_model)


def test_a_saved_3d_model_loads_with_its_architecture(small_3d_model: ModelBundle, tmp_path) -> None:
    folder = save_model(small_3d_model, tmp_path / "m3d")
    loaded = load_model(folder)
    assert loaded.config == SMALL_3D and loaded.metadata["z_spacing"] == 2.0
    for a, b in zip(loaded.network.state_dict().values(), small_3d_model.network.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_3d_training_validates_and_keeps_the_best_weights(small_3d_model: ModelBundle) -> None:
    pairs = [synthetic_zstack((12, 48, 48), n_nuclei=8, seed=seed, radius_range=(5.0, 8.0)) for seed in range(2)]
    cfg = TrainingConfig(max_steps=6, max_seconds=None, batch_size=2, val_every=3, device="cpu", learning_rate=3e-3)
    result = run_to_end(
        iter_train_volume(
            small_3d_model,
            [p[0] for p in pairs],
            [p[1] for p in pairs],
            cfg,
            val_volumes=[pairs[0][0]],
            val_labels=[pairs[0][1]],
            patch_zyx=(8, 32, 32),
        )
    )
    assert result.steps == 6 and [h["step"] for h in result.history if "val_ap50" in h] == [0, 3, 6]
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert all(np.isfinite(losses))
    validated = [h["val_ap50"] for h in result.history if "val_ap50" in h]
    assert result.best_score == max(validated)
    assert result.best_step == [0, 3, 6][validated.index(max(validated))]
    assert result.bundle.metadata["lineage"]["annotation_mode"] == "3d"
    assert result.bundle.config == SMALL_3D


def test_sparse_annotation_counts_only_the_labelled_planes() -> None:
    labels = two_touching_balls()
    labels[np.arange(12) != 6] = 0  # only plane 6 was labelled; the others are unknown, not background
    mask = annotated_mask([6], labels.shape)
    assert mask[6].all() and not mask[5].any()
    classes = sparse_classes(labels, mask)
    # read as 3D, a lone plane has no inside (every voxel touches the empty planes around it): no rim is found
    assert labels_to_classes(labels)[6, 12, 6] == INTERIOR
    assert classes[6, 12, 6] == BOUNDARY  # taken from its own plane, the disc's rim is boundary ...
    assert classes[6, 12, 9] == INTERIOR  # ... and its inside interior
    np.testing.assert_array_equal(annotated_mask(mask.astype(np.uint8), labels.shape), mask)
    with pytest.raises(UserInputError, match="Z indices"):
        annotated_mask([20], labels.shape)
    with pytest.raises(UserInputError, match="no voxel"):
        annotated_mask(np.zeros(labels.shape, dtype=bool), labels.shape)


def test_training_on_some_planes_changes_the_weights(small_3d_model: ModelBundle) -> None:
    image, labels = synthetic_zstack((12, 48, 48), n_nuclei=8, seed=5)
    unreviewed = labels.copy()
    unreviewed[[0, 1, 2, 9, 10, 11]] = 0  # planes nobody looked at
    cfg = TrainingConfig(max_steps=2, max_seconds=None, batch_size=1, device="cpu")
    result = run_to_end(
        iter_train_volume(
            small_3d_model,
            [image],
            [unreviewed],
            cfg,
            annotated=[[4, 5, 6, 7]],
            patch_zyx=(4, 32, 32),
            z_spacings=[4.0],  # twice the model's step: resampled to 24 planes, labels and planes with it
        )
    )
    assert result.steps == 2 and result.best_step == 2  # without validation the last weights are kept
    before, after = small_3d_model.network.state_dict(), result.bundle.network.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_an_unvalidated_3d_fine_tune_of_a_trained_model_is_averaged_with_it() -> None:
    image, labels = synthetic_zstack((12, 48, 48), n_nuclei=8, seed=5)
    cfg = TrainingConfig(max_steps=2, max_seconds=None, batch_size=1, device="cpu", learning_rate=1e-2)

    def fine_tune(metadata: dict) -> tuple[ModelBundle, list[str]]:
        bundle = ModelBundle.new(SMALL_3D, metadata={"name": "m", "z_spacing": 2.0, **metadata}, seed=0)
        events: list[str] = []
        generator = iter_train_volume(bundle, [image], [labels], cfg, patch_zyx=(4, 32, 32))
        return run_to_end(generator, lambda progress: events.append(progress.message)).bundle, events

    parent = ModelBundle.new(SMALL_3D, seed=0).network.state_dict()
    last, untrained_events = fine_tune({})  # no training record: the last weights, as before
    mixed, trained_events = fine_tune({"training": {"runs": 1}})  # same seed, same steps, a trained parent
    assert untrained_events[0].endswith("keeping the last weights")
    assert trained_events[0].endswith("averaged with the starting model's")
    last_state, mixed_state = last.network.state_dict(), mixed.network.state_dict()
    moved = [k for k in parent if parent[k].is_floating_point() and not torch.equal(parent[k], last_state[k])]
    assert moved, "two steps at lr 1e-2 change the weights"
    for key in moved:
        torch.testing.assert_close(mixed_state[key], (parent[key] + last_state[key]) / 2, rtol=1e-4, atol=1e-5)


def test_3d_training_refuses_a_2d_model_and_mismatched_stacks(small_3d_model: ModelBundle) -> None:
    image, labels = synthetic_zstack((8, 32, 32), n_nuclei=3, seed=1)
    with pytest.raises(UserInputError, match="2D"):
        run_to_end(iter_train_volume(ModelBundle.new(ModelConfig(depth=2, base_channels=4)), [image], [labels]))
    with pytest.raises(UserInputError, match="shape"):
        run_to_end(iter_train_volume(small_3d_model, [image], [labels[:4]]))


def test_3d_watershed_baseline_splits_touching_nuclei() -> None:
    labels = two_touching_balls((12, 24, 36))
    image = (labels > 0).astype(np.float32) * 100 + 10
    found = segment_volume_baseline(image, "watershed", min_size=10, sigma=0.5)
    assert found.max() == 2
    assert summary_row(evaluate_image(labels, found, (0.5,)))["AP@0.5"] == 1.0
    with pytest.raises(UserInputError, match=r"\(Z, Y, X\)"):
        segment_volume_baseline(image[6], "otsu")


def test_random_stacks_differ_in_optics_and_are_reproducible() -> None:
    first, labels, settings = random_zstack(7, (12, 32, 32))
    again, _, same = random_zstack(7, (12, 32, 32))
    np.testing.assert_array_equal(first, again)
    assert settings == same and 1.0 <= settings["z_spacing"] <= 3.0
    assert random_zstack(8, (12, 32, 32))[2] != settings
    assert labels.max() > 0


@pytest.mark.parametrize(
    ("amp", "native_bf16", "expected"),
    [(True, True, torch.bfloat16), (True, False, torch.float32), (False, True, torch.float32)],
)
def test_3d_training_runs_in_bfloat16_only_where_the_processor_computes_it_and_the_weights_stay_float32(
    monkeypatch, amp: bool, native_bf16: bool, expected: torch.dtype
) -> None:
    from napari_unet.core.predict import runtime

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native_bf16)  # whatever this machine's CPU has
    seen: list[torch.dtype] = []

    def record(module, inputs, output) -> None:
        if module.training:
            seen.append(output.dtype)

    bundle = ModelBundle.new(SMALL_3D, metadata={"name": "small-3d", "z_spacing": 2.0}, seed=0)
    bundle.network.register_forward_hook(record)  # the run trains a copy; the copy keeps the hook
    image, labels = synthetic_zstack((12, 48, 48), n_nuclei=8, seed=5)
    cfg = TrainingConfig(max_steps=2, max_seconds=None, batch_size=1, device="cpu", amp=amp)
    result = run_to_end(iter_train_volume(bundle, [image], [labels], cfg, patch_zyx=(4, 32, 32)))
    assert result.steps == 2 and seen == [expected] * 2
    before, after = bundle.network.state_dict(), result.bundle.network.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(value.dtype == torch.float32 for value in after.values() if value.is_floating_point())
