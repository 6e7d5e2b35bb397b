"""The fine-tuning recipe: rehearsal on a replay set, the other-kinds check, the notice, keeping the parent."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_unet.core.errors import UserInputError
from napari_unet.core.models.bundle import save_model
from napari_unet.core.models.registry import bundled_model_dir, list_versions, load_model
from napari_unet.core.train import loop as training_loop
from napari_unet.core.train.fine_tune import fine_tune_and_save, iter_train, replay_train_images
from napari_unet.core.train.outcome import TrainResult, notice_of
from napari_unet.core.train.replay import (
    CHECK_EVERY,
    REPLAY_FILE,
    load_replay_set,
    replay_set_path,
    split_replay_set,
)
from tests.core.test_training import FAST, TINY, ModelBundle, discs, drain, tiny_bundle


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    monkeypatch.setenv("NAPARI_UNET_MODEL_DIR", str(folder))
    return folder


def bundle_with_replay_set(folder, crops: int = 8) -> ModelBundle:
    """A tiny trained-looking model saved with its own replay set of ``crops`` disc images."""
    bundle = ModelBundle.new(TINY, metadata={"name": "with-replay", "training": {"runs": 1}}, seed=0)
    save_model(bundle, folder)
    arrays = {}
    for index in range(crops):
        image, labels = discs(100 + index, shape=(80, 80), n=6)
        arrays[f"image_{index}"], arrays[f"labels_{index}"] = image, labels.astype(np.uint16)
    np.savez_compressed(folder / REPLAY_FILE, **arrays)
    return load_model(folder)


def test_the_bundled_default_model_ships_a_replay_set_its_children_inherit():
    default = load_model("default")
    path = replay_set_path(default)
    assert path == bundled_model_dir("default") / REPLAY_FILE
    images, labels = load_replay_set(path)
    assert len(images) >= 8 and all(image.shape[:2] == label.shape for image, label in zip(images, labels, strict=True))
    child = ModelBundle(default.network, default.config, default.normalize, default.postprocess, {**default.metadata})
    child.metadata.pop("name")
    assert replay_set_path(child) == path  # a fine-tuned child (no folder of its own yet) finds its parent's set


def test_rehearsal_and_check_crops_never_overlap():
    images = [np.full((4, 4), i, np.uint8) for i in range(10)]
    labels = [np.zeros((4, 4), np.uint16) for _ in range(10)]
    (rehearse, _), (check, _) = split_replay_set(images, labels)
    rehearse_ids, check_ids = {int(a[0, 0]) for a in rehearse}, {int(a[0, 0]) for a in check}
    assert not rehearse_ids & check_ids and rehearse_ids | check_ids == set(range(10))
    assert check_ids == {i for i in range(10) if i % CHECK_EVERY == CHECK_EVERY - 1}


def test_replay_patches_are_drawn_at_the_configured_share(tmp_path):
    bundle = bundle_with_replay_set(tmp_path / "model")
    cfg = dataclasses.replace(FAST, replay_fraction=0.5)
    replay, check = replay_train_images(bundle, cfg, 64)
    assert len(replay) == 6 and len(check[0]) == 2  # 8 crops: 2 kept for the check
    none, _ = replay_train_images(bundle, dataclasses.replace(cfg, replay_fraction=0.0), 64)
    assert none == []
    run = training_loop.TrainingRun.__new__(training_loop.TrainingRun)
    run.cfg, run.patch, run.rng, run.replay_set = cfg, 64, np.random.default_rng(0), replay
    user = replay_train_images(bundle, cfg, 64)[0][:1]
    user[0] = dataclasses.replace(user[0], image=np.full_like(user[0].image, 7.0))  # tell the user's patches apart
    run.train_set, run.image_probs = user, np.array([1.0])
    run.cfg = dataclasses.replace(cfg, augment=False)
    drawn_from_user = [float(run._sample()[0][0, 0, 0]) == 7.0 for _ in range(400)]
    assert 0.4 < 1 - np.mean(drawn_from_user) < 0.6


def test_a_fine_tune_with_rehearsal_says_so_and_checks_other_kinds(tmp_path):
    bundle = bundle_with_replay_set(tmp_path / "model")
    images, labels = zip(*(discs(seed, shape=(64, 128), n=14) for seed in range(2)), strict=True)
    cfg = dataclasses.replace(FAST, max_steps=4, replay_fraction=0.5, learning_rate=1e-2)
    result, events = drain(iter_train(bundle, list(images), list(labels), cfg))
    assert any(e.message.startswith("rehearsal: 50% of the patches come from 6 crops") for e in events)
    assert result.lineage["settings"]["replay_fraction"] == 0.5
    if result.best_step > 0:
        check = result.replay_check
        assert check is not None and check["crops"] == 2 and 0.0 <= check["before"] <= 1.0
        assert "other kinds (2 reference crops)" in notice_of(result)
    else:
        assert result.kept_parent and result.replay_check is None


def scripted_validation(scores_by_step: dict[int, float]):
    """A stand-in for TrainingRun._score_validation returning fixed AP@0.5 per step (the real keep-best rule runs)."""

    def score(self) -> dict[str, float]:
        ap = scores_by_step.get(self.step, 0.1)
        scores = {"val_ap50": ap, "val_ap75": ap / 2, "val_f1": ap, "val_loss": 1.0 - ap}
        self.last_val = scores
        self._keep_if_best(scores)
        return scores

    return score


def test_a_fine_tune_that_does_not_beat_its_parent_saves_nothing_and_says_why(model_dir, monkeypatch):
    monkeypatch.setattr(training_loop.TrainingRun, "_score_validation", scripted_validation({0: 0.8}))
    parent = ModelBundle.new(TINY, metadata={"name": "parent", "training": {"runs": 1}}, seed=0)
    images, labels = zip(*(discs(seed, shape=(64, 128), n=14) for seed in range(2)), strict=True)
    result, events = drain(fine_tune_and_save(parent, list(images), list(labels), FAST, name="mine"))
    assert result.kept_parent and result.saved is None
    with pytest.raises(UserInputError, match="no user model named 'mine'"):
        list_versions("mine")
    assert any(e.message.startswith("no new version saved: the fine-tuned weights did not beat") for e in events)
    for key, value in result.bundle.network.state_dict().items():
        torch.testing.assert_close(value, parent.network.state_dict()[key])


def test_a_fine_tune_that_beats_its_parent_is_saved_with_before_and_after(model_dir, monkeypatch):
    monkeypatch.setattr(training_loop.TrainingRun, "_score_validation", scripted_validation({0: 0.5, 3: 0.7}))
    parent = ModelBundle.new(TINY, metadata={"name": "parent", "training": {"runs": 1}}, seed=0)
    images, labels = zip(*(discs(seed, shape=(64, 128), n=14) for seed in range(2)), strict=True)
    result, _ = drain(fine_tune_and_save(parent, list(images), list(labels), FAST, name="mine"))
    assert result.best_step == 3 and result.saved is not None and len(list_versions("mine")) == 1
    assert "held-out corrections AP@0.5 0.500 before -> 0.700 after" in notice_of(result)


@pytest.mark.parametrize(("after", "warned"), [(0.70, True), (0.78, False)])
def test_the_notice_warns_when_other_kinds_got_worse(after, warned):
    result = TrainResult(
        bundle=tiny_bundle(),
        history=[],
        best_score=0.9,
        stopped_reason="steps",
        best_step=5,
        metrics_before={"val_ap50": 0.6},
        metrics_after={"val_ap50": 0.9},
        lineage={"replay_check": {"before": 0.80, "after": after, "crops": 9}},
    )
    text = notice_of(result)
    assert "0.600 before -> 0.900 after" in text and f"0.800 -> {after:.3f}" in text
    assert text.count("Warning: it got worse on other kinds") == int(warned)


def test_intermediate_validation_stays_within_its_share_of_a_time_budget(monkeypatch):
    run = training_loop.TrainingRun.__new__(training_loop.TrainingRun)
    run.cfg = dataclasses.replace(FAST, max_seconds=40.0, max_steps=None, val_every=5)
    run.val_windows, run.step = [object()], 10
    clock = {"now": 20.0}
    monkeypatch.setattr(run, "_elapsed", lambda: clock["now"])
    run.validation_seconds, run.last_validation_cost = 1.0, 1.0
    assert run._validation_due()  # 2 s of 21 s: under 15%
    run.validation_seconds = 2.5
    assert not run._validation_due()  # 3.5 s of 21 s: over 15%, skipped
    run.step = 11
    run.validation_seconds = 0.0
    assert not run._validation_due()  # not a validation step
    run.step, run.cfg = 10, dataclasses.replace(run.cfg, max_seconds=None, max_steps=50)
    run.validation_seconds = 10.0
    assert run._validation_due()  # a step budget: validation costs no training steps


def test_thresholds_are_rechosen_on_the_held_out_corrections_only_when_strictly_better(monkeypatch):
    from napari_unet.core.config import PostprocessConfig
    from napari_unet.core.train import validation

    _, label = discs(8, shape=(64, 64), n=6)
    inside = ndimage_inner(label)
    probabilities = np.zeros((3, *label.shape), np.float32)
    probabilities[0] = np.where(label > 0, 0.45, 0.95)  # foreground 0.55 inside the nuclei, 0.05 outside
    probabilities[1] = np.where(inside, 0.55, 0.0)
    probabilities[2] = np.where((label > 0) & ~inside, 0.55, 0.05)
    window = validation.ValWindow(np.zeros((1, 64, 64), np.float32), (slice(0, 64), slice(0, 64)), label, label, label)
    monkeypatch.setattr(validation, "window_logits_and_probabilities", lambda *args: (None, probabilities))
    strict = PostprocessConfig(foreground_threshold=0.6, seed_threshold=0.95, min_size=0)
    chosen, scores = validation.rechoose_thresholds(None, [window], strict, flips=False)
    assert scores["before"] == 0.0 and scores["after"] > 0.8
    assert chosen.foreground_threshold <= 0.5 and chosen.seed_threshold <= 0.5 and chosen.min_size == 0
    kept, scores = validation.rechoose_thresholds(None, [window], chosen, flips=False)
    assert kept is chosen and scores["before"] == scores["after"]


def ndimage_inner(label: np.ndarray) -> np.ndarray:
    """Pixels of ``label`` objects two or more pixels from their edge."""
    from scipy import ndimage

    return ndimage.binary_erosion(label > 0, iterations=2) & (label > 0)
