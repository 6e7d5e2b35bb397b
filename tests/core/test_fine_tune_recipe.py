"""The fine-tuning recipe: rehearsal on a replay set, the other-kinds check, the notice, keeping the parent."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from napari_unet.core.config import TrainingConfig
from napari_unet.core.errors import UserInputError
from napari_unet.core.models.bundle import save_model
from napari_unet.core.models.registry import bundled_model_dir, list_versions, load_model, save_version
from napari_unet.core.train import guard
from napari_unet.core.train import loop as training_loop
from napari_unet.core.train.fine_tune import (
    FINE_TUNE_LEARNING_RATE,
    FINE_TUNE_MAX_EPOCHS,
    fine_tune_and_save,
    fine_tune_recipe,
    iter_train,
    replay_train_images,
)
from napari_unet.core.train.outcome import TrainResult, kept_parent_reason, notice_of, required_held_out_gain
from napari_unet.core.train.replay import (
    CHECK_EVERY,
    REPLAY_FILE,
    CheckScore,
    Crops,
    load_replay_set,
    replay_check_flags,
    replay_set_path,
    split_replay_set,
)
from tests.core.test_training import FAST, TINY, ModelBundle, discs, drain


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
    images, labels, groups = load_replay_set(path)
    assert len(images) >= 8 and all(image.shape[:2] == label.shape for image, label in zip(images, labels, strict=True))
    assert set(groups) == {"fluorescence", "colour", "brightfield", "tissue"}  # from replay.json
    child = ModelBundle(default.network, default.config, default.normalize, default.postprocess, {**default.metadata})
    child.metadata.pop("name")
    assert replay_set_path(child) == path  # a fine-tuned child (no folder of its own yet) finds its parent's set


def test_rehearsal_and_check_crops_never_overlap():
    images = [np.full((4, 4), i, np.uint8) for i in range(10)]
    labels = [np.zeros((4, 4), np.uint16) for _ in range(10)]
    rehearse, check = split_replay_set(Crops(images, labels, ["reference"] * 10))
    rehearse_ids, check_ids = {int(a[0, 0]) for a in rehearse.images}, {int(a[0, 0]) for a in check.images}
    assert not rehearse_ids & check_ids and rehearse_ids | check_ids == set(range(10))
    assert check_ids == {i for i in range(10) if i % CHECK_EVERY == CHECK_EVERY - 1}


def test_marked_check_crops_are_split_off_and_unmarked_sets_use_every_fourth(tmp_path):
    images = [np.full((4, 4), i, np.uint8) for i in range(8)]
    labels = [np.zeros((4, 4), np.uint16) for _ in range(8)]
    marks = [True, False, False, False, False, True, False, False]
    rehearse, check = split_replay_set(Crops(images, labels, ["reference"] * 8), marks)
    assert [int(a[0, 0]) for a in check.images] == [0, 5]
    assert [int(a[0, 0]) for a in rehearse.images] == [1, 2, 3, 4, 6, 7]
    with pytest.raises(ValueError, match="3 check marks for 8 crops"):
        split_replay_set(Crops(images, labels, ["reference"] * 8), marks[:3])
    path = tmp_path / REPLAY_FILE
    every_fourth = [i % CHECK_EVERY == CHECK_EVERY - 1 for i in range(8)]
    assert replay_check_flags(path, 8) == every_fourth  # no replay.json
    crops = [{"group": "reference", "check": mark} for mark in marks]
    path.with_suffix(".json").write_text(json.dumps({"crops": crops}))
    assert replay_check_flags(path, 8) == marks
    assert replay_check_flags(path, 9) == [i % CHECK_EVERY == CHECK_EVERY - 1 for i in range(9)]  # another set
    path.with_suffix(".json").write_text(json.dumps({"crops": [{"group": "reference"}] * 8}))
    assert replay_check_flags(path, 8) == every_fourth  # made before crops were marked


def test_a_fine_tune_checks_with_the_crops_its_replay_set_marks(tmp_path):
    bundle = bundle_with_replay_set(tmp_path / "model")
    path = replay_set_path(bundle)
    marked = [0, 5]
    crops = [{"group": "reference", "check": i in marked} for i in range(8)]
    path.with_suffix(".json").write_text(json.dumps({"crops": crops}))
    everything = load_replay_set(path)
    rehearse, check = replay_train_images(bundle, dataclasses.replace(FAST, replay_fraction=0.5), 64)
    assert len(rehearse) == 6
    assert [c.tobytes() for c in check.images] == [everything.images[i].tobytes() for i in marked]


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
        assert "Other kinds (2 reference crops)" in notice_of(result)
    else:
        assert result.kept_parent and result.replay_check is None


def tinted(image: np.ndarray) -> np.ndarray:
    """A colour version of a grey disc image: its three channels differ."""
    return np.stack([image, image // 2, 255 - image], axis=-1).astype(np.uint8)


def two_branch_model_with_replay_set(folder) -> ModelBundle:
    """A tiny grey/colour model saved with 4 grey and 4 colour replay crops (one of each kept for the check)."""
    config = dataclasses.replace(TINY, branches="gray_colour", in_channels=3)
    bundle = ModelBundle.new(config, metadata={"name": "two-branch"}, seed=0)  # untrained: its child is kept
    save_model(bundle, folder)
    arrays = {}
    for index in range(8):
        image, labels = discs(200 + index, shape=(80, 80), n=6)
        arrays[f"image_{index}"] = image if index < 4 else tinted(image)
        arrays[f"labels_{index}"] = labels.astype(np.uint16)
    np.savez_compressed(folder / REPLAY_FILE, **arrays)
    return load_model(folder)


@pytest.mark.parametrize(("colour", "trained", "kept"), [(False, "gray", "colour"), (True, "colour", "gray")])
def test_a_two_branch_model_fine_tuned_on_one_kind_keeps_the_other_branch_exactly(tmp_path, colour, trained, kept):
    bundle = two_branch_model_with_replay_set(tmp_path / "model")
    pairs = [discs(seed, shape=(64, 128), n=14) for seed in range(2)]
    images = [tinted(image) if colour else image for image, _ in pairs]
    cfg = dataclasses.replace(FAST, max_steps=4, replay_fraction=0.5, learning_rate=1e-2, val_every=100)
    result, events = drain(iter_train(bundle, images, [labels for _, labels in pairs], cfg))
    before, after = bundle.network.state_dict(), result.bundle.network.state_dict()
    assert result.lineage["frozen_branches"] == [kept]
    assert all(torch.equal(before[key], after[key]) for key in before if key.startswith(f"{kept}."))
    changed = [key for key in before if key.startswith(f"{trained}.") and not torch.equal(before[key], after[key])]
    assert changed, "the branch the images reach should have trained"
    words = {"gray": "grey", "colour": "colour"}
    assert any(e.message.startswith(f"training the {words[trained]} network only") for e in events)
    assert any(e.message.startswith("rehearsal: 50% of the patches come from 3 crops") for e in events)


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
    saved_nothing = "no new version saved: the fine-tuned weights did not end up better"
    assert any(e.message.startswith(saved_nothing) for e in events)
    for key, value in result.bundle.network.state_dict().items():
        torch.testing.assert_close(value, parent.network.state_dict()[key])


def test_the_weights_a_fine_tune_refused_are_saved_apart_only_when_asked(model_dir, monkeypatch):
    # best at step 3 (0.8) but the last checks average 0.55 against 0.5: the parent is kept, the step-3 weights refused
    monkeypatch.setattr(training_loop.TrainingRun, "_score_validation", scripted_validation({0: 0.5, 3: 0.8, 6: 0.3}))
    parent = ModelBundle.new(TINY, metadata={"name": "parent", "training": {"runs": 1}}, seed=0)
    images, labels = zip(*(discs(seed, shape=(64, 128), n=14) for seed in range(2)), strict=True)
    cfg = dataclasses.replace(FAST, learning_rate=1e-2)
    result, _ = drain(fine_tune_and_save(parent, list(images), list(labels), cfg, name="mine"))
    assert result.kept_parent and result.saved is None and result.refused is not None
    with pytest.raises(UserInputError, match="no user model named 'mine'"):
        list_versions("mine")
    with pytest.raises(UserInputError, match="no user model named 'mine-refused'"):
        list_versions("mine-refused")  # nothing is saved apart unless the user asks (panel button, CLI flag)
    save_version(result.refused, "mine-refused", result.refused.metadata["lineage"])  # what the panel's button does
    assert len(list_versions("mine-refused")) == 1
    refused = load_model("mine-refused")
    assert refused.metadata["lineage"]["refused"]["step"] == refused.metadata["lineage"]["best_step"] == 3
    assert refused.metadata["lineage"]["metrics"]["val_ap50"] == 0.8  # its own held-out check, not the parent's 0.5
    assert "did not end up better than the starting model" in refused.metadata["lineage"]["refused"]["reason"]
    start, kept = parent.network.state_dict(), result.bundle.network.state_dict()
    moved = refused.network.state_dict()
    assert all(torch.equal(kept[key], start[key]) for key in start)  # what the run returns: the parent, exactly
    assert any(not torch.equal(moved[key], start[key]) for key in start if start[key].is_floating_point())


def test_a_fine_tune_that_beats_its_parent_is_saved_with_before_and_after(model_dir, monkeypatch):
    monkeypatch.setattr(training_loop.TrainingRun, "_score_validation", scripted_validation({0: 0.5, 3: 0.8, 6: 0.78}))
    parent = ModelBundle.new(TINY, metadata={"name": "parent", "training": {"runs": 1}}, seed=0)
    images, labels = zip(*(discs(seed, shape=(64, 128), n=14) for seed in range(2)), strict=True)
    result, _ = drain(fine_tune_and_save(parent, list(images), list(labels), FAST, name="mine"))
    assert result.best_step == 3 and result.saved is not None and len(list_versions("mine")) == 1
    assert "held-out corrections AP@0.5 0.500 before -> 0.800 after" in notice_of(result)


@pytest.mark.parametrize(
    ("nuclei", "start", "late", "advised"),
    [(14, 0.611, 0.740, True), (14, 0.611, 0.600, False), (100, 0.708, 0.757, False)],
)
def test_a_refusal_on_few_held_out_nuclei_says_more_corrections_lower_the_bar(nuclei, start, late, advised):
    """A gain the checks saw on few nuclei (0.13 on 14: 0.143 needed) gets the advice; no gain or 100 nuclei do not."""
    decision = {"start": start, "last_validations": late, "required_gain": required_held_out_gain(nuclei)}
    reason = kept_parent_reason({**decision, "nuclei": nuclei, "flips": False}, start)
    assert reason.startswith("the fine-tuned weights did not end up better than the starting model")
    advice = f"The checks gained 0.13, but on only {nuclei} held-out nuclei that is not yet evidence: the bar falls to"
    assert (advice in reason) is advised
    assert ("0.05 from 40 held-out nuclei on. Correct more nuclei in images like these" in reason) is advised


def scripted_check_scores(monkeypatch, scores: list[float | CheckScore]) -> list[CheckScore]:
    """Make the guard's other-kinds scores come from ``scores`` in call order (parent, child, averages...)."""
    remaining = [score if isinstance(score, CheckScore) else CheckScore(score) for score in scores]
    monkeypatch.setattr(guard, "check_score", lambda bundle, crops: remaining.pop(0))
    return remaining


def guarded_fine_tune(tmp_path, monkeypatch, check_scores: list[float]) -> tuple[TrainResult, ModelBundle]:
    """A 4-step fine-tune of a model with a replay set, validated 0.4 -> 0.7, other-kinds scores scripted."""
    monkeypatch.setattr(training_loop.TrainingRun, "_score_validation", scripted_validation({0: 0.4, 4: 0.7}))
    monkeypatch.setattr(
        training_loop.TrainingRun, "_scores", lambda self, flips=None: {"val_ap50": 0.6, "val_loss": 0.5}
    )
    bundle = bundle_with_replay_set(tmp_path / "model")
    scripted_check_scores(monkeypatch, check_scores)
    images, labels = zip(*(discs(seed, shape=(64, 128), n=14) for seed in range(2)), strict=True)
    cfg = dataclasses.replace(FAST, max_steps=4, val_every=4, replay_fraction=0.5, learning_rate=1e-2)
    result, _ = drain(iter_train(bundle, list(images), list(labels), cfg))
    return result, bundle


def test_a_fine_tune_that_forgot_other_kinds_is_averaged_with_its_parent(tmp_path, monkeypatch):
    # held-out + other kinds: child 0.7 + 0.60, averages 0.6 + 0.79 and 0.6 + 0.77, parent 0.4 + 0.80
    result, parent = guarded_fine_tune(tmp_path, monkeypatch, [0.80, 0.60, 0.79, 0.77])
    check = result.replay_check
    assert check == {"before": 0.80, "after": 0.79, "crops": 2, "forgot": 0.60, "parent_share": 0.5}
    assert result.best_step == 4 and not result.kept_parent and result.lineage["averaged_with_parent"]
    assert result.metrics_after["val_ap50"] == 0.6  # the average's held-out score
    trained = result.bundle.network.state_dict()
    start = parent.network.state_dict()
    assert any(not torch.equal(trained[key], start[key]) for key in start if start[key].is_floating_point())
    text = notice_of(result)
    assert "0.400 before -> 0.600 after" in text and "alone scored 0.600 there" in text and "(50% of it)" in text
    assert "Warning" not in text


def test_a_fine_tune_that_gained_little_and_forgot_much_gives_way_to_its_parent(tmp_path, monkeypatch):
    # child 0.7 + 0.50, averages 0.6 + 0.60 and 0.6 + 0.65: all lost more than 0.05, so the parent (0.4 + 0.80)
    result, parent = guarded_fine_tune(tmp_path, monkeypatch, [0.80, 0.50, 0.60, 0.65])
    assert result.kept_parent and result.best_step == 0 and result.replay_check["kept_parent"]
    for key, value in result.bundle.network.state_dict().items():
        torch.testing.assert_close(value, parent.network.state_dict()[key])
    assert "lost too much on other kinds of images" in notice_of(result)
    assert "(2 reference crops: AP@0.5 0.800 -> 0.500)" in notice_of(result)


def test_a_fine_tune_that_gained_much_but_still_forgot_beyond_the_limit_is_not_kept(tmp_path, monkeypatch):
    # child 0.7 + 0.70 (best total), averages 0.6 + 0.72 and 0.6 + 0.74: none within 0.05 of 0.80, so the parent
    result, parent = guarded_fine_tune(tmp_path, monkeypatch, [0.80, 0.70, 0.72, 0.74])
    assert result.kept_parent and result.replay_check["kept_parent"] and "warning" not in result.replay_check
    for key, value in result.bundle.network.state_dict().items():
        torch.testing.assert_close(value, parent.network.state_dict()[key])
    assert "AP@0.5 0.800 -> 0.700), even averaged with the starting model" in notice_of(result)


def test_a_fine_tune_within_the_forgetting_limit_is_kept_as_trained(tmp_path, monkeypatch):
    result, _ = guarded_fine_tune(tmp_path, monkeypatch, [0.80, 0.76])
    assert result.replay_check == {"before": 0.80, "after": 0.76, "crops": 2}
    assert result.metrics_after["val_ap50"] == 0.7 and not result.lineage["averaged_with_parent"]
    assert "Other kinds (2 reference crops): AP@0.5 0.800 -> 0.760." in notice_of(result)


@pytest.mark.parametrize(("tissue_after", "guarded"), [(0.60, True), (0.72, False)])
def test_the_guard_steps_in_when_one_kind_lost_too_much_even_if_the_pool_did_not(
    tmp_path, monkeypatch, tissue_after, guarded
):
    """Pooled 0.80 -> 0.78 is within the limit; the tissue crops 0.80 -> 0.60 are not (0.10 per kind), 0.72 is."""
    parent = CheckScore(0.80, {"fluorescence": 0.80, "tissue": 0.80})
    child = CheckScore(0.78, {"fluorescence": 0.82, "tissue": tissue_after})
    average = CheckScore(0.79, {"fluorescence": 0.80, "tissue": 0.75})
    result, _ = guarded_fine_tune(tmp_path, monkeypatch, [parent, child, average, average])
    check = result.replay_check
    assert ("forgot" in check) is guarded  # the averages and the parent were scored too
    if guarded:  # the child (tissue -0.20) is out; the averages (0.6 + 0.79, a tie: more parent wins) beat the parent
        assert check["parent_share"] == 0.75 and "warning" not in check
        assert check["groups"] == {"fluorescence": [0.80, 0.80], "tissue": [0.80, 0.75]}
        assert "alone scored 0.780 there, so they were averaged" in notice_of(result)
    else:
        assert check == {
            "before": 0.80,
            "after": 0.78,
            "crops": 2,
            "groups": {"fluorescence": [0.80, 0.82], "tissue": [0.80, 0.72]},
        }


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


@pytest.mark.parametrize(("offset", "kept"), [(-0.4, True), (-0.01, True), (0.01, False)])
def test_a_held_out_improvement_that_does_not_last_to_the_end_keeps_the_parent(model_dir, monkeypatch, offset, kept):
    """Best at step 2 (0.9 against the parent's 0.5); the last three validations then decide.

    They must beat the parent by the gain the held-out nuclei need (``required_held_out_gain``):
    ``offset`` is how far above that gain they end.
    """

    def score(self) -> dict[str, float]:
        required = required_held_out_gain(self.held_out_nuclei)
        ap = {0: 0.5, 2: 0.9}.get(self.step, 0.5 + required + offset)
        scores = {"val_ap50": ap, "val_ap75": ap / 2, "val_f1": ap, "val_loss": 1.0 - ap}
        self.last_val = scores
        self._keep_if_best(scores)
        return scores

    monkeypatch.setattr(training_loop.TrainingRun, "_score_validation", score)
    parent = ModelBundle.new(TINY, metadata={"name": "parent", "training": {"runs": 1}}, seed=0)
    images, labels = zip(*(discs(seed, shape=(64, 128), n=14) for seed in range(2)), strict=True)
    cfg = dataclasses.replace(FAST, max_steps=8, val_every=2)
    result, _ = drain(fine_tune_and_save(parent, list(images), list(labels), cfg, name="mine"))
    decision = result.lineage["held_out_decision"]
    assert decision["required_gain"] == pytest.approx(required_held_out_gain(decision["nuclei"]))
    late = 0.5 + decision["required_gain"] + offset
    assert result.kept_parent is kept
    assert decision["last_validations"] == pytest.approx(late)  # steps 4, 6 and 8
    if kept:
        assert result.saved is None and result.metrics_after["val_ap50"] == 0.5
        assert f"their last validations averaged {late:.3f}); the starting model is kept" in notice_of(result)
        assert f"on {decision['nuclei']} held-out nuclei" in notice_of(result)
    else:
        assert result.saved is not None and result.best_step == 2


@pytest.mark.parametrize(("nuclei", "gain"), [(1, 2.0), (12, 2 / 12), (24, 2 / 24), (40, 0.05), (500, 0.05)])
def test_the_gain_a_child_needs_is_two_held_out_nuclei_and_at_least_five_points(nuclei, gain):
    assert required_held_out_gain(nuclei) == pytest.approx(gain)


@pytest.mark.parametrize(("blend_ap", "blended"), [(0.75, True), (0.6, False)])
def test_parent_share_keeps_the_average_with_the_parent_unless_it_validates_worse(monkeypatch, blend_ap, blended):
    monkeypatch.setattr(training_loop.TrainingRun, "_score_validation", scripted_validation({0: 0.4, 3: 0.7, 6: 0.7}))
    monkeypatch.setattr(
        training_loop.TrainingRun, "_scores", lambda self, flips=None: {"val_ap50": blend_ap, "val_loss": 0.4}
    )
    parent = ModelBundle.new(TINY, metadata={"name": "parent", "training": {"runs": 1}}, seed=0)
    images, labels = zip(*(discs(seed, shape=(64, 128), n=14) for seed in range(2)), strict=True)
    cfg = dataclasses.replace(FAST, parent_share=0.5)
    result, _ = drain(iter_train(parent, list(images), list(labels), cfg))
    assert result.lineage["averaged_with_parent"] is blended
    assert result.history[-1]["blend_val_ap50"] == blend_ap
    assert result.metrics_after["val_ap50"] == (blend_ap if blended else 0.7)


def test_the_recipe_for_a_trained_2d_parent_and_only_for_it():
    trained = ModelBundle.new(TINY, metadata={"name": "parent", "training": {"runs": 1}}, seed=0)
    recipe = fine_tune_recipe(trained, TrainingConfig())
    assert (recipe.learning_rate, recipe.max_epochs, recipe.freeze_batch_norm) == (
        FINE_TUNE_LEARNING_RATE,
        FINE_TUNE_MAX_EPOCHS,
        True,
    )
    assert recipe.replay_fraction == 0.25
    assert fine_tune_recipe(trained, TrainingConfig(learning_rate=1e-3), keep_learning_rate=True).learning_rate == 1e-3
    scratch = ModelBundle.new(TINY, metadata={"name": "new"}, seed=0)
    assert fine_tune_recipe(scratch, TrainingConfig()) == TrainingConfig()
    volume = ModelBundle.new(dataclasses.replace(TINY, spatial_dims=3), metadata={"training": {"runs": 1}}, seed=0)
    assert not fine_tune_recipe(volume, TrainingConfig()).freeze_batch_norm


def test_a_fine_tune_with_the_recipe_keeps_the_batch_norm_statistics_and_trains_the_weights():
    parent = ModelBundle.new(TINY, metadata={"name": "parent", "training": {"runs": 1}}, seed=0)
    images, labels = zip(*(discs(seed, shape=(64, 128), n=14) for seed in range(2)), strict=True)
    recipe = fine_tune_recipe(parent, FAST)
    cfg = dataclasses.replace(recipe, max_steps=4, val_fraction=0.0, learning_rate=1e-2)  # unvalidated: kept
    result, _ = drain(iter_train(parent, list(images), list(labels), cfg))
    before, after = parent.network.state_dict(), result.bundle.network.state_dict()
    statistics = [key for key in before if key.endswith(("running_mean", "running_var"))]
    assert statistics and all(torch.equal(before[key], after[key]) for key in statistics)
    assert any(not torch.equal(before[key], after[key]) for key in before if key.endswith(".weight"))


@pytest.mark.parametrize("quick", [True, False])
def test_checks_during_training_skip_the_flips_and_the_reported_scores_use_them(monkeypatch, quick):
    """A model that runs with flips: quick checks score one pass; before/after are then scored as it runs."""
    from napari_unet.core.predict.runtime import FLIPS_METADATA_KEY

    real = training_loop.window_logits_and_probabilities
    flips_used: list[bool] = []

    def recording(network, window, device, amp, flips):
        flips_used.append(flips)
        return real(network, window, device, amp, flips)

    monkeypatch.setattr(training_loop, "window_logits_and_probabilities", recording)
    metadata = {"name": "parent", "training": {"runs": 1}, FLIPS_METADATA_KEY: True}
    parent = ModelBundle.new(TINY, metadata=metadata, seed=0)
    images, labels = zip(*(discs(seed, shape=(64, 128), n=14) for seed in range(2)), strict=True)
    cfg = dataclasses.replace(FAST, max_steps=4, val_every=2, quick_checks=quick)
    result, _ = drain(iter_train(parent, list(images), list(labels), cfg))
    windows = 2  # a strip of each image
    checks = 3 * windows  # steps 0, 2 and 4
    assert result.lineage["held_out_decision"]["flips"] is (not quick)
    if not quick:
        assert flips_used == [True] * checks
        return
    fine_tuned = not result.kept_parent or result.refused is not None  # kept, or refused and set aside
    reports = (2 if fine_tuned else 1) * windows  # the parent, and the fine-tuned weights as the model runs
    assert flips_used == [False] * checks + [True] * reports
    assert result.lineage["metrics_before"] == result.metrics_before
    assert result.history[0]["val_ap50"] == result.lineage["held_out_decision"]["start"]


def fine_tune_with_flips(monkeypatch, scores) -> tuple[TrainResult, ModelBundle]:
    """A 6-step fine-tune (checks every 2 steps) of a parent that segments with flips; held-out scores by ``scores``."""
    from napari_unet.core.predict.runtime import FLIPS_METADATA_KEY

    monkeypatch.setattr(training_loop.TrainingRun, "_scores", scores)
    metadata = {"name": "parent", "training": {"runs": 1}, FLIPS_METADATA_KEY: True}
    parent = ModelBundle.new(TINY, metadata=metadata, seed=0)
    images, labels = zip(*(discs(seed, shape=(64, 128), n=14) for seed in range(2)), strict=True)
    cfg = dataclasses.replace(FAST, max_steps=6, val_every=2, learning_rate=1e-2)
    result, _ = drain(iter_train(parent, list(images), list(labels), cfg))
    return result, parent


@pytest.mark.parametrize(("as_it_runs", "kept_parent"), [(0.5, True), (0.9, False)])
def test_a_gain_seen_only_without_the_flips_keeps_the_parent(monkeypatch, as_it_runs, kept_parent):
    """Quick checks say 0.5 -> 0.9; the child is kept only if it also gains scored with the model's flips."""

    def scores(self, flips=None) -> dict[str, float]:
        changed = any(not torch.equal(value, self.start_state[key]) for key, value in self.network.state_dict().items())
        trained_ap = as_it_runs if flips else 0.9
        ap = trained_ap if changed else 0.5
        self.last_val = {"val_ap50": ap, "val_ap75": ap, "val_f1": ap, "val_loss": 1.0 - ap}
        return self.last_val

    result, _ = fine_tune_with_flips(monkeypatch, scores)
    assert result.lineage["held_out_decision"]["last_validations"] == pytest.approx(0.9)
    assert result.kept_parent is kept_parent
    assert result.metrics_before["val_ap50"] == 0.5
    assert result.metrics_after["val_ap50"] == (0.5 if kept_parent else 0.9)
    assert result.lineage["held_out_decision"]["with_flips"] == [0.5, as_it_runs]
    if kept_parent:
        quoted = "scored with the model's flips, as it segments, the fine-tuned weights went only from 0.500 to 0.500"
        assert quoted in notice_of(result)
        assert result.refused.metadata["lineage"]["metrics"]["val_ap50"] == as_it_runs  # not the quick checks' 0.9


def test_refused_weights_are_scored_as_the_model_runs_and_the_parent_is_returned(monkeypatch):
    """Quick checks 0.5 -> 0.9 at step 2, then 0.1: refused. Set aside with their score as the model runs (0.7)."""

    def scores(self, flips=None) -> dict[str, float]:
        changed = any(not torch.equal(value, self.start_state[key]) for key, value in self.network.state_dict().items())
        ap = (0.7 if flips else {2: 0.9}.get(self.step, 0.1)) if changed else 0.5
        self.last_val = {"val_ap50": ap, "val_ap75": ap, "val_f1": ap, "val_loss": 1.0 - ap}
        return self.last_val

    result, parent = fine_tune_with_flips(monkeypatch, scores)
    assert result.kept_parent and "with_flips" not in result.lineage["held_out_decision"]  # refused on quick checks
    lineage = result.refused.metadata["lineage"]
    assert lineage["best_step"] == lineage["refused"]["step"] == 2
    assert lineage["metrics"]["val_ap50"] == 0.7 and result.metrics_before["val_ap50"] == 0.5
    start, kept = parent.network.state_dict(), result.bundle.network.state_dict()
    assert all(torch.equal(kept[key], start[key]) for key in start)  # scoring the refused weights left the parent


def test_a_default_model_fine_tune_that_cannot_validate_prepares_and_announces_no_training():
    """Nothing held out: no branch is frozen, no rehearsal crops are loaded, and no message says otherwise."""
    image, label = discs(4, n=2)
    default = load_model("default")
    recipe = fine_tune_recipe(default, dataclasses.replace(FAST, max_steps=3))
    result, events = drain(iter_train(default, [image], [label], recipe))
    assert result.steps == 0 and result.kept_parent
    messages = [event.message for event in events]
    assert not [m for m in messages if m.startswith(("training the", "rehearsal:"))], messages
    assert result.replay_check is None
