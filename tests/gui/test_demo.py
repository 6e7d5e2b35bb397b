"""``napari-unet demo --headless``: segment -> compare -> export, with a real napari screenshot."""

from __future__ import annotations

import json

import pytest
from skimage.io import imread

from napari_unet.cli import main
from napari_unet.core.io import read_labels


@pytest.mark.gui
def test_headless_demo_writes_results_and_screenshot(tmp_path, qtbot, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["--quiet", "demo", "--headless", str(out)]) == 0  # the bundled model, as `make demo` runs it
    stdout = capsys.readouterr().out
    for method in ("unet", "otsu", "watershed"):
        assert method in stdout
    report = json.loads((out / "compare.json").read_text())
    assert set(report["methods"]) == {"unet", "otsu", "watershed"}
    # measured when v2 was bundled: 0.489 on the demo sample (dense synthetic fluorescence, 40 nuclei)
    assert report["methods"]["unet"]["summary"]["AP@0.5"] >= 0.4
    exported = read_labels(out / "nuclei_labels.tif")
    assert exported.ndim == 2 and exported.max() >= 20, "the UNet's labels were exported"
    assert (out / "nuclei_labels.csv").exists() and (out / "nuclei_labels.zip").exists()
    assert (out / "nuclei_labels.tif.provenance.json").exists()
    screenshot = imread(out / "screenshot.png")
    assert screenshot.ndim == 3 and screenshot.shape[0] > 200 and screenshot.std() > 0
    assert main(["--quiet", "demo", "--headless", str(out)]) == 2  # the folder exists: refused
