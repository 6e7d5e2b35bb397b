"""The 2D training loop: patch batches, the optimiser and its schedule, validation checks, keeping the best weights.

:class:`TrainingRun` is what :func:`napari_unet.core.train.fine_tune.iter_train` drives; the
inputs come from :mod:`~napari_unet.core.train.inputs`, the held-out data from
:mod:`~napari_unet.core.train.validation`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Generator
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_unet.core.config import TrainingConfig
from napari_unet.core.evaluate.metrics import evaluate_dataset, summary_row
from napari_unet.core.labels.postprocess import probabilities_to_labels
from napari_unet.core.models.bundle import ModelBundle
from napari_unet.core.models.network import UNet
from napari_unet.core.predict.runtime import autocast_context, channels_last, mixed_precision_on, model_uses_flips
from napari_unet.core.progress import Progress, check_cancel
from napari_unet.core.train.augment import DEFAULT_PARAMS, AugmentParams, augment_sample
from napari_unet.core.train.branches import BRANCH_NAMES, freeze, freeze_unreached, keep_frozen
from napari_unet.core.train.inputs import TrainImage
from napari_unet.core.train.losses import segmentation_loss
from napari_unet.core.train.outcome import (
    NOT_VALIDATED,
    average_with_parent,
    blend_states,
    child_postprocess,
    finite_or_zero,
    is_trained,
    needs_validation,
    required_held_out_gain,
)
from napari_unet.core.train.validation import (
    ValWindow,
    count_objects,
    keep_annotated,
    window_logits_and_probabilities,
)

PLATEAU_PATIENCE, PLATEAU_FACTOR = 2, 0.5
"""``plateau`` schedule: halve the rate after this many validations without improvement."""

VAL_LOSS_MIN_DELTA = 1e-4
"""At equal validation AP, a validation loss lower by at least this counts as an improvement (not over a trained
parent: see :meth:`TrainingRun._keep_if_best`)."""


LASTING_VALIDATIONS = 3
"""A fine-tune of a trained model is kept only if the mean of its last this-many validations beats the parent
by :func:`~napari_unet.core.train.outcome.required_held_out_gain`."""


VALIDATION_SHARE = 0.15
"""Intermediate validations are skipped while they would take more than this share of the run's time so far."""

MIN_LR_FRACTION = 0.05
"""The cosine schedule decays to this fraction of the peak rate."""

WARMUP_MAX_FRACTION = 0.1
"""Warm-up also ends once this fraction of the budget is used (short time budgets)."""


CancelFlag = Callable[[], bool] | None


# --------------------------------------------------------------------------- the training loop


def set_torch_threads(device: torch.device, requested: int) -> int | None:
    """Set torch's CPU threads for training (0 = all cores); return the previous count to restore, or None."""
    if device.type != "cpu":
        return None
    previous = torch.get_num_threads()
    torch.set_num_threads(requested if requested > 0 else max(1, os.cpu_count() or 1))
    return previous


class TrainingRun:
    """State of one training run (network, optimiser, schedule, best weights, history)."""

    def __init__(
        self,
        network: nn.Module,
        device: torch.device,
        cfg: TrainingConfig,
        train_set: list[TrainImage],
        val_windows: list[ValWindow],
        class_weights: np.ndarray,
        patch: int,
        bundle: ModelBundle,
        started: float,
        replay_set: list[TrainImage] | None = None,
        reached: set[str] | None = None,  # branches of a two-branch network to train; None: train everything
    ) -> None:
        self.network, self.device, self.cfg = network, device, cfg
        self.train_set, self.val_windows, self.patch = train_set, val_windows, patch
        self.bundle, self.started = bundle, started
        self.class_weights = torch.as_tensor(class_weights, device=device)
        self.rng = np.random.default_rng(cfg.seed)
        self.augment_params = augment_params_for(cfg)
        torch.manual_seed(cfg.seed)
        self.frozen = freeze_unreached(network, reached)  # branches no training image reaches
        self.frozen += freeze_untrained_part(network, cfg.trained_part)
        self.frozen_names = [name for name in BRANCH_NAMES if reached is not None and name not in reached]
        trainable = [parameter for parameter in network.parameters() if parameter.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.anchors = [(p, p.detach().clone()) for p in trainable] if cfg.anchor_decay else []  # (weight, start)
        self.use_amp = cfg.amp and mixed_precision_on(device)  # weights, optimiser and loss stay float32
        self.report_with_flips = model_uses_flips(bundle.metadata)  # reported scores: the model as it will run
        self.check_with_flips = self.report_with_flips and not cfg.quick_checks  # the checks that decide
        self.held_out_nuclei = sum(count_objects(window) for window in val_windows)
        self.scaler = torch.amp.GradScaler("cuda") if self.use_amp and device.type == "cuda" else None
        self.image_probs = np.array([t.counted_pixels for t in train_set], dtype=np.float64)
        self.image_probs /= self.image_probs.sum()
        counted = sum(t.counted_pixels for t in train_set)
        self.steps_per_epoch = max(1, math.ceil(counted / (patch * patch * cfg.batch_size)))
        self.planned = self._planned_steps()
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best_state = self.start_state = state_copy(network)
        self.best_score: float | None = None
        self.best_val_loss = math.inf
        self.best_step = 0
        self.best_metrics: dict[str, float] | None = None
        self.metrics_before: dict[str, float] | None = None
        self.last_val: dict[str, float] = {}
        self.stale_validations = 0
        self.lr_factor = 1.0
        self.stopped_reason = ""
        self.train_seconds = 0.0
        self.validation_seconds = 0.0  # time spent validating (start, intermediate and final checks)
        self.last_validation_cost = 0.0
        self.blended = False  # True when the kept weights are the fine-tuned ones averaged with the parent's
        # the fine-tuned weights keep_parent set aside, their step and their held-out scores (as the model will run)
        self.refused: tuple[dict[str, torch.Tensor], int, dict[str, float] | None] | None = None
        self.replay_set = replay_set or []  # rehearsal crops, drawn for cfg.replay_fraction of the patches
        self.reported_cache: list[tuple[dict[str, torch.Tensor], dict[str, float]]] = []  # states scored with flips
        self.confirmation: tuple[float, float] | None = None  # parent and child AP@0.5 with flips, when compared

    def _planned_steps(self) -> int:
        limits = []
        if self.cfg.max_steps is not None:
            limits.append(self.cfg.max_steps)
        if self.cfg.max_epochs is not None:
            limits.append(self.cfg.max_epochs * self.steps_per_epoch)
        return min(limits) if limits else 0

    # ---------------------------------------------------------------- run

    def run(self, cancel: CancelFlag) -> Generator[Progress, None, None]:
        """Validate the starting weights, train until a limit is reached, validate the end.

        A trained model with nothing held out is not trained at all
        (:func:`~napari_unet.core.train.outcome.needs_validation`).
        """
        if not self.val_windows and needs_validation(self.bundle, self.cfg):
            self.stopped_reason = NOT_VALIDATED
            return
        if self.val_windows:
            check_cancel(cancel)
            self.metrics_before = self._validate()
            self._record({"step": 0, **self.metrics_before})
            yield self._progress(None, "validated the starting model", validated=True)
        while not self._stop_reason():
            check_cancel(cancel)
            loss = self._train_step()
            record = {"step": self.step, "loss": loss, "lr": self._current_lr()}
            message = f"step {self.step}: loss {loss:.4f}"
            validated = self._validation_due()
            if validated:
                check_cancel(cancel)
                record.update(self._validate())
                message += f", validation AP@0.5 {self.last_val['val_ap50']:.3f}"
            self._record(record)
            yield self._progress(loss, message, validated=validated)
        self.stopped_reason = self._stop_reason()
        if self.val_windows and self.history[-1].get("val_ap50") is None:
            check_cancel(cancel)
            self.history[-1].update(self._validate())
            yield self._progress(self.history[-1].get("loss"), "final validation", validated=True)
        if not self.val_windows:
            self.best_state, self.best_step = self._unvalidated_result(), self.step
        elif self.best_step > 0 and is_trained(self.bundle) and not self._improvement_lasted():
            self.keep_parent()
            yield self._progress(self.history[-1].get("loss"), "the held-out improvement did not last", validated=True)
        elif self.cfg.parent_share > 0 and self.best_step > 0 and is_trained(self.bundle):
            check_cancel(cancel)
            message = self._try_blend_with_parent()
            yield self._progress(self.history[-1].get("loss"), message, validated=True)

    def late_held_out_score(self) -> float:
        """Mean AP@0.5 of the last :data:`LASTING_VALIDATIONS` validations after the start."""
        scores = [row["val_ap50"] for row in self.history if row["step"] > 0 and "val_ap50" in row]
        if not scores:
            return (self.metrics_before or {}).get("val_ap50", 0.0)
        return float(np.mean(scores[-LASTING_VALIDATIONS:]))

    def _improvement_lasted(self) -> bool:
        """Whether the last validations still beat the starting model on average by the gain the held-out size needs.

        On a few held-out nuclei one validation in several can beat the parent
        by chance; keeping it is a bet on noise (2 corrected DSB tissue images,
        13 held-out nuclei: 0.714 -> best 0.923 at step 75, the last three
        0.56-0.69; kept, the other images of the kind lost 0.060 AP@0.5:
        ``benchmarks/results/hitl_warn_only_partial.json``).  The gain needed is
        :func:`~napari_unet.core.train.outcome.required_held_out_gain` of the held-out nuclei.

        With quick checks (no flips) the gain must also show in the model as
        it runs: the kept weights scored with the flips against the parent
        scored the same way (:meth:`reported_scores`).  On quick checks alone a
        child 0.051 above the parent's quick score (90 held-out nuclei) was
        0.045 better as it runs and cost two other kinds 0.16 and 0.12 AP@0.5
        (``benchmarks/results/hitl_quick_checks_only.json``).
        """
        gain = required_held_out_gain(self.held_out_nuclei)
        late, before = self.late_held_out_score(), (self.metrics_before or {}).get("val_ap50", 0.0)
        if late < before + gain - 1e-9:
            return False
        if self.check_with_flips == self.report_with_flips:
            return True
        reported_before, reported_after = self.reported_scores()
        assert reported_before is not None and reported_after is not None  # validated
        self.confirmation = (reported_before["val_ap50"], reported_after["val_ap50"])
        return self.confirmation[1] >= self.confirmation[0] + gain - 1e-9

    def held_out_decision(self) -> dict[str, Any] | None:
        """Return what decided whether the fine-tuned weights beat the parent (None without validation).

        Returns
        -------
        dict or None
            ``start`` and ``last_validations`` (AP@0.5 of the parent and mean of
            the last validations, as the checks scored them), ``required_gain``,
            ``nuclei`` (held out) and ``flips`` (whether the checks used them);
            ``with_flips`` (the parent's and the child's AP@0.5 scored with the
            model's flips) when the quick checks' gain had to be confirmed.

        """
        if self.metrics_before is None:
            return None
        decision = {
            "start": self.metrics_before["val_ap50"],
            "last_validations": self.late_held_out_score(),
            "required_gain": required_held_out_gain(self.held_out_nuclei),
            "nuclei": self.held_out_nuclei,
            "flips": self.check_with_flips,
        }
        if self.confirmation is not None:
            decision["with_flips"] = list(self.confirmation)
        return decision

    def reported_scores(self) -> tuple[dict[str, float] | None, dict[str, float] | None]:
        """Held-out scores of the starting and the kept weights as the model will run (with its flips, if any).

        The checks during training may skip the flips (``cfg.quick_checks``,
        four times cheaper); the scores the user reads are then computed once
        more here, with them.  The network is left holding the kept weights.

        Returns
        -------
        (dict or None, dict or None)
            Before and after (``val_ap50``, ``val_ap75``, ``val_f1``,
            ``val_loss``), None without validation.

        """
        if self.metrics_before is None or self.check_with_flips == self.report_with_flips:
            return self.metrics_before, self.best_metrics
        kept = self.best_state
        before = self._reported_score(self.start_state)
        after = before if self.best_step == 0 else self._reported_score(kept)
        self.network.load_state_dict(kept)
        return before, after

    def _reported_score(self, state: dict[str, torch.Tensor]) -> dict[str, float]:
        """Held-out scores of ``state`` as the model runs, each state scored once (the network is left holding it)."""
        for scored, scores in self.reported_cache:
            if scored is state:
                return scores
        scores = self.score_weights(state, flips=self.report_with_flips)
        assert scores is not None  # only called with validation windows
        self.reported_cache.append((state, scores))
        return scores

    def _try_blend_with_parent(self) -> str:
        """Validate the kept weights averaged with the parent's; keep the average unless it validates worse.

        The average moves less far from what the parent knew about other
        kinds (weight-space ensembles, Wortsman et al. 2022), so on a tie it wins.
        """
        share = self.cfg.parent_share
        blend = blend_states(self.start_state, self.best_state, share)
        scores = self.score_weights(blend)
        assert scores is not None  # only called with validation windows
        self.history[-1].update({f"blend_{key}": value for key, value in scores.items()})
        if scores["val_ap50"] >= (self.best_score or 0.0):
            self.best_state, self.best_metrics, self.blended = blend, dict(scores), True
            return f"kept the fine-tuned weights averaged with the starting model's ({share:.0%} of it)"
        return (
            f"kept the fine-tuned weights (averaged with the starting model's they validate {scores['val_ap50']:.3f})"
        )

    def score_weights(self, state: dict[str, torch.Tensor], flips: bool | None = None) -> dict[str, float] | None:
        """Load ``state`` into the network and score it on the validation windows (None without any).

        Counts as validation time; the network is left holding ``state``, on the device it was on.
        ``flips`` defaults to the checks' mode.
        """
        self.network.load_state_dict(state)
        if not self.val_windows:
            return None
        home = next(self.network.parameters()).device
        self.network.to(self.device)
        started = time.perf_counter()
        try:
            return self._scores(flips)
        finally:
            self.validation_seconds += time.perf_counter() - started
            self.network.to(home)

    def keep_weights(self, state: dict[str, torch.Tensor], scores: dict[str, float] | None, blended: bool) -> None:
        """Make ``state`` the run's result (with its validation ``scores``, when validated)."""
        self.best_state, self.blended = state, blended
        if scores is not None:
            self.best_metrics, self.best_score = dict(scores), scores["val_ap50"]

    def keep_parent(self) -> None:
        """Make the starting weights the run's result (``best_step`` 0, the starting model's scores).

        The fine-tuned weights it replaces are set aside in ``refused`` (with their step and held-out scores),
        for a user who wants to compare them on other images anyway
        (:func:`~napari_unet.core.train.fine_tune.refused_model`). Their scores are those of the model as it
        will run, as the parent's reported ones (:meth:`reported_scores`): where the checks were quick (no
        flips) they are scored once more with the flips. The network is left holding the starting weights.
        """
        if self.best_step > 0:
            self.refused = (self.best_state, self.best_step, self._refused_scores())
        self.best_state, self.best_step, self.blended = self.start_state, 0, False
        self.network.load_state_dict(self.start_state)
        if self.metrics_before is not None:
            self.best_metrics, self.best_score = dict(self.metrics_before), self.metrics_before["val_ap50"]

    def _refused_scores(self) -> dict[str, float] | None:
        """Held-out scores of ``best_state`` as the model will run (the checks' own when they ran that way)."""
        if self.best_metrics is None or self.check_with_flips == self.report_with_flips:
            return self.best_metrics
        return self._reported_score(self.best_state)

    def _validation_due(self) -> bool:
        """Whether this step validates: every ``val_every`` steps, while validation stays within its time share.

        With a time budget, a check is skipped when it would bring the time
        spent validating above :data:`VALIDATION_SHARE` of the run so far, so
        validation cannot eat the training steps (the final check always runs;
        budgets of steps or epochs validate every ``val_every`` steps).
        """
        if not self.val_windows or self.step % max(1, self.cfg.val_every):
            return False
        if self.cfg.max_seconds is None:
            return True
        projected = self.validation_seconds + self.last_validation_cost
        return projected <= VALIDATION_SHARE * (self._elapsed() + self.last_validation_cost)

    def _unvalidated_result(self) -> dict[str, torch.Tensor]:
        """Weights to return when nothing could be validated: the last ones, mixed with a trained parent's.

        A short fine-tune on a few nuclei can move a good model a long way
        (on 3 of 10 validation-split images with too few nuclei to validate,
        30 s of fine-tuning on half the image lowered AP@0.5 on the other half
        from 0.909 to 0.267, 0.704 to 0.444 and kept 0.659:
        ``benchmarks/results/finetune_val_split_before_guards.json``); averaging the
        fine-tuned weights with the parent's keeps most of what was learned
        and bounds the damage (weight-space ensembles, Wortsman et al. 2022).
        """
        return average_with_parent(self.bundle, self.start_state, state_copy(self.network))

    def _stop_reason(self) -> str:
        cfg = self.cfg
        if cfg.max_steps is not None and self.step >= cfg.max_steps:
            return "steps"
        if cfg.max_epochs is not None and self.step >= cfg.max_epochs * self.steps_per_epoch:
            return "epochs"
        if cfg.max_seconds is not None and self._elapsed() >= cfg.max_seconds:
            return "time"
        if cfg.early_stop_patience > 0 and self.stale_validations >= cfg.early_stop_patience:
            return "early_stopping"
        return ""

    def _elapsed(self) -> float:
        return time.perf_counter() - self.started

    def _record(self, record: dict[str, Any]) -> None:
        record["elapsed_s"] = self._elapsed()
        self.history.append(record)

    # ---------------------------------------------------------------- schedule

    def _budget_fraction(self) -> float:
        fractions = [0.0]
        if self.planned:
            fractions.append(self.step / self.planned)
        if self.cfg.max_seconds is not None:
            fractions.append(self._elapsed() / self.cfg.max_seconds)
        return min(1.0, max(fractions))

    def _current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _lr_for_step(self) -> float:
        cfg, fraction = self.cfg, self._budget_fraction()
        warm = 1.0
        if cfg.warmup_steps > 0:
            warm = min(1.0, max((self.step + 1) / cfg.warmup_steps, fraction / WARMUP_MAX_FRACTION))
        if cfg.schedule == "cosine":
            decay = MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * fraction))
        elif cfg.schedule == "plateau":
            decay = self.lr_factor
        else:
            decay = 1.0
        return cfg.learning_rate * warm * decay

    # ---------------------------------------------------------------- one step

    def _train_step(self) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr_for_step()
        images, targets, weights = self._batch()
        self.network.train()
        keep_frozen(self.frozen)
        if self.cfg.freeze_batch_norm:
            freeze_batch_norm_statistics(self.network)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast_context(self.device, self.use_amp):
            logits = self.network(images)
        loss = segmentation_loss(logits.float(), targets, weights, kind=self.cfg.loss, class_weights=self.class_weights)
        self.step += 1
        if not torch.isfinite(loss):  # skip the update rather than poison the weights
            return float("nan")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self._pull_towards_start()
        return float(loss.detach())

    @torch.no_grad()
    def _pull_towards_start(self) -> None:
        """Move each trained weight ``lr * cfg.anchor_decay`` of the way back to its starting value (L2-SP)."""
        share = self.optimizer.param_groups[0]["lr"] * self.cfg.anchor_decay
        for weight, start in self.anchors:
            weight.lerp_(start, min(share, 1.0))

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        samples = [self._sample() for _ in range(self.cfg.batch_size)]
        images, targets, weights = (np.stack(parts) for parts in zip(*samples, strict=True))
        inputs = torch.from_numpy(images).to(self.device, non_blocking=True)
        if self.device.type == "cpu":  # channels-last was measured on CPUs only; CUDA keeps its measured layout
            inputs = channels_last(inputs)
        return (
            inputs,
            torch.from_numpy(targets).to(self.device, non_blocking=True),
            torch.from_numpy(weights).to(self.device, non_blocking=True),
        )

    def _sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One patch: centred on a corrected (30%), foreground (40%) or any annotated pixel.

        With a replay set, ``cfg.replay_fraction`` of the patches come from a
        uniformly drawn replay crop instead of the user's images.
        """
        if self.replay_set and self.rng.random() < self.cfg.replay_fraction:
            item = self.replay_set[int(self.rng.integers(len(self.replay_set)))]
        else:
            item = self.train_set[int(self.rng.choice(len(self.train_set), p=self.image_probs))]
        draw = self.rng.random()
        pool = item.pools[2]
        if draw < 0.3 and item.pools[0].size:
            pool = item.pools[0]
        elif draw < 0.7 and item.pools[1].size:
            pool = item.pools[1]
        centre_y, centre_x = pool[int(self.rng.integers(pool.shape[0]))]
        top = min(max(0, centre_y - self.patch // 2), item.target.shape[0] - self.patch)
        left = min(max(0, centre_x - self.patch // 2), item.target.shape[1] - self.patch)
        window = (slice(top, top + self.patch), slice(left, left + self.patch))
        image, target, weight = item.image[(slice(None), *window)], item.target[window], item.weight[window]
        if self.cfg.augment:
            return augment_sample(image, target, weight, self.rng, self.augment_params)
        return np.ascontiguousarray(image), np.ascontiguousarray(target), np.ascontiguousarray(weight)

    # ---------------------------------------------------------------- validation

    def _validate(self) -> dict[str, float]:
        """Score the current weights on the validation windows; update the best weights."""
        started = time.perf_counter()
        try:
            return self._score_validation()
        finally:
            self.last_validation_cost = time.perf_counter() - started
            self.validation_seconds += self.last_validation_cost

    def _score_validation(self) -> dict[str, float]:
        """Score the current weights and keep them if they validate best so far."""
        scores = self._scores()
        self._keep_if_best(scores)
        return scores

    def _scores(self, flips: bool | None = None) -> dict[str, float]:
        """AP@0.5, AP@0.75, F1@0.5 (pooled over the windows) and the loss of the current weights.

        ``flips``: average the probabilities over flips (default: the checks' mode, ``check_with_flips``).
        """
        gts, preds, losses = [], [], []
        use_flips = self.check_with_flips if flips is None else flips
        for window in self.val_windows:
            logits, probs = window_logits_and_probabilities(
                self.network, window, self.device, self.use_amp, flips=use_flips
            )
            target = torch.from_numpy(window.target)[None]
            weight = torch.from_numpy(window.weight)[None]
            losses.append(float(segmentation_loss(logits, target, weight, class_weights=self.class_weights.cpu())))
            predicted = probabilities_to_labels(probs, child_postprocess(self.bundle.postprocess))
            gts.append(window.labels)
            preds.append(keep_annotated(predicted, window.weight > 0))
        row = summary_row(evaluate_dataset(gts, preds)["pooled"])
        scores = {
            "val_ap50": finite_or_zero(row["AP@0.5"]),
            "val_ap75": finite_or_zero(row["AP@0.75"]),
            "val_f1": finite_or_zero(row["F1@0.5"]),
            "val_loss": float(np.mean(losses)),
        }
        self.last_val = scores
        return scores

    def _keep_if_best(self, scores: dict[str, float]) -> None:
        """Keep the current weights if they validate best so far.

        Ties on AP@0.5 go to the lower validation loss, except against a
        trained parent that finds nuclei (step 0, AP@0.5 above 0): on a few
        validation nuclei ties are common, and the fine-tuned weights' lower
        loss next to their own training pixels says little about the rest of
        the image, so only a strictly higher AP@0.75 (better outlines of the
        same nuclei) replaces the parent.
        """
        better = self.best_score is None or scores["val_ap50"] > self.best_score
        tie = self.best_score is not None and scores["val_ap50"] == self.best_score
        if tie and self.best_step == 0 and bool(self.best_score) and is_trained(self.bundle):
            tie_broken = scores["val_ap75"] > (self.best_metrics or {}).get("val_ap75", 0.0)
        else:
            tie_broken = scores["val_loss"] < self.best_val_loss - VAL_LOSS_MIN_DELTA
        if better or (tie and tie_broken):
            self.best_score, self.best_val_loss = scores["val_ap50"], scores["val_loss"]
            self.best_state, self.best_step, self.best_metrics = state_copy(self.network), self.step, dict(scores)
            self.stale_validations = 0
            return
        self.stale_validations += 1
        if self.cfg.schedule == "plateau" and self.stale_validations % PLATEAU_PATIENCE == 0:
            self.lr_factor *= PLATEAU_FACTOR

    # ---------------------------------------------------------------- progress

    def _progress(self, loss: float | None, message: str, validated: bool = False) -> Progress:
        """Return a progress event: ``done`` is the step, ``total`` the steps planned or expected.

        With only a time budget ``total`` is the steps this pace reaches in it;
        ``metrics["validated"]`` is True only when this step was validated.
        """
        elapsed = self._elapsed()
        steps_per_s = self.step / max(elapsed, 1e-9)
        metrics = {
            "loss": loss,
            "lr": self._current_lr(),
            "val_ap50": self.last_val.get("val_ap50"),
            "val_loss": self.last_val.get("val_loss"),
            "validated": validated,
            "eta_s": self._eta(elapsed, steps_per_s),
            "steps_per_s": steps_per_s,
            "elapsed_s": elapsed,
        }
        return Progress("train", self.step, self._expected_steps(), message, metrics)

    def _expected_steps(self) -> int:
        """Planned steps; with only a time budget, the steps this pace reaches in it (at least the steps done)."""
        if self.planned:
            return self.planned
        fraction = self._budget_fraction()
        if self.cfg.max_seconds is None or fraction <= 0:
            return 0
        return max(self.step, round(self.step / fraction)) if self.step else 0

    def _eta(self, elapsed: float, steps_per_s: float) -> float | None:
        etas = []
        if self.planned and steps_per_s > 0:
            etas.append((self.planned - self.step) / steps_per_s)
        if self.cfg.max_seconds is not None:
            etas.append(self.cfg.max_seconds - elapsed)
        return max(0.0, min(etas)) if etas else None


def freeze_batch_norm_statistics(network: nn.Module) -> None:
    """Switch every BatchNorm layer to eval mode: running statistics used, never updated; scale and shift still learn.

    A fine-tune on a few images of one kind would otherwise pull the running
    statistics, which every kind shares, towards that kind.
    """
    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def augment_params_for(cfg: TrainingConfig) -> AugmentParams:
    """Return the augmentation ``cfg`` asks for: its stain jitter and zoom range on :data:`DEFAULT_PARAMS`."""
    zoom = (1.0 / cfg.scale_augment, cfg.scale_augment)
    return replace(DEFAULT_PARAMS, p_stain=cfg.stain_jitter, scale_range=zoom)


def freeze_untrained_part(network: nn.Module, trained_part: str) -> list[nn.Module]:
    """Freeze the part of every UNet in ``network`` that ``trained_part`` leaves out.

    ``encoder`` freezes the upsamplers, decoder blocks and head; ``decoder``
    freezes the encoder blocks (the bottleneck included); ``all`` freezes
    nothing.  Returns the frozen modules (no gradient, BatchNorm in eval mode;
    :func:`~napari_unet.core.train.branches.keep_frozen` keeps them there).
    """
    if trained_part == "all":
        return []
    unets = [module for module in network.modules() if isinstance(module, UNet)]
    if trained_part == "decoder":
        return freeze([unet.encoders for unet in unets])
    return freeze([part for unet in unets for part in (unet.upsamplers, unet.decoders, unet.head)])


def state_copy(network: nn.Module) -> dict[str, torch.Tensor]:
    """Return a detached CPU copy of a network's ``state_dict``."""
    return {key: value.detach().to("cpu", copy=True) for key, value in network.state_dict().items()}
