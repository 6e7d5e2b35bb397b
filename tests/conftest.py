"""Fixtures shared by every test tier: a small model trained once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_STEPS = 80


@pytest.fixture(scope="session")
def tiny_model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A depth-2 / 8-channel UNet trained for a few seconds on synthetic nuclei (so it finds objects)."""
    from napari_unet.core.config import ModelConfig, TrainingConfig
    from napari_unet.core.data.synthetic import synthetic_nuclei
    from napari_unet.core.models.bundle import ModelBundle, save_model
    from napari_unet.core.progress import run_to_end
    from napari_unet.core.train.fine_tune import iter_train

    pairs = [synthetic_nuclei((96, 96), n_nuclei=10, seed=seed) for seed in range(3)]
    bundle = ModelBundle.new(ModelConfig(depth=2, base_channels=8, norm="group"), metadata={"name": "tiny"}, seed=0)
    cfg = TrainingConfig(
        max_steps=TINY_STEPS,
        max_seconds=None,
        batch_size=4,
        patch_size=64,
        learning_rate=3e-3,
        warmup_steps=5,
        val_every=TINY_STEPS,
        augment=False,
        num_threads=1,
        amp=False,  # float32 on every CPU: the fixture's weights must not depend on the processor's bfloat16
    )
    result = run_to_end(iter_train(bundle, [p[0] for p in pairs], [p[1] for p in pairs], cfg))
    folder = tmp_path_factory.mktemp("tiny-model") / "tiny"
    save_model(result.bundle, folder)
    return folder
