"""``napari-unet demo``: the plugin on a sample image, interactively or headless.

Interactive: opens napari with a synthetic fluorescence sample (and its ground
truth) and every napari-unet widget docked.

Headless (``--headless OUTDIR``): runs the whole loop without a user —
segment with the UNet and the classical baselines, compare them against the
ground truth, export the UNet masks (TIFF, CSV measurements, ROI zip, all with
provenance) and save a screenshot of napari with the results when a display
(or Xvfb) is available.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.errors import UserInputError

WIDGETS = ("Segment", "Correct", "Fine-tune", "Compare", "Export")


def run_demo(headless_dir: str | None = None, model: str = "default", overwrite: bool = False) -> int:
    """Run the interactive demo, or the headless loop when ``headless_dir`` is given."""
    if headless_dir is None:
        return _interactive(model)
    return _headless(Path(headless_dir), model, overwrite)


def _sample() -> tuple[np.ndarray, np.ndarray]:
    from napari_unet._sample_data import sample_fluorescence

    (image, _, _), (labels, _, _) = sample_fluorescence()
    return np.asarray(image), np.asarray(labels)


def _interactive(model: str) -> int:
    import napari

    viewer = napari.Viewer(title="napari-unet demo")
    image, labels = _sample()
    viewer.add_image(image, name="nuclei")
    viewer.add_labels(labels, name="nuclei ground truth", visible=False)
    _dock_widgets(viewer)
    napari.run()
    return 0


def _dock_widgets(viewer: Any) -> None:
    for name in WIDGETS:
        viewer.window.add_plugin_dock_widget("napari-unet", name, tabify=True)


def _headless(outdir: Path, model: str, overwrite: bool) -> int:
    from napari_unet.core.evaluate.baselines import segment_baseline
    from napari_unet.core.evaluate.methods import format_table
    from napari_unet.core.evaluate.metrics import evaluate_dataset, summary_row
    from napari_unet.core.io import atomic_write_path, export_labels, provenance
    from napari_unet.core.models.registry import load_model
    from napari_unet.core.predict.segment import predict

    if outdir.exists() and any(outdir.iterdir()) and not overwrite:
        raise UserInputError(f"{outdir} is not empty; pass --overwrite or choose another folder")
    outdir.mkdir(parents=True, exist_ok=True)
    image, truth = _sample()
    bundle = load_model(model)
    results = {"unet": predict(image, bundle).labels}
    for method in ("otsu", "watershed"):
        results[method] = segment_baseline(image, method)
    report = {"methods": {m: {"summary": summary_row(evaluate_dataset([truth], [p]))} for m, p in results.items()}}
    print(format_table(report, columns=("AP@0.5", "AP@0.75", "F1@0.5", "PQ@0.5", "Dice", "n_pred")))
    info = provenance(model=bundle, settings={"demo": True}, inputs=[image], method="unet")
    for suffix in (".tif", ".csv", ".zip"):
        for path in export_labels(
            results["unet"], outdir / f"nuclei_labels{suffix}", overwrite=True, image=image, provenance=info
        ):
            print(f"wrote {path}")
    with atomic_write_path(outdir / "compare.json", overwrite=True) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2, default=float))
    _screenshot(image, truth, results, outdir / "screenshot.png")
    return 0


def _screenshot(image: np.ndarray, truth: np.ndarray, results: dict[str, np.ndarray], path: Path) -> None:
    """Save napari's window with the results and docked widgets, if a display exists."""
    if not os.environ.get("DISPLAY") and os.environ.get("QT_QPA_PLATFORM") != "offscreen":
        print("no display: skipped the screenshot (run under xvfb-run to get one)")
        return
    import napari
    from skimage.io import imsave

    viewer = napari.Viewer(title="napari-unet demo", show=True)
    try:
        viewer.add_image(image, name="nuclei")
        viewer.add_labels(truth, name="ground truth", visible=False)
        for method, labels in results.items():
            viewer.add_labels(labels, name=f"nuclei {method}", visible=method == "unet")
        _dock_widgets(viewer)
        imsave(path, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
        print(f"wrote {path}")
    finally:
        viewer.close()
