"""What a training run returns and records: the result, the rule for runs without validation, lineage.

2D (:mod:`~napari_unet.core.train.fine_tune`) and 3D (:mod:`~napari_unet.core.train.volumetric`)
training share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from napari_unet.core.config import PostprocessConfig, TrainingConfig
from napari_unet.core.models.bundle import ModelBundle
from napari_unet.core.train.preparation import size_advice_text
from napari_unet.core.train.replay import GROUP_FORGETTING_LIMIT


@dataclass
class TrainResult:
    """Outcome of :func:`iter_train`.

    Attributes
    ----------
    bundle : ModelBundle
        New bundle with the best weights and ``metadata["lineage"]``.
    history : list of dict
        One record per step (``step``, ``loss``, ``lr``, ``elapsed_s``) plus
        ``val_ap50``, ``val_ap75``, ``val_f1``, ``val_loss`` on validation
        steps (step 0 is the starting model).
    best_score : float or None
        Best validation AP@0.5 (None without validation).
    stopped_reason : str
        ``"steps"``, ``"epochs"``, ``"time"`` or ``"early_stopping"``.
    best_step : int
        Step whose weights were kept (0 = the starting weights).
    steps : int
        Optimisation steps done.
    seconds : float
        Wall-clock duration of the run.
    metrics_before, metrics_after : dict or None
        Validation scores of the starting and the returned weights.
    lineage : dict
        What :func:`fine_tune_and_save` passes to ``store.save_version``.
    messages : list of str
        Notes shown to the user during the run (padding, validation, ...).
    saved : Any
        The ``ModelInfo`` of the saved version (only from :func:`fine_tune_and_save`).
    refused : ModelBundle or None
        When validation kept the starting model: the fine-tuned weights it refused, as a model whose lineage
        says so (``lineage["refused"]``); None otherwise.

    """

    bundle: ModelBundle
    history: list[dict[str, Any]]
    best_score: float | None
    stopped_reason: str
    best_step: int = 0
    steps: int = 0
    seconds: float = 0.0
    metrics_before: dict[str, float] | None = None
    metrics_after: dict[str, float] | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    saved: Any = None
    refused: ModelBundle | None = None

    @property
    def kept_parent(self) -> bool:
        """True when the result is the model it started from: validation kept it, or nothing could check a change."""
        if self.stopped_reason == NOT_VALIDATED:
            return True
        return self.metrics_before is not None and self.best_step == 0

    @property
    def replay_check(self) -> dict[str, float] | None:
        """AP@0.5 before/after on crops of other kinds never trained on (None when not checked)."""
        return self.lineage.get("replay_check")


def notice_of(result: TrainResult) -> str:
    """Tell the user what fine-tuning did: held-out scores before and after, other kinds, what was kept.

    Parameters
    ----------
    result : TrainResult
        A finished run.

    Returns
    -------
    str
        One to three sentences: held-out scores before and after (or why
        there were none), the scores on other kinds, and what the other-kinds
        guard (:mod:`~napari_unet.core.train.guard`) kept when it stepped in;
        then, when the corrected nuclei's sizes were far from the model's
        (:func:`~napari_unet.core.train.preparation.size_advice`), the resize to try.

    """
    advice = result.lineage.get("size_advice")
    return outcome_text(result) + (f" Note: {size_advice_text(advice)}." if advice else "")


def outcome_text(result: TrainResult) -> str:
    """Say what fine-tuning kept and why, with held-out and other-kinds scores (:func:`notice_of` without advice)."""
    before, after = result.metrics_before or {}, result.metrics_after or {}
    check = result.replay_check or {}
    if check.get("kept_parent"):
        lost = worst_groups(check, check.get("forgot_groups") or {})
        return (
            f"the fine-tuned weights lost too much on other kinds of images for what they gained on the held-out "
            f"corrections ({check['crops']} reference crops: AP@0.5 {check['before']:.3f} -> "
            f"{check['forgot']:.3f}{'; ' + lost if lost else ''}), even averaged with the starting model; "
            "the starting model is kept."
        )
    if result.stopped_reason == NOT_VALIDATED:
        return f"{result.lineage.get('validation', NOT_VALIDATED_OUTCOME)}."
    if "val_ap50" in before and "val_ap50" in after:
        if result.kept_parent:
            text = kept_parent_reason(result.lineage.get("held_out_decision") or {}, before["val_ap50"])
        else:
            text = f"held-out corrections AP@0.5 {before['val_ap50']:.3f} before -> {after['val_ap50']:.3f} after."
    else:
        text = f"no held-out corrections to score it on ({result.lineage.get('validation') or 'too little data'})."
    if check:
        text += f" Other kinds ({check['crops']} reference crops): AP@0.5 {check['before']:.3f} -> {check['after']:.3f}"
        if "parent_share" in check:
            text += (
                f"; the fine-tuned weights alone scored {check['forgot']:.3f} there, so they were averaged with "
                f"the starting model's ({check['parent_share']:.0%} of it)"
            )
        text += "."
        if check.get("warning"):
            text += (
                " Warning: it got worse on other kinds of images"
                f"{' (' + worst_groups(check) + ')' if worst_groups(check) else ''}; use it for images like the "
                "corrected ones and keep the previous model for other experiments."
            )
    return text


def kept_parent_reason(decision: dict[str, Any], before: float) -> str:
    """Say why a validated fine-tune kept its parent: its last validations did not gain what a real gain needs.

    ``decision`` is the lineage's ``held_out_decision`` (start and last
    validations' AP@0.5, in the mode the checks ran, the gain required and
    the held-out nuclei); ``before`` the parent's reported held-out AP@0.5.
    """
    if not decision:
        return (
            f"the fine-tuned weights did not end up better than the starting model (AP@0.5 {before:.3f}); "
            "the starting model is kept."
        )
    needed = f"the {decision['required_gain']:.2f} AP@0.5 a real gain needs on {decision['nuclei']} held-out nuclei"
    checks = f"{decision['start']:.3f} at the start, their last validations averaged {decision['last_validations']:.3f}"
    if decision.get("with_flips") and decision["last_validations"] >= decision["start"] + decision["required_gain"]:
        parent, child = decision["with_flips"]
        return (
            f"the checks during training (one pass, no flips: {checks}) gained {needed}, but scored with the model's "
            f"flips, as it segments, the fine-tuned weights went only from {parent:.3f} to {child:.3f}; "
            "the starting model is kept."
        )
    return (
        f"the fine-tuned weights did not end up better than the starting model on the held-out corrections by "
        f"{needed} (checks: {checks}); the starting model is kept.{few_nuclei_advice(decision)}"
    )


def few_nuclei_advice(decision: dict[str, Any]) -> str:
    """Advice when a gain the checks did see fell short only of the bar few held-out nuclei set ("" otherwise).

    On kinds a model had not seen, such refused fine-tunes often helped
    (S-BSST265 tumour sections: held-out gains of 0.129 on 14 nuclei and
    0.155 on 10, short of 0.143 and 0.200, ``benchmarks/results/pairs_v1_tumour.json``;
    the same weights gained 0.052 and 0.069 on the kind's other sections,
    ``pairs_v1_tumour_every_child.json``); with more nuclei held out the bar
    falls to :data:`MIN_HELD_OUT_GAIN`.
    """
    gained = decision["last_validations"] - decision["start"]
    if decision["required_gain"] <= MIN_HELD_OUT_GAIN + 1e-9 or gained <= 0:
        return ""
    enough = round(HELD_OUT_NUCLEI_MARGIN / MIN_HELD_OUT_GAIN)
    return (
        f" The checks gained {gained:.2f}, but on only {decision['nuclei']} held-out nuclei that is not yet evidence: "
        f"the bar falls to {MIN_HELD_OUT_GAIN:.2f} from {enough} held-out nuclei on. Correct more nuclei in images "
        "like these and fine-tune again, or judge the refused weights on other images."
    )


def worst_groups(check: dict[str, Any], after: dict[str, float] | None = None) -> str:
    """Return ``tissue 0.800 -> 0.600``: the groups of reference crops that lost over the group limit, or ``""``.

    ``after`` (group -> AP@0.5) replaces the ``after`` scores of ``check["groups"]`` when given.
    """
    pairs = {group: (old, (after or {}).get(group, new)) for group, (old, new) in (check.get("groups") or {}).items()}
    lost = [
        f"{group} {old:.3f} -> {new:.3f}" for group, (old, new) in pairs.items() if old - new > GROUP_FORGETTING_LIMIT
    ]
    return ", ".join(lost)


MIN_HELD_OUT_GAIN = 0.05
"""Smallest AP@0.5 by which the last validations of a fine-tuned trained model must beat its parent on the
held-out corrections.  Smaller gains on a few dozen held-out nuclei are within chance: children kept on +0.017 and
+0.035 made the other images of their kind worse by 0.032 and 0.048 (``benchmarks/results/hitl_branches.json``)."""


HELD_OUT_NUCLEI_MARGIN = 2
"""On few held-out nuclei the gain must also be worth this many nuclei (``2 / nuclei`` AP@0.5): one nucleus
more or less found moves AP@0.5 on ``n`` nuclei by about ``1 / n``, so a gain of one nucleus is no evidence.
Chosen after ``benchmarks/results/hitl_margin_005.json``: children kept on +0.073 (24 held-out nuclei, about
1.8 nuclei) and +0.083 (12 nuclei, one nucleus) left the other images of their kind 0.048 and 0.011 worse."""


def required_held_out_gain(held_out_nuclei: int) -> float:
    """AP@0.5 a fine-tuned child's last validations must gain over its trained parent to be kept.

    Parameters
    ----------
    held_out_nuclei : int
        Nuclei in the held-out corrections.

    Returns
    -------
    float
        ``max(MIN_HELD_OUT_GAIN, HELD_OUT_NUCLEI_MARGIN / held_out_nuclei)``:
        0.05 from 40 held-out nuclei on, 0.167 on 12.

    """
    return max(MIN_HELD_OUT_GAIN, HELD_OUT_NUCLEI_MARGIN / max(1, held_out_nuclei))


UNVALIDATED_PARENT_SHARE = 0.5
"""Without validation, a fine-tune of a trained model returns this mix of the parent's weights and the last ones."""


UNVALIDATED_OUTCOME = {
    True: "training on everything; the result will be the last weights averaged with the starting model's",
    False: "training on everything; keeping the last weights",
}
"""What a run without validation returns, by whether the starting model is trained (end of its message)."""


NOT_VALIDATED = "no_validation"
"""``stopped_reason`` of a fine-tune of a trained model that did not train: no correction could be held out."""

NOT_VALIDATED_OUTCOME = (
    "a trained model is fine-tuned only when part of the corrections can be held out to check the result, "
    "so nothing was trained and the starting model is kept (correct more nuclei, or add a corrected image)"
)
"""End of the message of a fine-tune that :func:`needs_validation` stopped before its first step."""


def needs_validation(bundle: ModelBundle, cfg: TrainingConfig) -> bool:
    """Whether a fine-tune of ``bundle`` may change it only on a held-out gain, so without held-out data not at all.

    True for a trained model unless validation was switched off
    (``cfg.val_fraction`` 0, an API choice).  Without held-out nuclei a few
    minutes of fine-tuning can only be returned unchecked: averaged 50/50 with
    the parent (the earlier rule), 1 corrected S-BSST265 section lowered
    another kind by 0.113 AP@0.5 (``benchmarks/results/hitl_k1_side_cap.json``).
    """
    return is_trained(bundle) and cfg.val_fraction > 0


def is_trained(bundle: ModelBundle) -> bool:
    """Whether ``bundle`` holds trained weights (the bundled model's training record or a fine-tune's lineage)."""
    return bool(bundle.metadata.get("training") or bundle.metadata.get("lineage"))


def average_with_parent(
    bundle: ModelBundle, start: dict[str, torch.Tensor], last: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Return the weights of a run without validation: ``last``, averaged with ``start`` when ``bundle`` is trained.

    Parameters
    ----------
    bundle : ModelBundle
        The starting model (its metadata tells whether it is trained).
    start, last : dict of str to torch.Tensor
        State dicts of the starting and the last weights (same keys).

    Returns
    -------
    dict of str to torch.Tensor
        ``last``, or ``UNVALIDATED_PARENT_SHARE * start + (1 - share) * last``
        (see :data:`UNVALIDATED_OUTCOME` for the message that says which).

    """
    if not is_trained(bundle):
        return last
    return blend_states(start, last, UNVALIDATED_PARENT_SHARE)


def blend_states(
    first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], first_share: float
) -> dict[str, torch.Tensor]:
    """``first_share * first + (1 - first_share) * second`` for float tensors; integers (counters) from ``second``."""
    return {
        key: first[key] * first_share + value * (1.0 - first_share) if value.is_floating_point() else value
        for key, value in second.items()
    }


def child_postprocess(parent: PostprocessConfig) -> PostprocessConfig:
    """Post-processing a trained model starts with: its parent's, unchanged (``min_confidence`` included).

    Dropping the confidence filter of the v2 default model (0.85) after a
    30 s fine-tune on half of each held-out S-BSST265 image lowered AP@0.5 on
    the other halves from 0.670 to 0.602 (objects the filter had removed came
    back; most runs kept the starting weights); keeping it gave 0.680
    (``benchmarks/results/finetune_bsst265_test.json``).  ``napari-unet tune``
    chooses new thresholds for a child.
    """
    return parent


def child_metadata(bundle: ModelBundle, lineage: dict[str, Any]) -> dict[str, Any]:
    """Metadata of a model trained from ``bundle``: the parent's, without its identity, plus ``lineage``."""
    metadata = {key: value for key, value in bundle.metadata.items() if key not in ("name", "version", "sha256")}
    metadata["lineage"] = lineage
    return metadata


def finite_or_zero(value: float) -> float:
    """Return ``value`` as a float, or 0.0 when it is NaN or infinite."""
    return float(value) if math.isfinite(value) else 0.0
