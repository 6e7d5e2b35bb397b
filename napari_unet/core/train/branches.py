"""Fine-tuning a two-branch model trains only the branch the user's images reach.

The default model is a :class:`~napari_unet.core.models.network.GreyColourUNet`:
a grey network for images whose channels are all equal and a colour network
for the others.  Corrections of grey images teach nothing about colour
images, and vice versa, yet a fine-tune used to change both: rehearsal crops
of the other kind trained the other network on a handful of crops, and
(before :func:`~napari_unet.core.train.augment.random_intensity` kept grey
patches grey) noisy grey patches reached the colour network.  A 2-image
fine-tune on grey fluorescence took colour tissue from 0.685 to 0.22 AP@0.5
(``benchmarks/results/hitl_warn_only_partial.json``).

So the branch that none of the training images reaches is frozen (no
gradient, BatchNorm statistics kept), rehearsal draws only crops that reach a
trained branch, and the other-kinds check scores only those crops: the
frozen branch predicts exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

from napari_unet.core.models.network import GreyColourUNet
from napari_unet.core.train.augment import channels_equal

BRANCH_NAMES = ("gray", "colour")
"""Attribute names of the two networks of a :class:`GreyColourUNet` (grey first)."""

BRANCH_WORDS = {"gray": "grey", "colour": "colour"}
"""How notices name each branch."""


def branch_of(image: np.ndarray, channel_axis: int = 0) -> str:
    """Return the branch an image reaches: ``"gray"`` when its channels are all equal, else ``"colour"``.

    Parameters
    ----------
    image : numpy.ndarray
        ``(Y, X)`` (grey), or channels along ``channel_axis``: ``(C, Y, X)``
        normalised or ``(Y, X, C)`` raw.
    channel_axis : int
        Axis of the channels: 0 for normalised images, -1 for raw ones.

    """
    if image.ndim == 2:
        return "gray"
    return "gray" if channels_equal(np.moveaxis(image, channel_axis, 0)) else "colour"


def branches_reached(network: nn.Module, images: Sequence[np.ndarray], channel_axis: int = 0) -> set[str] | None:
    """Return the branches of ``network`` that ``images`` reach, or None for a one-branch network."""
    if not isinstance(network, GreyColourUNet):
        return None
    return {branch_of(image, channel_axis) for image in images}


def freeze_unreached(network: nn.Module, reached: set[str] | None) -> list[nn.Module]:
    """Freeze the branches of ``network`` not in ``reached``: no gradient, BatchNorm in eval mode.

    Returns the frozen modules (none when ``reached`` is None); training must
    put them back in eval mode after every ``network.train()``
    (:func:`keep_frozen`).
    """
    if reached is None:
        return []
    return freeze([getattr(network, name) for name in BRANCH_NAMES if name not in reached])


def freeze(modules: list[nn.Module]) -> list[nn.Module]:
    """Stop ``modules`` learning (no gradient, BatchNorm in eval mode) and return them for :func:`keep_frozen`."""
    for module in modules:
        module.requires_grad_(False)
        module.eval()
    return modules


def keep_frozen(frozen: Sequence[nn.Module]) -> None:
    """Put frozen branches back in eval mode (``network.train()`` switched them to training mode)."""
    for module in frozen:
        module.eval()


def frozen_note(reached: set[str] | None) -> str | None:
    """Return the progress message that names the branch kept as it is (None when every branch trains)."""
    if reached is None or len(reached) == len(BRANCH_NAMES):
        return None
    kept = [BRANCH_WORDS[name] for name in BRANCH_NAMES if name not in reached]
    trained = [BRANCH_WORDS[name] for name in BRANCH_NAMES if name in reached]
    return (
        f"training the {' and '.join(trained)} network only: the model's {' and '.join(kept)} network is kept "
        f"as it is (no training image is {'in colour' if 'colour' in kept else 'grey'})"
    )
