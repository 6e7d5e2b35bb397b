"""Write MODEL_CARD.md and model_card.json for a model folder from benchmark JSON files.

Usage::

    python training/make_model_card.py MODEL_DIR --accuracy accuracy.json --speed speed.json \
        [--tradeoff tradeoff.json] [--synthetic-ablation ablation.json] [--sizes sizes.json] \
        [--ceiling ceiling.json]

``accuracy.json`` is the output of ``benchmarks/bench_accuracy.py``, ``speed.json``
of ``benchmarks/bench_inference.py``, ``sizes.json`` of ``benchmarks/bench_sizes.py``, ``ceiling.json`` of
``benchmarks/bench_ceiling.py``; ``tradeoff.json`` is a list of
``{"name", "depth", "base_channels", "AP@0.5", "mpx_per_s", "parameters"}``
rows and ``ablation.json`` a dict ``{"real only": AP, "real + synthetic": AP}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from napari_unet.core.io import write_json
from napari_unet.core.model import count_parameters
from napari_unet.core.store import load_model

SCORE_KEYS = ("AP@0.5", "AP@0.75", "F1@0.5", "PQ@0.5")


def score_table(section: dict[str, Any]) -> list[str]:
    methods = [m for m in section.get("overall", {}) if m != "n_images"]
    lines = ["| method | subset | images | " + " | ".join(SCORE_KEYS) + " |", "|---" * (3 + len(SCORE_KEYS)) + "|"]
    for subset in ("overall", "fluorescence", "brightfield"):
        rows = section.get(subset) or {}
        for method in methods:
            if method in rows:
                scores = " | ".join(f"{rows[method][k]:.3f}" for k in SCORE_KEYS)
                lines.append(f"| {method} | {subset} | {rows['n_images']} | {scores} |")
    return lines


ERROR_KEYS = ("false_positive", "false_negative", "merge", "split", "false_positive_on_background")


def per_image_table(section: dict[str, Any]) -> list[str]:
    """Rows of the UNet's AP@0.5 and error counts per validation image, worst first."""
    scores = section.get("per_image_unet_ap50", {})
    errors = section.get("unet_errors_at_iou_0.5", {})
    if not scores:
        return []
    lines = [
        "| image | AP@0.5 | false pos. | false neg. | merges | splits | false pos. on unannotated pixels |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in sorted(scores, key=scores.get):
        counts = errors.get(name, {})
        cells = " | ".join(str(counts.get(key, "")) for key in ERROR_KEYS)
        lines.append(f"| {name.removesuffix('_image')[:12]} | {scores[name]:.2f} | {cells} |")
    return lines


def augmentation_lines(section: dict[str, Any]) -> list[str]:
    """What each test-time augmentation gains and costs (seconds for the whole set, this machine)."""
    seconds, overall = section.get("seconds", {}), section.get("overall", {})
    variants = [name for name in overall if name.startswith("unet+")]
    if not variants:
        return []
    lines = [
        "",
        "## Test-time augmentation (same images, same thresholds)",
        "",
        "The thresholds were tuned for the plain prediction; averaged probabilities are smoother and",
        "want their own (`napari-unet tune --tta --multiscale ...`), so compare after retuning.",
        "",
    ]
    for name in ["unet", *variants]:
        lines.append(
            f"- `{name}`: AP@0.5 {overall[name]['AP@0.5']:.3f}, {seconds.get(name, float('nan')):.1f} s for the set"
        )
    return lines


def size_lines(bundle, sizes: dict[str, Any]) -> list[str]:
    """Training diameters and how ``--scale auto`` / ``--diameter`` fare on zoomed validation images."""
    recorded = bundle.metadata.get("object_diameter")
    if not recorded:
        return []
    lines = [
        "",
        "## Nucleus sizes",
        "",
        f"Median nucleus diameter of the training images: {recorded['median']} px; 80% of them lie between",
        f"{recorded['low']} and {recorded['high']} px (`metadata.object_diameter`, the range `--scale auto` and",
        "`--diameter` aim for).",
    ]
    if "measured_over_true" in recorded:
        lines += [
            f"On the training images the model's outlines measure {recorded['measured_over_true']}x the annotated",
            "diameter (median), so `--scale auto` divides what it measures by that.",
        ]
    zooms = sizes.get("zooms", {})
    if zooms:
        lines += [
            "",
            "Validation images resized by a zoom factor (`benchmarks/bench_sizes.py`), mean AP@0.5:",
            "",
            "| zoom | scale 1 | `--scale auto` | `--diameter` (true median) | estimate time / predict time |",
            "|---|---|---|---|---|",
        ]
        for zoom, result in zooms.items():
            ap = result["mean_AP@0.5"]
            lines.append(
                f"| {zoom}x | {ap['scale 1']:.3f} | {ap['auto']:.3f} | {ap['diameter']:.3f} | "
                f"{result['median_estimate_over_predict_time']:.2f} |"
            )
    return lines


def ceiling_lines(ceiling: dict[str, Any]) -> list[str]:
    """What bounds the score: oracle per-image thresholds on val, and the fit to the training images."""
    val, train = ceiling.get("val", {}), ceiling.get("train", {})
    if "oracle_mean_ap50" not in val:
        return []
    lines = [
        "## What limits the score",
        "",
        f"- Settings chosen for each validation image separately, knowing its ground truth (the best of "
        f"{ceiling['oracle_candidates']} tried",
        f"  settings per image): mean AP@0.5 {val['oracle_mean_ap50']:.3f}, against {val['shipped_mean_ap50']:.3f} "
        "with the shipped settings.",
    ]
    if "shipped_mean_ap50" in train:
        fit = train["shipped_mean_ap50"]
        lines.append(f"- On its own {train['n_images']} training images the model scores AP@0.5 {fit:.3f}.")
    return [*lines, "", "Measured by `benchmarks/bench_ceiling.py`.", ""]


def ceiling_summary(ceiling: dict[str, Any]) -> dict[str, Any]:
    """The means of a ``bench_ceiling.py`` report (``val_shipped_mean_ap50``, ...) without its per-image rows."""
    summary = {key: value for key, value in ceiling.items() if key not in ("val", "train")}
    for split in ("val", "train"):
        means = {key: value for key, value in ceiling.get(split, {}).items() if key.endswith("_mean_ap50")}
        summary.update({f"{split}_{key}": value for key, value in means.items()})
    return summary


def card(
    bundle,
    accuracy,
    speed,
    tradeoff,
    ablation,
    command: str,
    sizes: dict[str, Any] | None = None,
    ceiling: dict[str, Any] | None = None,
) -> str:
    config = bundle.config
    lineage = bundle.metadata.get("lineage", {})
    cpu = speed["devices"]["cpu"]
    size_note = ", ".join(f"{r['size']}²: {r['end_to_end_mpx_per_s']:.2f} MPx/s" for r in cpu["sizes"])
    lines = [
        "# napari-unet default model",
        "",
        "A 2D UNet for nuclei instance segmentation, bundled with napari-unet and used by `predict`, the",
        "widgets and fine-tuning unless another model is chosen.",
        "",
        "## Architecture",
        f"- UNet, depth {config.depth}, {config.base_channels} base channels, {config.norm} norm, "
        f"{config.in_channels} input channel (RGB is converted to luminance; bright backgrounds are inverted).",
        f"- Head: 3-class softmax (background / interior / boundary), seeded watershed post-processing "
        f"(thresholds: {json.dumps(bundle.postprocess.to_dict())}).",
        f"- {count_parameters(bundle.network):,} parameters; {speed['flops_per_pixel'] / 1e6:.3f} MFLOP per pixel.",
        "",
        "## Training data",
        "- 2018 Data Science Bowl (BBBC038, CC0): 40 training images (fluorescence and brightfield/H&E),",
        "  validated on 10 held-out images (`dsb2018/val`), which also chose the checkpoint and the",
        "  post-processing thresholds (so the validation scores below are slightly optimistic).",
        f"- Last training stage: {lineage.get('steps')} steps in {lineage.get('seconds', 0):.0f} s on "
        f"{lineage.get('device', 'cpu')} (all stages: see Reproduce).",
        "",
        "## Reproduce",
        "```bash",
        command,
        "```",
        "",
        "## Validation scores (DSB 2018 val; per-image means, AP = TP / (TP + FP + FN))",
        *score_table(accuracy["dsb2018_val"]),
        "",
        f"UNet minus best baseline, AP@0.5: {accuracy['dsb2018_val']['unet_minus_best_baseline_ap50']:+.3f}",
        *augmentation_lines(accuracy["dsb2018_val"]),
        "",
        "## Where the errors are (UNet, per validation image, IoU 0.5)",
        "",
        *per_image_table(accuracy["dsb2018_val"]),
        "",
        "The worst images, annotated outlines against predicted ones: `docs/images/val_errors.png` in the",
        "repository (made by `training/plot_val_errors.py`).",
        "",
        *ceiling_lines(ceiling or {}),
        *size_lines(bundle, sizes or {}),
        "",
        "## Synthetic samples (napari-unet's own generator)",
        *score_table(accuracy.get("synthetic", {})),
        "",
        "## Speed (CPU, same run as a matmul probe)",
        f"- {speed['threads']} threads; matmul {cpu['matmul_gflops']:.1f} GFLOP/s; end to end {size_note}.",
    ]
    if tradeoff:
        lines += [
            "",
            "## Size / accuracy trade-off (same training budget)",
            "",
            "| model | depth | base channels | parameters | AP@0.5 (val) | network MPx/s (CPU, 512²) |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['name']} | {r['depth']} | {r['base_channels']} | {r['parameters']:,} | "
            f"{r['AP@0.5']:.3f} | {r['mpx_per_s']:.2f} |"
            for r in tradeoff
        ]
    if ablation:
        lines += ["", "## Do synthetic training images help?", ""]
        lines += [f"- {name}: AP@0.5 {value:.3f}" for name, value in ablation.items()]
    lines += [
        "",
        "## Limits",
        "- Trained on 2D nuclei; other objects (whole cells) need fine-tuning on your data.",
        "- Z-stacks are segmented slice by slice and linked; there is no 3D model yet.",
        "- Weakest on dense, blurred tissue (neighbouring nuclei merge) and on H&E, where the luminance",
        "  input makes eosin-stained cytoplasm and red blood cells look like nuclei; fine-tune on a few",
        "  corrected images of your own for those.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--accuracy", type=Path, required=True)
    parser.add_argument("--speed", type=Path, required=True)
    parser.add_argument("--tradeoff", type=Path, default=None)
    parser.add_argument("--synthetic-ablation", type=Path, default=None)
    parser.add_argument("--sizes", type=Path, default=None, help="benchmarks/bench_sizes.py output")
    parser.add_argument("--ceiling", type=Path, default=None, help="benchmarks/bench_ceiling.py output")
    parser.add_argument("--command", type=Path, default=Path(__file__).with_name("train_default_model.sh"))
    args = parser.parse_args()
    bundle = load_model(args.model_dir)
    accuracy = json.loads(args.accuracy.read_text())
    speed = json.loads(args.speed.read_text())
    tradeoff = json.loads(args.tradeoff.read_text()) if args.tradeoff else []
    ablation = json.loads(args.synthetic_ablation.read_text()) if args.synthetic_ablation else {}
    sizes = json.loads(args.sizes.read_text()) if args.sizes else {}
    command = args.command.read_text().strip()
    ceiling = json.loads(args.ceiling.read_text()) if args.ceiling else {}
    text = card(bundle, accuracy, speed, tradeoff, ablation, command, sizes, ceiling)
    (args.model_dir / "MODEL_CARD.md").write_text(text)
    summary = {
        "architecture": bundle.config.to_dict(),
        "postprocess": bundle.postprocess.to_dict(),
        "parameters": count_parameters(bundle.network),
        "weights_sha256": bundle.sha256,
        "validation": accuracy["dsb2018_val"],
        "synthetic": accuracy.get("synthetic"),
        "speed": speed,
        "tradeoff": tradeoff,
        "synthetic_ablation": ablation,
        "object_diameter": bundle.metadata.get("object_diameter"),
        "sizes": sizes,
        "ceiling": ceiling_summary(ceiling),
    }
    write_json(args.model_dir / "model_card.json", summary, overwrite=True)
    print(f"wrote {args.model_dir / 'MODEL_CARD.md'} and model_card.json")


if __name__ == "__main__":
    main()
