"""bioimage.io model packages (spec 0.5): export a napari-unet model so other tools run it, and import it back.

A package (a ``.zip``) holds the network three ways - ``pytorch_state_dict``
(architecture :class:`ExportNetwork` from this module), ``torchscript`` and
``onnx`` (for deepImageJ, ilastik, QuPath, BiaPy and bioimageio.core) - a
test input and the output the network makes of it, a cover image (the test
image with the predicted outlines), documentation from the model card, and
``config.napari_unet``: the model's configs and metadata (lineage, training
data checksums), which :func:`import_bioimageio` reads back.

What a package can and cannot say
---------------------------------
The input is percentile-normalised (``scale_range`` 1st-99.8th percentile over
channels, y and x, as napari-unet does).  Two steps of napari-unet's
normalisation have no bioimage.io operation and are written in the
documentation instead: grey images with a bright background (brightfield)
are inverted, and a grey image given to a 3-channel model is repeated in all
three channels.  The output is the softmax of the network (background,
interior, boundary); turning it into instances (napari-unet's seeded
watershed, thresholds in ``config.napari_unet.postprocess``) is described in
the documentation too.

The bioimage.io packages (``bioimageio.spec``, ``bioimageio.core``, ``onnx``,
``onnxruntime``) are an optional extra: ``pip install "napari-unet[bioimageio]"``.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_unet.core.config import ModelConfig, NormalizeConfig, PostprocessConfig
from napari_unet.core.errors import UserInputError
from napari_unet.core.models.network import GreyColourUNet, build_model, is_grey_input

EXTRA_HINT = 'install the optional packages: pip install "napari-unet[bioimageio]"'
CLASS_NAMES = ("background", "interior", "boundary")
INPUT_ID, OUTPUT_ID = "raw", "probabilities"
CONFIG_KEY = "napari_unet"
PACKAGE_FORMAT = "napari-unet-bioimageio"
ONNX_OPSET = 17
TEST_SHAPE = (256, 256)
DEFAULT_LICENSE = "CC-BY-4.0"


class ExportNetwork(nn.Module):
    """What a package runs: the UNet, then the softmax of its three classes.

    A grey + colour model (:class:`~napari_unet.core.models.network.GreyColourUNet`)
    runs both branches and keeps, per sample, the one napari-unet would
    choose, so that TorchScript and ONNX can trace it (twice the work of
    napari-unet's own path, the same numbers).

    Parameters
    ----------
    model_config : dict
        ``ModelConfig.to_dict()`` of the model (the architecture's kwargs in the package).

    Notes
    -----
    ``forward`` maps ``(N, C, Y, X)`` float32 (``C`` = ``in_channels``, ``Y``
    and ``X`` multiples of ``2**depth``) to ``(N, 3, Y, X)`` probabilities.

    """

    def __init__(self, model_config: dict[str, Any]) -> None:
        super().__init__()
        self.network = build_model(ModelConfig.from_dict(dict(model_config)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the class probabilities ``(N, 3, Y, X)`` of ``x (N, C, Y, X)``."""
        if isinstance(self.network, GreyColourUNet):
            grey, colour = self.network.gray(x[:, :1]), self.network.colour(x)
            logits = torch.where(is_grey_input(x).view(-1, 1, 1, 1), grey, colour)
        else:
            logits = self.network(x)
        return torch.softmax(logits[:, :3], dim=1)


# --------------------------------------------------------------------------- export


def export_bioimageio(
    bundle: Any,
    output: str | Path,
    *,
    authors: Sequence[str] = (),
    license_id: str = DEFAULT_LICENSE,
    cite: Sequence[str] = (),
    name: str | None = None,
    description: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``bundle`` as a bioimage.io model package (spec 0.5) at ``output`` (a ``.zip``).

    Parameters
    ----------
    bundle : ModelBundle
        The model (2D, the 3-class head).
    output : path
        The package file; written through a temporary file.
    authors : sequence of str
        Author names (``"Name"`` or ``"Name <orcid or affiliation>"``); default: "napari-unet user".
    license_id : str
        SPDX licence of the weights (default CC-BY-4.0).
    cite : sequence of str
        Citations, ``"text"`` or ``"text|doi"``; napari-unet's own entry is always added.
    name, description : str, optional
        Defaults from the model's name and card.
    overwrite : bool
        Replace an existing package file.

    Returns
    -------
    Path
        The package.

    Raises
    ------
    UserInputError
        Without the optional packages, for a model napari-unet cannot export (3D, other heads), or an
        existing output without ``overwrite``.

    """
    spec = _spec()
    from napari_unet.core.io import atomic_write_path

    _check_exportable(bundle)
    output = Path(output)
    if output.suffix.lower() != ".zip":
        raise UserInputError(f"{output.name}: a bioimage.io package is a .zip file; name it e.g. my-model.zip")
    with tempfile.TemporaryDirectory(prefix="napari-unet-bioimageio-") as folder:
        work = Path(folder)
        descr = _describe(spec, bundle, work, authors, license_id, cite, name, description)
        with atomic_write_path(output, overwrite=overwrite) as temporary:
            spec.save_bioimageio_package(descr, output_path=temporary)
    return output


def _spec() -> Any:
    """``bioimageio.spec`` (imported on first use), or a clear error naming the extra to install."""
    try:
        import bioimageio.spec as spec
    except ImportError as exc:
        raise UserInputError(f"bioimage.io packages need bioimageio.spec: {EXTRA_HINT}") from exc
    return spec


def _check_exportable(bundle: Any) -> None:
    config = bundle.config
    if config.spatial_dims != 2 or config.head != "bg_interior_boundary":
        raise UserInputError(
            f"only 2D models with the 3-class head can be packaged (this one: {config.spatial_dims}D, head "
            f"{config.head!r})"
        )


def export_network(bundle: Any) -> ExportNetwork:
    """Return an :class:`ExportNetwork` holding a float32 CPU copy of ``bundle``'s weights, in eval mode."""
    network = ExportNetwork(bundle.config.to_dict())
    state = {
        k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()
        for k, v in bundle.network.state_dict().items()
    }
    network.network.load_state_dict(state)
    return network.eval()


def _describe(
    spec: Any,
    bundle: Any,
    work: Path,
    authors: Sequence[str],
    license_id: str,
    cite: Sequence[str],
    name: str | None,
    description: str | None,
) -> Any:
    """Return the ``ModelDescr`` of ``bundle``, its files written into ``work``."""
    from bioimageio.spec.model import v0_5

    network = export_network(bundle)
    raw, normalized = package_test_input(bundle)
    with torch.no_grad():
        probabilities = network(torch.from_numpy(normalized)).numpy()
    np.save(work / "test_input.npy", raw)
    np.save(work / "test_output.npy", probabilities)
    weights = _write_weights(v0_5, network, bundle, normalized, work)
    _write_cover(raw, probabilities, bundle, work / "cover.png")
    (work / "README.md").write_text(documentation(bundle), encoding="utf-8")
    size = v0_5.ParameterizedSize(min=max(64, bundle.config.size_multiple), step=bundle.config.size_multiple)
    inputs = v0_5.InputTensorDescr(
        id=v0_5.TensorId(INPUT_ID),
        description="the image: channels, y, x (a grey image given to a 3-channel model is repeated 3 times)",
        axes=[
            v0_5.BatchAxis(),
            v0_5.ChannelAxis(channel_names=[v0_5.Identifier(f"c{c}") for c in range(bundle.config.in_channels)]),
            v0_5.SpaceInputAxis(id=v0_5.AxisId("y"), size=size),
            v0_5.SpaceInputAxis(id=v0_5.AxisId("x"), size=size),
        ],
        test_tensor=v0_5.FileDescr(source=work / "test_input.npy"),
        preprocessing=_preprocessing(v0_5, bundle.normalize),
    )
    outputs = v0_5.OutputTensorDescr(
        id=v0_5.TensorId(OUTPUT_ID),
        description="softmax probabilities of background, nucleus interior and nucleus boundary",
        axes=[
            v0_5.BatchAxis(),
            v0_5.ChannelAxis(channel_names=[v0_5.Identifier(c) for c in CLASS_NAMES]),
            v0_5.SpaceOutputAxis(id=v0_5.AxisId("y"), size=v0_5.SizeReference(tensor_id=INPUT_ID, axis_id="y")),
            v0_5.SpaceOutputAxis(id=v0_5.AxisId("x"), size=v0_5.SizeReference(tensor_id=INPUT_ID, axis_id="x")),
        ],
        test_tensor=v0_5.FileDescr(source=work / "test_output.npy"),
    )
    return v0_5.ModelDescr(
        name=name or f"napari-unet {bundle.name}",
        description=description or _summary(bundle),
        authors=[_author(v0_5, text) for text in (authors or ["napari-unet user"])],
        cite=[_cite(v0_5, text) for text in cite] + [_own_citation(v0_5)],
        license=license_id,
        documentation=v0_5.FileDescr(source=work / "README.md"),
        covers=[v0_5.FileDescr(source=work / "cover.png")],
        tags=["nuclei", "instance-segmentation", "unet", "napari-unet", "2d"],
        inputs=[inputs],
        outputs=[outputs],
        weights=weights,
        config={CONFIG_KEY: package_config(bundle)},
    )


def package_test_input(bundle: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return the package's test input (a synthetic fluorescence image), raw and as the network sees it.

    Returns
    -------
    raw : array (1, C, Y, X) float32
        The image (grey repeated to the model's channels).
    normalized : array (1, C, Y, X) float32
        After the package's ``scale_range`` (as bioimageio.core computes it).

    """
    from napari_unet.core.data.synthetic import synthetic_nuclei

    image, _ = synthetic_nuclei(TEST_SHAPE, n_nuclei=30, seed=4)
    raw = np.repeat(image.astype(np.float32)[None, None], bundle.config.in_channels, axis=1)
    low, high = np.percentile(raw, [bundle.normalize.low_percentile, bundle.normalize.high_percentile])
    return raw, ((raw - low) / (high - low + SCALE_RANGE_EPS)).astype(np.float32)


SCALE_RANGE_EPS = 1e-6
"""``scale_range``'s ``eps`` (its default): ``(x - low) / (high - low + eps)``."""


def _preprocessing(v0_5: Any, normalize: NormalizeConfig) -> list[Any]:
    axes = [v0_5.AxisId("channel"), v0_5.AxisId("y"), v0_5.AxisId("x")]  # joint over channels, as napari-unet
    kwargs = v0_5.ScaleRangeKwargs(
        axes=axes,
        min_percentile=normalize.low_percentile,
        max_percentile=normalize.high_percentile,
        eps=SCALE_RANGE_EPS,
    )
    return [
        v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32")),
        v0_5.ScaleRangeDescr(kwargs=kwargs),
    ]


def _write_weights(v0_5: Any, network: ExportNetwork, bundle: Any, example: np.ndarray, work: Path) -> Any:
    """Write the state dict, TorchScript and ONNX files into ``work``; return their ``WeightsDescr``."""
    torch.save(network.state_dict(), work / "weights.pt")
    example_tensor = torch.from_numpy(example)
    with torch.no_grad(), warnings.catch_warnings():
        # tracing freezes the UNet's input-size check at the example's size: harmless, every valid size passes
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # dynamo=False on purpose (it honours dynamic_axes below);
        # torch >= 2.9 warns that it is no longer the default
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        traced = torch.jit.trace(network, example_tensor)
        traced.save(str(work / "weights_torchscript.pt"))
        torch.onnx.export(
            network,
            (example_tensor,),
            str(work / "weights.onnx"),
            input_names=[INPUT_ID],
            output_names=[OUTPUT_ID],
            dynamic_axes={INPUT_ID: {0: "batch", 2: "y", 3: "x"}, OUTPUT_ID: {0: "batch", 2: "y", 3: "x"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    version = v0_5.Version(torch.__version__.split("+")[0])
    architecture = v0_5.ArchitectureFromLibraryDescr(
        callable=v0_5.Identifier("ExportNetwork"),
        import_from="napari_unet.core.models.bioimageio",
        kwargs={"model_config": bundle.config.to_dict()},
    )
    return v0_5.WeightsDescr(
        pytorch_state_dict=v0_5.PytorchStateDictWeightsDescr(
            source=work / "weights.pt", architecture=architecture, pytorch_version=version
        ),
        torchscript=v0_5.TorchscriptWeightsDescr(
            source=work / "weights_torchscript.pt", pytorch_version=version, parent="pytorch_state_dict"
        ),
        onnx=v0_5.OnnxWeightsDescr(source=work / "weights.onnx", opset_version=ONNX_OPSET, parent="pytorch_state_dict"),
    )


def _write_cover(raw: np.ndarray, probabilities: np.ndarray, bundle: Any, path: Path) -> None:
    """Write a 2:1 cover: the test image, and the same with the predicted nuclei outlined in red."""
    from skimage.io import imsave
    from skimage.segmentation import find_boundaries

    from napari_unet.core.labels.postprocess import probabilities_to_labels

    plane = raw[0, 0]
    low, high = np.percentile(plane, [1, 99.8])
    grey = (np.clip((plane - low) / max(high - low, 1e-6), 0, 1) * 255).astype(np.uint8)
    labels = probabilities_to_labels(probabilities[0], bundle.postprocess)
    outlined = np.repeat(grey[..., None], 3, axis=-1)
    outlined[find_boundaries(labels, mode="inner")] = (255, 40, 40)
    imsave(path, np.concatenate([np.repeat(grey[..., None], 3, axis=-1), outlined], axis=1), check_contrast=False)


def package_config(bundle: Any) -> dict[str, Any]:
    """``config.napari_unet`` of a package: everything :func:`import_bioimageio` needs, and the lineage."""
    from napari_unet import __version__
    from napari_unet.core.io import to_jsonable

    return to_jsonable(
        {
            "format": PACKAGE_FORMAT,
            "napari_unet_version": __version__,
            "model": bundle.config.to_dict(),
            "normalize": bundle.normalize.to_dict(),
            "postprocess": bundle.postprocess.to_dict(),
            "metadata": bundle.metadata,
            "weights_sha256": bundle.sha256,
        }
    )


def documentation(bundle: Any) -> str:
    """Return the package's README: what the network expects and returns, how instances are made, the card."""
    normalize, postprocess = bundle.normalize, bundle.postprocess
    channels = bundle.config.in_channels
    lines = [
        f"# napari-unet model: {bundle.name}",
        "",
        "Made with [napari-unet](https://github.com/): a UNet for nuclei instance segmentation.",
        "",
        "## Input",
        "",
        f"- {channels} channel(s), y, x; y and x multiples of {bundle.config.size_multiple} (at least 64).",
        f"- Normalised to the {normalize.low_percentile}th-{normalize.high_percentile}th percentile over all",
        "  channels together (`scale_range`, in this package's preprocessing).",
        "- napari-unet also does two things bioimage.io preprocessing cannot say: it inverts grey images",
        "  whose background is bright (brightfield) so nuclei are bright, and it repeats a grey image in",
        "  every channel of a 3-channel model. Do the same before running this package elsewhere.",
    ]
    if bundle.config.branches == "gray_colour":
        lines += [
            "- The model holds a grey and a colour network: an image whose channels are all equal (grey)",
            "  goes to the grey one, any other to the colour one. Stained (H&E-like) images are never inverted.",
        ]
    lines += [
        "",
        "## Output",
        "",
        "Softmax probabilities of background, nucleus interior and nucleus boundary.",
        "",
        "## From probabilities to nuclei (what napari-unet does)",
        "",
        f"1. foreground = interior + boundary > {postprocess.foreground_threshold};",
        f"2. seeds = 4-connected regions of interior > {postprocess.seed_threshold} "
        f"(at least {postprocess.min_seed_size} px);",
        "3. a watershed on -interior grows the seeds over the foreground; unseeded foreground regions become",
        "   objects of their own;",
        f"4. objects under {postprocess.min_size} px (and under {postprocess.min_relative_size} x the median area)",
        f"   are removed, holes filled, and objects of mean foreground probability under "
        f"{postprocess.min_confidence} removed.",
        "",
        "All settings are in `config.napari_unet` of the package's `rdf.yaml`; `napari-unet import-model`",
        "turns this package back into a napari-unet model with the same predictions.",
    ]
    card = (Path(bundle.path) / "MODEL_CARD.md") if getattr(bundle, "path", None) else None
    if card is not None and card.is_file():
        lines += ["", "---", "", card.read_text(encoding="utf-8")]
    return "\n".join(lines) + "\n"


def _summary(bundle: Any) -> str:
    description = bundle.metadata.get("description")
    if description:
        return str(description)[:1000]
    return f"napari-unet nuclei segmentation model '{bundle.name}' (UNet, {bundle.config.base_channels} base channels)"


def _author(v0_5: Any, text: str) -> Any:
    name, _, rest = str(text).partition("<")
    rest = rest.rstrip(">").strip()
    try:
        if rest and rest.replace("-", "").isdigit() and len(rest) == 19:
            return v0_5.Author(name=name.strip(), orcid=rest)
        return v0_5.Author(name=name.strip() or "napari-unet user", affiliation=rest or None)
    except ValueError as exc:  # pydantic's ValidationError
        raise UserInputError(f"author {text!r} is not valid: give 'Name' or 'Name <affiliation or ORCID>'") from exc


def _cite(v0_5: Any, text: str) -> Any:
    words, _, doi = str(text).partition("|")
    try:
        if doi.strip():
            return v0_5.CiteEntry(text=words.strip(), doi=doi.strip())
        return v0_5.CiteEntry(text=words.strip(), url="https://napari-hub.org/")
    except ValueError as exc:  # pydantic's ValidationError
        raise UserInputError(
            f"citation {text!r} is not valid: give 'text' or 'text|doi' with a DOI such as 10.1038/s41592-020-01018-x"
        ) from exc


def _own_citation(v0_5: Any) -> Any:
    return v0_5.CiteEntry(
        text="Ronneberger et al. 2015, U-Net: convolutional networks for biomedical image segmentation (MICCAI)",
        doi="10.1007/978-3-319-24574-4_28",
    )


# --------------------------------------------------------------------------- import


def import_bioimageio(path: str | Path) -> Any:
    """Read a package napari-unet made back into a model bundle (the same weights, configs and metadata).

    Parameters
    ----------
    path : path
        The package (``.zip``) or its unpacked folder's ``rdf.yaml`` / ``bioimageio.yaml``.

    Returns
    -------
    ModelBundle
        Unsaved; ``metadata["imported_from"]`` names the package.

    Raises
    ------
    UserInputError
        Without the optional packages; for an unreadable package; for a package another tool made
        (saying what napari-unet supports).

    """
    spec = _spec()
    from napari_unet.core.models.bundle import ModelBundle

    path = Path(path)
    if not path.exists():
        raise UserInputError(f"{path}: no such package; give the .zip a bioimage.io export wrote")
    try:
        descr = spec.load_description(str(path), perform_io_checks=False)
    except Exception as exc:
        raise UserInputError(f"{path} is not a readable bioimage.io package ({type(exc).__name__}: {exc})") from exc
    settings = _napari_unet_config(descr, path)
    state = _state_dict(descr, path)
    config = ModelConfig.from_dict(settings["model"])
    bundle = ModelBundle.new(
        config,
        normalize=NormalizeConfig.from_dict(settings["normalize"]),
        postprocess=PostprocessConfig.from_dict(settings["postprocess"]),
        metadata={**settings.get("metadata", {}), "imported_from": str(path)},
    )
    bundle.network.load_state_dict({k.removeprefix("network."): v for k, v in state.items()})
    bundle.network.eval()
    recorded = settings.get("weights_sha256")
    if recorded is not None and bundle.sha256 != str(recorded):
        raise UserInputError(f"{path}: the weights do not match the hash the package records; export it again")
    return bundle


def _napari_unet_config(descr: Any, path: Path) -> dict[str, Any]:
    config = getattr(descr, "config", None)
    settings = config.get(CONFIG_KEY) if isinstance(config, dict) else None
    if hasattr(config, "model_extra") and settings is None:
        settings = (config.model_extra or {}).get(CONFIG_KEY)
    name = getattr(descr, "name", "?")
    if not isinstance(settings, dict) or settings.get("format") != PACKAGE_FORMAT:
        raise UserInputError(
            f"{path} ('{name}') is a bioimage.io package another tool made; napari-unet imports only the packages "
            "it exported itself (they carry config.napari_unet: its UNet with the 3-class head). Run this one with "
            "bioimageio.core or the tool that made it."
        )
    return settings


def _state_dict(descr: Any, path: Path) -> dict[str, torch.Tensor]:
    weights = getattr(descr.weights, "pytorch_state_dict", None)
    if weights is None:
        raise UserInputError(f"{path}: the package has no pytorch_state_dict weights to import")
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / "weights.pt"
        try:
            local.write_bytes(weights.get_reader().read())
        except ValueError as exc:  # bioimageio.spec checks the file's sha256 against rdf.yaml
            raise UserInputError(f"{path}: the weights file is damaged ({exc}); export the package again") from exc
        return torch.load(local, map_location="cpu", weights_only=True)


def run_package_test(path: str | Path, weight_format: str | None = None) -> dict[str, Any]:
    """Run bioimageio.core's own test of a package; return its summary (``status`` ``"passed"`` or ``"failed"``)."""
    try:
        from bioimageio.core import test_model
    except ImportError as exc:
        raise UserInputError(f"testing packages needs bioimageio.core: {EXTRA_HINT}") from exc
    summary = test_model(str(path), weight_format=weight_format)
    return json.loads(summary.model_dump_json()) if hasattr(summary, "model_dump_json") else dict(summary)
