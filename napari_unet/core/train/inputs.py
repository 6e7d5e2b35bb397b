"""Training inputs: checks, normalisation, targets and loss weights, patch sampling pools."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_unet.core.config import TrainingConfig
from napari_unet.core.data.normalize import normalize_plane, validate_image
from napari_unet.core.errors import UserInputError
from napari_unet.core.models.bundle import ModelBundle
from napari_unet.core.train.pixel_classes import check_labels, labels_to_classes, loss_weights

MIN_IMAGE_SIZE = 16
"""Images with a side shorter than this (pixels) are refused."""


MAX_CENTRES_PER_POOL = 200_000
"""Candidate patch centres kept per image and pool (a random subset beyond this)."""


Roi = Any


@dataclass
class TrainImage:
    """One annotated image prepared for patch sampling (padded by ``pad`` on every side)."""

    image: np.ndarray  # (C, Y + 2 pad, X + 2 pad) float32, reflect-padded
    target: np.ndarray  # (Y + 2 pad, X + 2 pad) int64, 0 in the padding
    weight: np.ndarray  # (Y + 2 pad, X + 2 pad) float32, 0 in the padding
    pools: list[np.ndarray]  # candidate centres (K, 2) in padded coordinates: corrected, foreground, counted

    @property
    def counted_pixels(self) -> int:
        """Annotated (weight > 0) pixels of the image, the size of the last sampling pool."""
        return int(self.pools[2].shape[0])


@dataclass
class PreparedImages:
    """Normalised images with their class targets, loss weights and checksums, in input order."""

    normalized: list[np.ndarray]
    classes: list[np.ndarray]
    weights: list[np.ndarray]
    checksums: list[dict[str, Any]]


def as_image_lists(images: Any, labels: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Return ``images`` and ``labels`` as lists of equal length (a single array becomes a list of one)."""
    if isinstance(labels, np.ndarray) and labels.ndim == 2:
        labels = [labels]
        if isinstance(images, np.ndarray):
            images = [images]
    images, labels = list(images), list(labels)
    if len(images) != len(labels):
        raise UserInputError(
            f"{len(images)} images but {len(labels)} label images were given; pass one label image per image"
        )
    if not images:
        raise UserInputError("no annotated images were given; annotate at least one image first")
    return images, labels


def per_image(values: Sequence[Any] | None, count: int, name: str) -> list[Any]:
    """Return ``values`` as one entry per image (``None`` for every image when not given); refuse a wrong length."""
    if values is None:
        return [None] * count
    values = list(values)
    if len(values) != count:
        raise UserInputError(f"{len(values)} entries in {name} but {count} images; pass one entry (or None) per image")
    return values


def check_image(image: Any, index: int) -> np.ndarray:
    """Validate one training image (2D grey or colour, finite); :class:`UserInputError` naming its index."""
    try:
        image = validate_image(image)
    except UserInputError as exc:
        raise UserInputError(f"image {index}: {exc}") from exc
    if image.ndim == 3 and image.shape[-1] > 4:
        raise UserInputError(
            f"image {index} has shape {image.shape}; training expects (Y, X) or (Y, X, C) images with C <= 4. "
            "Pass one plane (or a channels-last RGB image) per list item"
        )
    if image.ndim > 3:
        raise UserInputError(f"image {index} has shape {image.shape}; pass 2D planes (Y, X) or (Y, X, C)")
    if min(image.shape[:2]) < MIN_IMAGE_SIZE:
        raise UserInputError(
            f"image {index} is only {image.shape[0]} x {image.shape[1]} pixels; "
            f"training needs at least {MIN_IMAGE_SIZE} x {MIN_IMAGE_SIZE}: annotate a larger area"
        )
    return image


def check_pair(image: Any, label: Any, index: int, role: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Check one (image, labels) item; ``role`` prefixes the messages (``"validation "`` for validation data)."""
    image = check_image(image, index)
    label = check_labels(label, f"{role}labels {index}")
    if label.shape != image.shape[:2]:
        raise UserInputError(
            f"{role}labels {index} have shape {label.shape} but {role}image {index} is {image.shape[:2]} (Y, X); "
            "the labels must cover the image pixel for pixel"
        )
    return image, label


def prepare_images(
    bundle: ModelBundle,
    images: list[np.ndarray],
    labels: list[np.ndarray],
    cfg: TrainingConfig,
    rois: list[Any],
    previous: list[Any],
) -> PreparedImages:
    """Normalise images and turn labels into classes ``(Y, X)`` int64 and loss weights ``(Y, X)`` float32."""
    prepared = PreparedImages([], [], [], [])
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        image, label = check_pair(image, label, index)
        try:
            weight = loss_weights(
                label,
                cfg.annotation_mode,
                rois=rois[index],
                previous=previous[index],
                margin=cfg.changed_margin,
                corrected_weight=cfg.corrected_weight,
            )
        except UserInputError as exc:
            raise UserInputError(f"image {index}: {exc}") from exc
        prepared.normalized.append(normalize_plane(image, bundle.normalize, bundle.config.in_channels))
        prepared.classes.append(labels_to_classes(label))
        prepared.weights.append(weight)
        prepared.checksums.append(image_checksums(image, label))
    if not any(((c > 0) & (w > 0)).any() for c, w in zip(prepared.classes, prepared.weights, strict=True)):
        raise UserInputError(
            "no annotated nucleus lies in the areas used for training; "
            "label at least one nucleus inside the ROIs / corrected areas"
        )
    return prepared


def image_checksums(image: np.ndarray, label: np.ndarray) -> dict[str, Any]:
    """Return sha256 and shape of an image and its labels (recorded in the lineage)."""
    return {
        "image_sha256": hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest(),
        "labels_sha256": hashlib.sha256(np.ascontiguousarray(label).tobytes()).hexdigest(),
        "shape": list(image.shape),
        "dtype": str(image.dtype),
    }


def choose_patch_size(requested: int, multiple: int, shapes: list[tuple[int, int]]) -> tuple[int, list[str]]:
    """Patch edge: the requested size rounded up to the network's multiple, shrunk when all images are smaller."""
    patch = math.ceil(requested / multiple) * multiple
    largest = max(max(shape) for shape in shapes)
    notes = []
    if patch != requested:
        notes.append(f"patch size {requested} is not a multiple of {multiple}: using {patch} px patches")
    if largest < patch:
        patch = math.ceil(largest / multiple) * multiple
        notes.append(f"the images are smaller than the {requested} px patch size: using {patch} px patches")
    small = [shape for shape in shapes if min(shape) < patch]
    if small:
        sizes = ", ".join(f"{y} x {x}" for y, x in small[:3])
        notes.append(f"{len(small)} image(s) ({sizes}) smaller than the {patch} px patches: padded by reflection")
    return patch, notes


def check_batch_norm(norm: str, batch_size: int, bottleneck: int) -> None:
    """BatchNorm needs more than one value per channel at the bottleneck."""
    if norm == "batch" and batch_size * bottleneck * bottleneck < 2:
        raise UserInputError(
            f"a batch of {batch_size} patch(es) leaves BatchNorm a single value per channel at the network's "
            "deepest level; use batch_size >= 2 or a larger patch_size"
        )


def train_image(prepared: PreparedImages, index: int, patch: int) -> TrainImage:
    """Pad image ``index`` by half a patch and gather its patch-centre pools (corrected, foreground, annotated)."""
    pad = patch // 2
    image = np.pad(prepared.normalized[index], ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    target = np.pad(prepared.classes[index], pad)
    weight = np.pad(prepared.weights[index], pad)
    rng = np.random.default_rng(index)
    pools = [
        patch_centres(weight > 1.0, rng),
        patch_centres((weight > 0) & (target > 0), rng),
        patch_centres(weight > 0, rng),
    ]
    return TrainImage(image, target, weight, pools)


def patch_centres(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Return the ``(K, 2)`` coordinates where ``mask`` is set, a random subset beyond ``MAX_CENTRES_PER_POOL``."""
    centres = np.argwhere(mask)
    if centres.shape[0] > MAX_CENTRES_PER_POOL:
        centres = centres[rng.choice(centres.shape[0], MAX_CENTRES_PER_POOL, replace=False)]
    return centres
