"""``benchmarks/bench_kind_fit.py`` scores the images it is given and tells training images from held-out ones."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from benchmarks.bench_kind_fit import kind_row, sample
from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.models.registry import load_model
from napari_unet.core.predict.segment import predict


def test_sample_keeps_order_and_is_fixed():
    items = list(range(100))
    chosen = sample(items, 10)
    assert chosen == sorted(chosen) and len(set(chosen)) == 10
    assert chosen == sample(items, 10)
    assert sample(items[:5], 10) == items[:5]


@pytest.mark.slow
def test_kind_row_scores_training_and_held_out_images_separately(tmp_path):
    bundle = load_model("default")
    image, _ = synthetic_nuclei((128, 128), 12, seed=3)
    own = predict(image, bundle).labels
    assert own.max() > 0
    shifted = np.roll(own, 64, axis=1)  # every nucleus moved half the image away: nothing matches
    pairs = []
    for name, labels in (("fit", own), ("miss", shifted)):
        tifffile.imwrite(tmp_path / f"{name}_image.tif", image)
        tifffile.imwrite(tmp_path / f"{name}_labels.tif", labels.astype(np.uint16))
        pairs.append((name, tmp_path / f"{name}_image.tif", tmp_path / f"{name}_labels.tif"))
    row = kind_row(bundle, trained=[pairs[0]], held_out=[pairs[1]], per_kind=5)
    assert row["training_images"] == row["training_scored"] == row["held_out_images"] == 1
    assert row["training_ap50"] == 1.0
    assert row["held_out_ap50"] < 0.2
    assert row["gap"] == pytest.approx(row["training_ap50"] - row["held_out_ap50"])
