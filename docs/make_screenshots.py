"""Write the user guide's screenshots (docs/images/*.png) by driving the real widgets.

Run from the repository root (needs a display; on a headless machine use Xvfb)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/make_screenshots.py

It opens a synthetic H&E-like image (napari-unet's generator: a kind of image
the bundled model never saw, where it misses nuclei), segments it, corrects the
left half, fine-tunes for 30 s on that half, compares the model (the fine-tuned
one when a version was saved) with the classical baselines, and shows the export
panel, saving one window screenshot per step; then the Experiment tab of the
one dock on a folder of 6 such images at 1366 x 768, two of them corrected.  It uses the bundled ``default``
model when installed; otherwise it first trains a small demo model for about
a minute (into a temporary model folder, so your own models are untouched).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

IMAGES = Path(__file__).resolve().parent / "images"


def demo_model() -> str:
    """Return ``"default"`` when the bundled model exists, else train a small ``demo`` model and return it."""
    from napari_unet.core.models import registry
    from napari_unet.core.models.bundle import ModelBundle

    if any(info.name == registry.BUNDLED_NAME for info in registry.list_models()):
        return registry.BUNDLED_NAME
    from napari_unet.core.config import ModelConfig, TrainingConfig
    from napari_unet.core.data.synthetic import synthetic_nuclei
    from napari_unet.core.progress import run_to_end
    from napari_unet.core.train.fine_tune import iter_train

    print("no bundled model: training a small demo model (about a minute)")
    pairs = [synthetic_nuclei((128, 128), n_nuclei=14, seed=100 + seed) for seed in range(6)]
    bundle = ModelBundle.new(ModelConfig(depth=3, base_channels=16, norm="group"), metadata={"name": "demo"})
    cfg = TrainingConfig(
        max_steps=600, max_seconds=60, batch_size=8, patch_size=64, learning_rate=5e-3, augment=False, warmup_steps=10
    )
    result = run_to_end(iter_train(bundle, [p[0] for p in pairs], [p[1] for p in pairs], cfg))
    return registry.save_version(result.bundle, "demo").spec


def wait(widget, timeout: float = 600.0) -> None:
    """Process Qt events until the widget's worker has finished."""
    wait_for(widget.jobs, timeout)


def shoot(viewer, name: str) -> None:
    """Save a screenshot of the whole window."""
    path = IMAGES / f"{name}.png"
    viewer.reset_view()
    viewer.screenshot(path=str(path), canvas_only=False, flash=False)
    print("wrote", path)


DOCKED: list = []


def dock(viewer, widget, title: str):
    """Dock ``widget`` on the right, alone."""
    while DOCKED:
        viewer.window.remove_dock_widget(DOCKED.pop())
    DOCKED.append(viewer.window.add_dock_widget(widget, name=title, area="right"))


def main() -> None:
    """Drive the widgets and write the screenshots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model to use (default: bundled, else a freshly trained demo model)")
    args = parser.parse_args()
    os.environ.setdefault("NAPARI_UNET_MODEL_DIR", tempfile.mkdtemp(prefix="napari-unet-models-"))
    os.environ.setdefault("NAPARI_UNET_CONFIG_DIR", tempfile.mkdtemp(prefix="napari-unet-config-"))
    IMAGES.mkdir(parents=True, exist_ok=True)
    model = args.model or demo_model()

    import napari

    from napari_unet._widgets import CompareWidget, CorrectWidget, ExportWidget, FineTuneWidget, SegmentWidget
    from napari_unet.core.data.synthetic import synthetic_nuclei

    image, truth = synthetic_nuclei((320, 320), n_nuclei=45, seed=7, kind="brightfield")
    viewer = napari.Viewer(title="napari-unet")
    viewer.window._qt_window.resize(1700, 1000)
    image_layer = viewer.add_image(image, name="nuclei", rgb=True)

    segment = SegmentWidget(viewer)
    dock(viewer, segment, "Segment")
    segment.model.select(model)
    segment.keep_probabilities.setChecked(True)
    segment.run()
    wait(segment)
    viewer.layers["nuclei probability"].visible = False
    shoot(viewer, "segment")

    labels = viewer.layers["nuclei labels"]
    correct = CorrectWidget(viewer)
    dock(viewer, correct, "Correct")
    correct.labels.set_layer(labels)
    shapes = correct.mark_reviewed()
    shapes.add_rectangles(np.array([[[0, 0], [320, 160]]]))  # the left half, checked and corrected
    points = correct.start_points()
    centre = np.argwhere(labels.data == labels.data.max()).mean(axis=0)
    points.data = np.array([centre - np.array([0, 3]), centre + np.array([0, 3])])
    viewer.layers.selection.active = labels
    labels.mode = "paint"
    shoot(viewer, "correct")
    viewer.layers.remove(points)

    corrected = labels.data.copy()
    corrected[:, :160] = truth[:, :160]  # as if the user had fixed the left half
    from napari_unet._widgets._correct import apply_edit

    apply_edit(labels, corrected)
    finetune = FineTuneWidget(viewer)
    dock(viewer, finetune, "Fine-tune")
    finetune.image.set_layer(image_layer)
    finetune.labels.set_layer(labels)
    finetune.start_model.select(model)
    finetune.mode.setCurrentText("Reviewed regions (ROIs)")
    finetune.budget_unit.setCurrentText("seconds")
    finetune.budget.setValue(30)
    finetune.save_name.setText("my-nuclei")
    finetune.resegment.setChecked(True)
    finetune.start()
    wait(finetune)
    labels.visible = False
    shoot(viewer, "finetune")
    labels.visible = True

    viewer.add_labels(truth.astype(np.int32), name="ground truth", visible=False)
    compare = CompareWidget(viewer)
    dock(viewer, compare, "Compare")
    compare.ground_truth.set_layer("ground truth")
    compare.image.set_layer(image_layer)
    saved = finetune.last_outcome.result.saved
    compare.model.select(saved.spec if saved is not None else model)
    compare.set_methods(["UNet", "UNet (previous version)", "Otsu", "Local threshold", "Watershed"])
    compare.run()
    wait(compare)
    compare.save_csv(IMAGES / "compare_table.csv", overwrite=True)  # the numbers the user guide quotes
    labels.visible = False
    shoot(viewer, "compare")

    labels.visible = True
    for layer in viewer.layers:
        if layer.name.endswith(" errors"):
            layer.visible = False
    export = ExportWidget(viewer)
    dock(viewer, export, "Export")
    export.set_chosen_layers(["nuclei labels"])
    export.folder.setText(str(Path.home() / "napari-unet-exports"))
    shoot(viewer, "export")
    viewer.close()
    experiment_screenshot(model)


def experiment_screenshot(model: str) -> None:
    """The one dock's Experiment tab on a folder of 6 synthetic H&E-like images, two of them corrected."""
    import napari
    import tifffile

    from napari_unet._widgets import NapariUnetDock
    from napari_unet._widgets._correct import apply_edit
    from napari_unet._widgets._experiment import LABELS_LAYER
    from napari_unet.core.data.synthetic import synthetic_nuclei

    folder = Path(tempfile.mkdtemp(prefix="napari-unet-experiment-")) / "slide-scans"
    folder.mkdir()
    truths = []
    for seed in range(6):
        image, truth = synthetic_nuclei((256, 256), n_nuclei=30, seed=60 + seed, kind="brightfield")
        tifffile.imwrite(folder / f"field_{seed + 1:02d}.tif", image)
        truths.append(truth)
    viewer = napari.Viewer(title="napari-unet")
    viewer.window._qt_window.resize(1366, 768)
    panels = NapariUnetDock(viewer)
    DOCKED.append(viewer.window.add_dock_widget(panels, name="napari-unet", area="right"))
    experiment = panels.panels["Experiment"]
    experiment.model.select(model)
    experiment.open_folder(folder)
    for index in range(2):  # segment, correct (the truth stands in for the user's edits) and save two images
        experiment.next()
        wait_for(experiment.image_job)
        apply_edit(viewer.layers[LABELS_LAYER], truths[index])
        experiment.save()
    experiment.segment_rest()
    wait_for(experiment.jobs)
    experiment.next()
    wait_for(experiment.image_job)
    shoot(viewer, "experiment")
    viewer.close()


def wait_for(panel, timeout: float = 600.0) -> None:
    """Process Qt events until a job panel's worker has finished."""
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout
    while panel.worker is not None and time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)
    for _ in range(20):  # let the layers and plots repaint
        QApplication.processEvents()
        time.sleep(0.01)


if __name__ == "__main__":
    main()
