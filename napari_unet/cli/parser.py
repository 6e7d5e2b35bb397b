"""The argument parser of the ``napari-unet`` command: one sub-parser per command.

Some options have a clearer name and keep their first spelling as an alias
(same destination): ``--tile-size``/``--tile``, ``train --start-model``/``--from``,
``train --annotated-planes``/``--planes``, and ``predict --method``/``--methods``
with ``evaluate --methods``/``--method``.
"""

from __future__ import annotations

import argparse

from napari_unet import __version__
from napari_unet.cli.common import METHOD_CHOICES
from napari_unet.cli.demo import cmd_demo
from napari_unet.cli.evaluate import cmd_evaluate
from napari_unet.cli.export import cmd_export
from napari_unet.cli.export_model import cmd_export_model
from napari_unet.cli.import_model import cmd_import_model
from napari_unet.cli.inference import scale_arg
from napari_unet.cli.models import cmd_models
from napari_unet.cli.predict import cmd_predict
from napari_unet.cli.train import cmd_train
from napari_unet.cli.tune import cmd_tune

DESCRIPTION = "The ``napari-unet`` command line: a thin layer over :mod:`napari_unet.core`."
"""The first line of ``napari-unet --help``."""

DEVICES = ("auto", "cpu", "cuda", "mps")


def add_inference_args(parser: argparse.ArgumentParser) -> None:
    """Add the model and inference options shared by ``predict``, ``evaluate`` and ``tune``.

    Parameters
    ----------
    parser
        The sub-parser of one of those commands.

    """
    parser.add_argument("--model", default="default", help="model name, name@vN, or folder (default: bundled)")
    parser.add_argument("--device", choices=DEVICES, default=None, help="compute device")
    parser.add_argument(
        "--tile-size", "--tile", dest="tile", type=int, default=None, help="tile edge in pixels (default 512)"
    )
    parser.add_argument("--overlap", type=float, default=None, help="tile overlap fraction (default 0.25)")
    parser.add_argument("--batch-size", type=int, default=None, help="tiles per forward pass")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="threads that label a large image in chunks while the network runs (default: one per CPU core)",
    )
    parser.add_argument("--axes", default=None, help="axes of the inputs, e.g. YX, YXC, CYX, ZYX, TYX")
    parser.add_argument(
        "--z-spacing",
        type=float,
        default=None,
        help="Z step of Z-stacks in pixel sizes (e.g. 2.5 for 0.2 um pixels and 0.5 um steps); a 3D model "
        "resamples Z to the step it was trained at (default: the model's own)",
    )
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="test-time augmentation: average 4 flips (4x slower); default: as the model's thresholds were tuned "
        "(on for the bundled default model; --no-tta is 4x faster, slightly less accurate)",
    )
    parser.add_argument(
        "--multiscale",
        action="store_true",
        help="test-time augmentation over sizes (average 0.71x, 1x, 1.41x; about 3.5x slower)",
    )
    parser.add_argument(
        "--scale",
        type=scale_arg,
        default=None,
        help="resize images by this factor before the network (>1 for nuclei smaller than the model's, <1 for "
        "larger), or 'auto' to measure the nuclei of each image first",
    )
    parser.add_argument(
        "--diameter",
        type=float,
        default=None,
        metavar="PX",
        help="typical nucleus diameter in pixels; sets the scale that fits it to the model's training sizes",
    )


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment images; writes OUTDIR/<stem>_labels.tif")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    p.add_argument("--method", "--methods", dest="method", choices=METHOD_CHOICES, default="unet")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--dask-scheduler", default=None, help="local[:N] or tcp://HOST:PORT to run on a dask cluster")
    p.add_argument(
        "--large",
        action="store_true",
        help="stream inputs chunk by chunk into OME-Zarr (automatic for .zarr inputs and images over 8192x8192)",
    )
    p.add_argument("--chunk", type=int, default=2048, help="chunk edge for --large (pixels)")
    add_inference_args(p)
    p.set_defaults(func=cmd_predict)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score methods against ground-truth labels")
    p.add_argument("--images", nargs="+", required=True, help="image files or a folder (with *_labels.* files)")
    p.add_argument("--labels", nargs="+", default=None, help="label files/folder, paired with --images by order")
    p.add_argument(
        "--methods",
        "--method",
        dest="methods",
        default="unet,otsu,watershed",
        help=f"comma list of {', '.join(METHOD_CHOICES)}",
    )
    p.add_argument("--json", default=None, metavar="OUT", help="also write the full report as JSON")
    p.add_argument("--overwrite", action="store_true")
    add_inference_args(p)
    p.set_defaults(func=cmd_evaluate)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train or fine-tune a model on images + labels")
    p.add_argument("--images", nargs="+", required=True)
    p.add_argument("--labels", nargs="+", required=True, help="paired with --images by order")
    p.add_argument("--rois", nargs="+", default=None, help="JSON files of ROI rectangles/polygons, one per image")
    p.add_argument("--start-model", "--from", dest="start", default="default", help="model to start from, or 'scratch'")
    p.add_argument("--output", required=True, help="user model name (saved as a new version) or a folder path")
    p.add_argument(
        "--save-refused",
        default=None,
        metavar="OUTPUT",
        help="2D: when validation keeps the starting model, save the fine-tuned weights it refused here "
        "(another model name or folder) to compare on your other images; --output stays untouched",
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--seconds", type=float, default=None)
    budget.add_argument("--steps", type=int, default=None)
    budget.add_argument("--epochs", type=int, default=None)
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--val-images", nargs="+", default=None)
    p.add_argument("--val-labels", nargs="+", default=None)
    p.add_argument("--config", default=None, help="TrainingConfig JSON file (flags override it)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--patch-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--annotation-mode", choices=("full", "rois", "changed"), default=None)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--depth", type=int, default=None, help="architecture when training from scratch")
    p.add_argument("--base-channels", type=int, default=None, help="architecture when training from scratch")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--synthetic", type=int, default=0, metavar="N", help="add N synthetic images to the training data")
    p.add_argument(
        "--z-spacing",
        type=float,
        default=None,
        help="3D models: Z step of the training stacks in pixel sizes (resampled to the model's step)",
    )
    p.add_argument(
        "--annotated-planes",
        "--planes",
        dest="planes",
        default=None,
        help="3D models: comma list of the Z planes you labelled in each stack (others do not count), e.g. 4,12,20",
    )
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="resize the training images (and labels, ROIs) by this factor: the --scale you predict with",
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=cmd_train)


def _add_tune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="choose post-processing thresholds on annotated images")
    p.add_argument("--images", nargs="+", required=True, help="image files or a folder (with *_labels.* files)")
    p.add_argument("--labels", nargs="+", default=None, help="label files/folder, paired with --images by order")
    p.add_argument("--output", required=True, help="folder for the model with tuned thresholds")
    p.add_argument("--overwrite", action="store_true")
    add_inference_args(p)
    p.set_defaults(func=cmd_tune)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="convert label images to TIFF/PNG/NPY/OME-Zarr/ROI zip/CSV")
    p.add_argument("labels", nargs="+", metavar="LABELS", help="label files or folders")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    p.add_argument("--format", default="tif,csv", help="comma list of tif,png,npy,zarr,roi,csv")
    p.add_argument("--image", nargs="+", default=None, help="intensity images for CSV measurements (by order)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_export)


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list bundled and user models")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)


def _add_export_model(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-model", help="write a model as a bioimage.io package (.zip) other tools run")
    p.add_argument("model", help="model name, name@vN, or folder (default: the bundled model)")
    p.add_argument("-o", "--output", required=True, help="the package, e.g. my-nuclei.zip")
    p.add_argument("--format", default="bioimageio", choices=("bioimageio",))
    p.add_argument("--author", action="append", default=[], help='"Name" or "Name <affiliation>"; repeatable')
    p.add_argument("--license", default="CC-BY-4.0", help="SPDX licence id of the weights (default CC-BY-4.0)")
    p.add_argument("--cite", action="append", default=[], help='"text" or "text|doi"; repeatable')
    p.add_argument("--name", default=None, help="the package's name (default from the model)")
    p.add_argument("--test", action="store_true", help="then run bioimageio.core's own test of the package")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_export_model)


def _add_import_model(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-model", help="add a bioimage.io package napari-unet exported as a user model")
    p.add_argument("package", help="the .zip")
    p.add_argument("--name", required=True, help="user model name to save it under (its next version)")
    p.set_defaults(func=cmd_import_model)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="open napari with a sample and the widgets")
    p.add_argument("--headless", default=None, metavar="OUTDIR", help="run segment -> compare -> export without a GUI")
    p.add_argument("--model", default="default")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``napari-unet`` command.

    Returns
    -------
    argparse.ArgumentParser
        The parser; each sub-command sets ``func``, the function that runs it.

    """
    parser = argparse.ArgumentParser(prog="napari-unet", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"napari-unet {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (
        _add_predict,
        _add_evaluate,
        _add_train,
        _add_tune,
        _add_export,
        _add_models,
        _add_export_model,
        _add_import_model,
        _add_demo,
    ):
        add(sub)
    return parser
