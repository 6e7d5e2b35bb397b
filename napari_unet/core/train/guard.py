"""The other-kinds guard: a fine-tune should not cost its parent's knowledge of other kinds of images.

After a fine-tune of a model with a replay set, the parent and the child are
scored on the set's check crops (annotated crops of other kinds, never trained
on: :func:`~napari_unet.core.train.replay.split_replay_set`).  When the child
lost more than :data:`~napari_unet.core.train.replay.FORGETTING_LIMIT` AP@0.5
there, its weights are averaged with the parent's (:data:`FALLBACK_PARENT_SHARES`,
weight-space ensembles, Wortsman et al. 2022) and, of the child, the averages
and the parent, the one with the highest sum of AP@0.5 on the held-out
corrections and on the check crops is kept: a fine-tune that gains a little
on the user's images and loses a lot elsewhere is not kept as it is, one
that gains a lot is (with a warning when it still lost more than the limit).
Without held-out corrections, the first average within the limit is kept
(else the notice warns).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from napari_unet.core.models.bundle import ModelBundle
from napari_unet.core.train.loop import TrainingRun
from napari_unet.core.train.outcome import blend_states, child_postprocess
from napari_unet.core.train.replay import FORGETTING_LIMIT, check_score

FALLBACK_PARENT_SHARES = (0.5, 0.75)
"""Shares of the parent's weights tried, in order, when the child forgot too much."""


@dataclass
class Candidate:
    """Weights the guard may keep, with their scores."""

    parent_share: float
    state: dict[str, torch.Tensor]
    check: float
    held_out: dict[str, float] | None

    @property
    def total(self) -> float:
        """AP@0.5 on the held-out corrections plus AP@0.5 on the check crops."""
        return (self.held_out or {}).get("val_ap50", 0.0) + self.check


def guard_other_kinds(
    parent: ModelBundle, check: tuple[list[np.ndarray], list[np.ndarray]], run: TrainingRun
) -> dict[str, Any]:
    """Score the kept weights of ``run`` on other kinds; keep them, an average with the parent's, or the parent.

    Parameters
    ----------
    parent : ModelBundle
        The starting model.
    check : (images, labels)
        Check crops of other kinds: ``(Y, X[, 3])`` images and ``(Y, X)`` labels.
    run : TrainingRun
        The finished run; its network holds its kept weights (``run.best_state``)
        and is left holding the weights the guard keeps, which become the run's
        result (:meth:`TrainingRun.keep_weights` or :meth:`TrainingRun.keep_parent`).

    Returns
    -------
    dict
        ``before`` / ``after`` (pooled AP@0.5 on the crops, of the parent and of
        the kept weights) and ``crops``; when the guard stepped in also
        ``forgot`` (the child's own score there) and ``parent_share`` (an
        average kept) or ``kept_parent`` True, and ``warning`` True when what
        is kept still lost more than the limit there.

    """
    child = ModelBundle(
        network=run.network,
        config=parent.config,
        normalize=parent.normalize,
        postprocess=child_postprocess(parent.postprocess),
        metadata=parent.metadata,
    )
    before, after = check_score(parent, check), check_score(child, check)
    report: dict[str, Any] = {"before": before, "after": after, "crops": len(check[0])}
    if before - after <= FORGETTING_LIMIT:
        return report
    report["forgot"] = after
    candidates = [Candidate(0.0, run.best_state, after, run.best_metrics)]
    for share in FALLBACK_PARENT_SHARES:
        blend = blend_states(run.start_state, run.best_state, share)
        held_out = run.score_weights(blend)  # also loads the blend into the network
        candidates.append(Candidate(share, blend, check_score(child, check), held_out))
    if run.metrics_before is None:  # nothing held out: the first average within the limit
        kept = next((c for c in candidates[1:] if before - c.check <= FORGETTING_LIMIT), candidates[0])
    else:
        candidates.append(Candidate(1.0, run.start_state, before, run.metrics_before))
        kept = max(candidates, key=lambda candidate: (candidate.total, candidate.parent_share))
    run.network.load_state_dict(kept.state)
    if kept.parent_share == 1.0:
        run.keep_parent()
        return {**report, "after": before, "kept_parent": True}
    if before - kept.check > FORGETTING_LIMIT:
        report["warning"] = True
    if kept.parent_share > 0:
        run.keep_weights(kept.state, kept.held_out, blended=True)
        return {**report, "after": kept.check, "parent_share": kept.parent_share}
    return report
