"""Masked segmentation losses for the 3-class (background / interior / boundary) head.

Every loss takes a per-pixel weight map: pixels of weight 0 contribute
nothing, neither to the value nor to the gradient, which is how unreviewed
image areas are kept out of fine-tuning (see :mod:`napari_unet.core.train.pixel_classes`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional

from napari_unet.core.config import LOSSES

LOSS_KINDS = LOSSES
"""Loss names :func:`segmentation_loss` accepts (those ``TrainingConfig.loss`` allows)."""


def masked_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    class_weights: torch.Tensor | None = None,
    focal_gamma: float = 0.0,
) -> torch.Tensor:
    """Weighted mean cross-entropy (focal when ``focal_gamma > 0``).

    Parameters
    ----------
    logits : tensor (N, K, Y, X)
        Network output before softmax.
    target : tensor (N, Y, X) of int64
        Class of every pixel.
    weight : tensor (N, Y, X) of float
        Per-pixel weight (0 = ignored).
    class_weights : tensor (K,), optional
        Weight of each class (e.g. to up-weight the thin boundary class).
    focal_gamma : float
        Focusing parameter; the per-pixel loss is multiplied by
        ``(1 - p_target) ** focal_gamma``.

    Returns
    -------
    tensor ()
        ``sum(w * cw[t] * loss) / sum(w * cw[t])``; 0 when every weight is 0.

    """
    log_probs = functional.log_softmax(logits.float(), dim=1)
    target_log_prob = log_probs.gather(1, target.unsqueeze(1)).squeeze(1)
    per_pixel = -target_log_prob
    if focal_gamma > 0:
        per_pixel = per_pixel * (1.0 - target_log_prob.exp()).clamp(min=0.0) ** focal_gamma
    pixel_weight = weight.float()
    if class_weights is not None:
        pixel_weight = pixel_weight * class_weights.to(logits.device, torch.float32)[target]
    return (per_pixel * pixel_weight).sum() / pixel_weight.sum().clamp(min=1e-6)


def masked_soft_dice(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    classes: Sequence[int] = (1, 2),
    smooth: float = 1.0,
) -> torch.Tensor:
    """1 - mean soft Dice over ``classes``, pooled over the batch, counting weighted pixels only.

    Parameters
    ----------
    logits : tensor (N, K, Y, X)
        Network output before softmax.
    target : tensor (N, Y, X) of int64
        Class of every pixel.
    weight : tensor (N, Y, X) of float
        Per-pixel weight (0 = ignored).
    classes : sequence of int
        Classes to score (background is left out: it dominates and says
        little about nuclei).
    smooth : float
        Added to numerator and denominator; an absent class predicted absent
        scores 1.

    Returns
    -------
    tensor ()
        Loss in [0, 1].

    """
    probs = functional.softmax(logits.float(), dim=1)
    pixel_weight = weight.float()
    losses = []
    for cls in classes:
        truth = (target == cls).float() * pixel_weight
        predicted = probs[:, cls] * pixel_weight
        intersection = (predicted * (target == cls)).sum()
        denominator = predicted.sum() + truth.sum()
        losses.append(1.0 - (2.0 * intersection + smooth) / (denominator + smooth))
    return torch.stack(losses).mean()


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    kind: str = "ce_dice",
    class_weights: torch.Tensor | None = None,
    dice_weight: float = 1.0,
    focal_gamma: float = 2.0,
) -> torch.Tensor:
    """Cross-entropy (or focal) + soft Dice, both masked by ``weight``.

    Parameters
    ----------
    logits : tensor (N, 3, Y, X)
        Network output before softmax.
    target : tensor (N, Y, X) of int64
        0 background, 1 interior, 2 boundary.
    weight : tensor (N, Y, X) of float
        Per-pixel weight (0 = ignored).
    kind : {"ce_dice", "focal_dice"}
        Class-weighted cross-entropy + Dice, or focal + Dice.
    class_weights : tensor (3,), optional
        Per-class weights of the cross-entropy / focal term.
    dice_weight : float
        Factor of the Dice term.
    focal_gamma : float
        Focusing parameter of ``focal_dice``.

    Returns
    -------
    tensor ()
        Scalar loss.

    """
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown loss {kind!r}; use one of {LOSS_KINDS}")
    gamma = focal_gamma if kind == "focal_dice" else 0.0
    ce = masked_cross_entropy(logits, target, weight, class_weights, focal_gamma=gamma)
    return ce + dice_weight * masked_soft_dice(logits, target, weight)


def class_weights_from_targets(
    targets: Sequence[np.ndarray],
    weights: Sequence[np.ndarray],
    n_classes: int = 3,
    clip: tuple[float, float] = (0.5, 5.0),
) -> np.ndarray:
    """Inverse square-root frequency class weights, normalised to weight 1 for background.

    Parameters
    ----------
    targets : sequence of arrays (Y, X) of int
        Class targets.
    weights : sequence of arrays (Y, X) of float
        Loss weights; only pixels with weight > 0 are counted.
    n_classes : int
        Number of classes.
    clip : (float, float)
        Bounds on the resulting weights.

    Returns
    -------
    array (n_classes,) of float32

    """
    counts = np.zeros(n_classes, dtype=np.float64)
    for target, weight in zip(targets, weights, strict=True):
        counts += np.bincount(target[weight > 0].ravel(), minlength=n_classes)[:n_classes]
    counts = np.maximum(counts, 1.0)
    inverse = 1.0 / np.sqrt(counts / counts.sum())
    return np.clip(inverse / inverse[0], *clip).astype(np.float32)
