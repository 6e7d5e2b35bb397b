"""A simulated microscopist, kind by kind: correct K images of an experiment, fine-tune, segment the rest.

For every *kind* of image in the shared data (grouped by source, stain and
modality; only images the default model neither trained on nor chose its
thresholds with: the ``val`` and ``test`` splits of ``training/splits_v2.json``)
the first K images stand in for the user's corrections (their ground truth)
and the model is fine-tuned from the default model as ``napari-unet train``
and the Fine-tune panel do (:func:`napari_unet.core.train.fine_tune.iter_fine_tune`
with the CLI's training defaults).  Scored, before and after (AP@0.5, the
model's own test-time settings):

(a) ``kind``: up to ``--scored`` other images of the same kind (the rest of the experiment);
(b) ``forgetting``: a fixed panel of ``--panel`` images of every *other* kind;
(c) ``half_image`` (with ``--half-image``): the right half of the first image
    after correcting its left half (annotation mode ``rois``);
(d) ``magnified`` (with ``--magnifications 0.5,2``): the images of (a)
    resized by each factor, as the same experiment imaged at another
    magnification (a 20x/40x mix) and segmented without a resize.

With ``--pool P --order uncertain`` the user corrects the K of the first P
images the default model is least sure of (the Experiment view's "Correct
next"), with ``--order folder`` the first K of them; both score the images
after the pool, so the two orders compare on the same images.

``--correct-scored`` is a bound, not a user: the scored images themselves
are the corrections (their ground truth, a fifth of their nuclei held out as
usual), so their gain bounds what any corrected images of the kind teach the
model about them in the budget; with ``--keep-every-child`` no rule hides it.

``--scale estimate`` segments and fine-tunes each kind at the scale the
Segment panel's Estimate gives on its corrected images (as the Fine-tune
panel and ``napari-unet train --scale`` train at the scale an image was
segmented at); ``--scale advice`` at the resize fine-tuning advises from
the corrected labels (:func:`~napari_unet.core.train.preparation.size_advice`,
1 when it gives none); ``--model`` fine-tunes another parent than the bundled model
(with the replay set in its folder; ``benchmarks/unseen_kinds.sh`` runs the
previous default model on kinds it never trained on).

Budgets are training steps: ``--seconds`` is turned into steps with
``--steps-per-second``, the pace of an undisturbed fine-tune on 2 CPU cores
(measure it with ``--calibrate``), so results do not depend on what else the
machine runs; the seconds the run itself took and the share spent validating
are recorded too.  Recipes are named sets of :class:`TrainingConfig` changes
(``--recipes``).

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.bench_hitl --calibrate
    .venv/bin/python -m benchmarks.bench_hitl --k 2 --seconds 120 --steps-per-second 0.9 \\
        --recipes shipped,no_replay --json benchmarks/results/hitl.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.report import save
from napari_unet.core.config import InferenceConfig, TrainingConfig
from napari_unet.core.evaluate.metrics import evaluate_image
from napari_unet.core.experiment import uncertainty
from napari_unet.core.io import read_image, read_labels
from napari_unet.core.models.registry import load_model
from napari_unet.core.predict.object_size import estimate_scale, settled_scale
from napari_unet.core.predict.segment import predict
from napari_unet.core.progress import run_to_end
from napari_unet.core.train import fine_tune as fine_tuning
from napari_unet.core.train import loop as training_loop
from napari_unet.core.train.fine_tune import fine_tune_recipe, iter_fine_tune
from napari_unet.core.train.preparation import rescale_training_data, size_advice
from training.splits import split_images

RECIPES: dict[str, dict[str, Any]] = {
    "shipped": {},
    "no_replay": {"replay_fraction": 0.0},
    "high_lr": {"learning_rate": 1e-3},
    "no_epoch_cap": {"max_epochs": None},
    "epochs_50": {"max_epochs": 50},
    "replay_half": {"replay_fraction": 0.5},
    "replay_quarter": {"replay_fraction": 0.25},
    "replay_tenth": {"replay_fraction": 0.1},
    "frozen_bn_replay_quarter": {"freeze_batch_norm": True, "replay_fraction": 0.25},
    "frozen_bn_replay_tenth": {"freeze_batch_norm": True, "replay_fraction": 0.1},
    "low_lr": {"learning_rate": 3e-4},
    "retune": {"retune_thresholds": True},
    "frozen_bn": {"freeze_batch_norm": True},
    "bn_adapts": {"freeze_batch_norm": False},
    "frozen_bn_low_lr": {"freeze_batch_norm": True, "learning_rate": 3e-4},
    "low_lr_replay_half": {"learning_rate": 3e-4, "replay_fraction": 0.5},
    "blend": {"parent_share": 0.5},
    "frozen_bn_blend": {"freeze_batch_norm": True, "parent_share": 0.5},
    "low_lr_replay_half_blend": {"learning_rate": 3e-4, "replay_fraction": 0.5, "parent_share": 0.5},
    "replay_retune": {"replay_fraction": 0.5, "retune_thresholds": True},
    "flip_checks": {"quick_checks": False},
    "stain_jitter": {"stain_jitter": 0.5},
    "held_out_35": {"val_fraction": 0.35},
    "anchor_10": {"anchor_decay": 10.0},
    "anchor_100": {"anchor_decay": 100.0},
    "anchor_300": {"anchor_decay": 300.0},
    "anchor_100_no_cap": {"anchor_decay": 100.0, "max_epochs": None},
    "anchor_100_replay_tenth": {"anchor_decay": 100.0, "replay_fraction": 0.1},
    "wide_zoom": {"scale_augment": 2.0},
    "decoder_only": {"trained_part": "decoder"},
    "decoder_only_no_cap": {"trained_part": "decoder", "max_epochs": None},
    "encoder_only": {"trained_part": "encoder"},
}
"""Recipe name -> TrainingConfig fields changed from the product's recipe (``shipped``: the CLI's and the panel's
fine-tuning of the default model, :func:`~napari_unet.core.train.fine_tune.fine_tune_recipe`)."""

SYNTHETIC_KIND = "synthetic_he"
"""A kind the default model is weak on: H&E-like brightfield images from napari-unet's generator
(``bench_finetune``'s seeds, never used in training), since the shared data holds few such images."""

SYNTHETIC_IMAGES = 8


def kind_of(key: str, group: str, shape: tuple[int, ...]) -> str | None:
    """The kind of one held-out image (None: a kind too small to benchmark).

    DSB stage-1 fluorescence splits by image size (small crops vs large
    fields, different microscopes and magnifications); S-BSST265 by tissue
    (tumour sections vs normal samples); the DSB test-stage images
    (``dsb2018_val``) are their own experiment.
    """
    source, name = key.split("/", 1)
    if source == "s_bsst265":
        return "s_bsst265_normal" if name.startswith("normal") else "s_bsst265_tumour"
    if source == "dsb2018_val":
        return "dsb_stage2_colour" if group == "colour" else "dsb_stage2_fluorescence"
    if group == "colour":
        return "dsb_colour_tissue"
    if group == "fluorescence":
        return "dsb_fluorescence_small" if max(shape[:2]) <= 360 else "dsb_fluorescence_large"
    return None


def images_by_kind(items: list[Any]) -> dict[str, list[tuple[str, Path, Path]]]:
    """Kind -> ``(key, image path, labels path)`` of the split images ``items`` of that kind, in their order."""
    kinds: dict[str, list[tuple[str, Path, Path]]] = {}
    for item in items:
        kind = kind_of(item.key, item.group, read_labels(item.labels_path).shape)
        if kind is not None:
            kinds.setdefault(kind, []).append((item.key, item.image_path, item.labels_path))
    return kinds


def held_out_kinds() -> dict[str, list[tuple[str, Path, Path]]]:
    """Kind -> held-out images ``(key, image path, labels path)`` in a fixed shuffled order (kinds with >= 3)."""
    kinds = images_by_kind(sorted(split_images(split="val") + split_images(split="test"), key=lambda item: item.key))
    rng = np.random.default_rng(0)
    return {kind: [items[i] for i in rng.permutation(len(items))] for kind, items in kinds.items() if len(items) >= 3}


def synthetic_kind() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The :data:`SYNTHETIC_KIND` images ``(key, image (256, 256, 3), labels (256, 256))``."""
    from benchmarks.bench_finetune import synthetic_brightfield_pairs

    return [(f"synthetic/{key}", image, labels) for key, image, labels in synthetic_brightfield_pairs(SYNTHETIC_IMAGES)]


def ap50(bundle: Any, image: np.ndarray, labels: np.ndarray, scale: float = 1.0) -> float:
    """AP@0.5 of the model on one image (the model's own test-time settings), resized by ``scale`` as it segments."""
    prediction = predict(image, bundle, inference=InferenceConfig(scale=scale))
    return float(evaluate_image(labels, prediction.labels)["per_threshold"][0]["accuracy"])


def fine_tune(
    bundle: Any, images: list, labels: list, cfg: TrainingConfig, rois: list | None = None, scale: float = 1.0
) -> Any:
    """Fine-tune ``bundle`` on the pairs resized by ``scale`` (as ``napari-unet train --scale``); the TrainResult."""
    if scale != 1.0:
        images, labels, rois = rescale_training_data(images, labels, rois, scale)
    return run_to_end(iter_fine_tune(bundle, images, labels, cfg, rois=rois))


def validation_records(result: Any) -> list[dict[str, float]]:
    """The held-out checks of a fine-tune (``TrainResult``): step, AP@0.5 and loss of each, the start's included."""
    keys = ("step", "val_ap50", "val_loss")
    return [{key: row[key] for key in keys if key in row} for row in result.history if "val_ap50" in row]


def score(bundle: Any, pairs: list[tuple[np.ndarray, np.ndarray]], scale: float = 1.0) -> list[float]:
    """AP@0.5 per image, segmented at ``scale``."""
    return [ap50(bundle, image, labels, scale) for image, labels in pairs]


def image_scales(bundle: Any, images: list[np.ndarray]) -> list[float]:
    """The Segment panel's Estimate (:func:`~napari_unet.core.predict.object_size.estimate_scale`) on each image."""
    return [estimate_scale(image, bundle).scale for image in images]


def experiment_scale(factors: list[float]) -> float:
    """The scale a user segments an experiment at, from the Estimates on its corrected images.

    Their geometric mean, settled as Estimate settles a factor
    (:func:`~napari_unet.core.predict.object_size.settled_scale`; images of one experiment can disagree:
    0.75 and 1.0 make 0.87, which Estimate would not resize by).
    """
    return settled_scale(float(np.exp(np.mean(np.log(factors)))))


def recipe_config(default: Any, recipe: str, steps: float, seed: int) -> TrainingConfig:
    """The fine-tuning of ``default`` as the CLI and the panel run it, changed by ``recipe``, for ``steps`` steps.

    ``steps`` (a budget in seconds times the pace) is rounded, at least 1; no time limit, so the
    result does not depend on what else the machine runs.
    """
    recipe_cfg = fine_tune_recipe(default, TrainingConfig())
    return replace(recipe_cfg, max_seconds=None, max_steps=max(1, round(steps)), seed=seed, **RECIPES[recipe])


def run_recipe(
    args: argparse.Namespace,
    recipe: str,
    kinds: dict[str, Any],
    default: Any,
    before: dict[str, Any],
    results: dict[str, Any],
    checkpoint: Callable[[], Any],
) -> None:
    """All kinds for one recipe: fine-tune on K images per kind, score its kind and the forgetting panel.

    ``results`` (kind -> row) fills as kinds finish; ``checkpoint()`` is called after each.
    """
    cfg = recipe_config(default, recipe, args.seconds * args.steps_per_second, args.seed)
    steps = cfg.max_steps
    for kind, data in kinds.items():
        print(f"[{recipe}] {kind}: fine-tuning {steps} steps on {len(data['corrected'])} image(s)", file=sys.stderr)
        images, labels = zip(*data["corrected"], strict=True)
        started = time.perf_counter()
        result = fine_tune(default, list(images), list(labels), cfg, scale=data["scale"])
        seconds = time.perf_counter() - started
        after_kind = score(result.bundle, data["scored"], data["scale"])
        after_panel = {
            other: score(result.bundle, kinds[other]["panel"], kinds[other]["scale"])
            for other in kinds
            if other != kind
        }
        row = {
            "kind_before": before[kind]["kind"],
            "kind_after": after_kind,
            "kind_gain": float(np.mean(after_kind) - np.mean(before[kind]["kind"])),
            "forgetting": {
                other: float(np.mean(after_panel[other]) - np.mean(before[other]["panel"])) for other in after_panel
            },
            "steps": result.steps,
            "best_step": result.best_step,
            "kept_parent": result.kept_parent,
            "averaged_with_parent": result.lineage.get("averaged_with_parent"),
            "seconds": seconds,
            "validation_seconds": result.lineage.get("validation_seconds"),
            "held_out_before": result.metrics_before,
            "held_out_after": result.metrics_after,
            "other_kinds_check": result.replay_check,
            "validations": validation_records(result),
            "messages": result.messages,
        }
        row["forgetting_mean"] = float(np.mean(list(row["forgetting"].values()))) if row["forgetting"] else 0.0
        if data["magnified"]:
            row["magnified"] = magnified_gains(result.bundle, data, before[kind]["magnified"])
        if args.half_image:
            row["half_image"] = half_image(default, data["corrected"][0], cfg, data["scale"])
        results[kind] = row
        checkpoint()
        print(
            f"[{recipe}] {kind}: gain {row['kind_gain']:+.3f}, forgetting {row['forgetting_mean']:+.3f}",
            file=sys.stderr,
        )


def magnified_pairs(pairs: list[tuple[np.ndarray, np.ndarray]], factors: list[float]) -> dict[str, list]:
    """Factor (as text) -> ``pairs`` resized by it (image bilinear, labels nearest, as ``train --scale`` resizes)."""
    magnified = {}
    for factor in factors:
        images, labels, _ = rescale_training_data([i for i, _ in pairs], [lab for _, lab in pairs], None, factor)
        magnified[str(factor)] = list(zip(images, labels, strict=True))
    return magnified


def magnified_gains(bundle: Any, data: dict[str, Any], before: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """Per magnification factor: AP@0.5 per resized image before and after, and the mean gain."""
    rows = {}
    for factor, pairs in data["magnified"].items():
        after = score(bundle, pairs, data["scale"])
        gain = float(np.mean(after) - np.mean(before[factor]))
        rows[factor] = {"before": before[factor], "after": after, "gain": gain}
    return rows


def half_image(
    default: Any, pair: tuple[np.ndarray, np.ndarray], cfg: TrainingConfig, scale: float = 1.0
) -> dict[str, float]:
    """Correct the left half of one image (ROI), fine-tune, score the right half before and after (at ``scale``)."""
    image, labels = pair
    middle = labels.shape[1] // 2
    right = (slice(None), slice(middle, None))
    rois = [[(0, 0, labels.shape[0], middle)]]
    result = fine_tune(default, [image], [labels], replace(cfg, annotation_mode="rois"), rois, scale)
    return {
        "before": ap50(default, image[right], labels[right], scale),
        "after": ap50(result.bundle, image[right], labels[right], scale),
    }


def calibrate(seconds: float) -> float:
    """Steps per second of an undisturbed fine-tune of the default model (CLI defaults) on this machine."""
    kinds = held_out_kinds()
    items = next(iter(kinds.values()))[:2]
    images = [read_image(path) for _, path, _ in items]
    labels = [read_labels(path) for _, _, path in items]
    default = load_model("default")
    cfg = replace(fine_tune_recipe(default, TrainingConfig()), max_seconds=seconds)
    result = fine_tune(default, images, labels, cfg)
    return result.steps / max(result.seconds, 1e-9)


def uncertainty_of(bundle: Any, image: np.ndarray) -> float:
    """The default model's uncertainty on ``image`` (what the Experiment view ranks "Correct next" by)."""
    return uncertainty(predict(image, bundle).probabilities)


def choose_corrected(args: argparse.Namespace, pool: list[tuple[Any, Any]], default: Any) -> list[int]:
    """Indices into ``pool`` of the K images the simulated user corrects: the first K, or the K most uncertain."""
    if args.order == "folder":
        return list(range(min(args.k, len(pool))))
    ranked = sorted(range(len(pool)), key=lambda i: -uncertainty_of(default, pool[i][0]))
    return sorted(ranked[: args.k])


def scored_indices(pool: int, scored: int) -> list[int]:
    """Indices of a kind's scored images, the ``scored`` after its first ``pool`` (the ``--correct-scored`` bound)."""
    return list(range(pool, pool + scored))


def load_kinds(args: argparse.Namespace, default: Any) -> dict[str, Any]:
    """Kind -> corrected pairs, scored pairs, forgetting-panel pairs (read once).

    The user corrects K of the first ``max(K, --pool)`` images (``--order``:
    the first K, or the K the default model is least sure of); the images
    after that pool are scored, so both orders are scored on the same images.
    With ``--correct-scored`` the user corrects the scored images themselves.
    """
    wanted = None if args.kinds == "all" else set(args.kinds.split(","))
    found: dict[str, list[tuple[str, Any, Any]]] = {
        kind: [(key, read_image(image), read_labels(labels)) for key, image, labels in items]
        for kind, items in held_out_kinds().items()
        if wanted is None or kind in wanted
    }
    if wanted is None or SYNTHETIC_KIND in wanted:
        found[SYNTHETIC_KIND] = synthetic_kind()
    kinds = {}
    for kind, items in found.items():
        pairs = [(image, labels) for _, image, labels in items]
        pool = pairs[: max(args.k, args.pool)]
        rest = pairs[len(pool) :][: args.scored]
        chosen = scored_indices(len(pool), len(rest)) if args.correct_scored else choose_corrected(args, pool, default)
        corrected = [pairs[i] for i in chosen]
        estimates, scale = kind_scale(args.scale, default, corrected)
        kinds[kind] = {
            "keys": [key for key, _, _ in items],
            "corrected_keys": [items[i][0] for i in chosen],
            "corrected": corrected,
            "scored": rest,
            "panel": rest[: args.panel],
            "magnified": magnified_pairs(rest, [float(f) for f in args.magnifications.split(",") if f]),
            "estimates": estimates,
            "scale": scale,
        }
    return kinds


def kind_scale(how: str, default: Any, corrected: list[tuple[np.ndarray, np.ndarray]]) -> tuple[list[float], float]:
    """The scale a kind is segmented and fine-tuned at (``--scale``) and the Estimates it came from.

    Returns
    -------
    estimates : list of float
        Each corrected image's Estimate (``estimate``; ``[1.0]`` otherwise).
    scale : float
        1, the Estimates' :func:`experiment_scale`, or the factor of
        :func:`~napari_unet.core.train.preparation.size_advice` on the corrected labels (1 without advice).
    """
    if how == "estimate":
        estimates = image_scales(default, [image for image, _ in corrected])
        return estimates, experiment_scale(estimates)
    if how == "advice":
        labels = [labels for _, labels in corrected]
        advice = size_advice(default.metadata, labels, [np.ones(label.shape, bool) for label in labels])
        return [1.0], advice["factor"] if advice else 1.0
    return [1.0], 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=2, help="images the simulated user corrects per kind")
    parser.add_argument("--seconds", type=float, default=120.0, help="fine-tuning budget on 2 CPU cores")
    parser.add_argument("--steps-per-second", type=float, default=None, help="pace that turns seconds into steps")
    parser.add_argument("--calibrate", action="store_true", help="measure --steps-per-second (run on an idle machine)")
    parser.add_argument("--recipes", default="shipped,no_replay", help=f"comma-separated, of {sorted(RECIPES)}")
    parser.add_argument("--kinds", default="all", help="comma-separated kinds, or all")
    parser.add_argument("--scored", type=int, default=6, help="other images of the kind scored")
    parser.add_argument("--panel", type=int, default=2, help="images per kind in the forgetting panel")
    parser.add_argument("--half-image", action="store_true", help="also run test (c) on each kind's first image")
    parser.add_argument("--pool", type=int, default=0, help="the user picks K of the first max(K, pool) images")
    parser.add_argument("--order", choices=("folder", "uncertain"), default="folder", help="which K of the pool")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--magnifications",
        default="",
        help="comma-separated factors: also score the kind's images resized by each (another magnification)",
    )
    parser.add_argument(
        "--scale",
        choices=("1", "estimate", "advice"),
        default="1",
        help="segment and fine-tune each kind at scale 1, at the Segment panel's Estimate on its corrected images, "
        "or at the resize fine-tuning advises from their labels",
    )
    parser.add_argument(
        "--model",
        default="default",
        help="the parent model fine-tuned (a model folder; rehearsal uses its replay set); default: the bundled one",
    )
    parser.add_argument(
        "--keep-every-child",
        action="store_true",
        help="ablation: no held-out gain required (a child that validates best is kept; the other-kinds guard stays)",
    )
    parser.add_argument(
        "--correct-scored",
        action="store_true",
        help="bound: the user corrects the scored images themselves (what the best corrections teach in the budget)",
    )
    parser.add_argument(
        "--check-crops",
        choices=("every_fourth", "nuclei_ranked"),
        default="every_fourth",
        help="which replay crops check for forgetting: as shipped, or benchmarks.bench_check_crops.check_flags",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (and optionally write) its JSON."""
    args = parse_args(argv)
    torch.set_num_threads(2)
    if args.calibrate:
        print(json.dumps({"steps_per_second": calibrate(args.seconds)}))
        return 0
    if args.steps_per_second is None:
        raise SystemExit("give --steps-per-second (measure it with --calibrate on an idle machine)")
    if args.keep_every_child:
        training_loop.required_held_out_gain = lambda nuclei: -1.0
    if args.check_crops != "every_fourth":
        from benchmarks.bench_check_crops import CHOICES

        fine_tuning.replay_check_flags = CHOICES[args.check_crops]
    default = load_model(args.model)
    kinds = load_kinds(args, default)
    before = {
        kind: {
            "kind": score(default, data["scored"], data["scale"]),
            "panel": score(default, data["panel"], data["scale"]),
            "magnified": {factor: score(default, pairs, data["scale"]) for factor, pairs in data["magnified"].items()},
        }
        for kind, data in kinds.items()
    }
    report = {
        "benchmark": "bench_hitl",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform()},
        "kinds": {
            kind: {
                "images": data["keys"],
                "corrected": data["corrected_keys"],
                "scale": data["scale"],
                "estimates": data["estimates"],
                "default_ap50": float(np.mean(before[kind]["kind"])),
            }
            for kind, data in kinds.items()
        },
        "recipes": {},
    }
    for recipe in args.recipes.split(","):
        results = report["recipes"].setdefault(recipe, {})
        run_recipe(args, recipe, kinds, default, before, results, lambda: save(report, args.json))
    print(save(report, args.json))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
