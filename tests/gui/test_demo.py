"""``napari-unet demo --headless``: segment -> compare -> export, with a real napari screenshot."""

from __future__ import annotations

import json

import pytest
from skimage.io import imread

from napari_unet.cli import main
from napari_unet.core.config import ModelConfig
from napari_unet.core.io import read_labels


@pytest.mark.gui
def test_headless_demo_writes_results_and_screenshot(tmp_path, qtbot, capsys) -> None:
    from napari_unet.core.store import ModelBundle, save_model

    model = save_model(ModelBundle.new(ModelConfig(depth=2, base_channels=4)), tmp_path / "model")
    out = tmp_path / "demo"
    assert main(["--quiet", "demo", "--headless", str(out), "--model", str(model)]) == 0
    stdout = capsys.readouterr().out
    for method in ("unet", "otsu", "watershed"):
        assert method in stdout
    report = json.loads((out / "compare.json").read_text())
    assert set(report["methods"]) == {"unet", "otsu", "watershed"}
    assert read_labels(out / "nuclei_labels.tif").ndim == 2
    assert (out / "nuclei_labels.csv").exists() and (out / "nuclei_labels.zip").exists()
    assert (out / "nuclei_labels.tif.provenance.json").exists()
    screenshot = imread(out / "screenshot.png")
    assert screenshot.ndim == 3 and screenshot.shape[0] > 200 and screenshot.std() > 0
    assert main(["--quiet", "demo", "--headless", str(out), "--model", str(model)]) == 2
