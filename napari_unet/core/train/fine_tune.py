"""Fine-tuning a UNet bundle on annotated images, as a cancellable progress generator (2D; 3D dispatched).

:func:`iter_train` trains a *copy* of a bundle's network on user annotations
and returns a new bundle holding the best weights (by validation score);
:func:`fine_tune_and_save` does the same and stores the result as a new model
version, only when the run completes.

Pipeline
--------
1. Inputs are checked (matching shapes and list lengths, finite intensities,
   at least one labelled nucleus) and normalised with the bundle's
   :class:`~napari_unet.core.config.NormalizeConfig`.
2. Labels become 3-class targets and per-pixel loss weights
   (:mod:`napari_unet.core.train.pixel_classes`) following ``cfg.annotation_mode``.
   When the annotated nuclei are far larger or smaller than those the model
   learned, a message (and the notice) advises a resize
   (:func:`~napari_unet.core.train.preparation.size_advice`).
3. A validation set is the given ``val_images``/``val_labels``, else held-out
   images (``val_fraction`` of them) from five annotated images on, else a
   strip on the right of each image chosen by nucleus count (together
   ``val_fraction`` of the nuclei, at least
   :data:`~napari_unet.core.train.validation.MIN_VAL_OBJECTS`), so one typical
   image can be validated and every image still trains.  Otherwise a
   progress message says why no validation is possible; a trained model is
   then returned untrained (:func:`~napari_unet.core.train.outcome.needs_validation`),
   an untrained one trains on everything.
4. Patches are sampled around corrected, foreground and other annotated
   pixels (in that order of preference), augmented
   (:mod:`napari_unet.core.train.augment`) and fed to AdamW with a linear warm-up
   followed by a cosine decay (or plateau halving, or a constant rate).  The
   schedule runs on the fraction of the budget used, so a time-only budget
   still decays to its end.
5. Every ``val_every`` steps and at the end, the held-out data is predicted
   (averaged over flips for a model that runs with them,
   :func:`~napari_unet.core.predict.runtime.model_uses_flips`),
   post-processed and scored (AP@0.5, pooled over the validation crops) and
   the validation loss is computed; the best weights are kept (the starting
   weights are a candidate too, so fine-tuning never returns a model that
   validates worse than its parent).  Without validation the last weights win,
   averaged with the starting weights when those were trained and validation
   was switched off (``val_fraction`` 0:
   :data:`~napari_unet.core.train.outcome.UNVALIDATED_PARENT_SHARE`).

BatchNorm layers stay in training mode while training (batch statistics of
``batch_size`` patches of ``patch_size`` pixels are plenty) and use their
running statistics when validating; a user who fine-tunes with batches of
one or two patches should prefer a model with ``norm="group"`` or
``"instance"``.

Side effects: ``torch.manual_seed(cfg.seed)`` is called, and on the CPU the
number of torch threads is set to ``cfg.num_threads`` (0 = all cores) and
restored afterwards.
"""

from __future__ import annotations

import copy
import datetime
import time
from collections.abc import Generator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from napari_unet.core.config import TrainingConfig
from napari_unet.core.errors import UserInputError
from napari_unet.core.models.bundle import ModelBundle
from napari_unet.core.models.registry import save_version
from napari_unet.core.predict.runtime import model_uses_flips, resolve_device
from napari_unet.core.progress import Progress, check_cancel
from napari_unet.core.train.branches import branch_of, branches_reached, frozen_note
from napari_unet.core.train.guard import guard_other_kinds
from napari_unet.core.train.inputs import (
    PreparedImages,
    Roi,
    TrainImage,
    as_image_lists,
    check_batch_norm,
    choose_patch_size,
    per_image,
    prepare_images,
    train_image,
)
from napari_unet.core.train.loop import CancelFlag, TrainingRun, set_torch_threads
from napari_unet.core.train.losses import class_weights_from_targets
from napari_unet.core.train.outcome import (
    NOT_VALIDATED_OUTCOME,
    UNVALIDATED_OUTCOME,
    TrainResult,
    child_metadata,
    child_postprocess,
    is_trained,
    needs_validation,
    notice_of,
    outcome_text,
)
from napari_unet.core.train.preparation import size_advice, size_advice_text
from napari_unet.core.train.replay import (
    Crops,
    load_replay_set,
    replay_check_flags,
    replay_set_path,
    split_replay_set,
)
from napari_unet.core.train.validation import rechoose_thresholds, split_validation

FINE_TUNE_LEARNING_RATE = 3e-4
"""Peak learning rate for fine-tuning a trained model (CLI and Fine-tune panel): with half the patches from the
replay set it cut forgetting on other kinds from -0.21 to -0.06 AP@0.5 against 1e-3
(benchmarks/results/hitl_levers.json, an earlier recipe that trained both branches)."""

FINE_TUNE_MAX_EPOCHS = 100
"""Fine-tuning a trained model stops after this many passes over the corrected pixels (or at the time budget,
whichever comes first): a few corrected images are learnt well before a 2-minute budget ends, and training on
past that fits those images at the expense of the rest of the experiment (``benchmarks/results/hitl.json``)."""


def fine_tune_recipe(bundle: ModelBundle, cfg: TrainingConfig, *, keep_learning_rate: bool = False) -> TrainingConfig:
    """Return ``cfg`` with the fine-tuning recipe for this starting model (what the CLI and the panel run).

    A trained starting model is fine-tuned at :data:`FINE_TUNE_LEARNING_RATE`
    (unless ``keep_learning_rate``: the user chose one) and, in 2D, with its
    BatchNorm statistics frozen and for at most :data:`FINE_TUNE_MAX_EPOCHS`
    epochs (unless ``cfg`` sets its own; 3D fine-tuning was measured with
    neither); training from scratch keeps ``cfg`` as it is.
    ``benchmarks/bench_hitl.py`` measures this recipe: with frozen statistics
    and a quarter of the patches rehearsed, 2 corrected synthetic H&E images
    lifted the rest of their kind by +0.216 while DSB colour tissue (the
    other colour kind) moved by +0.011; unfrozen, half rehearsed, the parent
    was kept (``benchmarks/results/hitl_colour_probe.json``).
    """
    if not is_trained(bundle):
        return cfg
    learning_rate = cfg.learning_rate if keep_learning_rate else FINE_TUNE_LEARNING_RATE
    planar = bundle.config.spatial_dims == 2
    max_epochs = FINE_TUNE_MAX_EPOCHS if cfg.max_epochs is None and planar else cfg.max_epochs
    frozen = cfg.freeze_batch_norm or planar
    return replace(cfg, learning_rate=learning_rate, max_epochs=max_epochs, freeze_batch_norm=frozen)


def iter_train(
    bundle: ModelBundle,
    images: Sequence[np.ndarray] | np.ndarray,
    labels: Sequence[np.ndarray] | np.ndarray,
    cfg: TrainingConfig | None = None,
    *,
    rois: Sequence[Sequence[Roi] | None] | None = None,
    previous: Sequence[np.ndarray | None] | None = None,
    val_images: Sequence[np.ndarray] | None = None,
    val_labels: Sequence[np.ndarray] | None = None,
    cancel: CancelFlag = None,
) -> Generator[Progress, None, TrainResult]:
    """Fine-tune a copy of ``bundle``'s network, yielding progress after every step.

    Parameters
    ----------
    bundle : ModelBundle
        Starting model; its network is deep-copied and never modified.
    images : list of arrays (Y, X) or (Y, X, C)
        Annotated images, any numeric dtype (a single array is one image).
    labels : list of arrays (Y, X) of int
        Instance labels of each image (0 = background).
    cfg : TrainingConfig, optional
        Run settings (``annotation_mode`` decides which pixels count).
    rois : list, optional
        Per image, a list of rectangles ``(y0, x0, y1, x1)`` or ``(N, 2)``
        polygons; needed for ``annotation_mode="rois"``.
    previous : list of arrays (Y, X), optional
        Per image, the prediction the user corrected; needed for ``changed``
        mode, and used in every mode to up-weight corrected pixels.
    val_images, val_labels : lists, optional
        Fully annotated validation images; otherwise part of the data is held out.
    cancel : callable, optional
        Checked between steps; when it returns True, :class:`Cancelled` is raised.

    Yields
    ------
    Progress
        ``stage="train"``, ``done`` = steps, ``total`` = planned steps (0 when
        only a time budget is set) and ``metrics`` with ``loss``, ``lr``,
        ``val_ap50``, ``val_loss``, ``eta_s``, ``steps_per_s``, ``elapsed_s``.

    Returns
    -------
    TrainResult

    Raises
    ------
    UserInputError
        For unusable inputs (see the module docstring).
    Cancelled
        When ``cancel()`` returns True; nothing is returned or changed.

    """
    cfg = cfg or TrainingConfig()
    started = time.perf_counter()
    images, labels = as_image_lists(images, labels)
    rois_list = per_image(rois, len(images), "rois")
    previous_list = per_image(previous, len(images), "previous")
    model_cfg = bundle.config
    if model_cfg.head != "bg_interior_boundary":
        raise UserInputError(
            f"fine-tuning trains the 3-class head (background / interior / boundary); this model's head is "
            f"{model_cfg.head!r}. Start from the default model or another 3-class model."
        )
    prepared = prepare_images(bundle, images, labels, cfg, rois_list, previous_list)
    advice = size_advice(bundle.metadata, labels, [weight > 0 for weight in prepared.weights])
    messages: list[str] = [size_advice_text(advice)] if advice else []
    patch, notes = choose_patch_size(cfg.patch_size, model_cfg.size_multiple, [a.shape[:2] for a in images])
    messages += notes
    check_batch_norm(model_cfg.norm, cfg.batch_size, patch // model_cfg.size_multiple)
    train_ids, val_windows, val_note = split_validation(bundle, prepared, labels, cfg, val_images, val_labels)
    trains = bool(val_windows) or not needs_validation(bundle, cfg)
    if not val_windows:
        val_note += f"; {UNVALIDATED_OUTCOME[is_trained(bundle)] if trains else NOT_VALIDATED_OUTCOME}"
    messages.append(val_note)
    reached, replay_set, check_pairs = None, [], Crops([], [], [])
    if trains:  # a run that will not train needs no branches or rehearsal (and says nothing of them)
        reached, replay_set, check_pairs, notes = training_extras(bundle, cfg, patch, prepared, train_ids)
        messages += notes
    for message in messages:
        yield Progress("train", 0, 0, message)
    train_set = [train_image(prepared, i, patch) for i in train_ids]
    class_weights = class_weights_from_targets([t.target for t in train_set], [t.weight for t in train_set])

    device = resolve_device(cfg.device)
    network = copy.deepcopy(bundle.network).to(device=device, dtype=torch.float32)
    threads = set_torch_threads(device, cfg.num_threads)
    try:
        loop = TrainingRun(
            network, device, cfg, train_set, val_windows, class_weights, patch, bundle, started, replay_set, reached
        )
        yield from loop.run(cancel)
    finally:
        if threads is not None:
            torch.set_num_threads(threads)
    network.load_state_dict(loop.best_state)
    network.eval().to("cpu")
    other_kinds = None
    if check_pairs.images and loop.best_step > 0:
        check_cancel(cancel)
        yield Progress("train", loop.step, loop.step, "checking the new model on other kinds of images")
        other_kinds = guard_other_kinds(bundle, check_pairs, loop)
    reported = loop.reported_scores()
    lineage = training_lineage(
        bundle, cfg, prepared, train_ids, loop, reported, time.perf_counter() - started, device, val_note
    )
    if other_kinds is not None:
        lineage["replay_check"] = other_kinds
    if advice:
        lineage["size_advice"] = advice
    new_bundle = ModelBundle(
        network=network,
        config=bundle.config,
        normalize=bundle.normalize,
        postprocess=child_postprocess(bundle.postprocess),
        metadata=child_metadata(bundle, lineage),
    )
    if cfg.retune_thresholds and val_windows and loop.best_step > 0:
        check_cancel(cancel)
        yield Progress("train", loop.step, loop.step, "rechoosing the thresholds on the held-out corrections")
        new_bundle.postprocess, lineage["retuned_thresholds"] = rechoose_thresholds(
            network, val_windows, new_bundle.postprocess, model_uses_flips(bundle.metadata)
        )
    seconds = time.perf_counter() - started
    result = TrainResult(
        bundle=new_bundle,
        history=loop.history,
        best_score=loop.best_score,
        stopped_reason=loop.stopped_reason,
        best_step=loop.best_step,
        steps=loop.step,
        seconds=seconds,
        metrics_before=reported[0],
        metrics_after=reported[1],
        lineage=lineage,
        messages=messages,
    )
    if loop.refused is not None and result.kept_parent:
        result.refused = refused_model(new_bundle, *loop.refused, outcome_text(result))
    return result


def refused_model(
    kept: ModelBundle, state: dict[str, torch.Tensor], step: int, scores: dict[str, float] | None, reason: str
) -> ModelBundle:
    """Return the fine-tuned weights a run refused as a model of their own that says so.

    Parameters
    ----------
    kept : ModelBundle
        The run's result (the starting model kept, with the run's lineage).
    state : dict
        The refused weights (``TrainingRun.refused``).
    step : int
        The training step they are from.
    scores : dict or None
        Their held-out scores as the model will run (with its flips, if it uses them), ``val_ap50``, ...
    reason : str
        Why the run kept the starting model (:func:`~napari_unet.core.train.outcome.outcome_text`).

    Returns
    -------
    ModelBundle
        ``kept``'s architecture, normalisation and thresholds with the refused weights; its lineage is the run's
        with ``refused = {"step", "reason"}``, so whoever loads it can see that validation did not keep it, and
        ``best_step``, ``metrics`` and ``metrics_after`` those of the refused weights (not the parent's).

    """
    network = copy.deepcopy(kept.network)
    network.load_state_dict(state)
    own = {"best_step": step, "metrics": dict(scores or {}), "metrics_after": scores}
    lineage = {**kept.metadata.get("lineage", {}), **own, "refused": {"step": step, "reason": reason}}
    return replace(kept, network=network.eval(), metadata={**kept.metadata, "lineage": lineage})


def training_extras(
    bundle: ModelBundle, cfg: TrainingConfig, patch: int, prepared: PreparedImages, train_ids: list[int]
) -> tuple[set[str] | None, list[TrainImage], Crops, list[str]]:
    """Return the branches the training images reach, the rehearsal crops, the check crops and notes saying so.

    See :func:`~napari_unet.core.train.branches.branches_reached` and :func:`replay_train_images`.
    """
    reached = branches_reached(bundle.network, [prepared.normalized[i] for i in train_ids])
    notes = [note for note in [frozen_note(reached)] if note]
    replay_set, check_pairs = replay_train_images(bundle, cfg, patch, reached)
    if replay_set:
        share = round(100 * cfg.replay_fraction)
        notes.append(
            f"rehearsal: {share}% of the patches come from {len(replay_set)} crops of the model's training images"
        )
    return reached, replay_set, check_pairs, notes


def replay_train_images(
    bundle: ModelBundle, cfg: TrainingConfig, patch: int, reached: set[str] | None = None
) -> tuple[list[TrainImage], Crops]:
    """Return the starting model's rehearsal crops ready for patch sampling and its check crops.

    Both are empty without a replay set; rehearsal is empty with
    ``replay_fraction`` 0 (the check still runs).  Each crop counts as fully
    annotated; see :mod:`napari_unet.core.train.replay`.  With ``reached``
    (the branches of a two-branch model that train, :mod:`~napari_unet.core.train.branches`)
    only crops that reach those branches are returned.
    """
    path = replay_set_path(bundle)
    if path is None:
        return [], Crops([], [], [])
    crops = load_replay_set(path)
    rehearse, check = split_replay_set(crops, replay_check_flags(path, len(crops.images)))
    rehearse, check = crops_reaching(reached, rehearse), crops_reaching(reached, check)
    if cfg.replay_fraction <= 0:
        return [], check
    unannotated: list[Any] = [None] * len(rehearse.images)
    full = replace(cfg, annotation_mode="full")
    prepared = prepare_images(bundle, rehearse.images, rehearse.labels, full, unannotated, unannotated)
    return [train_image(prepared, index, patch) for index in range(len(rehearse.images))], check


def crops_reaching(reached: set[str] | None, crops: Crops) -> Crops:
    """Keep the crops ``(Y, X[, C])`` that reach a branch in ``reached`` (all when None)."""
    if reached is None:
        return crops
    return crops.subset([i for i, image in enumerate(crops.images) if branch_of(image, channel_axis=-1) in reached])


def iter_fine_tune(
    bundle: ModelBundle,
    images: Sequence[np.ndarray] | np.ndarray,
    labels: Sequence[np.ndarray] | np.ndarray,
    cfg: TrainingConfig | None = None,
    *,
    rois: Sequence[Any] | None = None,
    z_spacings: Sequence[float | None] | None = None,
    **kwargs: Any,
) -> Generator[Progress, None, TrainResult]:
    """Fine-tune ``bundle`` on annotated images: 2D planes or, for a 3D model, Z-stacks (as ``iter_predict`` picks).

    Parameters
    ----------
    bundle : ModelBundle
        The starting model; ``bundle.config.spatial_dims`` picks the path.
    images, labels : sequence of numpy.ndarray
        ``(Y, X[, C])`` images with ``(Y, X)`` labels for a 2D model;
        ``(Z, Y, X[, C])`` stacks with ``(Z, Y, X)`` labels for a 3D one.
    cfg : TrainingConfig, optional
        Budget, rates and validation settings (defaults when omitted).
    rois : sequence, optional
        Per image: the annotated ROIs (2D, see :func:`iter_train`) or the
        reviewed planes / mask (3D, ``annotated`` of
        :func:`~napari_unet.core.train.volumetric.iter_train_volume`).
    z_spacings : sequence of float or None, optional
        Per stack: its Z step (3D only).
    **kwargs
        ``previous``, ``val_images``, ``val_labels``, ``cancel`` (both paths take
        ``val_images``/``val_labels``/``cancel``; ``previous`` is 2D only).

    Returns
    -------
    TrainResult
        Via ``StopIteration.value``.

    """
    if bundle.config.spatial_dims == 3:
        from napari_unet.core.train.volumetric import iter_train_volume

        if kwargs.pop("previous", None) is not None:
            raise UserInputError("3D fine-tuning does not use the previous prediction; leave 'previous' out")
        val_volumes = kwargs.pop("val_images", None)
        return (
            yield from iter_train_volume(
                bundle, images, labels, cfg, annotated=rois, val_volumes=val_volumes, z_spacings=z_spacings, **kwargs
            )
        )
    if z_spacings is not None and any(z is not None for z in z_spacings):
        raise UserInputError("a Z step is for 3D models; this model is 2D")
    return (yield from iter_train(bundle, images, labels, cfg, rois=rois, **kwargs))


def fine_tune_and_save(
    bundle: ModelBundle,
    images: Sequence[np.ndarray] | np.ndarray,
    labels: Sequence[np.ndarray] | np.ndarray,
    cfg: TrainingConfig | None = None,
    name: str = "fine-tuned",
    **kwargs: Any,
) -> Generator[Progress, None, TrainResult]:
    """Run :func:`iter_fine_tune` (2D or 3D) and save the result as a new version of model ``name``.

    Nothing is saved when the run is cancelled or fails, or when validation
    kept the starting weights (``result.kept_parent``: no better model to
    save), so the previous versions stay untouched; the weights validation
    refused are then in ``result.refused``, for the caller to save apart when
    the user asks.  Keyword arguments go to :func:`iter_fine_tune`.

    Returns
    -------
    TrainResult
        With ``saved`` set to the ``ModelInfo`` returned by
        :func:`~napari_unet.core.models.registry.save_version` (None when nothing was saved).

    """
    result = yield from iter_fine_tune(bundle, images, labels, cfg, **kwargs)
    if result.kept_parent:
        yield Progress("train", result.steps, result.steps, f"no new version saved: {notice_of(result)}", {})
        return result
    result.saved = save_version(result.bundle, name, result.lineage)
    yield Progress("train", result.steps, result.steps, f"saved as model {name!r}", {})
    return result


def training_lineage(
    bundle: ModelBundle,
    cfg: TrainingConfig,
    prepared: PreparedImages,
    train_ids: list[int],
    loop: TrainingRun,
    reported: tuple[dict[str, float] | None, dict[str, float] | None],
    seconds: float,
    device: torch.device,
    validation: str,
) -> dict[str, Any]:
    """Return the lineage a fine-tuned child records: parent, data checksums and roles, settings, scores, steps.

    ``reported`` is the held-out scores before and after as the model runs (:meth:`TrainingRun.reported_scores`).
    """
    data = [{**sums, "role": "train" if i in train_ids else "validation"} for i, sums in enumerate(prepared.checksums)]
    return {
        "parent": {
            "name": bundle.name,
            "version": bundle.version,
            "sha256": bundle.sha256,
        },
        "data": data,
        "annotation_mode": cfg.annotation_mode,
        "settings": cfg.to_dict(),
        "metrics_before": reported[0],
        "metrics_after": reported[1],
        "metrics": dict(reported[1] or {}),
        "validation": validation,
        "held_out_decision": loop.held_out_decision(),
        "seconds": round(seconds, 3),
        "validation_seconds": round(loop.validation_seconds, 3),
        "averaged_with_parent": loop.blended,
        "frozen_branches": loop.frozen_names,
        "steps": loop.step,
        "best_step": loop.best_step,
        "stopped_reason": loop.stopped_reason,
        "device": str(device),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
