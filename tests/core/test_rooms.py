"""The engine (napari_unet.core) must import without napari, Qt or magicgui."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import napari_unet.core

FORBIDDEN = ("napari", "qtpy", "magicgui", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy")


def test_core_modules_import_no_gui_package() -> None:
    modules = [m.name for m in pkgutil.walk_packages(napari_unet.core.__path__, "napari_unet.core.")]
    assert "napari_unet.core.predict.planar" in modules and "napari_unet.core.io.labels" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core pulled in GUI modules: {out.stdout.strip()}"
