"""Fixtures for the widget tests: isolated settings/model folders, a tiny trained model, captured notifications."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the user model store and the widget settings at fresh temporary folders."""
    monkeypatch.setenv("NAPARI_UNET_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("NAPARI_UNET_CONFIG_DIR", str(tmp_path / "config"))
    return tmp_path


@pytest.fixture
def tiny_model(tiny_model_folder: Path, isolated_dirs: Path) -> str:
    """Register the tiny model as user model ``tiny`` (version 1); return ``"tiny@v1"``."""
    from napari_unet.core.models.registry import load_model, save_version

    info = save_version(load_model(tiny_model_folder), "tiny")
    return info.spec


@pytest.fixture
def notifications(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Capture the widgets' notifications as ``(level, message)`` instead of showing them."""
    from napari_unet._widgets import _notify

    captured: list[tuple[str, str]] = []
    for level in ("error", "warning", "info"):
        monkeypatch.setattr(_notify, f"show_{level}", lambda message, level=level: captured.append((level, message)))
    return captured


@pytest.fixture
def sample() -> tuple[np.ndarray, np.ndarray]:
    """A 96 x 96 synthetic fluorescence image (uint16) and its true labels."""
    from napari_unet.core.data.synthetic import synthetic_nuclei

    return synthetic_nuclei((96, 96), n_nuclei=10, seed=21)


@pytest.fixture
def copy_model_folder(tmp_path: Path, tiny_model_folder: Path) -> Path:
    """A copy of the tiny model folder the test may load by path."""
    target = tmp_path / "copied-model"
    shutil.copytree(tiny_model_folder, target)
    return target


@pytest.fixture
def unchecked_fine_tunes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a trained model fine-tune on too few nuclei to hold any out (the weights averaged with the parent).

    For short GUI tests of what happens after a version is saved (revert,
    re-segment, compare, export) on images too small to validate; the rule
    that refuses such fine-tunes has its own tests.
    """
    from napari_unet.core.train import fine_tune, loop

    for module in (fine_tune, loop):
        monkeypatch.setattr(module, "needs_validation", lambda bundle, cfg: False)
