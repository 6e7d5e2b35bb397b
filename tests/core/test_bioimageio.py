"""bioimage.io packages: export, bioimageio.core's own test, weights in three formats, import back."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("bioimageio.core")
onnxruntime = pytest.importorskip("onnxruntime")

from napari_unet.core.config import ModelConfig, TrainingConfig  # noqa: E402
from napari_unet.core.data.synthetic import synthetic_nuclei  # noqa: E402
from napari_unet.core.errors import UserInputError  # noqa: E402
from napari_unet.core.models.bioimageio import (  # noqa: E402
    CONFIG_KEY,
    export_bioimageio,
    export_network,
    import_bioimageio,
    package_test_input,
    run_package_test,
)
from napari_unet.core.models.bundle import ModelBundle  # noqa: E402
from napari_unet.core.models.registry import load_model  # noqa: E402
from napari_unet.core.predict.segment import predict  # noqa: E402
from napari_unet.core.progress import run_to_end  # noqa: E402
from napari_unet.core.train.fine_tune import iter_train  # noqa: E402


@pytest.fixture(scope="module")
def bundled_package(tmp_path_factory) -> Path:
    return export_bioimageio(load_model("default"), tmp_path_factory.mktemp("pkg") / "default.zip")


def test_the_bundled_model_passes_bioimageio_cores_own_test(bundled_package):
    summary = run_package_test(bundled_package)
    assert summary["status"] == "passed", [d for d in summary["details"] if d["status"] != "passed"]


def test_a_freshly_fine_tuned_model_passes_too(tiny_model_folder, tmp_path):
    image, labels = synthetic_nuclei((96, 96), n_nuclei=10, seed=60)
    cfg = TrainingConfig(max_steps=3, max_seconds=None, batch_size=2, patch_size=64, val_fraction=0.0)
    tuned = run_to_end(iter_train(load_model(tiny_model_folder), [image], [labels], cfg)).bundle
    package = export_bioimageio(
        tuned,
        tmp_path / "tuned.zip",
        authors=["Ada Lovelace <Engines Ltd>"],
        cite=["Stringer et al. 2021|10.1038/s41592-020-01018-x"],
    )
    assert run_package_test(package)["status"] == "passed"
    assert import_bioimageio(package).metadata["lineage"]["steps"] == 3, "the lineage travels in the package"


def test_onnx_and_torchscript_give_the_pytorch_probabilities(bundled_package, tmp_path):
    bundle = load_model("default")
    _, grey = package_test_input(bundle)  # (1, 3, Y, X), equal channels: the grey branch
    colour = grey.copy()
    colour[:, 0] *= 0.7  # unequal channels: the colour branch
    batch = np.concatenate([grey, colour])
    with torch.no_grad():
        reference = export_network(bundle)(torch.from_numpy(batch)).numpy()
    with zipfile.ZipFile(bundled_package) as package:
        onnx_model = package.read("weights.onnx")
        (tmp_path / "torchscript.pt").write_bytes(package.read("weights_torchscript.pt"))
    session = onnxruntime.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    from_onnx = session.run(None, {"raw": batch})[0]
    with torch.no_grad():
        from_torchscript = torch.jit.load(str(tmp_path / "torchscript.pt"))(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(from_onnx, reference, atol=1e-4)
    np.testing.assert_allclose(from_torchscript, reference, atol=1e-4)
    assert np.abs(reference[0] - reference[1]).max() > 0.01, "the grey and the colour branch both ran"


def test_export_then_import_gives_identical_labels(bundled_package):
    original, imported = load_model("default"), import_bioimageio(bundled_package)
    assert imported.sha256 == original.sha256
    assert imported.config == original.config and imported.postprocess == original.postprocess
    for seed, kind in ((70, "fluorescence"), (71, "brightfield")):
        image, _ = synthetic_nuclei((128, 160), n_nuclei=12, seed=seed, kind=kind)
        np.testing.assert_array_equal(predict(image, imported).labels, predict(image, original).labels)


def test_a_package_another_tool_made_is_refused_with_what_is_supported(bundled_package, tmp_path):
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(bundled_package) as source, zipfile.ZipFile(foreign, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename in ("rdf.yaml", "bioimageio.yaml"):
                text = data.decode()
                data = text[: text.index("config:")].encode() if "config:" in text else data
            target.writestr(item, data)
    with pytest.raises(UserInputError, match="another tool made"):
        import_bioimageio(foreign)
    with pytest.raises(UserInputError, match="no such package"):
        import_bioimageio(tmp_path / "missing.zip")


def _tampered_package(source: Path, target: Path, change: str) -> Path:
    """Copy the package ``source`` to ``target`` with its weights or its recorded weights hash changed.

    ``change="weights"`` adds 0.5 to one tensor of ``weights.pt`` and records the new file's sha256 in
    ``rdf.yaml`` (so bioimage.io's own file check passes and only napari-unet's weights hash can tell);
    ``change="recorded-hash"`` replaces ``config.napari_unet.weights_sha256`` by another hash;
    ``change="none"`` copies the package as it is.
    """
    with zipfile.ZipFile(source) as original:
        members = [(item, original.read(item.filename)) for item in original.infolist()]
    files = {item.filename: data for item, data in members}
    rdf = files["rdf.yaml"]
    if change == "weights-only":  # the file changed, rdf.yaml not: bioimage.io's own file check fails
        state = torch.load(io.BytesIO(files["weights.pt"]), map_location="cpu", weights_only=True)
        first = next(key for key, value in state.items() if value.is_floating_point())
        state[first] = state[first] + 0.5
        buffer = io.BytesIO()
        torch.save(state, buffer)
        files["weights.pt"] = buffer.getvalue()
    elif change == "weights":
        state = torch.load(io.BytesIO(files["weights.pt"]), map_location="cpu", weights_only=True)
        first = next(key for key, value in state.items() if value.is_floating_point())
        state[first] = state[first] + 0.5
        buffer = io.BytesIO()
        torch.save(state, buffer)
        old_file_hash = hashlib.sha256(files["weights.pt"]).hexdigest().encode()
        assert old_file_hash in rdf, "rdf.yaml records the sha256 of weights.pt"
        rdf = rdf.replace(old_file_hash, hashlib.sha256(buffer.getvalue()).hexdigest().encode())
        files["weights.pt"] = buffer.getvalue()
    elif change == "recorded-hash":
        recorded = f"weights_sha256: {load_model('default').sha256}".encode()
        assert recorded in rdf, "the package records the weights hash"
        rdf = rdf.replace(recorded, b"weights_sha256: " + b"f" * 64)  # hex digits, so YAML keeps it a string
    files["rdf.yaml"] = rdf
    with zipfile.ZipFile(target, "w") as copy:
        for item, _ in members:
            copy.writestr(item, files[item.filename])
    return target


@pytest.mark.parametrize("change", ["weights", "recorded-hash"])
def test_import_refuses_a_package_whose_weights_do_not_match_the_recorded_hash(bundled_package, tmp_path, change):
    tampered = _tampered_package(bundled_package, tmp_path / "tampered.zip", change)
    with pytest.raises(UserInputError, match="weights do not match the hash the package records"):
        import_bioimageio(tampered)
    intact = _tampered_package(bundled_package, tmp_path / "intact.zip", "none")
    assert import_bioimageio(intact).sha256 == load_model("default").sha256, "an unchanged copy imports"


def test_a_damaged_weights_file_is_refused_with_a_clear_message(bundled_package, tmp_path):
    damaged = _tampered_package(bundled_package, tmp_path / "damaged.zip", "weights-only")
    with pytest.raises(UserInputError, match="the weights file is damaged"):
        import_bioimageio(damaged)


def test_only_2d_three_class_models_are_packaged(tmp_path):
    config = ModelConfig(depth=2, base_channels=4, out_channels=4, head="bg_interior_boundary_distance")
    with pytest.raises(UserInputError, match="3-class head"):
        export_bioimageio(ModelBundle.new(config), tmp_path / "x.zip")
    with pytest.raises(UserInputError, match=r"\.zip"):
        export_bioimageio(ModelBundle.new(ModelConfig(depth=2, base_channels=4)), tmp_path / "x.tar")
    with pytest.raises(UserInputError, match="DOI such as"):
        export_bioimageio(ModelBundle.new(ModelConfig(depth=2, base_channels=4)), tmp_path / "x.zip", cite=["a|b"])
    assert not (tmp_path / "x.zip").exists()
    assert CONFIG_KEY == "napari_unet"
