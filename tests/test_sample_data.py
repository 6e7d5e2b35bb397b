from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from napari_unet import _sample_data
from napari_unet._sample_data import (
    SAMPLES,
    load_sample,
    sample_brightfield,
    sample_fluorescence,
    sample_human_mitosis,
    sample_timelapse,
    sample_zstack,
)
from napari_unet.core.errors import UserInputError

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "sample_data"

SAMPLE_FUNCTIONS = {
    "fluorescence": sample_fluorescence,
    "brightfield": sample_brightfield,
    "zstack": sample_zstack,
    "timelapse": sample_timelapse,
}


def load_make_samples():
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLE_DIR / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_layer_data(layers, rgb: bool):
    assert isinstance(layers, list) and len(layers) == 2
    (image, image_meta, image_type), (labels, labels_meta, labels_type) = layers
    assert (image_type, labels_type) == ("image", "labels")
    assert labels_meta["name"] == f"{image_meta['name']} ground truth"
    assert image_meta.get("rgb", False) is rgb
    assert image_meta.get("scale") == labels_meta.get("scale")
    assert (image.shape[:-1] if rgb else image.shape) == labels.shape
    assert labels.dtype == np.uint16 and labels.max() > 0
    return image, image_meta, labels


@pytest.mark.parametrize("key", list(SAMPLE_FUNCTIONS))
def test_sample_functions_return_image_and_ground_truth_layers(key):
    image, meta, _ = check_layer_data(SAMPLE_FUNCTIONS[key](), rgb=key == "brightfield")
    expected = {
        "fluorescence": ((256, 256), np.uint16),
        "brightfield": ((256, 256, 3), np.uint8),
        "zstack": ((16, 128, 128), np.uint16),
        "timelapse": ((5, 128, 128), np.uint16),
    }[key]
    assert (image.shape, image.dtype) == expected
    if key == "zstack":
        assert meta["scale"] == (2.0, 1.0, 1.0)


def test_layer_data_is_accepted_by_napari_layers():
    layers = pytest.importorskip("napari.layers")
    created = [layers.Layer.create(*data) for f in SAMPLE_FUNCTIONS.values() for data in f()]
    brightfield_image = created[2]
    assert brightfield_image.rgb
    zstack_image, zstack_labels = created[4], created[5]
    np.testing.assert_array_equal(zstack_image.scale, [2.0, 1.0, 1.0])
    np.testing.assert_array_equal(zstack_labels.scale, [2.0, 1.0, 1.0])
    assert isinstance(created[1], layers.Labels)


def test_packaged_files_equal_what_make_samples_writes(tmp_path):
    if not (SAMPLE_DIR / "make_samples.py").is_file():
        pytest.skip("no sample_data/ folder beside the tests")
    written = load_make_samples().write_samples(tmp_path)
    assert sorted(p.name for p in written) == sorted(
        name for spec in SAMPLES.values() for name in (spec.image_file, spec.labels_file)
    )
    for path in written:
        packaged = tifffile.imread(SAMPLE_DIR / path.name)
        fresh = tifffile.imread(path)
        assert packaged.dtype == fresh.dtype, path.name
        np.testing.assert_array_equal(packaged, fresh, err_msg=f"{path.name}: rerun sample_data/make_samples.py")


def test_packaged_folder_is_small():
    files = list(SAMPLE_DIR.glob("*.tif"))
    assert len(files) == 2 * len(SAMPLES)
    assert sum(p.stat().st_size for p in files) < 2 * 1024**2


def test_samples_are_generated_with_the_same_seeds_when_the_files_are_absent(tmp_path, monkeypatch):
    monkeypatch.setattr(_sample_data, "SAMPLE_DATA_DIR", tmp_path / "not_shipped")
    for key, function in SAMPLE_FUNCTIONS.items():
        (image, _, _), (labels, _, _) = function()
        np.testing.assert_array_equal(image, tifffile.imread(SAMPLE_DIR / f"{key}_image.tif"))
        np.testing.assert_array_equal(labels, tifffile.imread(SAMPLE_DIR / f"{key}_labels.tif"))


def test_load_sample_reads_files_from_the_folder_it_is_given(tmp_path):
    image = np.arange(12, dtype=np.uint16).reshape(3, 4)
    labels = (image > 5).astype(np.uint16)
    tifffile.imwrite(tmp_path / "fluorescence_image.tif", image)
    tifffile.imwrite(tmp_path / "fluorescence_labels.tif", labels)
    loaded_image, loaded_labels = load_sample("fluorescence", tmp_path)
    np.testing.assert_array_equal(loaded_image, image)
    np.testing.assert_array_equal(loaded_labels, labels)
    with pytest.raises(UserInputError, match="unknown sample 'phase'"):
        load_sample("phase", tmp_path)


def test_human_mitosis_offline_gives_a_clear_message(monkeypatch):
    import skimage.data

    def offline():
        raise ConnectionError("Failed to establish a new connection")

    monkeypatch.setattr(skimage.data, "human_mitosis", offline)
    with pytest.raises(UserInputError, match=r"could not download .*you are offline\? use the synthetic samples"):
        sample_human_mitosis()


def test_human_mitosis_returns_an_image_layer_when_the_download_works(monkeypatch):
    import skimage.data

    fake = np.full((8, 8), 7, dtype=np.uint8)
    monkeypatch.setattr(skimage.data, "human_mitosis", lambda: fake)
    [(image, meta, layer_type)] = sample_human_mitosis()
    assert layer_type == "image" and "mitosis" in meta["name"]
    np.testing.assert_array_equal(image, fake)


def test_manifest_sample_commands_resolve_to_functions_here():
    manifest = yaml.safe_load((REPO / "napari.yaml").read_text())
    commands = {c["id"]: c["python_name"] for c in manifest["contributions"]["commands"]}
    sample_commands = [commands[s["command"]] for s in manifest["contributions"]["sample_data"]]
    assert len(sample_commands) == 5
    for python_name in sample_commands:
        module, name = python_name.split(":")
        assert module == "napari_unet._sample_data"
        assert callable(getattr(_sample_data, name))


def test_sample_module_imports_without_napari_or_qt():
    code = (
        "import sys, napari_unet._sample_data; "
        "bad = [m for m in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide6', 'magicgui') if m in sys.modules]; "
        "print(' '.join(bad)); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
