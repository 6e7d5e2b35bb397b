from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_unet.core.config import ModelConfig, NormalizeConfig, PostprocessConfig
from napari_unet.core.errors import UserInputError
from napari_unet.core.models import bundle as bundle_format
from napari_unet.core.models import registry
from napari_unet.core.models.bundle import ModelBundle

TINY = ModelConfig(depth=1, base_channels=2)  # batch norm: running stats and num_batches_tracked are saved too


@pytest.fixture
def model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "user-models"
    monkeypatch.setenv(registry.MODEL_DIR_ENV, str(folder))
    monkeypatch.setattr(registry, "bundled_model_dir", lambda name="default": tmp_path / "bundled" / name)
    return folder


def tiny_bundle(seed: int = 0, **metadata) -> ModelBundle:
    bundle = ModelBundle.new(
        TINY,
        normalize=NormalizeConfig(low_percentile=2.0),
        postprocess=PostprocessConfig(min_size=7),
        metadata=metadata,
        seed=seed,
    )
    with torch.no_grad():  # non-default running stats, so buffers must round-trip too
        bundle.network.train()
        bundle.network(torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(seed)))
    bundle.network.eval()
    return bundle


def outputs(bundle: ModelBundle) -> torch.Tensor:
    x = torch.linspace(-1, 1, 2 * 16 * 16).reshape(2, 1, 16, 16)
    bundle.network.eval()
    with torch.no_grad():
        return bundle.network(x)


def test_constructor_keywords_and_properties() -> None:
    network = torch.nn.Conv2d(1, 3, 1)
    bundle = ModelBundle(
        network=network,
        config=TINY,
        normalize=NormalizeConfig(),
        postprocess=PostprocessConfig(),
        metadata={"name": "n", "version": 3},
    )
    assert (bundle.name, bundle.version, bundle.spec) == ("n", 3, "n@v3")
    unnamed = ModelBundle(network=network, config=TINY, normalize=NormalizeConfig(), postprocess=PostprocessConfig())
    assert (unnamed.name, unnamed.version, unnamed.metadata) == ("unnamed", None, {})


def test_save_load_round_trip_reproduces_outputs(tmp_path: Path, model_dir: Path) -> None:
    bundle = tiny_bundle(name="mine", description="test")
    folder = bundle_format.save_model(bundle, tmp_path / "saved")
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors"]
    loaded = registry.load_model(folder)
    assert torch.equal(outputs(loaded), outputs(bundle))
    assert (loaded.config, loaded.normalize, loaded.postprocess) == (
        bundle.config,
        bundle.normalize,
        bundle.postprocess,
    )
    assert loaded.metadata["description"] == "test" and loaded.name == "mine"
    assert loaded.path == folder and not loaded.network.training
    for variant in (folder / "model.json", folder / "model.safetensors", str(folder)):
        assert registry.load_model(variant).sha256 == bundle.sha256


def test_sha256_is_stable_and_tracks_weights(tmp_path: Path) -> None:
    bundle = tiny_bundle(seed=1)
    first = bundle.sha256
    assert len(first) == 64 and bundle.sha256 == first
    assert tiny_bundle(seed=1).sha256 == first
    assert tiny_bundle(seed=2).sha256 != first
    bundle_format.save_model(bundle, tmp_path / "m")
    assert registry.load_model(tmp_path / "m").sha256 == first
    assert json.loads((tmp_path / "m" / "model.json").read_text())["metadata"]["sha256"] == first
    with torch.no_grad():
        next(bundle.network.parameters())[0].add_(1.0)
    assert bundle.sha256 != first


def test_save_model_refuses_overwrite_then_replaces(tmp_path: Path) -> None:
    first, second = tiny_bundle(seed=1), tiny_bundle(seed=2)
    bundle_format.save_model(first, tmp_path / "m")
    with pytest.raises(UserInputError, match="exists; pass overwrite=True"):
        bundle_format.save_model(second, tmp_path / "m")
    assert registry.load_model(tmp_path / "m").sha256 == first.sha256
    bundle_format.save_model(second, tmp_path / "m", overwrite=True)
    assert registry.load_model(tmp_path / "m").sha256 == second.sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_save_model_overwrite_replaces_only_a_model_folder(tmp_path: Path) -> None:
    folder = tmp_path / "thesis"
    (folder / "sub").mkdir(parents=True)
    (folder / "thesis.docx").write_bytes(b"chapter 1")
    (folder / "sub" / "data.csv").write_text("a,b\n")
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(UserInputError, match="napari-unet did not write"):
        bundle_format.save_model(tiny_bundle(), folder, overwrite=True)
    assert {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before

    model = bundle_format.save_model(tiny_bundle(seed=1), tmp_path / "model")
    (model / "notes.txt").write_text("mine")  # a model folder the user added a file to is theirs too
    assert not bundle_format.is_model_folder(model)
    with pytest.raises(UserInputError, match=r"notes\.txt"):
        bundle_format.save_model(tiny_bundle(seed=2), model, overwrite=True)
    assert (model / "notes.txt").read_text() == "mine"


def test_failed_save_leaves_no_folder(tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        bundle_format.save_model(tiny_bundle(), tmp_path / "m")
    assert not (tmp_path / "m").exists()
    with pytest.raises(OSError, match="disk full"):
        registry.save_version(tiny_bundle(), "nuclei")
    assert list((model_dir / "nuclei").iterdir()) == []
    with pytest.raises(UserInputError, match="unknown model"):
        registry.load_model("nuclei")


# ----------------------------------------------------------------------------- corrupt and foreign files


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return bundle_format.save_model(tiny_bundle(), tmp_path / "saved")


def drop_weights_hash(folder: Path) -> None:
    """Remove the recorded file hash so the safetensors parser itself must reject the file."""
    path = folder / "model.json"
    document = json.loads(path.read_text())
    del document["weights"]["file_sha256"]
    path.write_text(json.dumps(document))


@pytest.mark.parametrize("check_hash", [True, False])
@pytest.mark.parametrize("damage", ["random", "truncated", "pickle"])
def test_corrupt_weights_are_user_errors(saved: Path, damage: str, check_hash: bool) -> None:
    weights = saved / "model.safetensors"
    if damage == "random":
        weights.write_bytes(np.random.default_rng(0).bytes(4096))
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:-100])
    else:
        state = tiny_bundle().network.state_dict()
        weights.write_bytes(pickle.dumps(state))
    if not check_hash:
        drop_weights_hash(saved)
    with pytest.raises(UserInputError, match=r"model\.safetensors"):
        registry.load_model(saved)


def test_wrong_architecture_is_a_user_error(saved: Path) -> None:
    path = saved / "model.json"
    document = json.loads(path.read_text())
    document["model"]["base_channels"] = 4
    path.write_text(json.dumps(document))
    with pytest.raises(UserInputError, match=r"model\.safetensors does not fit the architecture"):
        registry.load_model(saved)
    document["model"]["depth"] = 2
    path.write_text(json.dumps(document))
    with pytest.raises(UserInputError, match="does not fit the architecture"):
        registry.load_model(saved)


def test_missing_or_foreign_json(saved: Path, tmp_path: Path) -> None:
    path = saved / "model.json"
    original = path.read_text()
    path.write_text(json.dumps({"format": "something-else", "model": {}}))
    with pytest.raises(UserInputError, match=r"model\.json is not a napari-unet model"):
        registry.load_model(saved)
    path.write_text("{not json")
    with pytest.raises(UserInputError, match="not valid JSON"):
        registry.load_model(saved)
    document = json.loads(original)
    document["format_version"] = 99
    path.write_text(json.dumps(document))
    with pytest.raises(UserInputError, match="newer napari-unet"):
        registry.load_model(saved)
    document["format_version"] = 1
    document["model"]["depth"] = 99
    path.write_text(json.dumps(document))
    with pytest.raises(UserInputError, match="invalid configuration"):
        registry.load_model(saved)
    path.unlink()
    with pytest.raises(UserInputError, match=r"model\.json is missing"):
        registry.load_model(saved / "model.safetensors")
    with pytest.raises(UserInputError, match="no such model file"):
        registry.load_model(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- names, versions, lineage


def test_unknown_name_lists_available(model_dir: Path) -> None:
    registry.save_version(tiny_bundle(), "alpha")
    registry.save_version(tiny_bundle(), "beta")
    with pytest.raises(UserInputError, match=r"unknown model 'gamma'; available models: alpha, beta"):
        registry.load_model("gamma")
    with pytest.raises(UserInputError, match=r"no version v7; its versions are v1"):
        registry.load_model("alpha@v7")
    with pytest.raises(UserInputError, match="no user model named 'gamma'"):
        registry.list_versions("gamma")


def test_versions_increment_and_load_by_spec(model_dir: Path) -> None:
    bundles = [tiny_bundle(seed=s) for s in (1, 2, 3)]
    infos = [registry.save_version(b, "nuclei", {"metrics": {"ap": i / 10}}) for i, b in enumerate(bundles)]
    assert [info.version for info in infos] == [1, 2, 3]
    assert [info.path.name for info in infos] == ["v1", "v2", "v3"]
    assert registry.load_model("nuclei").sha256 == bundles[2].sha256
    assert registry.load_model("nuclei@v1").sha256 == bundles[0].sha256
    assert registry.load_model("nuclei@2").sha256 == bundles[1].sha256
    loaded = registry.load_model("nuclei@v2")
    assert (loaded.name, loaded.version, loaded.spec) == ("nuclei", 2, "nuclei@v2")
    assert bundles[2].spec == "nuclei@v3" and bundles[2].path == infos[2].path


def test_version_numbers_skip_taken_folders(model_dir: Path) -> None:
    (model_dir / "nuclei" / "v1").mkdir(parents=True)
    (model_dir / "nuclei" / "v1" / "stray.txt").write_text("left by a crashed save")
    info = registry.save_version(tiny_bundle(), "nuclei")
    assert info.version == 2
    assert [i.version for i in registry.list_versions("nuclei")] == [2]  # the incomplete v1 is not a model


def test_saved_versions_get_normal_permissions(model_dir: Path) -> None:
    umask = os.umask(0o022)
    try:
        info = registry.save_version(tiny_bundle(), "nuclei")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(info.path.stat().st_mode) == 0o755  # not the private 0700 of the staging folder
    assert {stat.S_IMODE(p.stat().st_mode) for p in info.path.iterdir()} == {0o644}


def test_lineage_round_trip(model_dir: Path) -> None:
    parent = tiny_bundle()
    registry.save_version(parent, "nuclei", {"metrics": {"ap": 0.4}})
    loaded = registry.load_model("nuclei")
    parent_sha = loaded.sha256
    with torch.no_grad():
        next(loaded.network.parameters())[0].mul_(0.5)  # "fine-tuned"
    lineage = {
        "data": {"images": ["a.tif"], "sha256": ["ab" * 32]},
        "annotation_mode": "rois",
        "settings": {"patch_size": 64, "tile": (32, 32), "lr": np.float32(0.25)},
        "metrics": {"ap": 0.75},
        "seconds": 12.5,
    }
    info = registry.save_version(loaded, "nuclei", lineage)
    assert (info.version, info.parent, info.metrics) == (2, "nuclei@v1", {"ap": 0.75})
    reloaded = registry.load_model("nuclei@v2").metadata["lineage"]
    assert reloaded["parent"] == {"name": "nuclei", "version": 1, "sha256": parent_sha}
    assert reloaded["settings"] == {"patch_size": 64, "tile": [32, 32], "lr": 0.25}
    assert reloaded["data"] == lineage["data"] and reloaded["annotation_mode"] == "rois"
    assert reloaded["seconds"] == 12.5 and reloaded["created"] == info.created


def test_revert_keeps_history(model_dir: Path) -> None:
    first, second = tiny_bundle(seed=1), tiny_bundle(seed=2)
    registry.save_version(first, "nuclei", {"metrics": {"ap": 0.9}})
    registry.save_version(second, "nuclei", {"metrics": {"ap": 0.1}})
    info = registry.revert("nuclei", 1)
    assert info.version == 3 and info.metrics == {"ap": 0.9}
    assert registry.load_model("nuclei").sha256 == first.sha256
    assert registry.load_model("nuclei").metadata["lineage"]["reverted_from"] == 1
    assert [i.version for i in registry.list_versions("nuclei")] == [1, 2, 3]
    registry.delete_version("nuclei", 2)
    assert [i.version for i in registry.list_versions("nuclei")] == [1, 3]
    with pytest.raises(UserInputError, match="no version v2"):
        registry.delete_version("nuclei", 2)


def test_previous_version_prefers_the_lineage_parent(model_dir: Path) -> None:
    registry.save_version(tiny_bundle(seed=1), "nuclei")  # v1: a new model, no parent
    registry.save_version(tiny_bundle(seed=2), "other")
    fine_tuned = registry.load_model("other@v1")
    registry.save_version(fine_tuned, "nuclei")  # v2: fine-tuned from other@v1
    registry.save_version(tiny_bundle(seed=3), "nuclei")  # v3: no parent recorded
    assert registry.previous_version("nuclei@v2") == "other@v1"
    assert registry.previous_version("nuclei@2") == "other@v1"
    assert registry.previous_version("nuclei") == "nuclei@v2"  # latest (v3) has no parent: the next older version
    assert registry.previous_version("nuclei@v1") is None
    assert registry.previous_version("nuclei@v9") == "nuclei@v2"  # an unknown version falls back to the latest
    for reference in ("default", "gamma", str(model_dir / "nuclei"), "nuclei/v2"):
        assert registry.previous_version(reference) is None


def test_reserved_and_invalid_names(model_dir: Path) -> None:
    for name in ("default", "a/b", "", "x@v1", ".hidden"):
        with pytest.raises(UserInputError, match="name"):
            registry.save_version(tiny_bundle(), name)


def test_listing_puts_bundled_default_first(model_dir: Path, tmp_path: Path) -> None:
    registry.save_version(tiny_bundle(), "zeta")
    registry.save_version(tiny_bundle(), "alpha")
    registry.save_version(registry.load_model("alpha"), "alpha")
    assert [i.spec for i in registry.list_models()] == ["alpha@v1", "alpha@v2", "zeta@v1"]
    bundled = tiny_bundle(seed=5, description="bundled")
    bundle_format.save_model(bundled, tmp_path / "bundled" / "default")
    infos = registry.list_models()
    assert [i.spec for i in infos] == ["default", "alpha@v1", "alpha@v2", "zeta@v1"]
    assert infos[0].sha256 == bundled.sha256 and infos[1].created is not None
    assert (infos[1].parent, infos[2].parent, infos[2].metrics) == (None, "alpha@v1", {})
    default = registry.load_model("default")
    assert default.name == "default" and default.sha256 == bundled.sha256
    with pytest.raises(UserInputError, match="available models: default, alpha, zeta"):
        registry.load_model("nope")


def test_missing_bundled_model_explains_reinstall(model_dir: Path) -> None:
    with pytest.raises(UserInputError, match=r"bundled 'default' model is missing.*reinstall"):
        registry.load_model("default")
    assert registry.list_models() == []


def test_user_model_dir_default_and_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(registry.MODEL_DIR_ENV, raising=False)
    default = registry.user_model_dir()
    assert default.name == "models" and "napari-unet" in str(default)
    monkeypatch.setenv(registry.MODEL_DIR_ENV, str(tmp_path / "x"))
    assert registry.user_model_dir() == tmp_path / "x"


def test_placeholder_default_is_deterministic() -> None:
    state = torch.random.get_rng_state()
    first, second = bundle_format.placeholder_default(), bundle_format.placeholder_default()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert first.sha256 == second.sha256
    assert first.metadata["placeholder"] is True and first.config == ModelConfig()
    assert outputs(first).shape == (2, 3, 16, 16)


def test_registered_name_wins_over_same_named_folder(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tiny_bundle(seed=4)
    registry.save_version(bundle, "alpha")
    other = bundle_format.save_model(tiny_bundle(seed=5), tmp_path / "work" / "alpha")
    monkeypatch.chdir(tmp_path / "work")
    assert registry.load_model("alpha").sha256 == bundle.sha256
    assert registry.load_model("./alpha").path == Path("./alpha")
    assert registry.load_model(Path("alpha")).sha256 == registry.load_model(other).sha256


# ----------------------------------------------------------------------------- post-processing without weights


def test_model_postprocess_reads_model_json_only(model_dir: Path, tmp_path: Path) -> None:
    tuned = PostprocessConfig(foreground_threshold=0.35, seed_threshold=0.8, min_size=40, split_distance=6)
    bundle = ModelBundle.new(TINY, postprocess=tuned, seed=0)
    registry.save_version(tiny_bundle(), "nuclei")  # v1 keeps min_size=7
    registry.save_version(bundle, "nuclei")  # v2 holds the tuned thresholds
    folder = bundle_format.save_model(bundle, tmp_path / "folder-model")
    (folder / "model.safetensors").unlink()  # only model.json is read: no weights needed
    (model_dir / "nuclei" / "v2" / "model.safetensors").unlink()

    assert registry.model_postprocess("nuclei") == tuned  # latest version
    assert registry.model_postprocess("nuclei@v2") == tuned
    assert registry.model_postprocess("nuclei@v1") == PostprocessConfig(min_size=7)
    for reference in (folder, str(folder), folder / "model.json", str(folder / "model.json")):
        assert registry.model_postprocess(reference) == tuned
    with pytest.raises(UserInputError, match="unknown model 'gamma'"):
        registry.model_postprocess("gamma")


def test_model_postprocess_rejects_bad_json(saved: Path) -> None:
    path = saved / "model.json"
    document = json.loads(path.read_text())
    document["postprocess"]["seed_threshold"] = 3.0
    path.write_text(json.dumps(document))
    with pytest.raises(UserInputError, match="invalid configuration"):
        registry.model_postprocess(saved)
    path.write_text("{not json")
    with pytest.raises(UserInputError, match="not valid JSON"):
        registry.model_postprocess(saved)


def test_a_model_card_gives_the_measured_scores_else_the_training_lineage(model_dir: Path, tmp_path: Path) -> None:
    info = registry.save_version(tiny_bundle(), "nuclei", {"metrics": {"val_ap50": 0.61}})
    assert registry.list_models()[-1].metrics == {"val_ap50": 0.61}  # a trained model: what its training measured

    card = {"test": {"family_mean_ap50": 0.7, "families": {"grey": {"AP@0.5": 0.73}}}}
    (info.path / bundle_format.MODEL_CARD_JSON).write_text(json.dumps(card))
    assert registry.list_models()[-1].metrics == {"test_ap50": 0.7, "test_ap50_grey": 0.73}
    (info.path / bundle_format.MODEL_CARD_JSON).write_text("{not json")
    assert registry.list_models()[-1].metrics == {"val_ap50": 0.61}  # an unreadable card is ignored


def test_the_bundled_models_scores_are_those_of_its_model_card() -> None:
    card = json.loads((registry.bundled_model_dir() / bundle_format.MODEL_CARD_JSON).read_text())["test"]
    bundled = registry.recorded_metrics(registry.bundled_model_dir(), {})
    assert bundled == {
        "test_ap50": card["family_mean_ap50"],
        **{f"test_ap50_{family}": card["families"][family]["AP@0.5"] for family in ("grey", "colour", "tissue")},
    }
    assert 0.5 < bundled["test_ap50"] < 1
