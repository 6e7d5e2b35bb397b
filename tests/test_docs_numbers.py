"""The numbers the docs and the model cards show are those of the results files the benchmarks wrote.

The benchmark numbers live in docs/benchmarks.md; the README shows one accuracy table of them.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np

from benchmarks.keep_rule_study import last_checks_rule

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ROWS = {"grey": "grey: fluorescence", "colour": "colour: H&E-like", "tissue": "tissue sections"}
README = ROOT / "README.md"
BENCHMARKS = ROOT / "docs" / "benchmarks.md"
USER_GUIDE = ROOT / "docs" / "user_guide.md"


def results_json(name: str) -> dict:
    """One results file of ``benchmarks/results``, parsed."""
    return json.loads((RESULTS / name).read_text())


def shipped_results() -> dict:
    """The bundled model's entry in the test-time results: the setting it runs with by default."""
    metadata = json.loads((ROOT / "napari_unet" / "weights" / "default" / "model.json").read_text())["metadata"]
    key = "default (tta)" if metadata.get("tuned_with_flips") else "default"
    return results_json("default_model_v2_test_time.json")["models"][key]


def table_row(page: Path, start: str) -> list[float]:
    line = next(line for line in page.read_text().splitlines() if line.startswith(f"| {start}"))
    return [float(cell) for cell in re.findall(r"\| (\d\.\d{3}) ", line + " ")]


def benchmarks_text() -> str:
    """docs/benchmarks.md with every run of whitespace (line breaks included) as one space."""
    return " ".join(BENCHMARKS.read_text().split())


def guide_text() -> str:
    """docs/user_guide.md with every run of whitespace (line breaks included) as one space."""
    return " ".join(USER_GUIDE.read_text().split())


def test_accuracy_table_matches_the_results_file():
    results = results_json("default_model_v2_sources.json")
    model, previous = shipped_results(), results["models"]["out/v1_default"]
    best = max(results["baselines"].values(), key=lambda b: b["tuned_val_score"])
    assert best["method"] == "watershed"
    for family, start in ROWS.items():
        expected = [round(run["test"]["families"][family]["AP@0.5"], 3) for run in (model, previous, best)]
        for page in (README, BENCHMARKS):
            assert table_row(page, start) == expected, (page.name, family)


def test_dsb2018_val_score_matches_the_results_file():
    scores = [ap for key, ap in shipped_results()["test"]["per_image_AP@0.5"].items() if key.startswith("dsb2018_val/")]
    assert len(scores) == 10
    assert f"On the 10 `dsb2018/val` images, which are test images for v2, it scores {np.mean(scores):.3f}" in (
        benchmarks_text()
    )


def test_flips_comparison_matches_the_results_file():
    models = results_json("default_model_v2_test_time.json")["models"]
    flips, plain = models["default (tta)"], models["default"]
    text = benchmarks_text()
    assert (
        f"({flips['tuned_val_score']:.3f} against {plain['tuned_val_score']:.3f} without; on the test images "
        f"{flips['test']['family_mean_AP@0.5']:.3f} against {plain['test']['family_mean_AP@0.5']:.3f}"
    ) in text
    speed = results_json("inference_default_flips.json")
    row = next(m for m in speed["models"] if m["model"] == "default")["devices"]["cpu"]["sizes"][0]
    assert f"makes {row['end_to_end_model_settings_mpx_per_s']:.2f} megapixels/s end to end" in text
    assert row["end_to_end_model_settings_mpx_per_s"] >= 0.4, "the default must stay interactive on 2 CPU cores"


def test_model_card_json_is_the_results_file():
    results = shipped_results()
    card = json.loads((ROOT / "napari_unet" / "weights" / "default" / "model_card.json").read_text())
    assert card["test"]["family_mean_ap50"] == results["test"]["family_mean_AP@0.5"]
    assert card["test"]["families"] == results["test"]["families"]
    markdown = (ROOT / "napari_unet" / "weights" / "default" / "MODEL_CARD.md").read_text()
    assert f"**{results['test']['family_mean_AP@0.5']:.3f}**" in markdown


def test_cellpose_table_matches_the_results_file():
    results = results_json("peers.json")
    lines = BENCHMARKS.read_text().splitlines()
    for key, name in (("dsb2018_val", "`dsb2018/val` (10)"), ("s_bsst265_heldout", "S-BSST265 held out (10)")):
        for scale, words in (("own_scale", "own scale"), ("true_diameter", "told the true nucleus size")):
            line = next(line for line in lines if line.startswith(f"| {name}, {words} |"))
            shown = [float(value) for value in re.findall(r"\d\.\d{3}", line)]
            expected = [
                round(results[key][scale][tool][metric], 3)
                for tool in ("cellpose", "napari_unet")
                for metric in ("AP@0.5", "AP@0.75")
            ]
            assert shown == expected, (key, scale)


def test_3d_model_card_is_the_benchmark_file():
    bench = results_json("bench_3d.json")["methods"]
    folder = ROOT / "napari_unet" / "weights" / "nuclei-3d"
    card = json.loads((folder / "model_card.json").read_text())
    markdown = (folder / "MODEL_CARD.md").read_text()
    for name, scores in bench.items():
        assert card["test"]["methods"][name]["AP@0.5"] == scores["AP@0.5"]
        assert f"| {name} | {scores['AP@0.5']:.3f} | {scores['AP@0.75']:.3f} |" in markdown
    assert f"**{bench['nuclei-3d']['AP@0.5']:.3f}**" in markdown
    text = benchmarks_text()
    assert f"3D IoU: **{bench['nuclei-3d']['AP@0.5']:.3f}**" in text
    assert f"against {bench['default 2D + linking']['AP@0.5']:.3f} for the 2D default" in text


def test_fine_tuning_numbers_match_the_results_files():
    text = benchmarks_text()

    def before_after(name: str) -> tuple[float, float]:
        scores = results_json(f"{name}.json")
        ap = scores["summary"]["default"]["30.0"]["AP@0.5"]
        return ap["before"], ap["after"]

    names = ("finetune_synthetic_brightfield", "finetune_per_image", "finetune_bsst265_test")
    for name in (*names, "finetune_synthetic_brightfield_per_image"):
        before, after = before_after(name)
        assert f"from {before:.3f} to {after:.3f}" in text, name
    gains = [
        round(after - before, 3)
        for before, after in map(before_after, ("finetune_val_split_before_guards", "finetune_val_split"))
    ]
    assert f"went from {gains[0]:.3f} to {gains[1]:.3f} AP@0.5" in text


def test_3d_fine_tune_numbers_are_the_benchmark_file():
    mean = results_json("finetune_3d.json")["mean"]
    text = benchmarks_text()
    parent, last, averaged = (mean[name]["AP@0.5"] for name in ("parent", "last", "averaged"))
    assert f"from {parent:.3f} to {last:.3f} AP@0.5 with the last weights and to {averaged:.3f}" in text
    large = results_json("finetune_3d_large_nuclei.json")["mean"]
    parent, last, averaged = (large[name]["AP@0.5"] for name in ("parent", "last", "averaged"))
    assert f"fell from {parent:.3f} to {last:.3f} and the average rose to {averaged:.3f}" in text
    before, after = large["parent"]["AP@0.75"], large["averaged"]["AP@0.75"]
    assert f"(AP@0.75 {before:.3f} to {after:.3f};" in text


def test_sizes_and_ceiling_numbers_are_the_benchmark_files():
    ceiling = results_json("ceiling.json")
    text = benchmarks_text()
    val, train = ceiling["val"], ceiling["train"]
    assert f"from {val['shipped_mean_ap50']:.3f} to {val['oracle_mean_ap50']:.3f}" in text
    assert f"own {train['n_images']} `dsb2018/train` images it scores {train['shipped_mean_ap50']:.3f}" in text
    zooms = results_json("sizes.json")["zooms"]
    guide = guide_text()
    for zoom, words in (("2.5", "enlarged 2.5x"), ("0.4", "shrunk to 0.4x")):
        fixed, measured = (zooms[zoom]["mean_AP@0.5"][way] for way in ("scale 1", "auto"))
        assert words in guide and f"from {fixed:.3f} to {measured:.3f}" in guide, zoom
    assert f"the score stayed {zooms['1.0']['mean_AP@0.5']['auto']:.3f}" in guide


def hitl_section() -> str:
    return benchmarks_text().split("## Fine-tuning on a few corrected images (bench_hitl)", 1)[1].split(" ## ", 1)[0]


def test_hitl_table_is_the_results_file():
    report = results_json("hitl.json")
    section = hitl_section()
    for kind, info in report["kinds"].items():
        row = report["recipes"]["shipped"][kind]
        after = sum(row["kind_after"]) / len(row["kind_after"])
        cells = f"| {kind} ({len(info['images'])}) | {info['default_ap50']:.3f} | {after:.3f} "
        cells += f"| {row['kind_gain']:+.3f} | {row['forgetting_mean']:+.3f} |"
        assert cells in section, cells


def test_user_guide_quotes_the_hitl_results_file():
    report = results_json("hitl.json")
    row, info = report["recipes"]["shipped"]["synthetic_he"], report["kinds"]["synthetic_he"]
    after = sum(row["kind_after"]) / len(row["kind_after"])
    guide = guide_text()
    assert f"went from AP@0.5 {info['default_ap50']:.3f} to {after:.3f}" in guide
    assert f"changed by {row['forgetting_mean']:+.3f} on average" in guide


def test_hitl_validation_share_is_the_results_files():
    section = " ".join(hitl_section().split())
    for name, phrase in (
        ("hitl.json", "{low}% to {high}% of the run in `hitl.json`"),
        ("hitl_margin_005.json", "`hitl_margin_005.json`: {low}% to {high}%"),
    ):
        report = results_json(name)
        shares = [100 * row["validation_seconds"] / row["seconds"] for row in report["recipes"]["shipped"].values()]
        assert phrase.format(low=round(min(shares)), high=round(max(shares))) in section, name


def test_hitl_ablation_numbers_are_its_results_file():
    report = results_json("hitl_warn_only_partial.json")
    rows = report["recipes"]["shipped"]
    section = hitl_section()
    small, colour = rows["dsb_fluorescence_small"], rows["dsb_colour_tissue"]
    quoted = f"dsb_fluorescence_small by {small['kind_gain']:+.3f} with {small['forgetting_mean']:+.3f} forgetting"
    assert quoted in section
    assert f"dsb_colour_tissue by {colour['kind_gain']:+.3f} with {colour['forgetting_mean']:+.3f}." in section


def test_hitl_grid_is_the_results_files():
    section = hitl_section()
    for path in sorted([*RESULTS.glob("hitl_k*.json"), *RESULTS.glob("hitl_grid_*.json")]):
        report = json.loads(path.read_text())
        assert path.name in section, path.name
        for kind, row in report["recipes"]["shipped"].items():
            assert f"{row['kind_gain']:+.3f} / {row['forgetting_mean']:+.3f}" in section, (path.name, kind)


def test_pipeline_speed_paragraph_quotes_its_results_file():
    results = results_json("pipeline.json")
    text = benchmarks_text()
    seconds = results["real_network_seconds"]
    validation = results["labels_ap50_vs_previous_validation"]
    for quoted in (
        f"everything else is {results['non_network_speedup']:.2f}x faster",
        f"(the second worker thread alone: {results['parallel_speedup']:.2f}x over one thread",
        f"takes {seconds['workers_2']:.1f} s instead of {seconds['previous']:.1f} s "
        f"({results['end_to_end_speedup']:.2f}x)",
        f"AP@0.5 {results['labels_ap50_vs_previous_large_plane']:.3f} (and {validation['min_ap50']:.3f} on each of the "
        f"{validation['images']} `dsb2018/val` images",
    ):
        assert quoted in text, quoted


def test_pipeline_rerun_with_the_broadcast_no_op_is_its_results_file():
    results = results_json("pipeline_broadcast_no_op.json")
    text = benchmarks_text()
    seconds, real = results["no_op_network_seconds"], results["real_network_seconds"]
    quoted = f"{seconds['previous']:.2f} s in one pass, {seconds['workers_1']:.2f} s with one worker and "
    quoted += f"{seconds['workers_2']:.2f} s with two ({results['non_network_speedup']:.2f}x; the second worker "
    quoted += f"{results['parallel_speedup']:.2f}x;"
    assert quoted in text
    assert f"{real['workers_2']:.1f} s against {real['previous']:.1f} s ({results['end_to_end_speedup']:.2f}x)" in text


def test_correction_order_table_is_its_results_files():
    from benchmarks.plot_hitl import order_table

    uncertain, folder = (results_json(f"hitl_order_{o}.json") for o in ("uncertain", "folder"))
    assert " ".join(order_table(uncertain, folder).split()) in hitl_section()


def test_unseen_kinds_table_and_numbers_are_their_results_files():
    from benchmarks.plot_hitl import scale_table

    at_one, at_estimate, unrounded, levers, k4 = (
        results_json(f"hitl_unseen_v1{suffix}.json")
        for suffix in ("", "_estimated_scale", "_unrounded_scale", "_colour_levers", "_colour_k4")
    )
    section = " ".join(hitl_section().split())
    assert " ".join(scale_table(at_one, at_estimate).split()) in section
    colour = at_one["recipes"]["shipped"]["dsb_colour_tissue"]
    held = f"{colour['held_out_before']['val_ap50']:.3f} -> {colour['held_out_after']['val_ap50']:.3f}"
    assert f"{colour['kind_gain']:+.3f} (held-out corrections {held})" in section
    assert f"with 4 corrected images {k4['recipes']['shipped']['dsb_colour_tissue']['kind_gain']:+.3f}" in section
    assert f"with learning rate 1e-3 {levers['recipes']['high_lr']['dsb_colour_tissue']['kind_gain']:+.3f}" in section
    assert levers["recipes"]["no_epoch_cap"]["dsb_colour_tissue"]["kept_parent"]
    seeds = [results_json(f"hitl_unseen_v1_colour_sweep{suffix}.json")["recipes"] for suffix in ("_seed1", "_seed2")]
    sweep = results_json("hitl_unseen_v1_colour_sweep.json")["recipes"]
    for recipe in seeds[0]:
        means = [
            sum(run[recipe][kind]["kind_gain"] for run in (sweep, *seeds)) / 3
            for kind in ("dsb_colour_tissue", "synthetic_he")
        ]
        assert "{:+.3f} / {:+.3f}".format(*means) in section, recipe
    for recipe, row in sweep.items():
        colour, synthetic = row["dsb_colour_tissue"]["kind_gain"], row["synthetic_he"]["kind_gain"]
        assert f"{colour:+.3f} / {synthetic:+.3f}" in section, recipe
    gains = [run["recipes"]["shipped"]["synthetic_he"]["kind_gain"] for run in (at_one, k4)]
    gains += [levers["recipes"][recipe]["synthetic_he"]["kind_gain"] for recipe in ("no_epoch_cap", "high_lr")]
    assert "Synthetic H&E gains {:+.3f} ({:+.3f} with 4 images, {:+.3f} and {:+.3f} with".format(*gains) in section
    large = unrounded["recipes"]["shipped"]["dsb_fluorescence_large"]
    assert f"{unrounded['kinds']['dsb_fluorescence_large']['scale']:.2f} for DSB large fluorescence" in section
    assert f"cost that kind {-large['kind_gain']:.3f}" in section
    assert f"cost S-BSST265 normal {-unrounded['recipes']['shipped']['s_bsst265_normal']['kind_gain']:.3f}" in section


def test_user_guide_quotes_the_unseen_kinds_results_files():
    names = ("hitl_unseen_v1.json", "hitl_unseen_v1_estimated_scale.json")
    at_one, at_estimate = (results_json(name) for name in names)
    colour = at_one["recipes"]["shipped"]["dsb_colour_tissue"]
    after = sum(colour["kind_after"]) / len(colour["kind_after"])
    guide = guide_text()
    assert f"from {at_one['kinds']['dsb_colour_tissue']['default_ap50']:.3f} to {after:.3f}" in guide
    normal_one, normal_estimate = (run["kinds"]["s_bsst265_normal"] for run in (at_one, at_estimate))
    assert at_one["recipes"]["shipped"]["s_bsst265_normal"]["kept_parent"]  # "where the fine-tune was refused"
    quoted = f"scored {normal_one['default_ap50']:.3f} at scale 1, where the fine-tune was refused, "
    quoted += f"and {normal_estimate['default_ap50']:.3f} at Estimate's {normal_estimate['scale']:.2f}"
    assert quoted in guide
    shipped_one, shipped_estimate = (results_json(name)["kinds"] for name in ("hitl.json", "hitl_estimated_scale.json"))
    normal, tumour = (
        f"{shipped_one[kind]['default_ap50']:.3f} at scale 1 and {shipped_estimate[kind]['default_ap50']:.3f} "
        f"at {shipped_estimate[kind]['scale']:.2f}"
        for kind in ("s_bsst265_normal", "s_bsst265_tumour")
    )
    assert f"the bundled model {normal}, but on S-BSST265 tumour sections {tumour}" in guide


def test_the_bundled_model_at_the_estimated_scale_keeps_the_outcomes_of_scale_one():
    at_one, at_estimate = (results_json(name) for name in ("hitl.json", "hitl_estimated_scale.json"))
    for kind, row in at_estimate["recipes"]["shipped"].items():
        same = at_one["recipes"]["shipped"][kind]
        assert (row["kept_parent"], f"{row['kind_gain']:+.3f}") == (same["kept_parent"], f"{same['kind_gain']:+.3f}")
    section = " ".join(hitl_section().split())
    kinds = at_estimate["kinds"]
    scales = f"Estimate gives {kinds['s_bsst265_tumour']['scale']:.2f} on the S-BSST265 tumour sections and "
    scales += f"{kinds['s_bsst265_normal']['scale']:.2f} on the normal samples (starts "
    scales += f"{kinds['s_bsst265_tumour']['default_ap50']:.3f} and {kinds['s_bsst265_normal']['default_ap50']:.3f}"
    assert scales in section


def test_user_guide_quotes_the_screenshot_comparison_table():
    rows = {row["Method"]: row for row in csv.DictReader((ROOT / "docs" / "images" / "compare_table.csv").open())}
    guide = guide_text()
    unet, watershed, otsu = (float(rows[name]["AP@0.5"]) for name in ("UNet", "Watershed", "Otsu"))
    quoted = f"{unet:.3f} on the whole image, against {watershed:.3f} for the watershed baseline"
    assert f"{quoted} and {otsu:.3f} for Otsu" in guide


def test_hitl_keep_every_child_ablation_is_its_results_file():
    report = results_json("hitl_no_keep_rule.json")
    rows = report["recipes"]["shipped"]
    real = [rows[kind]["kind_gain"] for kind in report["kinds"] if kind != "synthetic_he"]
    quoted = ", ".join(f"{gain:+.3f}" for gain in real[:-1]) + f" and {real[-1]:+.3f}"
    large = rows["dsb_fluorescence_large"]
    section = " ".join(hitl_section().split())
    assert f"the six real kinds changed by {quoted}" in section
    assert f"forgot {-large['forgetting_mean']:.3f} on average ({-min(large['forgetting'].values()):.3f} on" in section
    new, old = (
        max(
            100 * row["validation_seconds"] / row["seconds"]
            for row in results_json(name)["recipes"]["shipped"].values()
        )
        for name in ("hitl_grid_k4.json", "hitl_k4_side_cap.json")
    )
    assert f"With 4 corrected images validation took up to {round(new)}% of the run" in section
    assert f"scored over their full height now; {round(old)}% before;" in section


def test_hitl_held_out_strip_paragraph_is_its_results_files():
    def tumour(name: str) -> tuple[int, float]:
        row = results_json(name)["recipes"]["shipped"]["s_bsst265_tumour"]
        nuclei = int(row["messages"][0].split("validating on ")[1].split()[0])
        return nuclei, row["held_out_before"]["val_ap50"]

    (before, before_ap), (after, after_ap) = tumour("hitl_side_cap.json"), tumour("hitl.json")
    section = " ".join(hitl_section().split())
    quoted = f"S-BSST265 tumour went from {before} to {after} (held-out AP@0.5 {before_ap:.3f} -> {after_ap:.3f}"
    assert quoted in section


def test_hitl_colour_levers_are_their_results_file():
    report = results_json("hitl_colour_levers.json")
    gains = {name: rows["dsb_colour_tissue"]["kind_gain"] for name, rows in report["recipes"].items()}
    section = " ".join(hitl_section().split())
    quoted = (
        f"the kind changed by {gains['shipped']:+.3f} as shipped, {gains['no_epoch_cap']:+.3f} without the 100-pass "
        f"cap (548 steps instead of 200), {gains['no_replay']:+.3f} without rehearsal, {gains['retune']:+.3f} with "
        f"thresholds rechosen on the held-out corrections, and with learning rate 1e-3 no check beat the start "
        f"({gains['high_lr']:+.3f})"
    )
    assert quoted in section


def test_allocator_paragraph_quotes_its_results_file():
    results = results_json("allocator.json")
    speedup, kept = results["speedup_from_kept_memory"], results["best_seconds"]["kept"]
    text = benchmarks_text()
    assert (
        f"ran {speedup['previous']:.2f}x (one pass), {speedup['workers_1']:.2f}x (one worker) and "
        f"{speedup['workers_2']:.2f}x (two workers) faster" in text
    )
    one, two, one_pass = kept["workers_1"], kept["workers_2"], kept["previous"]
    assert f"two workers beat one by {one / two:.2f}x and the one-pass path by {one_pass / two:.2f}x" in text
    memory = results["folder_memory"]
    kept_rss, default_rss = memory["kept"]["rss_after_each_mib"], memory["default"]["rss_after_each_mib"]
    assert (
        f"({min(kept_rss):.0f} to {max(kept_rss):.0f} MiB after each plane, against {min(default_rss):.0f} to "
        f"{max(default_rss):.0f} MiB)" in text
    )
    peaks = memory["default"]["peak_rss_mib"], memory["kept"]["peak_rss_mib"]
    assert f"the peak rose from {peaks[0]:.0f} to {peaks[1]:.0f} MiB" in text


def test_kept_memory_pipeline_sentence_quotes_its_results_file():
    results = results_json("pipeline_kept_memory.json")
    seconds = results["real_network_seconds"]
    text = benchmarks_text()
    assert results["settings"]["keep_freed_memory"]
    assert (
        f"everything but the network {results['non_network_speedup']:.2f}x faster than the one-pass path "
        f"(the second worker {results['parallel_speedup']:.2f}x over one)" in text
    )
    quoted = f"{seconds['workers_2']:.1f} s against {seconds['previous']:.1f} s ({results['end_to_end_speedup']:.2f}x)"
    assert quoted in text


def test_kind_fit_paragraph_quotes_its_results_file():
    kinds = results_json("kind_fit.json")["kinds"]
    colour = kinds["dsb_colour_tissue"]
    text = benchmarks_text()
    assert (
        f"the default model trained on {colour['training_images']} images of it, and on {colour['training_scored']} "
        f"of those (`kind_fit.json`, `benchmarks/bench_kind_fit.py`) it scores {colour['training_ap50']:.3f} AP@0.5, "
        f"against {colour['held_out_ap50']:.3f} on the kind's {colour['held_out_images']} held-out images" in text
    )
    small, normal = kinds["dsb_fluorescence_small"]["gap"], kinds["s_bsst265_normal"]["gap"]
    assert f"is {small:.3f} (DSB small fluorescence) and {normal:.3f} (S-BSST265 normal) below" in text
    assert kinds["s_bsst265_tumour"]["gap"] < 0 and kinds["dsb_fluorescence_large"]["gap"] < 0  # "or above it"


def test_colour_k4_forced_child_is_its_results_file():
    report = results_json("hitl_colour_k4_forced.json")
    shipped, uncapped = (report["recipes"][name]["dsb_colour_tissue"] for name in ("shipped", "no_epoch_cap"))
    assert report["settings"]["k"] == 4 and report["settings"]["keep_every_child"]
    before, after = uncapped["held_out_before"]["val_ap50"], uncapped["held_out_after"]["val_ap50"]
    assert (
        f"with 4 corrected images the forced child changed the kind by {shipped['kind_gain']:+.3f} "
        f"({shipped['steps']} steps, the 100-pass cap) and by {uncapped['kind_gain']:+.3f} without the cap "
        f"({uncapped['steps']} steps; its held-out corrections went from {before:.3f} to {after:.3f})"
    ) in benchmarks_text()


def test_pipeline_cpu_time_sentence_quotes_its_results_file():
    results = results_json("pipeline_cpu_time.json")
    cpu, wall, real = (
        results["no_op_network_cpu_seconds"],
        results["no_op_network_seconds"],
        results["real_network_seconds"],
    )
    text = benchmarks_text()
    assert results["settings"]["keep_freed_memory"]
    end_to_end = f"{results['end_to_end_speedup']:.2f}x end to end"
    assert (
        f"gave {results['non_network_speedup']:.2f}x for everything but the network and {end_to_end} "
        f"({real['workers_2']:.1f} s against {real['previous']:.1f} s), "
        f"the second worker {results['parallel_speedup']:.2f}x over one"
    ) in text
    assert (
        f"used {cpu['previous']:.1f} (one pass), {cpu['workers_1']:.1f} (one worker) and {cpu['workers_2']:.1f} "
        f"(two workers) CPU-seconds in {wall['previous']:.1f}, {wall['workers_1']:.1f} and {wall['workers_2']:.1f} s"
    ) in text
    assert f"the one-pass path already keeps {cpu['previous'] / wall['previous']:.1f} of the 2 cores busy" in text


def test_check_crop_paragraph_is_the_shipped_replay_set_and_its_results_files():
    from benchmarks.bench_check_crops import nuclei_ranked
    from napari_unet.core.models.registry import load_model
    from napari_unet.core.train.replay import CHECK_EVERY, load_replay_set, replay_set_path

    path = replay_set_path(load_model("default"))
    crops = load_replay_set(path)
    every_fourth = [i % CHECK_EVERY == CHECK_EVERY - 1 for i in range(len(crops.images))]

    def nuclei(flags: list[bool]) -> list[int]:
        checked = [(labels, name) for labels, name, flag in zip(crops.labels, crops.groups, flags, strict=True) if flag]
        groups = ("fluorescence", "colour", "brightfield", "tissue")
        return [sum(int(labels.max()) for labels, name in checked if name == group) for group in groups]

    ranked, shipped = nuclei(nuclei_ranked(path, len(crops.images))), nuclei(every_fourth)
    text = benchmarks_text()
    assert (
        f"checks with {ranked[0]} fluorescence, {ranked[1]} colour, {ranked[2]} brightfield and {ranked[3]} tissue "
        f"nuclei (a tumour and two normal S-BSST265 crops) instead of {shipped[0]}, {shipped[1]}, {shipped[2]} and "
        f"{shipped[3]} (three sparse normal crops)" in text
    )
    rows = {}
    for name in ("nuclei_ranked", "every_fourth"):
        report = results_json(f"hitl_no_keep_{name}_checks.json")
        assert report["settings"]["keep_every_child"]
        rows[name] = report["recipes"]["shipped"]
    large, stage2 = (
        {name: rows[name][kind] for name in rows} for kind in ("dsb_fluorescence_large", "dsb_stage2_fluorescence")
    )
    assert (
        f"changed dsb_stage2_fluorescence by {large['nuclei_ranked']['forgetting']['dsb_stage2_fluorescence']:+.3f} "
        f"instead of {large['every_fourth']['forgetting']['dsb_stage2_fluorescence']:+.3f}" in text
    )
    assert (
        f"changed its own kind by {stage2['nuclei_ranked']['kind_gain']:+.3f} instead of "
        f"{stage2['every_fourth']['kind_gain']:+.3f} and dsb_fluorescence_large by "
        f"{stage2['nuclei_ranked']['forgetting']['dsb_fluorescence_large']:+.3f} instead of "
        f"{stage2['every_fourth']['forgetting']['dsb_fluorescence_large']:+.3f}" in text
    )
    shares = [row["nuclei_ranked"]["other_kinds_check"]["parent_share"] for row in (large, stage2)]
    assert f"(an average with {shares[0]:.0%} and {shares[1]:.0%} of the parent's weights kept)" in text
    assert all("parent_share" not in row["every_fourth"]["other_kinds_check"] for row in (large, stage2))
    with_rule = results_json("hitl_nuclei_ranked_checks.json")
    shipped_rule = results_json("hitl.json")
    synthetic = [report["recipes"]["shipped"]["synthetic_he"] for report in (with_rule, shipped_rule)]
    assert f"synthetic H&E gained {synthetic[0]['kind_gain']:+.3f} instead of {synthetic[1]['kind_gain']:+.3f}" in text
    check = synthetic[0]["other_kinds_check"]
    assert check["parent_share"] == 0.75
    assert f"child lost {check['before']:.2f} -> {check['forgot']:.2f} on the ranked colour crops" in text
    assert f"while the ranked crops lost {check['before'] - check['forgot']:.2f} there" in text
    assert all(row["kept_parent"] for kind, row in with_rule["recipes"]["shipped"].items() if kind != "synthetic_he")


def test_colour_check_crop_sentence_is_its_results_file():
    report = results_json("check_crops.json")
    default, old, new = report["default"], report["every_fourth"], report["nuclei_ranked"]
    text = benchmarks_text()
    assert (
        f"synthetic H&E {default['synthetic_he']:.3f} -> {old['synthetic_he']:.3f}, all 10 held-out DSB colour tissue "
        f"images {default['dsb_colour_tissue']:.3f} -> {old['dsb_colour_tissue']:.3f}, the 2 DSB stage-2 colour images "
        f"{default['dsb_stage2_colour']:.3f} -> {old['dsb_stage2_colour']:.3f}; with the ranked crops "
        f"{new['synthetic_he']:.3f}, {new['dsb_colour_tissue']:.3f} and {new['dsb_stage2_colour']:.3f})" in text
    )
    assert "parent_share" not in old["other_kinds_check"] and new["other_kinds_check"]["parent_share"] == 0.75


def test_own_group_limit_sentence_is_its_results_file():
    results = results_json("own_group_limit.json")
    tight, loose = results["limits"]["0.02"], results["limits"]["0.05"]
    expected = (
        f"over the {results['children']} distinct children kept in all `hitl*.json` runs ({results['harmful']} that "
        f"cost their kind more than 0.02, {results['helpful']} that gained more than 0.02), a limit of 0.02 would have "
        f"refused {tight['harmful']} harmful and {tight['helpful']} helpful ones, 0.05 would have refused "
        f"{loose['harmful']} harmful and {loose['helpful']} helpful ones"
    )
    assert expected in benchmarks_text()


def test_size_advice_paragraph_and_guide_quote_their_results_file():
    results = results_json("size_advice.json")
    bundled, v1 = (results["models"][name]["kinds"] for name in ("default", "v1"))
    advised = [kind for kind, row in bundled.items() if row["advice"]]
    assert advised == ["s_bsst265_normal"] and [kind for kind, row in v1.items() if row["advice"]] == advised
    normal, tumour = bundled["s_bsst265_normal"], bundled["s_bsst265_tumour"]
    old_normal, old_tumour = v1["s_bsst265_normal"], v1["s_bsst265_tumour"]

    def at(row: dict, how: str) -> str:
        return f"{row[how]['start']:.3f} at {row[how]['scale']:.2f}"

    text = benchmarks_text()
    assert (
        f"(corrected nuclei {normal['diameter'][0]:.0f} px across): {normal['advice']['factor']:.2f} for the " in text
    )
    assert f"and {old_normal['advice']['factor']:.2f} for v1" in text
    assert (
        f"the bundled model scores {at(normal, 'advised')} ({normal['scale_1']['start']:.3f} at scale 1, "
        f"{normal['estimated']['start']:.3f} at Estimate's {normal['estimated']['scale']:.2f}), v1 "
        f"{at(old_normal, 'advised')} ({old_normal['scale_1']['start']:.3f} at scale 1, "
        f"{old_normal['estimated']['start']:.3f} at Estimate's {old_normal['estimated']['scale']:.2f})"
    ) in text
    assert normal["advised"]["gain"] == 0 and f"kind by {old_normal['advised']['gain']:+.3f}" in text
    assert f"cost the two other kinds of that run {-old_normal['advised']['forgetting']:.3f} on average" in text
    sizes = [f"{size:.0f} px" for size in tumour["image_diameters"]]
    assert f"are {tumour['diameter'][0]:.0f} px across (one image's are {sizes[0]}, the other's {sizes[1]})" in text
    assert (
        f"({tumour['scale_1']['start']:.3f} at scale 1, {tumour['estimated']['start']:.3f} at Estimate's "
        f"{tumour['estimated']['scale']:.2f}), but v1 does better at Estimate's {old_tumour['estimated']['scale']:.2f} "
        f"({old_tumour['estimated']['start']:.3f} against {old_tumour['scale_1']['start']:.3f})"
    ) in text
    guide = guide_text()
    assert (
        f"corrected nuclei are {normal['diameter'][0]:.0f} px across: {normal['advice']['factor']:.2f} for the bundled "
        f"model, which scores {normal['advised']['start']:.3f} there against "
        f"{normal['scale_1']['start']:.3f} at scale 1"
    ) in guide


def seed_gains(names: list[str], recipe: str, kind: str) -> list[float]:
    """The kind's gain with ``recipe`` in each of the named bench_hitl results files, in order."""
    return [results_json(name)["recipes"][recipe][kind]["kind_gain"] for name in names]


def mean_pair(names: list[str], recipe: str) -> str:
    """``"+a / +b"``: mean DSB colour tissue and synthetic H&E gains of ``recipe`` over the files."""
    means = [np.mean(seed_gains(names, recipe, kind)) for kind in ("dsb_colour_tissue", "synthetic_he")]
    return "{:+.3f} / {:+.3f}".format(*means)


def test_anchor_and_stain_levers_are_their_results_files():
    def seeds(stem: str, first: int = 0, last: int = 2) -> list[str]:
        return [f"{stem}_seed{seed}.json" for seed in range(first, last + 1)]

    anchor, anchor300, more = (
        seeds(f"hitl_unseen_v1_colour_{name}") for name in ("anchor", "anchor300", "anchor_more")
    )
    paired = seeds("hitl_unseen_v1_colour_anchor_vs_shipped", 3, 6)
    sweep = ["hitl_unseen_v1_colour_sweep.json", *seeds("hitl_unseen_v1_colour_sweep", 1, 2)]
    text = benchmarks_text()
    assert (
        f"at 10, 100 and 300 (3 seeds, `hitl_unseen_v1_colour_anchor_seed0.json` to `_seed2`, "
        f"`hitl_unseen_v1_colour_anchor300_seed0.json` to `_seed2`): {mean_pair(anchor, 'anchor_10')}, "
        f"{mean_pair(anchor, 'anchor_100')} and {mean_pair(anchor300, 'anchor_300')}; 100 without the pass cap "
        f"{mean_pair(more, 'anchor_100_no_cap')}, 100 with a tenth rehearsed "
        f"{mean_pair(more, 'anchor_100_replay_tenth')}"
    ) in text
    shipped_seven, anchor_seven = sweep + paired, anchor + paired
    colour = "dsb_colour_tissue"
    shipped_low = min(seed_gains(shipped_seven, "shipped", colour))
    anchor_low = min(seed_gains(anchor_seven, "anchor_100", colour))
    assert (
        f"as shipped {mean_pair(shipped_seven, 'shipped')} (lowest seed {shipped_low:+.3f} on DSB colour tissue), "
        f"with 100 {mean_pair(anchor_seven, 'anchor_100')} (lowest {anchor_low:+.3f})"
    ) in text
    differences = [
        np.mean(np.subtract(seed_gains(anchor_seven, "anchor_100", kind), seed_gains(shipped_seven, "shipped", kind)))
        for kind in (colour, "synthetic_he")
    ]
    assert f"({differences[0]:+.3f} on DSB colour tissue and {differences[1]:+.3f} on synthetic H&E" in text
    assert f"mean on v1's DSB colour tissue is {np.mean(seed_gains(shipped_seven, 'shipped', colour)):+.3f}" in text
    assert f"below the {np.mean(seed_gains(sweep, 'shipped', colour)):+.3f} of the first 3" in text
    seven = np.mean(seed_gains(shipped_seven, "shipped", colour))
    guide = guide_text()
    assert f"(by {seven:+.3f} on average over 7 runs with different training seeds" in guide
    assert (
        f"the +0.10 the issue asks for ({seed_gains(sweep[:1], 'shipped', colour)[0]:+.3f} in the run above, "
        f"{seven:+.3f} on average over 7 training seeds)" in text
    )
    bundled = seeds("hitl_colour_stain")
    assert (
        f"as shipped {mean_pair(bundled, 'shipped')}, stain jitter at 0.5 {mean_pair(bundled, 'stain_jitter')}, "
        f"anchor 100 {mean_pair(seeds('hitl_colour_anchor100'), 'anchor_100')}"
    ) in text


def test_trained_part_levers_are_their_results_files():
    parts = [f"hitl_unseen_v1_colour_parts_seed{seed}.json" for seed in range(3)]
    sweep = ["hitl_unseen_v1_colour_sweep.json", "hitl_unseen_v1_colour_sweep_seed1.json"]
    sweep.append("hitl_unseen_v1_colour_sweep_seed2.json")
    assert (
        f"the decoder alone {mean_pair(parts, 'decoder_only')}, the decoder alone without the pass cap "
        f"{mean_pair(parts, 'decoder_only_no_cap')}, the encoder alone {mean_pair(parts, 'encoder_only')}, against "
        f"{mean_pair(sweep, 'shipped')} for the whole network on the same 3 seeds"
    ) in benchmarks_text()


def test_magnification_runs_are_their_results_files():

    def gains(model: str, recipe: str, kind: str) -> str:
        rows = [results_json(f"hitl_zoom_{model}_seed{seed}.json")["recipes"][recipe][kind] for seed in range(3)]
        native = np.mean([row["kind_gain"] for row in rows])
        magnified = [np.mean([row["magnified"][factor]["gain"] for row in rows]) for factor in ("0.5", "2.0")]
        return "{:+.3f}, {:+.3f}, {:+.3f}".format(native, *magnified)

    def both(model: str, kind: str) -> str:
        return f"{gains(model, 'shipped', kind)} then {gains(model, 'wide_zoom', kind)}"

    text = benchmarks_text()
    assert (
        f"The bundled model: DSB colour tissue {both('bundled', 'dsb_colour_tissue')}; synthetic H&E "
        f"{both('bundled', 'synthetic_he')}. v1: DSB colour tissue {both('v1', 'dsb_colour_tissue')}; "
        f"synthetic H&E {both('v1', 'synthetic_he')}."
    ) in text


def test_gpu_paragraph_is_the_gpu_check_results_file():
    check = results_json("gpu_check.json")
    before = results_json("gpu_check_before_pipeline.json")
    inference, pipeline = check["inference"][0], check["pipeline"]
    big, big_before = check["network_only"][0], before["network_only"][0]
    speeds = [row["network_mpx_per_s"] for row in check["batch_sizes"]]
    text = benchmarks_text()
    assert (
        f"took {pipeline['pipelined']['seconds']:.2f} s with chunks labelled by {pipeline['workers']} workers "
        f"while the network ran, against {pipeline['previous']['seconds']:.2f} s in one pass "
        f"({pipeline['previous']['seconds'] / pipeline['pipelined']['seconds']:.2f}x; labels of one against the "
        f"other AP@0.5 {pipeline['labels_ap50_pipelined_vs_previous']:.3f}, CUDA against the CPU path at 2048² "
        f"{pipeline['labels_ap50_cuda_vs_cpu']['ap50']:.3f})"
    ) in text
    assert (
        f"{inference['end_to_end_mpx_per_s']:.1f} MPx/s without flips and "
        f"{inference['end_to_end_model_settings_mpx_per_s']:.1f} MPx/s with the model's flips, the network inside "
        f"`predict` {inference['network_mpx_per_s']:.1f} MPx/s and a bare forward pass "
        f"{inference['plain_forward_mpx_per_s']:.1f} MPx/s"
    ) in text
    assert (
        f"gave {before['inference'][0]['end_to_end_mpx_per_s']:.1f} MPx/s end to end and "
        f"{before['inference'][0]['network_mpx_per_s']:.0f} MPx/s for the network"
    ) in text
    assert (
        f"{big['network_mpx_per_s']:.1f} MPx/s ({big['network_s']:.2f} s) against "
        f"{big_before['network_mpx_per_s']:.1f} MPx/s ({big_before['network_s']:.2f} s)"
    ) in text
    assert f"from {speeds[0]:.1f} to {speeds[-1]:.1f} MPx/s" in text
    assert f"A 10 s fine-tune made {check['fine_tune']['steps']} steps." in text
    assert "2 passed" in (RESULTS / "gpu_tests.txt").read_text()


def test_third_gpu_run_sentence_is_its_results_files():
    models = results_json("default_model_v2_gpu_refine3.json")["models"]
    end = results_json("default_model_v2_gpu_refine3_end.json")["models"]["out/v3 (tta)"]
    shipped, best = models["default (tta)"], models["out/c/grey_mid (tta)"]
    averages = ("grey_mid_soup", "mid_soup", "grey_end_soup")
    soups = [models[f"out/c/{name} (tta)"]["tuned_val_score"] for name in averages]
    before, after = shipped["val"]["per_image_AP@0.5"], best["val"]["per_image_AP@0.5"]
    differences = np.array([after[key] - before[key] for key in before])
    families = [
        f"{shipped['val']['families'][name]['AP@0.5']:.3f} to {best['val']['families'][name]['AP@0.5']:.3f}"
        for name in ("grey", "colour", "tissue")
    ]
    assert max(models.values(), key=lambda model: model["tuned_val_score"]) is best
    assert (
        f"the shipped model {shipped['tuned_val_score']:.3f}, the run's end {end['tuned_val_score']:.3f}, its half-way "
        f"snapshot {models['out/v3_mid (tta)']['tuned_val_score']:.3f}, the shipped model with only the grey network "
        f"of that snapshot {best['tuned_val_score']:.3f}, and 50/50 weight averages with the shipped networks "
        f"{min(soups):.3f} to {max(soups):.3f}. The best of them gains "
        f"{best['tuned_val_score'] - shipped['tuned_val_score']:.3f}: grey images {families[0]}, colour images "
        f"{families[1]} (their network unchanged: other thresholds), S-BSST265 tissue sections {families[2]}; "
        f"per validation image it "
        f"gains {differences.mean():+.3f} (standard error {differences.std(ddof=1) / np.sqrt(len(differences)):.3f}, "
        f"{np.sum(differences > 0.005)} images better and {np.sum(differences < -0.005)} worse)"
    ) in benchmarks_text()
    log = results_json("gpu_refine3_train_log.json")
    assert {name: round(run["train_s"]) for name, run in log.items()} == {"colour_b16": 300, "grey_b16": 300}


def test_3d_precision_sentence_is_its_results_file():
    results = results_json("finetune_3d_precision.json")
    mixed, float32 = (results["precisions"][name] for name in ("mixed", "float32"))
    assert results["precision"] == "bfloat16" and results["steps"] == 120 and len(mixed["stacks"]) == 6
    assert (
        f"{mixed['train_seconds']:.1f} s of training in bfloat16 against {float32['train_seconds']:.1f} s in float32 "
        f"({results['float32_over_mixed_seconds']:.2f}x, set-up and the first run's warm-up included), with the same "
        f"outcome: last weights {mixed['mean']['last']['AP@0.5']:.3f} against {float32['mean']['last']['AP@0.5']:.3f} "
        f"AP@0.5, their average with the parent {mixed['mean']['averaged']['AP@0.5']:.3f} and "
        f"{float32['mean']['averaged']['AP@0.5']:.3f}, from {mixed['mean']['parent']['AP@0.5']:.3f}"
    ) in benchmarks_text()
    guide = guide_text()
    assert f"3D fine-tuning of `nuclei-3d` too ({results['float32_over_mixed_seconds']:.1f} times)" in guide


def test_refused_weights_paragraph_is_its_results_files():
    every = results_json("hitl_unseen_v1_s_bsst265_every_child.json")
    assert every["settings"]["keep_every_child"] and every["settings"]["model"] == "out/v1_default"
    runs = every["recipes"]
    shipped = runs["shipped"]
    tumour, normal = shipped["s_bsst265_tumour"], shipped["s_bsst265_normal"]

    def last_three(row: dict) -> float:
        return float(np.mean([check["val_ap50"] for check in row["validations"]][-3:]))

    def nuclei(row: dict) -> int:
        return next(int(m.split()[2]) for m in row["messages"] if m.startswith("validating on"))

    for row in (tumour, normal):  # what the shipped rule would have refused: no gain of 0.05 or two nuclei's worth
        start = row["validations"][0]["val_ap50"]
        assert last_three(row) < start + max(0.05, 2 / nuclei(row)) and row["steps"] == 400
    text = benchmarks_text()
    assert (
        f"their last three checks averaged {last_three(tumour):.3f} against {tumour['validations'][0]['val_ap50']:.3f} "
        f"at the start on the tumour sections' {nuclei(tumour)} held-out nuclei and {last_three(normal):.3f} against "
        f"{normal['validations'][0]['val_ap50']:.3f} on the normal samples' {nuclei(normal)}"
    ) in text
    assert (
        f"better by {tumour['kind_gain']:+.3f} (tumour) and {normal['kind_gain']:+.3f} (normal), and the other kinds "
        f"too ({tumour['forgetting_mean']:+.3f} and {normal['forgetting_mean']:+.3f} on average)"
    ) in text

    def both(recipe: str) -> str:
        return " / ".join(
            f"{runs[recipe][kind]['kind_gain']:+.3f}" for kind in ("s_bsst265_tumour", "s_bsst265_normal")
        )

    assert (
        f"no pass cap {both('no_epoch_cap')}, learning rate 1e-3 {both('high_lr')}, BatchNorm statistics adapting "
        f"{both('bn_adapts')}, the decoder alone without the cap {both('decoder_only_no_cap')} (forgetting "
        f"{runs['decoder_only_no_cap']['s_bsst265_normal']['forgetting_mean']:.3f} after the normal samples)"
    ) in text
    rule, free = (
        results_json(f"pairs_v1_colour{suffix}.json")["recipes"]["shipped"]["users"] for suffix in ("", "_every_child")
    )
    refused = [
        child for kept, child in zip(rule, free, strict=True) if kept["kept_parent"] and not child["kept_parent"]
    ]
    gains = [child["kind_gain"] for child in refused]
    worst = sorted(min(child["forgetting"].values()) for child in refused)[:2]
    assert (
        f"the rule refused {len(refused)} children that changed the kind by {np.mean(gains):+.3f} on average "
        f"({min(gains):+.3f} to {max(gains):+.3f}), two of which cost one other kind "
        f"{-worst[1]:.3f} and {-worst[0]:.3f}"
    ) in text
    bundled = results_json("hitl_no_keep_rule.json")["recipes"]["shipped"]
    children = [row["kind_gain"] for kind, row in bundled.items() if kind != "synthetic_he" and not row["kept_parent"]]
    assert f"changed their kind by {max(children):+.3f} to {min(children):+.3f}" in text
    guide = guide_text()
    assert f"made the kind's other samples {normal['kind_gain']:.3f} AP@0.5 better" in guide
    assert f"changed the rest of the kind by {max(children):+.3f} to {min(children):+.3f}" in guide
    assert worst[1] < -0.3 and "some cost other kinds of image more than 0.3" in guide


def test_s_bsst265_normal_users_paragraph_is_its_results_files():
    rule, every = (results_json(f"pairs_v1_normal{suffix}.json") for suffix in ("", "_every_child"))
    assert every["settings"]["keep_every_child"] and not rule["settings"]["keep_every_child"]
    assert rule["settings"]["kind"] == "s_bsst265_normal" and rule["settings"]["k"] == 2
    summary, free = rule["recipes"]["shipped"]["summary"], every["recipes"]["shipped"]["summary"]
    users = rule["recipes"]["shipped"]["users"]
    kept = [user for user in users if not user["kept_parent"]]
    gained = [user["kind_gain"] for user in users if user["kind_gain"] >= 0.10]
    nuclei = [user["nuclei"] for user in users]
    text = benchmarks_text()
    assert (
        f"of the kind, {rule['settings']['scored']} scored, v1 {np.mean(rule['kind_before']):.3f} on them; "
        f"{summary['users']} users of 2 images, {min(nuclei)} to {max(nuclei)} nuclei per pair): the expected gain "
        f"is {summary['mean_gain']:+.3f} (standard error {summary['standard_error']:.3f}); {len(gained)} users gained "
        f"+0.10 or more ({min(gained):+.3f} to {max(gained):+.3f}), the starting model was kept for the other "
        f"{summary['parent_kept']}, and none lost more than 0.02"
    ) in text
    assert len(gained) == summary["users_gaining_0_10"] == len(kept) and summary["users_worse_0_02"] == 0
    over = sum(min(user["forgetting"].values()) < -0.10 for user in kept)
    assert (
        f"{summary['mean_forgetting']:.3f} on average, {summary['worst_forgetting']:.3f} at worst; {over} of the "
        f"{len(kept)} kept children lost more than 0.10 on one kind of the panel"
    ) in text
    refused = [
        child["kind_gain"]
        for user, child in zip(users, every["recipes"]["shipped"]["users"], strict=True)
        if user["kept_parent"] and not child["kept_parent"]
    ]
    assert (
        f"the expected gain is {free['mean_gain']:+.3f} (standard error {free['standard_error']:.3f}), "
        f"{free['users_gaining_0_10']} of 10 users +0.10 or more: {len(refused)} of the {summary['parent_kept']} users "
        f"the rule left with the starting model had refused weights that gained {min(refused):+.3f} to "
        f"{max(refused):+.3f}"
    ) in text


def tissue_scores(report: dict, scores: list[float], tissue: str) -> list[float]:
    """The ``scores`` (one per scored image of a bench_pairs report) of the S-BSST265 images named ``tissue...``."""
    keys = [key.split("/", 1)[1] for key in report["scored"]]
    return [score for key, score in zip(keys, scores, strict=True) if key.startswith(tissue)]


def tissue_gains(report: dict, user: dict, tissue: str) -> float:
    """A bench_pairs user's mean change on the scored S-BSST265 images whose name starts with ``tissue``."""
    before, after = (tissue_scores(report, scores, tissue) for scores in (report["kind_before"], user["kind_after"]))
    return float(np.mean(np.subtract(after, before)))


def test_s_bsst265_tumour_users_paragraph_is_its_results_files():
    rule, every = (results_json(f"pairs_v1_tumour{suffix}.json") for suffix in ("", "_every_child"))
    assert every["settings"]["keep_every_child"] and not rule["settings"]["keep_every_child"]
    assert rule["settings"]["kind"] == "s_bsst265_tumour" and rule["settings"]["k"] == 2
    summary, free = rule["recipes"]["shipped"]["summary"], every["recipes"]["shipped"]["summary"]
    users, children = rule["recipes"]["shipped"]["users"], every["recipes"]["shipped"]["users"]
    nuclei = [user["nuclei"] for user in users]
    kept = [user for user in users if not user["kept_parent"]]
    over = sum(min(user["forgetting"].values()) < -0.10 for user in kept)
    text = benchmarks_text()
    assert (
        f"of the kind, {rule['settings']['scored']} scored, v1 {np.mean(rule['kind_before']):.3f} on them; "
        f"{summary['users']} users of 2 images, {min(nuclei)} to {max(nuclei)} nuclei per pair): the expected gain "
        f"is {summary['mean_gain']:+.3f} (standard error {summary['standard_error']:.3f}); no user gained +0.10, "
        f"the starting model was kept for {summary['parent_kept']}, and none lost more than 0.02. Forgetting on the "
        f"other kinds' panel: {summary['mean_forgetting']:+.3f} on average, {summary['worst_forgetting']:.3f} at "
        f"worst; {over} of the {len(kept)} kept children lost more than 0.10"
    ) in text
    assert summary["users_gaining_0_10"] == 0 and summary["users_worse_0_02"] == 0
    assert (
        f"the expected gain is {free['mean_gain']:+.3f} (standard error {free['standard_error']:.3f}), "
        f"{free['users_gaining_0_10']} of {free['users']} users +0.10 or more"
    ) in text

    def only(corrected: list[str], tissue: str) -> bool:
        return all(key.split("/", 1)[1].startswith(tissue) for key in corrected)

    neuro = [child for child in children if only(child["corrected"], "Neuroblastoma")]
    mixed = [child for child in children if not only(child["corrected"], "Neuroblastoma")]
    neuro_before, ganglio_before = (
        tissue_scores(rule, rule["kind_before"], tissue) for tissue in ("Neuroblastoma", "Ganglioneuroblastoma")
    )
    assert len(neuro) == 4 and len(mixed) == 1 and len(neuro_before) == len(ganglio_before) == 3
    neuro_gain = np.mean([tissue_gains(every, child, "Neuroblastoma") for child in neuro])
    ganglio_gain = np.mean([tissue_gains(every, child, "Ganglioneuroblastoma") for child in neuro])
    mixed_gains = [tissue_gains(every, mixed[0], tissue) for tissue in ("Neuroblastoma", "Ganglioneuroblastoma")]
    assert (
        f"{len(neuro)} users corrected two neuroblastoma sections each, and with every child kept they gained "
        f"{neuro_gain:+.3f} on average on the 3 neuroblastoma sections scored (v1 {np.mean(neuro_before):.3f} on "
        f"them) and {ganglio_gain:+.3f} on the 3 ganglioneuroblastoma sections (v1 {np.mean(ganglio_before):.3f}); "
        f"the user who corrected one of each gained {mixed_gains[0]:+.3f} and {mixed_gains[1]:+.3f}"
    ) in text
    kept_neuro = [tissue_gains(rule, user, "Neuroblastoma") for user in kept]
    assert all(only(user["corrected"], "Neuroblastoma") for user in kept)
    assert f"kept children ({kept_neuro[0]:+.3f} and {kept_neuro[1]:+.3f} on neuroblastoma)" in text
    refused = [user["held_out_decision"] for user in users if user["kept_parent"]]
    short = [d for d in refused if d["nuclei"] < 20]
    assert (
        f"held-out gains of {short[0]['last_validations'] - short[0]['start']:+.3f} on {short[0]['nuclei']} nuclei and "
        f"{short[1]['last_validations'] - short[1]['start']:+.3f} on {short[1]['nuclei']}, short of the "
        f"{short[0]['required_gain']:+.3f} and {short[1]['required_gain']:+.3f}"
    ) in text
    (close,) = [d for d in refused if d["nuclei"] >= 20]
    assert 0 < close["required_gain"] - (close["last_validations"] - close["start"]) < 0.001
    assert (
        f"({close['last_validations'] - close['start']:+.3f} on {close['nuclei']} held-out nuclei, "
        f"{close['required_gain']:+.3f} required)"
    ) in text
    guide = guide_text()
    assert (
        f"{results_json('pairs_v1_normal.json')['recipes']['shipped']['summary']['mean_gain']:+.3f} on average "
        f"(`pairs_v1_normal.json`) and {summary['users']} who corrected 2 tumour sections {summary['mean_gain']:+.3f}"
    ) in guide
    assert f"two neuroblastoma sections gained {neuro_gain:+.3f} on neuroblastoma and {ganglio_gain:+.3f} on" in guide


def test_fourth_gpu_run_sentence_is_its_results_files():
    models = results_json("default_model_v2_gpu_refine4.json")["models"]
    shipped, best = models["default (tta)"], models["out/c4/grey_end (tta)"]
    assert max(models.values(), key=lambda model: model["tuned_val_score"]) is best

    def per_image(split: str) -> str:
        before, after = shipped[split]["per_image_AP@0.5"], best[split]["per_image_AP@0.5"]
        differences = np.array([after[key] - before[key] for key in before])
        error = differences.std(ddof=1) / np.sqrt(len(differences))
        return f"per image {differences.mean():+.3f} (standard error {error:.3f}, {np.sum(differences > 0.005)} "

    score = {name: models[f"{name} (tta)"]["tuned_val_score"] for name in ("out/v4", "out/v4_mid", "out/c4/grey_mid")}
    text = benchmarks_text()
    assert (
        f"the shipped model {shipped['tuned_val_score']:.3f}, the run's end {score['out/v4']:.3f}, its half-way "
        f"snapshot {score['out/v4_mid']:.3f}, the shipped model with only the grey network of the end "
        f"{best['tuned_val_score']:.3f} and of the snapshot {score['out/c4/grey_mid']:.3f}. The best gains "
        f"{best['tuned_val_score'] - shipped['tuned_val_score']:.3f} on validation, {per_image('val')}"
    ) in text
    assert (
        f"on the test images {shipped['test']['family_mean_AP@0.5']:.3f} to {best['test']['family_mean_AP@0.5']:.3f}, "
        f"{per_image('test')}"
    ) in text
    log = results_json("gpu_refine4_train_log.json")
    assert {name: (round(run["train_s"]), run["args"]["lr"]) for name, run in log.items()} == {
        "colour_b16": (300, "0.0003"),
        "grey_b16": (300, "0.0003"),
    }


def test_gpu_check_rerun_sentence_is_its_results_file():
    check = results_json("gpu_check_rerun.json")
    inference, pipeline = check["inference"][0], check["pipeline"]
    text = benchmarks_text()
    assert (
        f"the network inside `predict` {inference['network_mpx_per_s']:.1f} MPx/s at 4096², end to end "
        f"{inference['end_to_end_mpx_per_s']:.1f} MPx/s, the 16384² plane "
        f"{check['network_only'][0]['network_mpx_per_s']:.1f} MPx/s, the pipelined post-processing "
        f"{pipeline['pipelined']['seconds']:.2f} s against {pipeline['previous']['seconds']:.2f} s in one pass"
    ) in text
    assert f"Its 10 s fine-tune made {check['fine_tune']['steps']} steps" in text
    assert "2 passed" in (RESULTS / "gpu_tests_rerun.txt").read_text()


def test_many_users_paragraph_is_the_bench_pairs_results_files():
    guarded, every = (results_json(f"pairs_v1_colour{suffix}.json") for suffix in ("", "_every_child"))
    rule, unguarded = guarded["recipes"]["shipped"], every["recipes"]["shipped"]
    summary, free = rule["summary"], unguarded["summary"]
    counts = [user["nuclei"] for user in rule["users"]]
    steps = sorted({user["steps"] for run in (rule, unguarded) for user in run["users"]})
    budget = round(guarded["settings"]["seconds"] * guarded["settings"]["steps_per_second"])
    assert every["settings"]["keep_every_child"] and not guarded["settings"]["keep_every_child"]
    text = benchmarks_text()
    assert (
        f"lets {summary['users']} simulated users each correct {guarded['settings']['k']} different images of DSB "
        f"colour tissue ({min(counts)} to {max(counts)} nuclei per pair; the {len(guarded['trained_on_excluded'])} "
        f"images of the kind that trained v1 left out)"
    ) in text
    assert (
        f"the same {len(guarded['scored'])} other images of the kind (v1: {guarded['default_ap50']:.3f} on them). "
        f"The expected gain is {summary['mean_gain']:+.3f} (standard error {summary['standard_error']:.3f}; lowest "
        f"{summary['min_gain']:+.3f}, highest {summary['max_gain']:+.3f}): no user gained +0.10, none lost more than "
        f"0.02, and the starting model was kept for {summary['parent_kept']} of the {summary['users']}. Forgetting on "
        f"the other kinds' panel: {summary['mean_forgetting']:+.3f} on average, {summary['worst_forgetting']:+.3f} at "
        f"worst"
    ) in text
    assert summary["users_gaining_0_10"] == 0 and summary["users_worse_0_02"] == 0
    assert (
        f"the median ({summary['median_nuclei']}) gained no more ({summary['more_nuclei']:+.3f} against "
        f"{summary['fewer_nuclei']:+.3f})"
    ) in text
    assert (
        f"the same users gained {free['mean_gain']:+.3f} (standard error {free['standard_error']:.3f}; "
        f"{free['min_gain']:+.3f} to {free['max_gain']:+.3f}) and forgot more: {free['mean_forgetting']:+.3f} on "
        f"average, {free['worst_forgetting']:+.3f} at worst"
    ) in text
    assert f"after {steps[0]} or {steps[-1]} of their {budget} steps" in text and steps == [100, 200]
    for run in (rule, unguarded):  # the worst forgetting the paragraph names: S-BSST265 normal sections
        worst = min((loss, other) for user in run["users"] for other, loss in user["forgetting"].items())
        assert worst[1] == "s_bsst265_normal"
    guide = guide_text()
    assert (
        f"by {summary['mean_gain']:+.3f} on average when {summary['users']} simulated users each corrected "
        f"{guarded['settings']['k']} different images of it"
    ) in guide


def test_more_images_per_user_sentence_is_the_bench_pairs_results_files():
    four, eight = (results_json(f"pairs_v1_colour_k{k}.json")["recipes"]["shipped"] for k in (4, 8))
    children = [user for user in four["users"] if not user["kept_parent"]]
    harmful_kinds = {kind for user in children for kind, change in user["forgetting"].items() if change < -0.10}
    harmful = sum(min(user["forgetting"].values()) < -0.10 for user in children)
    s4, s8 = four["summary"], eight["summary"]
    text = benchmarks_text()
    assert (
        f"12 users of 4 images (`pairs_v1_colour_k4.json`) gained {s4['mean_gain']:+.3f} (standard error "
        f"{s4['standard_error']:.3f}), 6 users of 8 (`pairs_v1_colour_k8.json`) {s8['mean_gain']:+.3f} "
        f"({s8['standard_error']:.3f}), {['no one', 'one', 'two'][s8['users_gaining_0_10']]} of the 6 reaching +0.10; "
        f"the starting model was kept for {s4['parent_kept']} of 12 and {s8['parent_kept']} of 6. With 4 images the "
        f"kept children forgot more: {s4['mean_forgetting']:+.3f} on average, {s4['worst_forgetting']:+.3f} at worst, "
        f"and {harmful} of the {len(children)} kept lost more than 0.10 on some kind of the panel (S-BSST265 normal "
        "sections or DSB fluorescence)"
    ) in text
    assert harmful_kinds and all(kind == "s_bsst265_normal" or "fluorescence" in kind for kind in harmful_kinds)
    assert (s4["users"], s8["users"]) == (12, 6)
    assert f"with 8, {s8['mean_forgetting']:+.3f} on average and {s8['worst_forgetting']:+.3f} at worst" in text


def test_one_user_correcting_64_images_paragraph_is_the_bench_pairs_results_files():
    short, long = (results_json(name) for name in ("pairs_v1_colour_k64.json", "pairs_v1_colour_k64_480s.json"))
    every_child = results_json("pairs_v1_colour_every_child.json")["recipes"]["shipped"]
    (user,), (longer,) = short["recipes"]["shipped"]["users"], long["recipes"]["shipped"]["users"]
    assert short["settings"]["k"] == long["settings"]["k"] == len(user["corrected"]) == 64
    assert short["settings"]["keep_every_child"] and long["settings"]["keep_every_child"]
    text = benchmarks_text()
    assert (
        f"all 64 other images of the kind ({user['nuclei']:,} nuclei; `pairs_v1_colour_k64.json`, `--users 1 --k 64 "
        f"--keep-every-child`) gained {user['kind_gain']:+.3f} in the same {user['steps']} steps (best check at step "
        f"{user['best_step']}; held-out corrections {user['held_out_before']['val_ap50']:.3f} -> "
        f"{user['held_out_after']['val_ap50']:.3f}), and {longer['kind_gain']:+.3f} in four times as many "
        f"({longer['steps']:,} steps, {long['settings']['seconds']:.0f} s at the same pace; "
        f"`pairs_v1_colour_k64_480s.json`, best check at step {longer['best_step']:,})"
    ) in text
    assert (
        f"with every child kept, 2 images gave {every_child['summary']['mean_gain']:+.3f} on average and 64 images "
        f"{user['kind_gain']:+.3f} in the same {user['steps']} steps, and four times the steps added "
        f"{longer['kind_gain'] - user['kind_gain']:.3f} to that"
    ) in text


def test_training_precision_paragraph_is_the_results_file():
    results = results_json("train_precision.json")
    panel, grey = results["cases"]["panel"], results["cases"]["grey_pair"]
    assert results["machine"]["native_bfloat16"] and results["settings"]["rounds"] == 3
    text = benchmarks_text()
    speed = (
        f"{results['settings']['seconds']:.0f} s per run, the two precisions taking turns 3 times: the panel case "
        "(one 1000x1000 synthetic brightfield image, 300 corrected nuclei) made "
        f"{panel['speed']['best']['bfloat16']['steps_per_second']:.2f} steps per second against "
        f"{panel['speed']['best']['float32']['steps_per_second']:.2f} in float32 ({panel['speed']['ratio']:.2f}x), "
        f"two 256x320 synthetic fluorescence images {grey['speed']['best']['bfloat16']['steps_per_second']:.2f} "
        f"against {grey['speed']['best']['float32']['steps_per_second']:.2f} ({grey['speed']['ratio']:.2f}x)"
    )
    assert speed in text
    for case in (panel, grey):
        low, high = case["learning"]["float32"], case["learning"]["bfloat16"]
        assert low["steps"] == high["steps"] == results["settings"]["steps"]
        assert (low["held_out_after"], low["unseen_after"]) == (high["held_out_after"], high["unseen_after"])
    bf16_panel, bf16_grey = panel["learning"]["bfloat16"], grey["learning"]["bfloat16"]
    learned = (
        f"The same {results['settings']['steps']} steps in either precision ended with the same scores to the digit: "
        f"held-out corrections {bf16_panel['held_out_after']:.3f} and {bf16_grey['held_out_after']:.3f}, an unseen "
        f"image of the kind {bf16_panel['unseen_after']:.3f} (from {bf16_panel['unseen_before']:.3f}) and "
        f"{bf16_grey['unseen_after']:.3f} (from {bf16_grey['unseen_before']:.3f})"
    )
    assert learned in text
    guide = guide_text()
    slower = min(panel["speed"]["ratio"], grey["speed"]["ratio"])
    assert f"bfloat16, as it segments: {slower:.1f} times as many steps in the same seconds" in guide


def test_bfloat16_rerun_of_the_hitl_benchmark_sentence_is_its_results_file():
    float32, bfloat16 = (results_json(name) for name in ("hitl.json", "hitl_bfloat16.json"))
    assert {key: float32["settings"][key] for key in ("k", "steps_per_second", "half_image", "seed")} == {
        key: bfloat16["settings"][key] for key in ("k", "steps_per_second", "half_image", "seed")
    }
    before, after = float32["recipes"]["shipped"], bfloat16["recipes"]["shipped"]
    assert before.keys() == after.keys()
    for kind in before:
        same = ("kind_gain", "kept_parent", "steps", "best_step")
        assert [before[kind][key] for key in same] == [after[kind][key] for key in same], kind
    real = [kind for kind in after if kind != "synthetic_he"]
    assert len(real) == 6 and all(after[kind]["kept_parent"] for kind in real)
    he, half = after["synthetic_he"], after["s_bsst265_tumour"]["half_image"]
    shares = [row["validation_seconds"] / row["seconds"] for row in after.values()]
    text = benchmarks_text()
    assert (
        f"synthetic H&E {he['kind_gain']:+.3f} (forgetting {he['forgetting_mean']:+.3f} against "
        f"{before['synthetic_he']['forgetting_mean']:+.3f}), and the half-image test's child on an S-BSST265 tumour "
        f"section goes {half['before']:.3f} -> {half['after']:.3f} "
        f"({before['s_bsst265_tumour']['half_image']['after']:.3f} in float32); validation took "
        f"{min(shares):.0%} to {max(shares):.0%} of each run"
    ) in text


def test_bfloat16_rerun_of_the_pairs_benchmark_sentence_is_its_results_file():
    float32, bfloat16 = (
        results_json(name)["recipes"]["shipped"] for name in ("pairs_v1_colour.json", "pairs_v1_colour_bfloat16.json")
    )
    pairs = list(zip(float32["users"], bfloat16["users"], strict=True))
    assert all(low["corrected"] == high["corrected"] and low["steps"] == high["steps"] for low, high in pairs)
    same = [(low, high) for low, high in pairs if low["kept_parent"] == high["kept_parent"]]
    ((child, parent),) = [(low, high) for low, high in pairs if low["kept_parent"] != high["kept_parent"]]
    assert not child["kept_parent"] and parent["kept_parent"] and child["best_step"] == child["steps"]
    differences = np.array([high["kind_gain"] - low["kind_gain"] for low, high in pairs])
    closest = max(abs(high["kind_gain"] - low["kind_gain"]) for low, high in same)
    summary = bfloat16["summary"]
    text = benchmarks_text()
    assert (
        f"the expected gain is {summary['mean_gain']:+.3f} (standard error {summary['standard_error']:.3f}): "
        f"{len(same)} users ended with the same decision and gains within {closest:.3f} of float32's, and one child "
        f"that float32 kept on its last check ({child['kind_gain']:+.3f} on the kind)"
    ) in text
    assert (
        f"the paired difference is {differences.mean():+.3f} (standard error "
        f"{differences.std(ddof=1) / np.sqrt(len(differences)):.3f}), within noise"
    ) in text
    guide = guide_text()
    assert f"by {summary['mean_gain']:+.3f} training in bfloat16, `pairs_v1_colour_bfloat16.json`" in guide


def test_user_guide_states_the_held_out_bar_the_code_sets():
    from napari_unet.core.config import TrainingConfig
    from napari_unet.core.train.outcome import HELD_OUT_NUCLEI_MARGIN, MIN_HELD_OUT_GAIN

    enough = round(HELD_OUT_NUCLEI_MARGIN / MIN_HELD_OUT_GAIN)
    assert TrainingConfig().val_fraction == 0.2
    assert (
        f"a fifth of the corrected nuclei are held out, and from {enough} held-out nuclei (about {enough * 5} "
        f"corrected) a gain of {MIN_HELD_OUT_GAIN:.2f} counts"
    ) in guide_text()


def test_keep_rule_study_paragraph_is_its_results_file():
    study = results_json("keep_rule_study.json")
    bundled, unseen, synthetic = (study["children"][name] for name in study["children"])
    shipped, loose = study["rules"]["last 3 checks, 2 nuclei"], study["rules"]["last 3 checks, 1 nuclei"]
    every = study["rules"]["every child"]
    own, new = shipped["bundled model, real kinds"], shipped["v1, kinds it never saw"]
    text = benchmarks_text()
    assert (
        f"({len(study['files'])} files, repeats dropped: {bundled} children of the bundled model on its real kinds, "
        f"{unseen} of v1 on kinds it never saw, {synthetic} on synthetic H&E)"
    ) in text
    assert own["kept_harmful"] == 0 and new["kept_harmful"] == 3
    pale = [row for row in study["rows"] if row["files"] == ["pairs_v1_colour_pale_every_child.json"]]
    assert sum(last_checks_rule(2.0)(row) and row["kind_gain"] < -0.02 for row in pale) == 2  # "2 on the pale crops"
    assert (
        f"keeps {own['kept']} of the bundled model's {bundled}, none that cost its kind more than 0.02, and "
        f"{new['kept']} of v1's {unseen}, 3 of them harmful (2 on the pale DSB crops above); v1's users gain "
        f"{new['mean_gain']:+.3f} on average, "
        f"against {every['v1, kinds it never saw']['mean_gain']:+.3f} with every child kept, and "
        f"{new['refused_helpful']} children that gained more than 0.02 are refused"
    ) in text
    loose_own, loose_new = loose["bundled model, real kinds"], loose["v1, kinds it never saw"]
    assert (
        f"raises v1's average to {loose_new['mean_gain']:+.3f}, but keeps {loose_own['kept_harmful']} of the bundled "
        f"model's children that cost their kind more than 0.02 (down to {loose_own['worst_kept']:.3f}) and "
        f"{loose_new['kept_forgot']} of v1's that cost one panel kind more than 0.10 ({new['kept_forgot']} with the "
        "shipped rule)"
    ) in text
    for name, rule in study["rules"].items():  # no other statistic beats the shipped one at its own harm
        if name.startswith("later half"):
            other = rule["v1, kinds it never saw"]
            harmless = rule["bundled model, real kinds"]["kept_harmful"] == 0
            assert not (harmless and other["mean_gain"] > new["mean_gain"] + 0.005), name
    colour = results_json("pairs_v1_colour_every_child_bfloat16.json")["recipes"]["shipped"]["summary"]
    before = results_json("pairs_v1_colour_every_child.json")["recipes"]["shipped"]["summary"]
    assert (
        f"+{colour['mean_gain']:.3f}, standard error {colour['standard_error']:.3f}, against "
        f"+{before['mean_gain']:.3f}, {before['standard_error']:.3f}"
    ) in text


def test_held_out_share_paragraph_is_its_results_files():
    text = benchmarks_text()
    shipped = {
        "normal": "pairs_v1_normal.json",
        "tumour": "pairs_v1_tumour.json",
        "colour": "pairs_v1_colour_bfloat16.json",
    }
    summaries = {}
    for kind, name in shipped.items():
        larger = results_json(f"pairs_v1_{kind}_held_out_35.json")
        assert larger["settings"]["recipes"] == "held_out_35" and not larger["settings"]["keep_every_child"]
        summaries[kind] = (
            larger["recipes"]["held_out_35"]["summary"],
            results_json(name)["recipes"]["shipped"]["summary"],
        )
    normal, tumour, colour = (summaries[kind] for kind in ("normal", "tumour", "colour"))
    assert (
        f"v1's expected gain is {normal[0]['mean_gain']:+.3f} on S-BSST265 normal sections "
        f"(`pairs_v1_normal_held_out_35.json`; {normal[1]['mean_gain']:+.3f} as shipped), "
        f"{tumour[0]['mean_gain']:+.3f} on tumour sections (`pairs_v1_tumour_held_out_35.json`; "
        f"{tumour[1]['mean_gain']:+.3f}) and {colour[0]['mean_gain']:+.3f} on DSB colour tissue "
        f"(`pairs_v1_colour_held_out_35.json`; {colour[1]['mean_gain']:+.3f} as shipped in bfloat16): tumour and DSB "
        f"colour tissue stay far from +0.10, and one of the DSB colour children it kept cost a panel kind "
        f"{-colour[0]['worst_forgetting']:.3f} ({colour[1]['worst_forgetting']:.3f} at worst as shipped)"
    ) in text
    assert tumour[0]["mean_gain"] < 0.05 and colour[0]["mean_gain"] < 0.05
    hitl, before = results_json("hitl_held_out_35.json"), results_json("hitl_bfloat16.json")
    rows = hitl["recipes"]["held_out_35"]
    assert all(row["kept_parent"] for kind, row in rows.items() if kind != "synthetic_he")
    assert all(before["recipes"]["shipped"][kind]["kept_parent"] for kind in rows if kind != "synthetic_he")
    assert (
        f"synthetic H&E gained {rows['synthetic_he']['kind_gain']:+.3f} (`hitl_held_out_35.json`; "
        f"{before['recipes']['shipped']['synthetic_he']['kind_gain']:+.3f})"
    ) in text


def test_s_bsst265_tumour_four_image_sentence_is_its_results_file():
    report = results_json("pairs_v1_tumour_k4.json")
    assert report["settings"]["k"] == 4 and report["settings"]["kind"] == "s_bsst265_tumour"
    users = report["recipes"]["shipped"]["users"]
    assert len(users) == 2 and not any(user["kept_parent"] for user in users)
    assert all(key.split("/", 1)[1].startswith("Neuroblastoma") for user in users for key in user["corrected"])
    nuclei = [user["held_out_decision"]["nuclei"] for user in users]
    gains = [user["kind_gain"] for user in users]
    neuro = [tissue_gains(report, user, "Neuroblastoma") for user in users]
    ganglio = [tissue_gains(report, user, "Ganglioneuroblastoma") for user in users]
    assert (
        f"both children were kept ({nuclei[0]} and {nuclei[1]} held-out nuclei) and gained {gains[0]:+.3f} and "
        f"{gains[1]:+.3f} on the kind: {neuro[0]:+.3f} and {neuro[1]:+.3f} on the neuroblastoma sections, "
        f"{ganglio[0]:+.3f} and {ganglio[1]:+.3f} on the ganglioneuroblastoma ones"
    ) in benchmarks_text()


def colour_gain(name: str, recipe: str = "shipped") -> float:
    """dsb_colour_tissue's gain with ``recipe`` in one bench_hitl results file."""
    return results_json(name)["recipes"][recipe]["dsb_colour_tissue"]["kind_gain"]


def test_correct_scored_bound_paragraph_is_its_results_files():
    text = benchmarks_text()
    bound = results_json("hitl_correct_scored.json")
    assert bound["settings"]["correct_scored"] and bound["settings"]["keep_every_child"]
    rows = bound["recipes"]["shipped"]
    colour = rows["dsb_colour_tissue"]
    assert bound["kinds"]["dsb_colour_tissue"]["corrected"] == bound["kinds"]["dsb_colour_tissue"]["images"][2:8]
    seeds = [colour["kind_gain"]] + [colour_gain(f"hitl_correct_scored_colour_seed{s}.json") for s in (1, 2)]
    levers = [colour_gain("hitl_correct_scored_colour_levers.json", r) for r in ("no_epoch_cap", "high_lr")]
    users = [colour_gain(f"hitl_colour_every_child_bfloat16_seed{s}.json") for s in (0, 1, 2)]
    assert (
        f"On dsb_colour_tissue ({bound['kinds']['dsb_colour_tissue']['default_ap50']:.3f}) they gained "
        f"{seeds[0]:+.3f} (one panel kind lost {-min(colour['forgetting'].values()):.3f}), and {seeds[1]:+.3f} and "
        f"{seeds[2]:+.3f} with training seeds 1 and 2"
    ) in text
    assert f"{np.mean(seeds):+.3f} on average. Without the 100-pass cap they gained {levers[0]:+.3f}" in text
    assert f"Correcting the 6 scored images themselves gains it {np.mean(seeds):+.3f} on average over three" in text
    high_lr_files = [f"hitl_correct_scored_colour_high_lr_seed{s}.json" for s in (1, 2)]
    high_lr = [levers[1]] + [colour_gain(name, "high_lr") for name in high_lr_files]
    assert f"learning rate 1e-3 {high_lr[0]:+.3f}, {high_lr[1]:+.3f} and {high_lr[2]:+.3f} for seeds 0 to 2" in text
    seed_1 = results_json(high_lr_files[0])["recipes"]["high_lr"]["dsb_colour_tissue"]
    assert seed_1["kept_parent"]  # "seed 1's checks never beat the start"
    assert np.mean(high_lr) < 0.10
    longer = results_json("hitl_correct_scored_colour_480s.json")
    assert longer["settings"]["seconds"] == 480 and longer["settings"]["correct_scored"]
    row = longer["recipes"]["no_epoch_cap"]["dsb_colour_tissue"]
    checks = {record["step"]: record["val_ap50"] for record in row["validations"]}
    assert row["best_step"] == 25 and max(checks, key=checks.get) == 25
    assert f"480 s without the cap ({row['steps']} steps, `hitl_correct_scored_colour_480s.json`) gained " in text
    assert f"gained {row['kind_gain']:+.3f}; the checks on the held-out scored image peaked at step 25" in text
    assert f"{users[0]:+.3f}, {users[1]:+.3f} and {users[2]:+.3f} for seeds 0 to 2" in text
    assert np.mean(seeds) < 0.10 and max(users) < min(seeds)  # "at or above what ... reaches"; "a tenth of that"
    assert abs(np.mean(users) / np.mean(seeds) - 0.1) < 0.05
    others = {k: r for k, r in rows.items() if k not in ("dsb_colour_tissue", "synthetic_he")}
    assert [k for k, r in others.items() if not r["kept_parent"]] == ["dsb_stage2_fluorescence"]
    assert others["dsb_stage2_fluorescence"]["averaged_with_parent"]
    assert f"dsb_stage2_fluorescence ({others['dsb_stage2_fluorescence']['kind_gain']:+.3f}, averaged" in text
    hitl = results_json("hitl.json")["recipes"]["shipped"]["synthetic_he"]
    assert f"gained {rows['synthetic_he']['kind_gain']:+.3f}, as much as from its first 2 images " in text
    assert f"({hitl['kind_gain']:+.3f})" in text
    assert (
        f"on the DSB tissue crops ({bound['kinds']['dsb_colour_tissue']['default_ap50']:.3f}) even the very images it "
        f"was then scored on, corrected, gained {np.mean(seeds):+.3f} on average over three training seeds"
    ) in guide_text()


def test_v1_correct_scored_bound_paragraph_is_its_results_files():
    text = benchmarks_text()
    bound = results_json("hitl_unseen_v1_correct_scored.json")
    assert bound["settings"]["model"] == "out/v1_default" and bound["settings"]["correct_scored"]
    rows, users = bound["recipes"]["shipped"], results_json("hitl_unseen_v1.json")["recipes"]["shipped"]
    every_child = results_json("hitl_unseen_v1_s_bsst265_every_child.json")["recipes"]["shipped"]
    named = {
        "dsb_colour_tissue": "DSB colour tissue",
        "s_bsst265_tumour": "S-BSST265 tumour",
        "s_bsst265_normal": "S-BSST265 normal",
        "synthetic_he": "synthetic H&E",
    }
    for kind, name in named.items():
        assert f"{name} ({bound['kinds'][kind]['default_ap50']:.3f}) {rows[kind]['kind_gain']:+.3f}" in text
    gains = {
        "dsb_colour_tissue": users["dsb_colour_tissue"]["kind_gain"],
        "s_bsst265_tumour": every_child["s_bsst265_tumour"]["kind_gain"],
        "s_bsst265_normal": every_child["s_bsst265_normal"]["kind_gain"],
        "synthetic_he": users["synthetic_he"]["kind_gain"],
    }
    assert not users["dsb_colour_tissue"]["kept_parent"] and not users["synthetic_he"]["kept_parent"]
    assert (
        f"gained {gains['dsb_colour_tissue']:+.3f} (`hitl_unseen_v1.json`, float32), "
        f"{gains['s_bsst265_tumour']:+.3f} and {gains['s_bsst265_normal']:+.3f} (every child kept, "
        f"`hitl_unseen_v1_s_bsst265_every_child.json`) and {gains['synthetic_he']:+.3f} there"
    ) in text
    shares = {kind: gains[kind] / rows[kind]["kind_gain"] for kind in named}
    assert min(shares, key=shares.get) == "s_bsst265_tumour" and 0.4 < shares["s_bsst265_tumour"] < 0.55  # "about half"
    assert max(shares, key=shares.get) == "synthetic_he" and 0.85 < shares["synthetic_he"] < 0.95  # "nine tenths"
    assert [rows[kind]["steps"] for kind in ("dsb_colour_tissue", "s_bsst265_tumour")] == [400, 500]


def test_dsb_colour_looks_paragraph_is_its_results_files():
    text = benchmarks_text()
    looks = {}
    for look in ("purple", "blue"):
        report = results_json(f"pairs_v1_colour_{look}_every_child.json")
        assert report["settings"]["look"] == look and report["settings"]["keep_every_child"]
        looks[look] = (report, report["recipes"]["shipped"]["summary"])
    (purple, p_summary), (blue, b_summary) = looks["purple"], looks["blue"]
    p_users = purple["recipes"]["shipped"]["users"]
    tens = sorted(user["kind_gain"] for user in p_users if user["kind_gain"] >= 0.10)
    assert (
        f"(v1 {purple['default_ap50']:.3f} on them), gained {p_summary['mean_gain']:+.3f} (standard error "
        f"{p_summary['standard_error']:.3f}; `pairs_v1_colour_purple_every_child.json`, 2026-12-05, bfloat16), "
        f"{len(tens)} of them +0.10 or more ({tens[0]:+.3f} to {tens[-1]:+.3f}), and {p_summary['parent_kept']} kept "
        f"the start (their checks gained, but v1's check on the other kinds' replay crops refused the children)"
    ) in text
    for user in (user for user in p_users if user["kept_parent"]):  # the held-out rule passed: the guard refused
        decision = user["held_out_decision"]
        assert decision["last_validations"] > decision["start"] and not decision["flips"]
    assert (
        f"6 users of 2 blue-violet crops (v1 {blue['default_ap50']:.3f}) gained {b_summary['mean_gain']:+.3f} "
        f"(standard error {b_summary['standard_error']:.3f}; `pairs_v1_colour_blue_every_child.json`), none +0.10"
    ) in text
    assert b_summary["users_gaining_0_10"] == 0 and p_summary["users"] == b_summary["users"] == 6
    mixed = results_json("pairs_v1_colour_every_child_bfloat16.json")["recipes"]["shipped"]["summary"]
    assert f"{mixed['users']} users of any 2 crops, scored on 40 of the kind, gained {mixed['mean_gain']:+.3f}" in text
    assert f"(standard error {mixed['standard_error']:.3f}, in bfloat16" in text
    assert (
        f"users who corrected 2 of them gained {p_summary['mean_gain']:+.3f} on that stain "
        f"(`pairs_v1_colour_purple_every_child.json`), against {mixed['mean_gain']:+.3f} for 2 crops of any stain"
    ) in guide_text()
    shipped = results_json("pairs_v1_colour_purple.json")
    assert shipped["settings"]["look"] == "purple" and not shipped["settings"]["keep_every_child"]
    rows, summary = shipped["recipes"]["shipped"]["users"], shipped["recipes"]["shipped"]["summary"]
    kept = sorted(row["kind_gain"] for row in rows if not row["kept_parent"])
    any_two = results_json("pairs_v1_colour_bfloat16.json")["recipes"]["shipped"]["summary"]
    assert (
        f"the purple users gained {summary['mean_gain']:+.3f} (standard error {summary['standard_error']:.3f}): "
        f"{len(kept)} kept their children ({kept[0]:+.3f} and {kept[1]:+.3f}), {summary['parent_kept']} the start; "
        f"users of any 2 crops gained {any_two['mean_gain']:+.3f}"
    ) in text
    assert (
        f"Forgetting on the panel: {p_summary['mean_forgetting']:.3f} and {b_summary['mean_forgetting']:.3f} on "
        f"average, {p_summary['worst_forgetting']:.3f} and {b_summary['worst_forgetting']:.3f} at worst"
    ) in text


def test_pale_look_sentences_are_their_results_files():
    text = benchmarks_text()
    every_child = results_json("pairs_v1_colour_pale_every_child.json")
    ruled = results_json("pairs_v1_colour_pale.json")
    assert (
        every_child["settings"]["look"] == ruled["settings"]["look"] == "pale"
        and not ruled["settings"]["keep_every_child"]
    )
    loose, strict = every_child["recipes"]["shipped"]["summary"], ruled["recipes"]["shipped"]["summary"]
    assert (
        f"The pale crops, sparse ones v1 already segments at {ruled['default_ap50']:.3f}, got worse: with every child "
        f"kept {loose['users']} users lost {-loose['mean_gain']:.3f} on average "
        f"(standard error {loose['standard_error']:.3f}; "
        f"`pairs_v1_colour_pale_every_child.json`), and with the held-out rule (`pairs_v1_colour_pale.json`) "
        f"{-strict['mean_gain']:.3f} ({strict['standard_error']:.3f})"
    ) in text
    kept = [user for user in ruled["recipes"]["shipped"]["users"] if not user["kept_parent"]]
    nuclei = sorted(user["held_out_decision"]["nuclei"] for user in kept)
    gains = sorted(u["held_out_decision"]["last_validations"] - u["held_out_decision"]["start"] for u in kept)
    harmed = sorted(user["kind_gain"] for user in kept if user["kind_gain"] < -0.02)
    assert (
        f"{len(kept)} children passed it on {nuclei[0]} to {nuclei[-1]} held-out nuclei (their checks gained "
        f"{gains[0]:+.3f} to {gains[-1]:+.3f}), and {len(harmed)} of those made the look worse by {-harmed[0]:.3f} "
        f"and {-harmed[1]:.3f}, beyond the issue's 0.02"
    ) in text
