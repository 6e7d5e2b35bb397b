"""The npe2 manifest is valid and every python_name it declares imports."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

npe2 = pytest.importorskip("npe2")

MANIFEST = Path(__file__).resolve().parent.parent / "napari_unet" / "napari.yaml"


def manifest():
    return npe2.PluginManifest.from_file(MANIFEST)


def python_names() -> list[str]:
    return [command.python_name for command in manifest().contributions.commands or [] if command.python_name]


def test_manifest_validates():
    plugin = manifest()
    assert plugin.name == "napari-unet"
    declared = {c.id for c in plugin.contributions.commands}
    for widget in plugin.contributions.widgets:
        assert widget.command in declared
    for sample in plugin.contributions.sample_data:
        assert sample.command in declared


def test_installed_package_exposes_the_manifest():
    plugin = npe2.PluginManifest.from_distribution("napari-unet")
    assert plugin.name == "napari-unet"
    assert {c.id for c in plugin.contributions.commands} == {c.id for c in manifest().contributions.commands}


@pytest.mark.parametrize("python_name", python_names())
def test_python_name_imports(python_name: str):
    module_name, _, attribute = python_name.partition(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attribute))


def test_widgets_are_all_declared():
    from napari_unet import _widgets

    declared = {name.partition(":")[2] for name in python_names() if name.startswith("napari_unet._widgets:")}
    assert declared == set(_widgets.__all__)
