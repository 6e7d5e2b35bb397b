"""Write MODEL_CARD.md and model_card.json for the bundled default model from the benchmark results.

Every number in the card comes from a results file written by a benchmark script:

- ``--sources``: ``benchmarks/bench_sources.py`` (accuracy per source on the v2 split; the model, the previous
  default, the candidates and the tuned classical baselines);
- ``--speed``: ``benchmarks/bench_inference.py --models ...`` (CPU, 2048², measured side by side);
- ``--survey``: ``benchmarks/bench_sources.py`` on the survey run's candidates (same data and GPU time);
- ``--distance``: ``benchmarks/bench_sources.py --distance-seeds`` (the distance-output candidates seeded
  from their distance map);
- ``--test-time``: ``benchmarks/bench_sources.py --models default --inference ...`` (the installed weights under
  each test-time setting, thresholds chosen on validation for each).  The card's headline is the entry of the
  setting the model runs with by default (with flips when its thresholds were tuned with them).

Usage::

    python -m training.make_model_card napari_unet/weights/default \\
        --sources benchmarks/results/default_model_v2_sources.json \\
        --survey benchmarks/results/default_model_v2_survey.json \\
        --speed benchmarks/results/default_model_v2_speed.json \\
        --distance benchmarks/results/distance_head.json \\
        --latest-speed benchmarks/results/inference_default_flips.json \\
        --test-time benchmarks/results/default_model_v2_test_time.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from napari_unet.core.io import write_json
from napari_unet.core.models.network import count_parameters
from napari_unet.core.models.registry import load_model
from napari_unet.core.predict.runtime import model_uses_flips
from training.gpu_train import GROUP_WEIGHTS
from training.splits import SOURCES, split_images

MODEL_KEY = "out/default_v2"
PREVIOUS_KEY = "out/v1_default"
CANDIDATES = {
    "out/v2/rgb_b16": "one 3-channel UNet, base 16",
    "out/v2/rgb_b32": "one 3-channel UNet, base 32",
    "out/v2/rgb_b16_dist": "base 16 + distance output",
    "out/v2/rgb_b32_dist": "base 32 + distance output",
}
"""The survey run's single-network candidates (``gpu_train.sh`` PLAN=survey, 420 s each, all at once)."""
FAMILY_NAMES = {
    "grey": "grey (fluorescence, grey brightfield)",
    "colour": "colour (H&E-like stained tissue)",
    "tissue": "tissue sections (S-BSST265 fluorescence)",
}
SUBSET_NAMES = {
    "dsb2018_stage1:fluorescence": "DSB 2018 stage-1 train, grey fluorescence",
    "dsb2018_stage1:brightfield": "DSB 2018 stage-1 train, grey brightfield",
    "dsb2018_stage1:colour": "DSB 2018 stage-1 train, colour tissue",
    "dsb2018_val:fluorescence": "DSB 2018 test stage (`dsb2018/val`), fluorescence",
    "dsb2018_val:colour": "DSB 2018 test stage (`dsb2018/val`), colour",
    "s_bsst265:tissue": "S-BSST265 tissue sections and cell lines",
}
SOURCES_COMMAND = (
    "python -m benchmarks.bench_sources --models out/v1_default out/default_v2 out/v2/rgb_b16 out/v2/rgb_b32 "
    "out/v2/rgb_b16_dist out/v2/rgb_b32_dist out/v2r/grey_b16 out/v2r/colour_b16 "
    "--route out/v2r/grey_b16+out/v2r/colour_b16 --baselines otsu,li,local,watershed "
    "--json benchmarks/results/default_model_v2_sources.json"
)
SURVEY_COMMAND = (
    "python -m benchmarks.bench_sources --models out/v1_default out/v2/rgb_b16 out/v2/grey_b16 out/v2/colour_b16 "
    "out/v2/rgb_b32 out/v2/rgb_b16_dist out/v2/rgb_b32_dist --route out/v2/grey_b16+out/v2/colour_b16 "
    "--json benchmarks/results/default_model_v2_survey.json"
)
DISTANCE_COMMAND = (
    "python -m benchmarks.bench_sources --models out/v2/rgb_b16_dist out/v2/rgb_b32_dist --distance-seeds "
    "--json benchmarks/results/distance_head.json"
)
SPEED_COMMAND = (
    "python -m benchmarks.bench_inference --models out/v1_default out/default_v2 out/v2/rgb_b16 out/v2/rgb_b32 "
    "out/v2/rgb_b16_dist out/v2/rgb_b32_dist --sizes 2048 --devices cpu --repeats 2"
)
"""The commands that wrote the results files the card reads (model folders as ``training/train_default_model.sh``
makes them)."""
TEST_TIME_COMMAND = (
    "python -m benchmarks.bench_sources --models default --inference plain tta auto tta+auto multiscale "
    "--json benchmarks/results/default_model_v2_test_time.json"
)
TEST_TIME_NAMES = {
    "plain": "none (one pass)",
    "tta": "flips: the image and its 3 flips averaged",
    "auto": "nucleus size measured first, image resized to the training sizes",
    "tta+auto": "size measured, then flips",
    "multiscale": "sizes 0.71x, 1x and 1.41x averaged",
}
"""The test-time settings ``bench_sources.py --inference`` scores, as the card names them."""
BASELINE_TITLES = {"otsu": "Otsu", "li": "Li", "local": "local threshold", "watershed": "watershed"}


def shipped_entry(bundle: Any, sources: dict[str, Any], test_time: dict[str, Any] | None) -> dict[str, Any]:
    """The results of the installed model as it runs by default: its ``test_time`` entry (``default`` or
    ``default (tta)``, by its flips), else its entry in ``sources``."""
    if test_time is None:
        return sources["models"][MODEL_KEY]
    key = "default (tta)" if model_uses_flips(bundle.metadata) else "default"
    return test_time["models"][key]


def headline_table(sources: dict[str, Any], model: dict[str, Any]) -> list[str]:
    """Test-split AP@0.5 / AP@0.75 per family: this model, the previous default, the best tuned baseline."""
    previous = sources["models"][PREVIOUS_KEY]
    best = max(sources["baselines"].values(), key=lambda b: b["tuned_val_score"])
    lines = [
        "| test images | n | this model AP@0.5 | AP@0.75 | previous default AP@0.5 | "
        f"best classical ({BASELINE_TITLES[best['method']]}) AP@0.5 |",
        "|---|---|---|---|---|---|",
    ]
    for family, title in FAMILY_NAMES.items():
        ours, theirs = model["test"]["families"][family], previous["test"]["families"][family]
        classical = best["test"]["families"][family]
        lines.append(
            f"| {title} | {ours['n_images']} | **{ours['AP@0.5']:.3f}** | {ours['AP@0.75']:.3f} | "
            f"{theirs['AP@0.5']:.3f} | {classical['AP@0.5']:.3f} |"
        )
    lines.append(
        f"| mean of the three | | **{model['test']['family_mean_AP@0.5']:.3f}** | | "
        f"{previous['test']['family_mean_AP@0.5']:.3f} | {best['test']['family_mean_AP@0.5']:.3f} |"
    )
    return lines


def subset_table(sources: dict[str, Any], model: dict[str, Any]) -> list[str]:
    """Test-split AP@0.5 per source and image type, this model against the previous default."""
    previous = sources["models"][PREVIOUS_KEY]
    lines = ["| source | images | this model | previous default |", "|---|---|---|---|"]
    for key, title in SUBSET_NAMES.items():
        if key in model["test"]["subsets"]:
            ours, theirs = model["test"]["subsets"][key], previous["test"]["subsets"][key]
            lines.append(f"| {title} | {ours['n_images']} | {ours['AP@0.5']:.3f} | {theirs['AP@0.5']:.3f} |")
    return lines


def baseline_lines(sources: dict[str, Any]) -> list[str]:
    """Each classical baseline's settings chosen on ``val`` and its test score."""
    lines = []
    for method, result in sources["baselines"].items():
        settings = ", ".join(f"{k}={v}" for k, v in result["settings"].items())
        lines.append(f"- {BASELINE_TITLES[method]} ({settings}): test mean {result['test']['family_mean_AP@0.5']:.3f}")
    return lines


def candidate_table(
    sources: dict[str, Any], survey: dict[str, Any], speed: dict[str, Any], distance: dict[str, Any]
) -> list[str]:
    """Validation / test family means and CPU speed of the candidates of the survey run (same data, same GPU
    time) and of the shipped model (the survey's grey + colour pair, trained 200 s more)."""
    speeds = {m["model"]: m["devices"]["cpu"]["sizes"][0]["end_to_end_mpx_per_s"] for m in speed["models"]}
    parameters = {m["model"]: m["parameters"] for m in speed["models"]}
    lines = [
        "| candidate | parameters | val mean AP@0.5 | test mean AP@0.5 | CPU end-to-end MPx/s (2048²) |",
        "|---|---|---|---|---|",
    ]
    for key, title in CANDIDATES.items():
        result = survey["models"][key]
        lines.append(
            f"| {title} | {parameters[key]:,} | {result['tuned_val_score']:.3f} | "
            f"{result['test']['family_mean_AP@0.5']:.3f} | {speeds[key]:.2f} |"
        )
    for key, result in distance.get("models", {}).items():
        lines.append(
            f"| {CANDIDATES[key]}, seeds from the distance | | {result['tuned_val_score']:.3f} | "
            f"{result['test']['family_mean_AP@0.5']:.3f} | |"
        )
    pair = next(iter(survey["routed"].values()))
    pair_val, pair_test = pair["val"]["family_mean_AP@0.5"], pair["test"]["family_mean_AP@0.5"]
    lines.append(
        f"| grey + colour UNets, base 16, each tuned on its own images | {parameters[MODEL_KEY]:,} | "
        f"{pair_val:.3f} | {pair_test:.3f} | {speeds[MODEL_KEY]:.2f} |"
    )
    model = sources["models"][MODEL_KEY]
    lines.append(
        f"| the same pair after 200 s more (shipped; one set of thresholds, no flips) | {parameters[MODEL_KEY]:,} | "
        f"{model['tuned_val_score']:.3f} | {model['test']['family_mean_AP@0.5']:.3f} | {speeds[MODEL_KEY]:.2f} |"
    )
    return lines


def test_time_table(test_time: dict[str, Any]) -> list[str]:
    """Validation and test means of the installed weights under each test-time setting."""
    lines = [
        "| test-time setting | val mean AP@0.5 | test mean AP@0.5 | test grey | test colour | test tissue |",
        "|---|---|---|---|---|---|",
    ]
    for result in test_time["models"].values():
        families = result["test"]["families"]
        lines.append(
            f"| {TEST_TIME_NAMES[result['inference']]} | {result['tuned_val_score']:.3f} | "
            f"{result['test']['family_mean_AP@0.5']:.3f} | {families['grey']['AP@0.5']:.3f} | "
            f"{families['colour']['AP@0.5']:.3f} | {families['tissue']['AP@0.5']:.3f} |"
        )
    return lines


def test_time_lines(bundle: Any, test_time: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """The card's section on test-time settings: the table, the choice and its cost (empty without results)."""
    if test_time is None:
        return []
    plain = test_time["models"]["default"]
    return [
        "## Test-time settings",
        "",
        "The same weights under each setting, with thresholds chosen on the validation images for each",
        "(`benchmarks/results/default_model_v2_test_time.json`):",
        "",
        *test_time_table(test_time),
        "",
        f"Made by: `{TEST_TIME_COMMAND}`.",
        "",
        "Of the settings whose cost does not depend on the image (none, flips, sizes), flips scored best on",
        "the validation images, so the model runs with flips and the thresholds chosen with them "
        f"(`tuned_with_flips`: {str(model_uses_flips(bundle.metadata)).lower()});",
        f"without them (`--no-tta`, Segment's test-time augmentation 'off') it is about 4x faster and scores "
        f"{plain['test']['family_mean_AP@0.5']:.3f} on the test images with its thresholds "
        f"({json.dumps(plain['postprocess'])}).",
        "Measuring the nucleus size first (`--scale auto`, Segment's Estimate) costs more on images of small",
        "nuclei, so it stays a choice; it is what to try on images whose nuclei are much smaller or larger",
        "than those above.",
        "",
    ]


def split_counts() -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
    """Images per (source, split) and per (group, split) in ``training/splits_v2.json``."""
    by_source: dict[tuple[str, str], int] = {}
    by_group: dict[tuple[str, str], int] = {}
    for item in split_images():
        source = (item.source, item.split)
        group = (item.group, item.split)
        by_source[source] = by_source.get(source, 0) + 1
        by_group[group] = by_group.get(group, 0) + 1
    return by_source, by_group


def data_lines() -> list[str]:
    """Training data per source (from the split file) and the sampling weights of the image groups."""
    by_source, _ = split_counts()
    parts = []
    for source, folder in SOURCES.items():
        train = by_source.get((source, "train"), 0)
        total = sum(count for (name, _), count in by_source.items() if name == source)
        if train:
            parts.append(f"`{folder}` {train} of {total}")
    weights = ", ".join(f"{group} {weight:.0%}" for group, weight in GROUP_WEIGHTS.items())
    return [
        f"- Data (CC0), training images per source: {'; '.join(parts)}; "
        f"{sum(c for (_, split), c in by_source.items() if split == 'train')} in all.",
        f"- Sampled by image type rather than by file count ({weights}); the grey network sees the grey types",
        "  and tissue sections, the colour network the colour images only.",
    ]


def training_lines(bundle: Any) -> list[str]:
    """The GPU runs that made each branch (from the model's metadata)."""
    lines = []
    for branch, record in bundle.metadata["training"]["branches"].items():
        for run in record["runs"]:
            lines.append(
                f"- {branch} branch: {run['steps']} steps, {run['samples']:,} patches of 256² in "
                f"{run['train_s']:.0f} s on {run['device']} ({run['train_images']} training images)"
            )
    return lines


def current_speed(speed: dict[str, Any], latest: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
    """The bundled model's CPU row at 2048² and its file: the latest ``bench_inference.py`` run if given (with its
    ``file_name``), else the survey's."""
    if latest:
        row = next(m for m in latest["models"] if m["model"] == "default")["devices"]["cpu"]["sizes"][0]
        return row, latest["file_name"]
    row = next(m for m in speed["models"] if m["model"] == MODEL_KEY)["devices"]["cpu"]["sizes"][0]
    return row, "default_model_v2_speed.json"


def card(
    bundle: Any,
    sources: dict[str, Any],
    survey: dict[str, Any],
    speed: dict[str, Any],
    distance: dict[str, Any],
    latest: dict[str, Any] | None = None,
    test_time: dict[str, Any] | None = None,
) -> str:
    model, previous = shipped_entry(bundle, sources, test_time), sources["models"][PREVIOUS_KEY]
    current, current_file = current_speed(speed, latest)
    runs_with = "with test-time flips (as it runs by default)" if model.get("inference") == "tta" else "as it runs"
    diameters = bundle.metadata.get("object_diameter", {})
    lines = [
        "# napari-unet default model (v2)",
        "",
        "Nuclei instance segmentation for fluorescence, brightfield and stained (H&E-like) images, bundled",
        "with napari-unet and used by `predict`, the widgets and fine-tuning unless another model is chosen.",
        "",
        "## Accuracy on images that chose neither the checkpoint nor the thresholds",
        "",
        f"Test split of `training/splits_v2.json` ({sources['n_test']} images): 5% of DSB 2018 stage-1 train per",
        "image type, 6 S-BSST265 images and all 10 `dsb2018/val` images. Per-image mean AP = TP / (TP + FP + FN)",
        f"at IoU 0.5. This model is scored {runs_with}. The thresholds of every method, baselines included,",
        f"were chosen on the {sources['n_val']} validation images of the same split (`benchmarks/bench_sources.py`,",
        "`benchmarks/results/default_model_v2_sources.json`"
        + (", `default_model_v2_test_time.json`)." if test_time else ")."),
        "",
        *headline_table(sources, model),
        "",
        f"Made by: `{SOURCES_COMMAND}`" + (f" and `{TEST_TIME_COMMAND}`." if test_time else "."),
        "",
        "Per source:",
        "",
        *subset_table(sources, model),
        "",
        f"The previous default is scored with thresholds retuned on the same validation images; with its own "
        f"shipped thresholds its test mean is {previous['shipped_thresholds_test']:.3f}.",
        "",
        "Classical baselines, each with its settings chosen on the validation images:",
        "",
        *baseline_lines(sources),
        "",
        "Images from sources the model never saw may score lower, most of all 40x H&E histology and",
        "dense tissue imaged differently: fine-tune on a few corrected images of your own (Fine-tune panel).",
        "",
        "## What it is",
        "",
        f"- Two UNets (depth {bundle.config.depth}, {bundle.config.base_channels} base channels, batch norm) in one",
        "  model (`branches: gray_colour`): a 1-channel network for grey images and a 3-channel one for colour",
        "  images. Grey images (including RGB files whose channels are equal) go to the grey network, colour",
        "  images to the colour network; no brightness guess decides which side of a stained image is nuclei.",
        f"- {count_parameters(bundle.network):,} parameters in all; one network runs per tile, "
        f"{speed_words(current)} on 2 CPU cores at 2048² (`benchmarks/results/{current_file}`).",
        "- Input: percentile normalisation (1st to 99.8th); grey images with a bright background are inverted",
        "  (`invert: auto_gray`), colour images never are.",
        "- Output: background / interior / boundary probabilities; a seeded watershed makes the instances",
        f"  (thresholds: {json.dumps(bundle.postprocess.to_dict())}).",
        f"- Nucleus sizes it was trained on: median {diameters.get('median')} px, 80% between "
        f"{diameters.get('low')} and {diameters.get('high')} px (`--scale auto` aims there).",
        "",
        *test_time_lines(bundle, test_time, current),
        "## Training",
        "",
        *data_lines(),
        "- Augmentation on the GPU: rotation, flips, zoom 0.7-1.45x, contrast, brightness, gamma, blur, noise,",
        "  colour jitter; grey fluorescence sometimes placed in one channel of an RGB image.",
        *training_lines(bundle),
        "- bf16 autocast, channels-last, AdamW, cosine schedule, exponential moving average of the weights;",
        "  the checkpoint kept is the final average (no choice on test images).",
        "",
        "## Candidates",
        "",
        "Six networks trained at once on one GPU for 420 s each (`gpu_train.sh`, PLAN=survey;",
        "`benchmarks/results/default_model_v2_survey.json`); validation and test means as above:",
        "",
        *candidate_table(sources, survey, speed, distance),
        "",
        f"Made by: `{SURVEY_COMMAND}`, `{DISTANCE_COMMAND}` and `{SPEED_COMMAND}`.",
        "",
        "A wider network did not help at this budget, and a distance-to-edge output did not separate nuclei",
        "better, with either seeding (`benchmarks/results/distance_head.json`). Two small networks, one per",
        "kind of image, did (each also saw more patches of its own kind). The shipped model keeps the speed",
        "of one base-16 network.",
        "",
        "## Reproduce",
        "",
        "`training/train_default_model.sh` lists every step (data pack, GPU runs, assembly, thresholds, card).",
        "",
        "## Limits",
        "",
        "- 2D nuclei only; Z-stacks are segmented slice by slice and linked.",
        f"- The colour network learned from {split_counts()[1].get(('colour', 'train'), 0)} stained images of a "
        "few tissues; other stains and magnifications need fine-tuning.",
        f"- On the validation split it scores {model['tuned_val_score']:.3f} (mean of the three families), on",
        f"  the test split {model['test']['family_mean_AP@0.5']:.3f}.",
        "",
    ]
    return "\n".join(lines)


def speed_words(row: dict[str, Any]) -> str:
    """The CPU speed of a ``bench_inference.py`` row in words: as the model runs by default, and without flips."""
    plain = (
        f"{row['end_to_end_mpx_per_s']:.2f} MPx/s end to end without flips "
        f"(network alone {row['network_mpx_per_s']:.2f})"
    )
    if "end_to_end_model_settings_mpx_per_s" not in row:
        return plain
    return f"{row['end_to_end_model_settings_mpx_per_s']:.2f} MPx/s end to end with its test-time flips, {plain}"


def summary(
    bundle: Any,
    sources: dict[str, Any],
    speed: dict[str, Any],
    latest: dict[str, Any] | None = None,
    test_time: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The machine-readable card: measured accuracy (read by ``napari-unet models`` and the Segment notice)."""
    model = shipped_entry(bundle, sources, test_time)
    this_speed, speed_file = current_speed(speed, latest)
    return {
        "architecture": bundle.config.to_dict(),
        "postprocess": bundle.postprocess.to_dict(),
        "parameters": count_parameters(bundle.network),
        "test": {
            "split_file": sources["split_file"],
            "n_images": sources["n_test"],
            "family_mean_ap50": model["test"]["family_mean_AP@0.5"],
            "families": model["test"]["families"],
            "subsets": model["test"]["subsets"],
        },
        "test_time": model.get("inference", "plain"),
        "validation_family_mean_ap50": model["tuned_val_score"],
        "cpu_end_to_end_mpx_per_s_2048": this_speed.get(
            "end_to_end_model_settings_mpx_per_s", this_speed["end_to_end_mpx_per_s"]
        ),
        "sources": [
            "benchmarks/results/default_model_v2_sources.json",
            *(["benchmarks/results/default_model_v2_test_time.json"] if test_time else []),
            f"benchmarks/results/{speed_file}",
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--sources", type=Path, required=True)
    parser.add_argument("--speed", type=Path, required=True)
    parser.add_argument("--survey", type=Path, required=True, help="bench_sources.py on the survey run's candidates")
    parser.add_argument("--distance", type=Path, default=None)
    parser.add_argument("--latest-speed", type=Path, default=None, help="bench_inference.py --models ... default")
    parser.add_argument("--test-time", type=Path, default=None, help="bench_sources.py --models default --inference")
    args = parser.parse_args()
    bundle = load_model(args.model_dir)
    sources = json.loads(args.sources.read_text())
    speed = json.loads(args.speed.read_text())
    distance = json.loads(args.distance.read_text()) if args.distance else {}
    survey = json.loads(args.survey.read_text())
    latest = None
    if args.latest_speed:
        latest = {**json.loads(args.latest_speed.read_text()), "file_name": args.latest_speed.name}
    test_time = json.loads(args.test_time.read_text()) if args.test_time else None
    (args.model_dir / "MODEL_CARD.md").write_text(card(bundle, sources, survey, speed, distance, latest, test_time))
    write_json(args.model_dir / "model_card.json", summary(bundle, sources, speed, latest, test_time), overwrite=True)
    print(f"wrote {args.model_dir / 'MODEL_CARD.md'}")


if __name__ == "__main__":
    main()
