"""The GPU tier: run by benchmarks/gpu_check.sh on a machine with CUDA; skipped everywhere else (CI has no GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.core.config import InferenceConfig, TrainingConfig
from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.evaluate.metrics import evaluate_image, summary_row
from napari_unet.core.models.registry import load_model
from napari_unet.core.predict.segment import predict
from napari_unet.core.progress import run_to_end
from napari_unet.core.train.fine_tune import iter_train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_segmenting_on_the_gpu_finds_the_same_nuclei_as_on_the_cpu():
    image, truth = synthetic_nuclei((768, 640), n_nuclei=120, seed=7)
    bundle = load_model("default")
    gpu = predict(image, bundle, inference=InferenceConfig(device="cuda"))
    cpu = predict(image, bundle, inference=InferenceConfig(device="cpu", amp=False))
    np.testing.assert_allclose(gpu.probabilities, cpu.probabilities, atol=0.05)
    assert summary_row(evaluate_image(cpu.labels, gpu.labels, (0.5,)))["AP@0.5"] >= 0.95
    assert summary_row(evaluate_image(truth, gpu.labels, (0.5,)))["AP@0.5"] >= 0.5


def test_fine_tuning_on_the_gpu_changes_the_weights():
    image, labels = synthetic_nuclei((256, 256), n_nuclei=30, seed=8)
    bundle = load_model("default")
    cfg = TrainingConfig(max_steps=5, max_seconds=None, device="cuda", val_fraction=0.0, batch_size=4)
    result = run_to_end(iter_train(bundle, [image], [labels], cfg))
    before, after = bundle.network.state_dict(), result.bundle.network.state_dict()
    changed = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k].cpu())]
    assert changed, "five steps on the GPU moved the weights"
