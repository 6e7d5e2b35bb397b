"""Fixtures for the widget tests: isolated settings/model folders, a tiny trained model, captured notifications."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

TINY_STEPS = 80


@pytest.fixture(scope="session")
def tiny_model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A depth-2 / 8-channel UNet trained for a few seconds on synthetic nuclei (so it finds objects)."""
    from napari_unet.core.config import ModelConfig, TrainingConfig
    from napari_unet.core.progress import run_to_end
    from napari_unet.core.store import ModelBundle, save_model
    from napari_unet.core.synthetic import synthetic_nuclei
    from napari_unet.core.training import iter_train

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
    )
    result = run_to_end(iter_train(bundle, [p[0] for p in pairs], [p[1] for p in pairs], cfg))
    folder = tmp_path_factory.mktemp("tiny-model") / "tiny"
    save_model(result.bundle, folder)
    return folder


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the user model store and the widget settings at fresh temporary folders."""
    monkeypatch.setenv("NAPARI_UNET_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("NAPARI_UNET_CONFIG_DIR", str(tmp_path / "config"))
    return tmp_path


@pytest.fixture
def tiny_model(tiny_model_folder: Path, isolated_dirs: Path) -> str:
    """Register the tiny model as user model ``tiny`` (version 1); return ``"tiny@v1"``."""
    from napari_unet.core.store import load_model, save_version

    info = save_version(load_model(tiny_model_folder), "tiny")
    return info.spec


@pytest.fixture
def notifications(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Capture the widgets' notifications as ``(level, message)`` instead of showing them."""
    from napari_unet._widgets import _common

    captured: list[tuple[str, str]] = []
    for level in ("error", "warning", "info"):
        monkeypatch.setattr(_common, f"show_{level}", lambda message, level=level: captured.append((level, message)))
    return captured


@pytest.fixture
def sample() -> tuple[np.ndarray, np.ndarray]:
    """A 96 x 96 synthetic fluorescence image (uint16) and its true labels."""
    from napari_unet.core.synthetic import synthetic_nuclei

    return synthetic_nuclei((96, 96), n_nuclei=10, seed=21)


@pytest.fixture
def copy_model_folder(tmp_path: Path, tiny_model_folder: Path) -> Path:
    """A copy of the tiny model folder the test may load by path."""
    target = tmp_path / "copied-model"
    shutil.copytree(tiny_model_folder, target)
    return target
