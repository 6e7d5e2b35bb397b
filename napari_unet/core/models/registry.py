"""Where models live and which one a name means: the bundled models, user models, versions and lineage.

Where models live
-----------------
* ``"default"`` / ``"nuclei-3d"``: the bundled models in ``napari_unet/weights/<name>/``.
* user models: ``user_model_dir()/<name>/v<N>/`` where ``user_model_dir()``
  is ``platformdirs.user_data_dir("napari-unet")/models`` unless the
  environment variable ``NAPARI_UNET_MODEL_DIR`` points elsewhere.

:func:`load_model` accepts ``"default"``, a user model name (latest
version), ``name@vN``, a model folder, or the path of its ``model.json`` or
``model.safetensors``.  :func:`save_version` adds the next version of a user
model with its lineage; :func:`revert` makes an old version the newest again
without deleting history.  The folder format itself is
:mod:`napari_unet.core.models.bundle`'s.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from napari_unet.core.config import ModelConfig, NormalizeConfig, PostprocessConfig
from napari_unet.core.errors import UserInputError
from napari_unet.core.io import apply_default_permissions, to_jsonable
from napari_unet.core.models.bundle import (
    CONFIG_FILE,
    MODEL_CARD_JSON,
    ModelBundle,
    configs_from_document,
    load_model_folder,
    read_model_document,
    saved_metadata,
    write_model_files,
)

BUNDLED_NAME = "default"


BUNDLED_3D_NAME = "nuclei-3d"


BUNDLED_NAMES = (BUNDLED_NAME, BUNDLED_3D_NAME)
"""Models that ship inside the package (``napari_unet/weights/<name>``): the 2D default and the 3D nuclei model."""


MODEL_DIR_ENV = "NAPARI_UNET_MODEL_DIR"


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


_VERSION_RE = re.compile(r"^v(\d+)$")


_SPEC_RE = re.compile(r"^(?P<name>[^@]+)@v?(?P<version>\d+)$")


@dataclass(frozen=True)
class ModelInfo:
    """One model (version) as listed by :func:`list_models`.

    Attributes
    ----------
    name : str
        ``"default"`` or the user model name.
    version : int or None
        Version number (``None`` for the bundled model).
    path : Path
        Model folder.
    created : str or None
        ISO time it was saved.
    metrics : dict
        Its measured scores (see :func:`recorded_metrics`): from its model card
        when it has one (the bundled model), else from its training lineage.
    parent : str or None
        ``name@vN`` (or name) of the model it was derived from.
    sha256 : str or None
        Tensor hash of its weights, as recorded at save time.

    """

    name: str
    version: int | None
    path: Path
    created: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None
    sha256: str | None = None

    @property
    def spec(self) -> str:
        """``name@vN`` (or the name), accepted by :func:`load_model`."""
        return self.name if self.version is None else f"{self.name}@v{self.version}"


def user_model_dir() -> Path:
    """Folder of the user models (``$NAPARI_UNET_MODEL_DIR`` or the platform data folder)."""
    override = os.environ.get(MODEL_DIR_ENV)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("napari-unet", appauthor=False)) / "models"


def bundled_model_dir(name: str = BUNDLED_NAME) -> Path:
    """Folder of a bundled model (``napari_unet/weights/<name>``; the 2D default when omitted)."""
    return Path(__file__).resolve().parents[2] / "weights" / name


def _installed_bundled_names() -> list[str]:
    return [name for name in BUNDLED_NAMES if (bundled_model_dir(name) / CONFIG_FILE).is_file()]


def _version_folders(name: str) -> dict[int, Path]:
    folder = user_model_dir() / name
    if not folder.is_dir():
        return {}
    found = {}
    for child in folder.iterdir():
        match = _VERSION_RE.match(child.name)
        if match and (child / CONFIG_FILE).is_file():
            found[int(match.group(1))] = child
    return dict(sorted(found.items()))


def _taken_versions(name: str) -> set[int]:
    """Version numbers in use, including incomplete or foreign ``v<N>`` entries."""
    folder = user_model_dir() / name
    matches = (_VERSION_RE.match(child.name) for child in folder.iterdir()) if folder.is_dir() else ()
    return {int(match.group(1)) for match in matches if match}


def _user_model_names() -> list[str]:
    root = user_model_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if _NAME_RE.match(p.name) and _version_folders(p.name))


def _available_names() -> list[str]:
    return _installed_bundled_names() + _user_model_names()


def _check_name(name: str) -> None:
    if name in BUNDLED_NAMES:
        raise UserInputError(f"{name!r} is a bundled model's name; save your model under another name")
    if not _NAME_RE.match(name):
        raise UserInputError(
            f"invalid model name {name!r}: use up to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def _lineage(bundle: ModelBundle, lineage: dict[str, Any] | None) -> dict[str, Any]:
    parent = {"name": bundle.metadata.get("name"), "version": bundle.version, "sha256": bundle.metadata.get("sha256")}
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return {"parent": parent, "created": created, **(lineage or {})}


def _claim_next_version(bundle: ModelBundle, name: str, lineage: dict[str, Any], staging: Path) -> Path:
    """Write the model into ``staging`` and rename it to the next free ``v<N>``.

    Renaming a complete folder onto a taken (non-empty) ``v<N>`` fails, so two
    concurrent savers never share a version: the loser retries with ``N+1``.
    """
    model_root = user_model_dir() / name
    for _ in range(1000):
        version = max(_taken_versions(name), default=0) + 1
        metadata = saved_metadata(bundle, {"name": name, "version": version, "lineage": lineage})
        for child in staging.iterdir():
            child.unlink()
        write_model_files(bundle, staging, metadata)
        apply_default_permissions(staging)  # mkdtemp made it private
        target = model_root / f"v{version}"
        try:
            os.rename(staging, target)
        except OSError:
            if target.exists():
                continue
            raise
        bundle.metadata = metadata
        bundle.path = target
        return target
    raise RuntimeError(f"could not find a free version folder in {model_root}")  # pragma: no cover


def save_version(bundle: ModelBundle, name: str, lineage: dict[str, Any] | None = None) -> ModelInfo:
    """Save ``bundle`` as the next version ``v<N>`` of user model ``name``.

    Parameters
    ----------
    bundle : ModelBundle
        The (fine-tuned) model.  Its current ``metadata`` name/version/sha256
        are recorded as the parent; afterwards its ``metadata`` and ``path``
        describe the new version.
    name : str
        User model name (not ``"default"``).
    lineage : dict, optional
        Anything worth keeping: data checksums, annotation mode, training
        settings, ``metrics`` (listed by :func:`list_models`), seconds, ...
        Its keys override the automatic ``parent`` and ``created``.

    Returns
    -------
    ModelInfo
        The new version.

    """
    _check_name(name)
    model_root = user_model_dir() / name
    try:
        model_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"cannot create the model folder {model_root} ({exc}); set {MODEL_DIR_ENV}") from exc
    full_lineage = to_jsonable(_lineage(bundle, lineage))
    staging = Path(tempfile.mkdtemp(prefix=".saving-", dir=model_root))
    try:
        target = _claim_next_version(bundle, name, full_lineage, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _info_from_folder(target)


def _resolve_spec(spec: str) -> Path:
    if spec in BUNDLED_NAMES:
        folder = bundled_model_dir(spec)
        if not (folder / CONFIG_FILE).is_file():
            raise UserInputError(
                f"the bundled {spec!r} model is missing from {folder}; reinstall napari-unet "
                "(pip install --force-reinstall napari-unet) or pass a model folder"
            )
        return folder
    match = _SPEC_RE.match(spec)
    name, version = (match.group("name"), int(match.group("version"))) if match else (spec, None)
    versions = _version_folders(name)
    if not versions:
        available = ", ".join(_available_names()) or "none"
        raise UserInputError(f"unknown model {spec!r}; available models: {available} (or pass a model folder)")
    if version is None:
        return versions[max(versions)]
    if version not in versions:
        listed = ", ".join(f"v{v}" for v in versions)
        raise UserInputError(f"model {name!r} has no version v{version}; its versions are {listed}")
    return versions[version]


def _resolve_path(path: Path) -> Path:
    if path.is_dir():
        return path
    if path.is_file():
        return path.parent
    raise UserInputError(f"{path}: no such model file or folder; check the path")


def _looks_like_path(text: str) -> bool:
    return any(sep in text for sep in ("/", "\\")) or text.endswith((".json", ".safetensors")) or text.startswith(".")


def load_model(name_or_path: str | os.PathLike, device: str | torch.device | None = None) -> ModelBundle:
    """Load a model by name or path (weights via safetensors; no pickle).

    Parameters
    ----------
    name_or_path : str or Path
        ``"default"`` (bundled), a user model name (latest version),
        ``"name@vN"``, a model folder, or its ``model.json`` /
        ``model.safetensors``.
    device : str or torch.device, optional
        Where to put the network (CPU when omitted).

    Returns
    -------
    ModelBundle
        In ``eval`` mode, with ``path`` set; a bundled model is named
        ``"default"`` if its metadata has no name.

    Raises
    ------
    UserInputError
        Unknown name (the message lists the available ones), missing or
        corrupt files, foreign JSON, or weights that do not fit the
        architecture (the message names the file).

    """
    bundle = load_model_folder(_model_folder(name_or_path), device)
    if os.fspath(name_or_path) in BUNDLED_NAMES:
        bundle.metadata.setdefault("name", os.fspath(name_or_path))
    return bundle


def _model_folder(name_or_path: str | os.PathLike) -> Path:
    """Return the folder a model reference names (see :func:`load_model`)."""
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    is_path = isinstance(name_or_path, os.PathLike) or _looks_like_path(text)
    if not is_path and (text in BUNDLED_NAMES or _SPEC_RE.match(text) or text in _user_model_names()):
        return _resolve_spec(text)  # a registered name wins over a same-named folder in the working directory
    if is_path or path.exists():
        return _resolve_path(path)
    return _resolve_spec(text)


def model_config(name_or_path: str | os.PathLike) -> ModelConfig:
    """Return a saved model's architecture (e.g. whether it is 2D or 3D) without loading its weights.

    Parameters
    ----------
    name_or_path : str or Path
        Any reference :func:`load_model` accepts.

    Raises
    ------
    UserInputError
        Unknown name, missing, corrupt or foreign ``model.json``.

    """
    return _saved_configs(name_or_path)[0]


def is_3d_model(name_or_path: str | os.PathLike) -> bool:
    """Whether a saved model is a 3D (Z-stack) model, read from its ``model.json`` without the weights."""
    return model_config(name_or_path).spatial_dims == 3


def model_postprocess(name_or_path: str | os.PathLike) -> PostprocessConfig:
    """Return a saved model's post-processing settings without loading its weights.

    Parameters
    ----------
    name_or_path : str or Path
        Any reference :func:`load_model` accepts.

    Returns
    -------
    PostprocessConfig
        The thresholds saved in the model's ``model.json`` (tuned with
        ``napari-unet tune`` for trained models).

    Raises
    ------
    UserInputError
        Unknown name, missing, corrupt or foreign ``model.json``, or an
        invalid configuration in it.

    """
    return _saved_configs(name_or_path)[2]


def model_metadata(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """Return a saved model's ``metadata`` (name, lineage, training records ...) without loading its weights.

    Raises
    ------
    UserInputError
        Unknown name, missing, corrupt or foreign ``model.json``.

    """
    metadata = read_model_document(_model_folder(name_or_path) / CONFIG_FILE).get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _saved_configs(name_or_path: str | os.PathLike) -> tuple[ModelConfig, NormalizeConfig, PostprocessConfig]:
    """Read the three configs of a saved model's ``model.json`` (no weights are read)."""
    json_path = _model_folder(name_or_path) / CONFIG_FILE
    return configs_from_document(read_model_document(json_path), json_path)


def _info_from_folder(folder: Path, name: str | None = None, version: int | None = None) -> ModelInfo:
    try:
        metadata = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")).get("metadata") or {}
    except (OSError, ValueError, AttributeError):
        metadata = {}
    lineage = metadata.get("lineage") or {}
    parent = lineage.get("parent") or {}
    parent_spec = None
    if parent.get("name"):
        parent_spec = parent["name"] if parent.get("version") is None else f"{parent['name']}@v{parent['version']}"
    return ModelInfo(
        name=name or metadata.get("name") or folder.name,
        version=version if version is not None else metadata.get("version"),
        path=folder,
        created=lineage.get("created") or metadata.get("created"),
        metrics=recorded_metrics(folder, metadata),
        parent=parent_spec,
        sha256=metadata.get("sha256"),
    )


def recorded_metrics(folder: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """Return the measured scores a model folder records.

    Parameters
    ----------
    folder : Path
        The model folder.
    metadata : dict
        Its ``model.json`` metadata.

    Returns
    -------
    dict
        From ``model_card.json`` when the folder has one (the bundled model):
        ``test_ap50`` and, per image family, ``test_ap50_grey`` /
        ``test_ap50_colour`` / ``test_ap50_tissue`` (per-image mean AP@0.5
        on test images that chose neither its checkpoint nor its thresholds).
        Otherwise the scores its training recorded (``val_ap50`` on the
        held-out validation nuclei, ...); empty when none.

    """
    card_scores = _model_card_scores(folder / MODEL_CARD_JSON)
    if card_scores:
        return card_scores
    lineage = metadata.get("lineage") or {}
    return dict(lineage.get("metrics") or metadata.get("metrics") or {})


CARD_FAMILIES = ("grey", "colour", "tissue")
"""Image families a model card reports test scores for (see ``training/make_model_card.py``)."""


def _model_card_scores(path: Path) -> dict[str, float]:
    """``test_ap50`` (mean over families) and ``test_ap50_<family>`` from a ``model_card.json``; {} when unreadable."""
    try:
        test = json.loads(path.read_text(encoding="utf-8"))["test"]
        scores = {"test_ap50": float(test["family_mean_ap50"])}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    for family in CARD_FAMILIES:
        try:
            scores[f"test_ap50_{family}"] = float(test["families"][family]["AP@0.5"])
        except (KeyError, TypeError, ValueError):
            continue
    return scores


def list_versions(name: str) -> list[ModelInfo]:
    """Versions of user model ``name``, oldest first.

    Raises
    ------
    UserInputError
        If no user model has that name (the message lists the available ones).

    """
    versions = _version_folders(name)
    if not versions:
        available = ", ".join(_user_model_names()) or "none"
        raise UserInputError(f"no user model named {name!r}; user models: {available}")
    return [_info_from_folder(folder, name, version) for version, folder in versions.items()]


def list_models() -> list[ModelInfo]:
    """All models: the bundled ones first (default, then nuclei-3d, if installed), then every user model version."""
    infos = [_info_from_folder(bundled_model_dir(name), name, None) for name in _installed_bundled_names()]
    for name in _user_model_names():
        infos += list_versions(name)
    return infos


def previous_version(reference: str) -> str | None:
    """Return the model a user model version was derived from, for before/after comparisons.

    Parameters
    ----------
    reference : str
        ``"name"`` (its latest version), ``"name@vN"`` or ``"name@N"``.

    Returns
    -------
    str or None
        The version's recorded lineage parent (``"name@vN"``, or the name of
        an unversioned parent such as ``"default"``) when there is one, else
        the next older version of the same name; None when there is neither,
        and for the bundled model, paths and names the store does not know
        (none of them has a history).

    """
    match = _SPEC_RE.match(reference)
    name, wanted = (match.group("name"), int(match.group("version"))) if match else (reference, None)
    versions = _version_folders(name) if _NAME_RE.match(name) else {}
    if not versions:
        return None
    current = wanted if wanted in versions else max(versions)
    parent = _info_from_folder(versions[current], name, current).parent
    if parent:
        return parent
    older = [version for version in versions if version < current]
    return f"{name}@v{max(older)}" if older else None


def revert(name: str, version: int) -> ModelInfo:
    """Make version ``version`` of ``name`` the newest again by saving a copy of it.

    History is kept: the copy gets the next version number and its lineage
    records ``reverted_from`` plus the metrics of the reverted version.
    """
    bundle = load_model(f"{name}@v{version}")
    old_lineage = copy.deepcopy(bundle.metadata.get("lineage") or {})
    lineage = {"reverted_from": version, "metrics": old_lineage.get("metrics", {})}
    return save_version(bundle, name, lineage)


def delete_version(name: str, version: int) -> None:
    """Delete version ``version`` of user model ``name`` (moved aside, then removed)."""
    versions = _version_folders(name)
    if version not in versions:
        listed = ", ".join(f"v{v}" for v in versions) or "none"
        raise UserInputError(f"model {name!r} has no version v{version}; its versions are {listed}")
    trash = versions[version].with_name(f".deleting-v{version}-{os.getpid()}")
    os.rename(versions[version], trash)
    with contextlib.suppress(OSError):
        shutil.rmtree(trash)
