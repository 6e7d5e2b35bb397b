"""A model in memory and on disk: :class:`ModelBundle` and its folder format.

On disk a model is a folder holding

* ``model.safetensors`` -- the network's ``state_dict`` (safetensors: plain
  tensors, no pickle, so loading a file never executes code), and
* ``model.json`` -- ``format``/``format_version``, the ``model``,
  ``normalize`` and ``postprocess`` configs, ``metadata`` (name, version,
  lineage, ...) and the weights file's sha256 (checked on load).

Names, versions and where models live are :mod:`napari_unet.core.models.registry`'s.

Hashes
------
:attr:`ModelBundle.sha256` hashes the *tensors* (names, dtypes, shapes and
bytes in name order), recomputed at every access because training changes
the weights in place.  It is therefore the same before saving, after loading
and on any device, unlike a hash of the file bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_unet.core.config import ConfigError, ModelConfig, NormalizeConfig, PostprocessConfig
from napari_unet.core.errors import UserInputError
from napari_unet.core.io import atomic_write_dir, sha256_file, to_jsonable

MODEL_FORMAT = "napari-unet-model"
MODEL_FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.json"
MODEL_CARD_JSON = "model_card.json"  # written by training/make_model_card.py; holds the measured accuracy


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
        The UNet (:func:`napari_unet.core.models.network.build_model`).
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
        from napari_unet.core.models.network import build_model

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


# --------------------------------------------------------------------------- saving


def _weights_state(network: nn.Module) -> dict[str, torch.Tensor]:
    return {key: tensor.detach().to("cpu").contiguous().clone() for key, tensor in network.state_dict().items()}


def write_model_files(bundle: ModelBundle, folder: Path, metadata: dict[str, Any]) -> None:
    """Write ``model.safetensors`` and ``model.json`` (configs, ``metadata``, weights hash) into ``folder``."""
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


def saved_metadata(bundle: ModelBundle, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the metadata a saved copy of ``bundle`` records: its own, ``extra`` on top, and its weights hash."""
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
    metadata = saved_metadata(bundle)
    with atomic_write_dir(folder, overwrite=overwrite, replaceable=is_model_folder) as temp:
        write_model_files(bundle, temp, metadata)
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


# --------------------------------------------------------------------------- loading


def read_model_document(json_path: Path) -> dict[str, Any]:
    """Read and check a ``model.json`` (format and version); :class:`UserInputError` for a missing or foreign file."""
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


def configs_from_document(
    document: dict[str, Any], json_path: Path
) -> tuple[ModelConfig, NormalizeConfig, PostprocessConfig]:
    """Return the model, normalisation and post-processing configs in the ``model.json`` document of ``json_path``."""
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
    from napari_unet.core.models.network import build_model

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
    document = read_model_document(json_path)
    config, normalize, postprocess = configs_from_document(document, json_path)
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


def placeholder_default(seed: int = 0) -> ModelBundle:
    """Return an *untrained* default-architecture model (until the bundled weights exist).

    Its output is meaningless; use it only to wire up and test pipelines.
    ``metadata["placeholder"]`` is True.
    """
    metadata = {"name": "default-untrained", "placeholder": True}
    bundle = ModelBundle.new(ModelConfig(), metadata=metadata, seed=seed)
    bundle.network.eval()
    return bundle
