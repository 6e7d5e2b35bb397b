"""Model registry: the bundled default model, user models, versions and lineage.

On disk a model is a folder holding

* ``model.safetensors`` -- the network's ``state_dict`` (safetensors: plain
  tensors, no pickle, so loading a file never executes code), and
* ``model.json`` -- ``format``/``format_version``, the ``model``,
  ``normalize`` and ``postprocess`` configs, ``metadata`` (name, version,
  lineage, ...) and the weights file's sha256 (checked on load).

Where models live
-----------------
* ``"default"``: the bundled model in ``napari_unet/weights/default/``.
* user models: ``user_model_dir()/<name>/v<N>/`` where ``user_model_dir()``
  is ``platformdirs.user_data_dir("napari-unet")/models`` unless the
  environment variable ``NAPARI_UNET_MODEL_DIR`` points elsewhere.

:func:`load_model` accepts ``"default"``, a user model name (latest
version), ``name@vN``, a model folder, or the path of its ``model.json`` or
``model.safetensors``.  :func:`save_version` adds the next version of a user
model with its lineage; :func:`revert` makes an old version the newest again
without deleting history.

Hashes
------
:attr:`ModelBundle.sha256` hashes the *tensors* (names, dtypes, shapes and
bytes in name order), recomputed at every access because training changes
the weights in place.  It is therefore the same before saving, after loading
and on any device, unlike a hash of the file bytes.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_unet.core.config import ConfigError, ModelConfig, NormalizeConfig, PostprocessConfig
from napari_unet.core.errors import UserInputError
from napari_unet.core.io import apply_default_permissions, atomic_write_dir, sha256_file, to_jsonable

MODEL_FORMAT = "napari-unet-model"
MODEL_FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.json"
MODEL_CARD_JSON = "model_card.json"  # written by training/make_model_card.py; holds the measured accuracy
BUNDLED_NAME = "default"
BUNDLED_3D_NAME = "nuclei-3d"
BUNDLED_NAMES = (BUNDLED_NAME, BUNDLED_3D_NAME)
"""Models that ship inside the package (``napari_unet/weights/<name>``): the 2D default and the 3D nuclei model."""
MODEL_DIR_ENV = "NAPARI_UNET_MODEL_DIR"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_VERSION_RE = re.compile(r"^v(\d+)$")
_SPEC_RE = re.compile(r"^(?P<name>[^@]+)@v?(?P<version>\d+)$")


# --------------------------------------------------------------------------- the bundle


def _state_dict_sha256(network: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, tensor in sorted(network.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{key}|{flat.dtype}|{tuple(tensor.shape)}\0".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class ModelBundle:
    """A network with the configs needed to use and retrain it.

    Attributes
    ----------
    network : torch.nn.Module
        The UNet (:func:`napari_unet.core.model.build_model`).
    config : ModelConfig
        Its architecture.
    normalize : NormalizeConfig
        Input normalisation it was trained with.
    postprocess : PostprocessConfig
        Probabilities -> labels settings tuned for it.
    metadata : dict
        Free JSON-able information: ``name``, ``version``, ``lineage``,
        ``sha256`` (of the weights when saved), ``description``, ...
    path : Path or None
        Folder it was loaded from or last saved to (not part of equality).

    """

    network: nn.Module
    config: ModelConfig
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """Model name (``metadata["name"]``, ``"unnamed"`` when missing)."""
        return str(self.metadata.get("name", "unnamed"))

    @property
    def version(self) -> int | None:
        """Version number within a user model, ``None`` for unversioned models."""
        return self.metadata.get("version")

    @property
    def spec(self) -> str:
        """``name@vN`` (or just the name when unversioned), accepted by :func:`load_model`."""
        return self.name if self.version is None else f"{self.name}@v{self.version}"

    @property
    def sha256(self) -> str:
        """SHA-256 of the current weights (see the module notes; recomputed each call)."""
        return _state_dict_sha256(self.network)

    @property
    def device(self) -> torch.device:
        """Device holding the network's parameters."""
        return next(self.network.parameters()).device

    @classmethod
    def new(
        cls,
        config: ModelConfig | None = None,
        *,
        normalize: NormalizeConfig | None = None,
        postprocess: PostprocessConfig | None = None,
        metadata: dict[str, Any] | None = None,
        seed: int | None = None,
    ) -> ModelBundle:
        """Return a bundle with a freshly initialised UNet.

        Parameters
        ----------
        config : ModelConfig, optional
            Architecture (defaults to ``ModelConfig()``).
        normalize, postprocess : optional
            Configs (defaults when omitted).
        metadata : dict, optional
            Initial metadata.
        seed : int, optional
            Seed for the weight initialisation (the global torch RNG is left
            untouched when given).

        """
        from napari_unet.core.model import build_model

        config = config or ModelConfig()
        if seed is None:
            network = build_model(config)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                network = build_model(config)
        return cls(
            network=network,
            config=config,
            normalize=normalize or NormalizeConfig(),
            postprocess=postprocess or PostprocessConfig(),
            metadata=dict(metadata or {}),
        )


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


# --------------------------------------------------------------------------- locations


def user_model_dir() -> Path:
    """Folder of the user models (``$NAPARI_UNET_MODEL_DIR`` or the platform data folder)."""
    override = os.environ.get(MODEL_DIR_ENV)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("napari-unet", appauthor=False)) / "models"


def bundled_model_dir(name: str = BUNDLED_NAME) -> Path:
    """Folder of a bundled model (``napari_unet/weights/<name>``; the 2D default when omitted)."""
    return Path(__file__).resolve().parent.parent / "weights" / name


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


# --------------------------------------------------------------------------- saving


def _weights_state(network: nn.Module) -> dict[str, torch.Tensor]:
    return {key: tensor.detach().to("cpu").contiguous().clone() for key, tensor in network.state_dict().items()}


def _write_model_files(bundle: ModelBundle, folder: Path, metadata: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    weights = folder / WEIGHTS_FILE
    save_file(_weights_state(bundle.network), str(weights), metadata={"format": MODEL_FORMAT})
    document = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "model": bundle.config.to_dict(),
        "normalize": bundle.normalize.to_dict(),
        "postprocess": bundle.postprocess.to_dict(),
        "metadata": metadata,
        "weights": {"file": WEIGHTS_FILE, "file_sha256": sha256_file(weights)},
    }
    (folder / CONFIG_FILE).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def _saved_metadata(bundle: ModelBundle, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    metadata = {**bundle.metadata, **(extra or {}), "sha256": bundle.sha256}
    return to_jsonable(metadata)


def save_model(bundle: ModelBundle, folder: str | os.PathLike, overwrite: bool = False) -> Path:
    """Save ``bundle`` as a model folder (``model.safetensors`` + ``model.json``).

    The folder is written under a temporary name and renamed into place, so a
    failed save leaves nothing behind; with ``overwrite`` an existing folder
    is replaced only once the new one is complete.

    Parameters
    ----------
    bundle : ModelBundle
        The model; its metadata is saved with ``sha256`` set to the weights' hash.
    folder : str or Path
        Target folder (created, with missing parent folders).
    overwrite : bool
        Replace an existing folder.

    Returns
    -------
    Path
        The model folder.

    """
    folder = Path(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"cannot create the folder {folder.parent} ({exc}); choose another location") from exc
    metadata = _saved_metadata(bundle)
    with atomic_write_dir(folder, overwrite=overwrite, replaceable=is_model_folder) as temp:
        _write_model_files(bundle, temp, metadata)
    bundle.metadata = metadata
    bundle.path = folder
    return folder


MODEL_FOLDER_FILES = frozenset({CONFIG_FILE, WEIGHTS_FILE, "MODEL_CARD.md", MODEL_CARD_JSON})
"""The files a model folder may hold for ``save_model(..., overwrite=True)`` to replace it."""


def is_model_folder(folder: Path) -> bool:
    """Whether ``folder`` is a napari-unet model folder and nothing else (so overwriting it loses nothing else).

    It must hold a ``model.json`` of this format and no file or folder other
    than those in :data:`MODEL_FOLDER_FILES`.
    """
    try:
        names = {entry.name for entry in folder.iterdir()}
        document = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and document.get("format") == MODEL_FORMAT and names <= MODEL_FOLDER_FILES


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
        metadata = _saved_metadata(bundle, {"name": name, "version": version, "lineage": lineage})
        for child in staging.iterdir():
            child.unlink()
        _write_model_files(bundle, staging, metadata)
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


# --------------------------------------------------------------------------- loading


def _read_document(json_path: Path) -> dict[str, Any]:
    if not json_path.is_file():
        raise UserInputError(f"{json_path} is missing; a model folder needs {CONFIG_FILE} beside {WEIGHTS_FILE}")
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"{json_path}: not valid JSON ({exc}); the model file is corrupt") from exc
    if not isinstance(document, dict) or document.get("format") != MODEL_FORMAT:
        raise UserInputError(f"{json_path} is not a napari-unet model description (no format {MODEL_FORMAT!r})")
    if int(document.get("format_version", 0)) > MODEL_FORMAT_VERSION:
        raise UserInputError(f"{json_path} was written by a newer napari-unet; upgrade napari-unet to load it")
    return document


def _configs(document: dict[str, Any], json_path: Path) -> tuple[ModelConfig, NormalizeConfig, PostprocessConfig]:
    try:
        return (
            ModelConfig.from_dict(document.get("model", {})),
            NormalizeConfig.from_dict(document.get("normalize", {})),
            PostprocessConfig.from_dict(document.get("postprocess", {})),
        )
    except (ConfigError, TypeError) as exc:
        raise UserInputError(f"{json_path}: invalid configuration ({exc})") from exc


def _load_state(weights: Path, expected_sha256: str | None) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not weights.is_file():
        raise UserInputError(f"{weights} is missing; the model folder is incomplete")
    if expected_sha256 and sha256_file(weights) != expected_sha256:
        raise UserInputError(f"{weights} does not match its {CONFIG_FILE} (corrupt or replaced); save the model again")
    try:
        return load_file(str(weights), device="cpu")
    except Exception as exc:
        raise UserInputError(f"{weights} is not a valid safetensors weights file ({exc})") from exc


def _build_network(config: ModelConfig, state: dict[str, torch.Tensor], weights: Path) -> nn.Module:
    from napari_unet.core.model import build_model

    network = build_model(config)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise UserInputError(f"{weights} does not fit the architecture in {CONFIG_FILE}: {first_line}") from exc
    return network


def load_model_folder(folder: Path, device: str | torch.device | None = None) -> ModelBundle:
    """Load the model saved in ``folder`` (see :func:`load_model`)."""
    json_path = folder / CONFIG_FILE
    document = _read_document(json_path)
    config, normalize, postprocess = _configs(document, json_path)
    weights_info = document.get("weights") or {}
    weights = folder / str(weights_info.get("file", WEIGHTS_FILE))
    state = _load_state(weights, weights_info.get("file_sha256"))
    network = _build_network(config, state, weights)
    if device is not None:
        try:
            network.to(device)
        except (RuntimeError, AssertionError) as exc:
            raise UserInputError(f"cannot move the model to device {device!r} ({exc}); use 'cpu'") from exc
    network.eval()
    metadata = document.get("metadata") or {}
    return ModelBundle(network, config, normalize, postprocess, dict(metadata), path=folder)


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
    metadata = _read_document(_model_folder(name_or_path) / CONFIG_FILE).get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _saved_configs(name_or_path: str | os.PathLike) -> tuple[ModelConfig, NormalizeConfig, PostprocessConfig]:
    """Read the three configs of a saved model's ``model.json`` (no weights are read)."""
    json_path = _model_folder(name_or_path) / CONFIG_FILE
    return _configs(_read_document(json_path), json_path)


def placeholder_default(seed: int = 0) -> ModelBundle:
    """Return an *untrained* default-architecture model (until the bundled weights exist).

    Its output is meaningless; use it only to wire up and test pipelines.
    ``metadata["placeholder"]`` is True.
    """
    metadata = {"name": "default-untrained", "placeholder": True}
    bundle = ModelBundle.new(ModelConfig(), metadata=metadata, seed=seed)
    bundle.network.eval()
    return bundle


# --------------------------------------------------------------------------- listing and history


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


__all__ = [
    "BUNDLED_3D_NAME",
    "BUNDLED_NAME",
    "BUNDLED_NAMES",
    "MODEL_DIR_ENV",
    "ModelBundle",
    "ModelInfo",
    "bundled_model_dir",
    "delete_version",
    "is_3d_model",
    "list_models",
    "list_versions",
    "load_model",
    "load_model_folder",
    "model_config",
    "model_postprocess",
    "placeholder_default",
    "previous_version",
    "revert",
    "save_model",
    "save_version",
    "user_model_dir",
]
