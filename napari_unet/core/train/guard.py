"""The other-kinds guard: a fine-tune should not cost its parent's knowledge of other kinds of images.

After a fine-tune of a model with a replay set, the parent and the child are
scored on the set's check crops (annotated crops of other kinds, never trained
on: :func:`~napari_unet.core.train.replay.split_replay_set`).  When the child
lost more than :data:`~napari_unet.core.train.replay.FORGETTING_LIMIT` AP@0.5
there (pooled), or more than :data:`~napari_unet.core.train.replay.GROUP_FORGETTING_LIMIT`
on the crops of one group (kind), its weights are averaged with the parent's (:data:`FALLBACK_PARENT_SHARES`,
weight-space ensembles, Wortsman et al. 2022) and, of the child, the averages
and the parent, the one with the highest sum of AP@0.5 on the held-out
corrections and on the check crops, *among those within the limits*, is
kept (the parent always is within them): however much a fine-tune gained on the user's
images, weights that still lose more than the limits on other kinds are not
kept (with a warning they let the rest of a 2-image experiment lose up to
0.17 AP@0.5 on a kind: ``benchmarks/results/hitl_warning_path.json``).
Without held-out corrections, the first average within the limits is kept,
else the one closest to the parent (and the notice warns).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from napari_unet.core.models.bundle import ModelBundle
from napari_unet.core.train.loop import TrainingRun
from napari_unet.core.train.outcome import blend_states, child_postprocess
from napari_unet.core.train.replay import CheckScore, Crops, check_score

FALLBACK_PARENT_SHARES = (0.5, 0.75)
"""Shares of the parent's weights tried, in order, when the child forgot too much."""


@dataclass
class Candidate:
    """Weights the guard may keep, with their scores."""

    parent_share: float
    state: dict[str, torch.Tensor]
    check: CheckScore
    held_out: dict[str, float] | None

    @property
    def total(self) -> float:
        """AP@0.5 on the held-out corrections plus pooled AP@0.5 on the check crops."""
        return (self.held_out or {}).get("val_ap50", 0.0) + self.check.pooled


def guard_other_kinds(parent: ModelBundle, check: Crops, run: TrainingRun) -> dict[str, Any]:
    """Score the kept weights of ``run`` on other kinds; keep them, an average with the parent's, or the parent.

    Parameters
    ----------
    parent : ModelBundle
        The starting model.
    check : Crops
        Check crops of other kinds: ``(Y, X[, 3])`` images, ``(Y, X)`` labels, groups.
    run : TrainingRun
        The finished run; its network holds its kept weights (``run.best_state``)
        and is left holding the weights the guard keeps, which become the run's
        result (:meth:`TrainingRun.keep_weights` or :meth:`TrainingRun.keep_parent`).

    Returns
    -------
    dict
        ``before`` / ``after`` (pooled AP@0.5 on the crops, of the parent and of
        the kept weights), ``crops`` and ``groups`` (group -> ``[before, after]``);
        when the guard stepped in also
        ``forgot`` (the child's own score there) and ``parent_share`` (an
        average kept) or ``kept_parent`` True (with ``forgot_groups``, the
        child's per-group scores), and ``warning`` True when what is kept
        still lost more than the limits there (only without held-out corrections).

    """
    child = ModelBundle(
        network=run.network,
        config=parent.config,
        normalize=parent.normalize,
        postprocess=child_postprocess(parent.postprocess),
        metadata=parent.metadata,
    )
    before, after = check_score(parent, check), check_score(child, check)
    report = check_report(before, after, len(check.images))
    if not before.lost_too_much(after):
        return report
    report["forgot"] = after.pooled
    candidates = [Candidate(0.0, run.best_state, after, run.best_metrics)]
    for share in FALLBACK_PARENT_SHARES:
        blend = blend_states(run.start_state, run.best_state, share)
        held_out = run.score_weights(blend)  # also loads the blend into the network
        candidates.append(Candidate(share, blend, check_score(child, check), held_out))
    if run.metrics_before is None:  # nothing held out: the first average within the limits, else the closest
        kept = next((c for c in candidates[1:] if not before.lost_too_much(c.check)), candidates[-1])
    else:  # the best of what stays within the limits; the parent always does
        candidates.append(Candidate(1.0, run.start_state, before, run.metrics_before))
        within = [candidate for candidate in candidates if not before.lost_too_much(candidate.check)]
        kept = max(within, key=lambda candidate: (candidate.total, candidate.parent_share))
    run.network.load_state_dict(kept.state)
    if kept.parent_share == 1.0:
        run.keep_parent()
        report = {**check_report(before, before, len(check.images)), "forgot": after.pooled, "kept_parent": True}
        if after.groups:
            report["forgot_groups"] = dict(after.groups)
        return report
    report = {**check_report(before, kept.check, len(check.images)), "forgot": after.pooled}
    if before.lost_too_much(kept.check):
        report["warning"] = True
    if kept.parent_share > 0:
        run.keep_weights(kept.state, kept.held_out, blended=True)
        report["parent_share"] = kept.parent_share
    return report


def check_report(before: CheckScore, after: CheckScore, crops: int) -> dict[str, Any]:
    """Return the lineage's ``replay_check`` entry: pooled AP@0.5 before and after, crop count, per group both."""
    report: dict[str, Any] = {"before": before.pooled, "after": after.pooled, "crops": crops}
    if before.groups:
        report["groups"] = {group: [score, after.groups.get(group, score)] for group, score in before.groups.items()}
    return report
