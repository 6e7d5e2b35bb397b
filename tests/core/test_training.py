from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_unet.core.config import ModelConfig, TrainingConfig
from napari_unet.core.errors import Cancelled, UserInputError
from napari_unet.core.models.bundle import ModelBundle
from napari_unet.core.models.registry import load_model
from napari_unet.core.progress import run_to_end
from napari_unet.core.train.fine_tune import fine_tune_and_save, iter_train
from napari_unet.core.train.losses import class_weights_from_targets, masked_soft_dice, segmentation_loss
from napari_unet.core.train.pixel_classes import changed_pixels, labels_to_classes, loss_weights

TINY = ModelConfig(depth=2, base_channels=8)
FAST = TrainingConfig(
    patch_size=64,
    batch_size=2,
    max_steps=6,
    max_seconds=None,
    val_every=3,
    warmup_steps=2,
    learning_rate=3e-3,
    num_threads=1,  # the test machine's cores are shared
)


def discs(seed: int, shape: tuple[int, int] = (64, 64), n: int = 8, rgb: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Bright blurred discs (radius 4-7) on a dark noisy background, with their labels."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for index in range(n):
        cy, cx = rng.integers(6, shape[0] - 6), rng.integers(6, shape[1] - 6)
        radius = rng.uniform(4, 7)
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2) & (labels == 0)] = index + 1
    image = ndi.gaussian_filter((labels > 0) * 180.0, 1) + 20 + rng.normal(0, 8, shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    return (np.stack([image] * 3, axis=-1) if rgb else image), labels


def tiny_bundle() -> ModelBundle:
    return ModelBundle.new(TINY, metadata={"name": "parent-model"}, seed=0)


def dataset(count: int = 2, **kwargs) -> tuple[list[np.ndarray], list[np.ndarray]]:
    pairs = [discs(seed, **kwargs) for seed in range(count)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def drain(gen):
    events = []
    result = run_to_end(gen, events.append)
    return result, events


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    monkeypatch.setenv("NAPARI_UNET_MODEL_DIR", str(folder))
    return folder


# --------------------------------------------------------------------------- losses


@pytest.mark.parametrize("kind", ["ce_dice", "focal_dice"])
def test_zero_weight_pixels_get_zero_gradient(kind):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    weight = torch.ones(2, 8, 8)
    weight[:, :, :4] = 0
    weight[1, 6, 6] = 2.5
    loss = segmentation_loss(logits, target, weight, kind=kind, class_weights=torch.tensor([1.0, 1.0, 3.0]))
    loss.backward()
    assert torch.all(logits.grad[:, :, :, :4] == 0)
    assert torch.all(logits.grad[:, :, :, 4:].abs().sum(dim=1) > 0)


def test_loss_ignores_logits_under_zero_weight():
    torch.manual_seed(1)
    logits = torch.randn(1, 3, 6, 6)
    target = torch.randint(0, 3, (1, 6, 6))
    weight = torch.ones(1, 6, 6)
    weight[:, :3] = 0
    changed = logits.clone()
    changed[:, :, :3] = torch.randn(1, 3, 3, 6) * 10
    assert torch.isclose(segmentation_loss(logits, target, weight), segmentation_loss(changed, target, weight))


def test_perfect_prediction_has_near_zero_dice_loss():
    target = torch.zeros(1, 4, 4, dtype=torch.int64)
    target[0, 1:3, 1:3] = 1
    target[0, 0, :] = 2
    logits = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    assert masked_soft_dice(logits, target, torch.ones(1, 4, 4)) < 1e-6


def test_class_weights_from_counts():
    target = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [2, 0, 0, 0], [0, 0, 0, 0]])
    weight = np.ones((4, 4), np.float32)
    weight[3] = 0  # 7 background, 4 interior, 1 boundary counted
    expected = np.sqrt([1.0, 7 / 4, 7 / 1])
    np.testing.assert_allclose(class_weights_from_targets([target], [weight]), expected, rtol=1e-6)


# --------------------------------------------------------------------------- training


def test_training_lowers_the_loss_and_leaves_the_input_bundle_alone():
    bundle = tiny_bundle()
    before = bundle.sha256
    images, labels = dataset(2)
    cfg = dataclasses.replace(FAST, max_steps=16, val_fraction=0.0, augment=False, warmup_steps=0, learning_rate=1e-2)
    result, events = drain(iter_train(bundle, images, labels, cfg))
    losses = [record["loss"] for record in result.history]
    assert len(losses) == 16 and result.steps == 16 and result.stopped_reason == "steps"
    assert np.mean(losses[-4:]) < 0.85 * np.mean(losses[:4])
    assert bundle.sha256 == before
    assert result.bundle.sha256 != before
    assert result.bundle.network is not bundle.network
    assert any("no validation possible" in e.message for e in events)
    train_events = [e for e in events if e.done > 0]
    assert [e.done for e in train_events] == list(range(1, 17))
    assert all(e.total == 16 for e in train_events)
    assert {"loss", "lr", "val_ap50", "val_loss", "eta_s", "steps_per_s", "elapsed_s"} <= set(train_events[-1].metrics)
    assert result.best_score is None and result.best_step == 16


def test_lr_warms_up_then_decays():
    cfg = dataclasses.replace(FAST, max_steps=10, warmup_steps=4, val_fraction=0.0, augment=False)
    result, _ = drain(iter_train(tiny_bundle(), *dataset(2), cfg))
    lrs = [record["lr"] for record in result.history]
    assert lrs[0] == pytest.approx(cfg.learning_rate / 4)
    assert max(lrs) == pytest.approx(max(lrs[:5]))
    assert lrs[-1] < 0.3 * max(lrs)


def test_validation_on_held_out_images_keeps_the_best_weights():
    images, labels = dataset(5)
    cfg = dataclasses.replace(FAST, max_steps=6, val_every=3)
    result, events = drain(iter_train(tiny_bundle(), images, labels, cfg))
    assert any("held-out image" in e.message for e in events)
    scored = [r for r in result.history if "val_ap50" in r]
    assert [r["step"] for r in scored] == [0, 3, 6]
    best = max(scored, key=lambda r: (r["val_ap50"], -r["val_loss"]))
    assert result.best_score == best["val_ap50"] and result.best_step == best["step"]
    assert result.metrics_before == {k: scored[0][k] for k in ("val_ap50", "val_ap75", "val_f1", "val_loss")}
    roles = [entry["role"] for entry in result.lineage["data"]]
    assert roles.count("validation") == 1 and roles.count("train") == 4


def test_one_image_holds_out_a_strip_when_it_has_enough_nuclei():
    image, label = discs(3, shape=(64, 128), n=30)
    cfg = dataclasses.replace(FAST, max_steps=3, val_every=3)
    result, events = drain(iter_train(tiny_bundle(), [image], [label], cfg))
    assert any(e.message.startswith("validating on ") and "held-out nuclei" in e.message for e in events)
    assert result.best_score is not None
    assert [r["step"] for r in result.history if "val_ap50" in r] == [0, 3]


def test_two_images_each_give_a_strip_chosen_by_nucleus_count_and_both_train():
    from napari_unet.core.train.inputs import PreparedImages
    from napari_unet.core.train.validation import MIN_VAL_OBJECTS, count_objects, split_validation

    pairs = [discs(seed, shape=(64, 128), n=12) for seed in (5, 6)]
    labels = [label for _, label in pairs]
    classes = [labels_to_classes(label) for label in labels]
    weights = [np.ones(label.shape, np.float32) for label in labels]
    normalized = [np.repeat(image[None].astype(np.float32), TINY.in_channels, axis=0) for image, _ in pairs]
    prepared = PreparedImages(normalized, classes, weights, [{}, {}])
    train_ids, windows, message = split_validation(tiny_bundle(), prepared, labels, FAST, None, None)
    assert train_ids == [0, 1] and len(windows) == 2
    held = sum(count_objects(window) for window in windows)
    total = sum(len(np.unique(label)) - 1 for label in labels)
    assert MIN_VAL_OBJECTS <= held <= round(FAST.val_fraction * total) + 2
    assert f"validating on {held} held-out nuclei" in message
    for weight in prepared.weights:
        held_out = weight == 0
        assert held_out.any() and (weight > 0).any()
        assert held_out[:, -1].all() and not held_out[:, 0].any()  # a right-hand strip, the rest trains


def test_a_tall_strip_is_scored_over_its_whole_height_and_only_scored_pixels_leave_training():
    from napari_unet.core.train import validation
    from napari_unet.core.train.inputs import PreparedImages

    image, label = discs(7, shape=(600, 96), n=60)  # taller than sqrt(MAX_VAL_PIXELS): capped per side before
    normalized = [np.repeat(image[None].astype(np.float32), TINY.in_channels, axis=0)]
    prepared = PreparedImages(normalized, [labels_to_classes(label)], [np.ones(label.shape, np.float32)], [{}])
    _, windows, _ = validation.split_validation(tiny_bundle(), prepared, [label], FAST, None, None)
    (window,) = windows
    assert window.labels.shape[0] == 600  # every row scored
    held_out = prepared.weights[0] == 0
    assert held_out.sum() == window.labels.size  # exactly the scored pixels leave training


@pytest.mark.parametrize(
    ("rows", "cols", "expected"),
    [
        ((0, 100), (0, 100), (100, 100)),  # within the cap: unchanged
        ((0, 4000), (0, 50), (2000, 50)),  # a narrow strip keeps its width, loses length
        ((0, 50), (0, 4000), (50, 2000)),
        ((0, 1000), (0, 1000), (316, 316)),  # a large square: about sqrt(cap) a side
    ],
)
def test_validation_windows_are_capped_by_area(rows, cols, expected):
    from napari_unet.core.train.validation import _cap_area

    box = _cap_area((slice(*rows), slice(*cols)), 100_000)
    sizes = tuple(s.stop - s.start for s in box)
    assert sizes == expected and sizes[0] * sizes[1] <= 100_000
    assert all(s.start >= r[0] and s.stop <= r[1] for s, r in zip(box, (rows, cols), strict=True))


def test_one_image_with_few_nuclei_trains_without_validation():
    image, label = discs(4, n=2)
    cfg = dataclasses.replace(FAST, max_steps=3)
    result, events = drain(iter_train(tiny_bundle(), [image], [label], cfg))
    assert any(e.message.startswith("no validation possible: 2 annotated nuclei") for e in events)
    assert result.steps == 3 and result.best_score is None and result.stopped_reason == "steps"


def test_given_validation_set_and_early_stopping():
    bundle = ModelBundle.new(dataclasses.replace(TINY, norm="none"), seed=0)
    images, labels = dataset(1)
    val_images, val_labels = dataset(2)
    cfg = dataclasses.replace(FAST, max_steps=50, val_every=1, early_stop_patience=2, learning_rate=1e-8)
    result, events = drain(iter_train(bundle, images, labels, cfg, val_images=val_images, val_labels=val_labels))
    assert any("given images" in e.message for e in events)
    assert result.stopped_reason == "early_stopping" and result.steps == 2
    assert result.best_step == 0


def test_time_budget_stops_the_run():
    cfg = dataclasses.replace(FAST, max_steps=None, max_seconds=0.5, val_fraction=0.0)
    result, _ = drain(iter_train(tiny_bundle(), *dataset(1), cfg))
    assert result.stopped_reason == "time"


def test_epoch_limit():
    cfg = dataclasses.replace(FAST, max_steps=None, max_epochs=2, val_fraction=0.0)
    result, events = drain(iter_train(tiny_bundle(), *dataset(2), cfg))
    # 2 images of 64 x 64 = 2 patches of 64 x 64 = one batch of 2 per epoch
    assert result.stopped_reason == "epochs" and result.steps == 2 and events[-1].total == 2


def test_rois_and_changed_modes_train_on_corrections():
    images, labels = dataset(1)
    cfg = dataclasses.replace(FAST, max_steps=2, annotation_mode="rois", val_fraction=0.0)
    result, _ = drain(iter_train(tiny_bundle(), images, labels, cfg, rois=[[(0, 0, 64, 32)]]))
    assert result.steps == 2 and result.lineage["annotation_mode"] == "rois"
    previous = labels[0].copy()
    previous[previous == previous.max()] = 0  # the prediction missed one nucleus
    cfg = dataclasses.replace(cfg, annotation_mode="changed")
    result, _ = drain(iter_train(tiny_bundle(), images, labels, cfg, previous=[previous]))
    assert result.steps == 2 and result.lineage["annotation_mode"] == "changed"


# The loss weights decide which pixels a fine-tune learns from: labels where the weight is 0 (outside the ROIs,
# or left as predicted beyond the margin of the corrections) must not change the trained weights at all.
# Seeded, no time budget, no validation, on the CPU (CUDA convolutions may be nondeterministic): runs can be compared.
MASKED = dataclasses.replace(FAST, max_steps=4, max_seconds=None, val_fraction=0.0, device="cpu")


def trained_state(image, labels, cfg, **kwargs) -> dict[str, torch.Tensor]:
    result, _ = drain(iter_train(tiny_bundle(), [image], [labels], cfg, **kwargs))
    assert result.steps == cfg.max_steps
    return result.bundle.network.state_dict()


def differing_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [key for key in a if not torch.equal(a[key], b[key])]


def with_square(labels: np.ndarray, rows: slice, cols: slice, value: int = 99) -> np.ndarray:
    labels = labels.copy()
    labels[rows, cols] = value
    return labels


def test_labels_outside_the_rois_do_not_change_the_trained_weights():
    image, labels = discs(0)
    rois = [[(0, 0, 64, 32)]]  # the left half; nuclei 4 and 5 straddle its right edge
    assert (labels[:, :32] > 0).any()
    outside = labels.copy()
    outside[:, 34:] = 0  # 2 px from the ROI, so no class inside it changes
    outside = with_square(outside, slice(8, 20), slice(44, 56))
    inside = with_square(labels, slice(40, 50), slice(8, 18))
    assert np.array_equal(labels_to_classes(outside)[:, :32], labels_to_classes(labels)[:, :32])
    assert not np.array_equal(labels_to_classes(inside)[:, :32], labels_to_classes(labels)[:, :32])
    cfg = dataclasses.replace(MASKED, annotation_mode="rois")
    reference = trained_state(image, labels, cfg, rois=rois)
    assert differing_tensors(trained_state(image, outside, cfg, rois=rois), reference) == [], "ROI-less pixels learned"
    assert differing_tensors(trained_state(image, inside, cfg, rois=rois), reference), "control: ROI pixels count"


def test_labels_left_as_predicted_beyond_the_margin_do_not_change_the_trained_weights():
    image, labels = discs(0)
    previous = labels.copy()
    previous[labels == 2] = 0  # the prediction missed nucleus 2, centred at (22, 8)
    cfg = dataclasses.replace(MASKED, annotation_mode="changed")
    weight = loss_weights(labels, "changed", previous=previous, margin=cfg.changed_margin)
    beyond = ndi.distance_transform_edt(~changed_pixels(labels, previous)) > cfg.changed_margin + 1
    far_labels, far_previous = labels.copy(), previous.copy()
    far_labels[beyond] = far_previous[beyond] = 0  # every other nucleus, erased in the prediction too
    near_labels, near_previous = (with_square(a, slice(29, 34), slice(6, 11)) for a in (labels, previous))
    for new_labels, new_previous in ((far_labels, far_previous), (near_labels, near_previous)):
        new_weight = loss_weights(new_labels, "changed", previous=new_previous, margin=cfg.changed_margin)
        assert np.array_equal(new_weight, weight), "the same pixels count (and the same ones are corrected)"
    counted = weight > 0
    assert np.array_equal(labels_to_classes(far_labels)[counted], labels_to_classes(labels)[counted])
    assert not np.array_equal(labels_to_classes(near_labels)[counted], labels_to_classes(labels)[counted])
    reference = trained_state(image, labels, cfg, previous=[previous])
    far = trained_state(image, far_labels, cfg, previous=[far_previous])
    assert differing_tensors(far, reference) == [], "pixels left as predicted beyond the margin were learned"
    near = trained_state(image, near_labels, cfg, previous=[near_previous])
    assert differing_tensors(near, reference), "control: uncorrected pixels within the margin count"


def test_rgb_and_small_images_are_padded_with_a_message():
    image, label = discs(5, shape=(40, 48), n=4, rgb=True)
    small, small_label = discs(6, shape=(24, 24), n=2, rgb=True)
    cfg = dataclasses.replace(FAST, max_steps=2, patch_size=64, val_fraction=0.0)
    result, events = drain(iter_train(tiny_bundle(), [image, small], [label, small_label], cfg))
    assert result.steps == 2
    assert any("padded by reflection" in e.message for e in events)


def test_cancel_mid_run_raises_and_saves_nothing(model_dir):
    bundle = tiny_bundle()
    before = bundle.sha256
    images, labels = dataset(2)
    cfg = dataclasses.replace(FAST, max_steps=20, val_fraction=0.0)
    steps_seen = []

    def cancel() -> bool:
        return len(steps_seen) >= 3

    for gen in (
        iter_train(bundle, images, labels, cfg, cancel=cancel),
        fine_tune_and_save(bundle, images, labels, cfg, name="mine", cancel=cancel),
    ):
        steps_seen.clear()
        with pytest.raises(Cancelled):
            for event in gen:
                if event.done > 0:
                    steps_seen.append(event.done)
        assert steps_seen == [1, 2, 3]
        assert bundle.sha256 == before
    assert not (model_dir / "mine").exists() or not any((model_dir / "mine").glob("v*"))


def test_lineage_round_trips_through_the_store(model_dir):
    bundle = tiny_bundle()
    images, labels = dataset(3)
    cfg = dataclasses.replace(FAST, max_steps=3, val_every=3)
    result, events = drain(fine_tune_and_save(bundle, images, labels, cfg, name="mine"))
    assert "saved" in events[-1].message and result.saved.version == 1
    loaded = load_model("mine")
    assert loaded.sha256 == result.bundle.sha256
    lineage = loaded.metadata["lineage"]
    assert lineage["parent"] == {"name": "parent-model", "version": None, "sha256": bundle.sha256}
    assert lineage["settings"] == cfg.to_dict()
    assert TrainingConfig.from_dict(lineage["settings"]) == cfg
    assert lineage["annotation_mode"] == "full" and lineage["steps"] == 3
    assert [d["labels_sha256"] for d in lineage["data"]] == [d["labels_sha256"] for d in result.lineage["data"]]
    assert lineage["metrics_before"] == pytest.approx(result.metrics_before)
    assert lineage["metrics_after"] == pytest.approx(result.metrics_after)
    unvalidated = dataclasses.replace(cfg, val_fraction=0.0)  # a trained parent: no held-out gain needed to save
    again, _ = drain(fine_tune_and_save(loaded, images, labels, unvalidated, name="mine"))
    assert again.saved.version == 2
    assert load_model("mine@v2").metadata["lineage"]["parent"]["version"] == 1


# --------------------------------------------------------------------------- user errors


def test_error_cases():
    bundle = tiny_bundle()
    image, label = discs(0)
    cfg = FAST
    nan_image = image.astype(np.float32)
    nan_image[3, 3] = np.nan
    cases = [
        ([image], [np.zeros_like(label)], {}, "label at least one nucleus"),
        ([image], [np.full_like(label, 4)], {}, "label at least one nucleus"),
        ([image], [label[:, :32]], {}, "shape"),
        ([image[:12, :40]], [label[:12, :40]], {}, "at least 16"),
        ([nan_image], [label], {}, "NaN"),
        ([image, image], [label], {}, "2 images but 1 label"),
        ([image], [label], {"rois": [[(0, 0, 8, 8)], None]}, "entries in rois"),
        ([image[..., None].repeat(6, axis=-1)], [label], {}, "C <= 4"),
    ]
    for images, labels, kwargs, message in cases:
        with pytest.raises(UserInputError, match=message):
            run_to_end(iter_train(bundle, images, labels, cfg, **kwargs))
    deep = ModelBundle.new(ModelConfig(depth=4, base_channels=4), seed=0)
    with pytest.raises(UserInputError, match="batch_size >= 2"):
        run_to_end(iter_train(deep, [image], [label], dataclasses.replace(cfg, batch_size=1, patch_size=16)))
    background_only = np.zeros_like(label)
    background_only[50:60, 50:60] = 1
    rois_cfg = dataclasses.replace(cfg, annotation_mode="rois")
    with pytest.raises(UserInputError, match="no annotated nucleus"):
        run_to_end(iter_train(bundle, [image], [background_only], rois_cfg, rois=[[(0, 0, 20, 20)]]))


def test_trained_children_keep_the_parents_thresholds_and_confidence_filter():
    from napari_unet.core.config import PostprocessConfig

    parent = tiny_bundle()
    parent.postprocess = PostprocessConfig(foreground_threshold=0.6, seed_threshold=0.9, min_confidence=0.9)
    images, labels = dataset(2)
    result = run_to_end(iter_train(parent, images, labels, dataclasses.replace(FAST, max_steps=2, val_every=2)))
    assert result.bundle.postprocess == parent.postprocess
    assert result.bundle.postprocess is not None and parent.postprocess.min_confidence == 0.9


def test_a_model_with_a_distance_output_is_refused_with_a_clear_message():
    from napari_unet.core.config import ModelConfig
    from napari_unet.core.errors import UserInputError
    from napari_unet.core.models.bundle import ModelBundle

    bundle = ModelBundle.new(
        ModelConfig(depth=2, base_channels=4, out_channels=4, head="bg_interior_boundary_distance")
    )
    images, labels = dataset(1)
    with pytest.raises(UserInputError, match="3-class head"):
        run_to_end(iter_train(bundle, images, labels, FAST))


def test_validation_of_a_model_that_runs_with_flips_averages_them_as_inference_does(monkeypatch):
    from napari_unet.core.config import InferenceConfig
    from napari_unet.core.predict.planar import predict_probabilities
    from napari_unet.core.train.validation import ValWindow, window_logits_and_probabilities

    bundle = tiny_bundle()
    bundle.network.eval()
    image = np.random.default_rng(0).random((1, 48, 64), dtype=np.float32)
    region = (slice(8, 40), slice(4, 60))
    window = ValWindow(image, region, np.zeros((32, 56), np.uint32), np.zeros((32, 56)), np.ones((32, 56)))
    passes = []
    monkeypatch.setattr(bundle.network, "forward", counting(bundle.network.forward, passes))
    logits, averaged = window_logits_and_probabilities(bundle.network, window, torch.device("cpu"), False, flips=True)
    assert len(passes) == 4, "the loss's logits come from the unflipped pass: 4 passes, not 5"
    settings = InferenceConfig(device="cpu", tile_size=64, tta=True, amp=False)
    expected = predict_probabilities(bundle, image, settings)[(slice(None), *region)]
    np.testing.assert_allclose(averaged, expected, atol=1e-4)
    passes.clear()
    one_pass_logits, one_pass = window_logits_and_probabilities(
        bundle.network, window, torch.device("cpu"), False, flips=False
    )
    assert len(passes) == 1
    torch.testing.assert_close(one_pass_logits, logits)
    np.testing.assert_allclose(one_pass, torch.softmax(logits[0], dim=0).numpy(), atol=1e-6)
    assert np.abs(averaged - one_pass).max() > 1e-4, "a random network is not flip-invariant: the flips counted"


def counting(forward, calls: list):
    """``forward`` that appends its input's shape to ``calls``."""

    def counted(inputs):
        calls.append(tuple(inputs.shape))
        return forward(inputs)

    return counted


def test_a_trained_model_is_not_fine_tuned_when_nothing_can_be_held_out():
    from napari_unet.core.train.outcome import NOT_VALIDATED_OUTCOME, notice_of

    image, label = discs(4, n=2)  # too few nuclei to validate on
    cfg = dataclasses.replace(FAST, max_steps=3, learning_rate=1e-2)
    trained = ModelBundle.new(TINY, metadata={"name": "parent", "training": {"runs": 1}}, seed=0)
    result, events = drain(iter_train(trained, [image], [label], cfg))
    assert result.steps == 0 and result.kept_parent and result.stopped_reason == "no_validation"
    assert result.bundle.sha256 == trained.sha256  # the parent's own weights
    assert any(e.message.endswith(NOT_VALIDATED_OUTCOME) for e in events)
    assert notice_of(result).endswith(f"{NOT_VALIDATED_OUTCOME}.")
    assert notice_of(result).startswith("no validation possible: 2 annotated nuclei")
    untrained, events = drain(iter_train(tiny_bundle(), [image], [label], cfg))  # no training record: last weights
    assert untrained.steps == 3 and not untrained.kept_parent
    assert untrained.bundle.sha256 != tiny_bundle().sha256
    assert any(e.message.endswith("training on everything; keeping the last weights") for e in events)


def test_a_fine_tune_with_validation_switched_off_is_mixed_with_its_trained_parent(monkeypatch):
    from napari_unet.core.train import outcome

    image, label = discs(4, n=2)
    cfg = dataclasses.replace(FAST, max_steps=3, learning_rate=1e-2, val_fraction=0.0)
    trained = ModelBundle.new(TINY, metadata={"name": "parent", "training": {"runs": 1}}, seed=0)
    parent_state = {k: v.clone() for k, v in trained.network.state_dict().items()}
    monkeypatch.setattr(outcome, "UNVALIDATED_PARENT_SHARE", 1.0)  # all parent: the result must be the parent
    result, events = drain(iter_train(trained, [image], [label], cfg))
    assert result.steps == 3
    for key, value in result.bundle.network.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, parent_state[key])
    assert any(e.message.endswith("averaged with the starting model's") for e in events)

    mixed = outcome.blend_states(
        {"w": torch.ones(2), "n": torch.tensor(1)}, {"w": torch.zeros(2), "n": torch.tensor(5)}, 0.5
    )
    torch.testing.assert_close(mixed["w"], torch.full((2,), 0.5))
    assert int(mixed["n"]) == 5


def test_a_trained_parent_keeps_its_place_on_a_validation_tie_unless_outlines_improve():
    from napari_unet.core.train.loop import TrainingRun

    def loop_after_parent(bundle: ModelBundle) -> TrainingRun:
        loop = TrainingRun.__new__(TrainingRun)
        loop.bundle, loop.network, loop.cfg = bundle, bundle.network, FAST
        loop.best_score, loop.best_val_loss, loop.best_step, loop.step = 0.8, 0.5, 0, 10
        loop.best_metrics = {"val_ap50": 0.8, "val_ap75": 0.5, "val_loss": 0.5}
        loop.stale_validations, loop.best_state = 0, {}
        return loop

    tie_with_lower_loss = {"val_ap50": 0.8, "val_ap75": 0.5, "val_loss": 0.3}
    trained = ModelBundle.new(TINY, metadata={"name": "parent", "lineage": {"parent": {}}}, seed=0)
    loop = loop_after_parent(trained)
    loop._keep_if_best(tie_with_lower_loss)
    assert loop.best_step == 0, "a lower loss does not replace a trained parent"
    loop._keep_if_best({"val_ap50": 0.8, "val_ap75": 0.6, "val_loss": 0.6})
    assert loop.best_step == 10, "better outlines of the same nuclei do"
    loop = loop_after_parent(trained)
    loop._keep_if_best({"val_ap50": 0.9, "val_ap75": 0.1, "val_loss": 0.6})
    assert loop.best_step == 10, "so does a strictly better AP@0.5"
    untrained = loop_after_parent(tiny_bundle())
    untrained._keep_if_best(tie_with_lower_loss)
    assert untrained.best_step == 10, "from scratch, a tie with a lower loss moves on"


@pytest.mark.parametrize(
    ("trained_part", "kept_prefix"), [("decoder", "encoders."), ("encoder", ("upsamplers.", "decoders.", "head."))]
)
def test_trained_part_leaves_the_other_part_as_it_started(trained_part: str, kept_prefix: str | tuple[str, ...]):
    bundle = tiny_bundle()
    start = {name: value.clone() for name, value in bundle.network.state_dict().items()}
    images, labels = dataset(1)
    cfg = dataclasses.replace(FAST, max_steps=4, val_fraction=0.0, trained_part=trained_part)
    result, _ = drain(iter_train(bundle, images, labels, cfg))
    after = result.bundle.network.state_dict()
    kept = [name for name in start if name.startswith(kept_prefix)]
    trained = [name for name in start if not name.startswith(kept_prefix) and name.endswith("weight")]
    assert kept and trained
    assert all(torch.equal(after[name], start[name]) for name in kept), "weights and BatchNorm statistics kept"
    assert any(not torch.equal(after[name], start[name]) for name in trained)


def test_anchor_decay_pulls_the_trained_weights_towards_the_start():
    bundle = tiny_bundle()
    start = {name: p.detach().clone() for name, p in bundle.network.named_parameters()}
    images, labels = dataset(1)
    cfg = dataclasses.replace(FAST, max_steps=8, val_fraction=0.0, augment=False, schedule="constant")

    def distance_from_start(anchor_decay: float) -> float:
        result, _ = drain(iter_train(bundle, images, labels, dataclasses.replace(cfg, anchor_decay=anchor_decay)))
        moved = dict(result.bundle.network.named_parameters())
        return float(sum(torch.sum((moved[name] - weight) ** 2) for name, weight in start.items()) ** 0.5)

    free, anchored = distance_from_start(0.0), distance_from_start(100.0)
    assert 0 < anchored < 0.8 * free
    assert distance_from_start(1000.0) < 1e-6, "a pull of the whole way every step leaves the start"


@pytest.mark.parametrize(
    ("amp", "native_bf16", "expected"),
    [(True, True, torch.bfloat16), (True, False, torch.float32), (False, True, torch.float32)],
)
def test_cpu_training_runs_in_bfloat16_only_where_the_processor_computes_it_and_the_weights_stay_float32(
    monkeypatch, amp, native_bf16, expected
):
    from napari_unet.core.predict import runtime

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native_bf16)  # whatever this machine's CPU has
    seen = []

    def record(module, inputs, output):
        if module.training:
            seen.append((output.dtype, inputs[0].is_contiguous(memory_format=torch.channels_last)))

    bundle = tiny_bundle()
    bundle.network.register_forward_hook(record)  # the run trains a copy; the copy keeps the hook
    images, labels = dataset(2)
    cfg = dataclasses.replace(FAST, max_steps=3, val_fraction=0.0, amp=amp, device="cpu")
    result, _ = drain(iter_train(bundle, images, labels, cfg))
    assert result.steps == 3 and result.bundle.sha256 != bundle.sha256
    assert seen == [(expected, True)] * 3, "every training step: the expected precision, a channels-last batch"
    weights = [value for value in result.bundle.network.state_dict().values() if value.is_floating_point()]
    assert weights and all(value.dtype == torch.float32 for value in weights)
