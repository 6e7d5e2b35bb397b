"""Frozen configuration dataclasses with a JSON round trip.

Every model and every export stores the configs that produced it, so any result
can be replayed headless.  All configs are immutable; use
``dataclasses.replace(cfg, field=value)`` to derive a variant.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T", bound="JsonConfig")


class ConfigError(ValueError):
    """Raised when a configuration value or a config file is invalid."""


class JsonConfig:
    """Mixin giving a frozen dataclass a strict dict / JSON round trip."""

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a plain, JSON-serialisable dict."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_json(self) -> str:
        """Return the config as an indented JSON string."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        """Build a config from a dict, rejecting unknown keys.

        Parameters
        ----------
        data : dict
            Field values; missing fields take their defaults.

        Raises
        ------
        ConfigError
            If ``data`` is not a dict or holds keys the config does not know.

        """
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown field(s) {unknown}; known fields are {sorted(known)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        """Build a config from a JSON string (see :meth:`from_dict`)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{cls.__name__}: invalid JSON ({exc})") from exc
        return cls.from_dict(data)


def _check_choice(owner: str, name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{owner}.{name} must be one of {choices}, got {value!r}")


def _check_range(owner: str, name: str, value: float, low: float, high: float) -> None:
    if not (low <= value <= high):
        raise ConfigError(f"{owner}.{name} must be in [{low}, {high}], got {value!r}")


NORMS = ("batch", "instance", "group", "none")
HEADS = ("bg_interior_boundary", "bg_interior_boundary_distance")
"""Output heads: 3 class logits; or those plus a 4th channel, the distance to the object's edge (see model.py)."""
HEAD_CHANNELS = {"bg_interior_boundary": 3, "bg_interior_boundary_distance": 4}
INVERT_POLICIES = ("auto", "auto_gray", "never", "always")
BRANCHES = ("single", "gray_colour")
DEVICES = ("auto", "cpu", "cuda", "mps")
BLEND_MODES = ("gaussian", "constant")
MIN_SCALE, MAX_SCALE = 0.1, 8.0
"""Range of ``InferenceConfig.scale``."""


@dataclass(frozen=True)
class ModelConfig(JsonConfig):
    """Architecture of the UNet.

    Attributes
    ----------
    spatial_dims : int
        2 for images, 3 for volumetric models (3D convolutions over Z, Y, X).
    in_channels : int
        Channels the network reads (1 for grey; 3 for RGB models).
    out_channels : int
        Channels the network writes: 3 for the ``bg_interior_boundary`` head,
        4 for ``bg_interior_boundary_distance``.
    depth : int
        Number of down-sampling steps (the network sees ``2**depth`` pixel
        blocks; inference pads inputs to a multiple of that).
    base_channels : int
        Feature channels at full resolution; doubled at every level.
    norm : str
        ``batch``, ``instance``, ``group`` or ``none``.
    dropout : float
        Dropout probability in the bottleneck.
    head : str
        Meaning of the output channels (see :mod:`napari_unet.core.models.network`).
    branches : str
        ``single``: one UNet.  ``gray_colour``: two UNets of this shape in one
        model (``in_channels`` must be 3), a 1-channel one for grey inputs and
        a 3-channel one for colour inputs; each input tile goes to the grey
        branch when its three channels are equal (a grey image, repeated)
        and to the colour branch otherwise (see
        :class:`napari_unet.core.models.network.GreyColourUNet`).
    xy_only_levels : int
        3D models only: the first this many down-sampling steps pool Y and X
        but keep Z, for stacks whose Z step is larger than their pixel size
        (after them a voxel is about as deep as it is wide, and the
        remaining steps pool all three axes).

    """

    spatial_dims: int = 2
    in_channels: int = 1
    out_channels: int = 3
    depth: int = 4
    base_channels: int = 16
    norm: str = "batch"
    dropout: float = 0.0
    head: str = "bg_interior_boundary"
    branches: str = "single"
    xy_only_levels: int = 0

    def __post_init__(self) -> None:
        name = type(self).__name__
        if self.spatial_dims not in (2, 3):
            raise ConfigError(f"{name}.spatial_dims must be 2 or 3, got {self.spatial_dims}")
        _check_range(name, "in_channels", self.in_channels, 1, 16)
        _check_range(name, "out_channels", self.out_channels, 1, 16)
        _check_range(name, "depth", self.depth, 1, 7)
        _check_range(name, "base_channels", self.base_channels, 2, 256)
        _check_range(name, "dropout", self.dropout, 0.0, 0.9)
        _check_choice(name, "norm", self.norm, NORMS)
        _check_choice(name, "head", self.head, HEADS)
        _check_choice(name, "branches", self.branches, BRANCHES)
        if self.branches == "gray_colour" and self.in_channels != 3:
            raise ConfigError(f"{name}: branches 'gray_colour' reads 3 channels; got in_channels={self.in_channels}")
        if self.out_channels != HEAD_CHANNELS[self.head]:
            expected = HEAD_CHANNELS[self.head]
            raise ConfigError(f"{name}.out_channels must be {expected} for head {self.head!r}, got {self.out_channels}")
        _check_range(name, "xy_only_levels", self.xy_only_levels, 0, self.depth if self.spatial_dims == 3 else 0)
        if self.spatial_dims == 3 and self.branches != "single":
            raise ConfigError(f"{name}: 3D models have one branch; got branches={self.branches!r}")

    @property
    def size_multiple(self) -> int:
        """Y and X sizes the network accepts must be multiples of this."""
        return 2**self.depth

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a dict; ``xy_only_levels`` only when set, so 2D model files stay as they were."""
        data = super().to_dict()
        if not self.xy_only_levels:
            del data["xy_only_levels"]
        return data

    @property
    def size_multiples(self) -> tuple[int, ...]:
        """Per spatial axis (``(Y, X)`` or ``(Z, Y, X)``), the multiple every input size must be."""
        if self.spatial_dims == 2:
            return (self.size_multiple,) * 2
        return (2 ** (self.depth - self.xy_only_levels), self.size_multiple, self.size_multiple)

    def pool_kernel(self, level: int) -> int | tuple[int, int, int]:
        """Down-sampling factor of step ``level`` (0 = the first): 2, or ``(1, 2, 2)`` when Z is kept."""
        return (1, 2, 2) if self.spatial_dims == 3 and level < self.xy_only_levels else 2


@dataclass(frozen=True)
class NormalizeConfig(JsonConfig):
    """Percentile normalisation applied before the network.

    Attributes
    ----------
    low_percentile, high_percentile : float
        Intensities at these percentiles map to 0 and 1 (not clipped).
    invert : str
        ``auto`` inverts images whose background is bright (brightfield,
        H&E: dark nuclei on a light background) so nuclei are always bright;
        ``auto_gray`` does so for grey images only and never inverts colour
        ones (models that read colour learn stained nuclei as they are, so a
        brightness guess never decides which side is nuclei); ``never`` /
        ``always`` force it.

    """

    low_percentile: float = 1.0
    high_percentile: float = 99.8
    invert: str = "auto"

    def __post_init__(self) -> None:
        name = type(self).__name__
        _check_range(name, "low_percentile", self.low_percentile, 0.0, 100.0)
        _check_range(name, "high_percentile", self.high_percentile, 0.0, 100.0)
        if self.low_percentile >= self.high_percentile:
            raise ConfigError(f"{name}: low_percentile must be below high_percentile")
        _check_choice(name, "invert", self.invert, INVERT_POLICIES)


@dataclass(frozen=True)
class InferenceConfig(JsonConfig):
    """How the network is applied to an image.

    Attributes
    ----------
    tile_size : int
        Edge of the square tiles (pixels); images no larger run in one piece.
    overlap : float
        Fraction of a tile shared with its neighbour, in [0, 0.5).
    batch_size : int
        Tiles per forward pass; 0 (the default) chooses for the device: 1 on
        the CPU (faster per pixel there), 8 on a GPU.
    device : str
        ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda`` or ``mps``.
    blend : str
        ``gaussian`` (weights fall off toward tile edges) or ``constant``.
    amp : bool
        Mixed precision: float16 on CUDA; bfloat16 on CPUs that compute it
        natively (AVX512-BF16 or AMX: about 2x faster there); ignored on
        other CPUs.
    tta : bool or None
        Test-time augmentation: average the predictions of the image and its
        three flips (4x slower).  ``None`` (the default) follows the model:
        on when its thresholds were chosen on flip-averaged predictions
        (:func:`napari_unet.core.predict.runtime.model_uses_flips`, true of the
        bundled default model), else off.
    scale : float
        Resize factor applied to each plane before the network (bilinear);
        the probabilities are resized back, so labels keep the image's shape.
        Above 1 for nuclei smaller than those the model was trained on, below
        1 for larger ones (cost grows with ``scale**2``).  1 leaves the image
        as it is.
    multiscale : bool
        Test-time augmentation over sizes: average the predictions at
        ``scale`` times 0.71, 1 and 1.41 (about 3.5x slower; combines with
        ``tta``).
    workers : int
        Threads that post-process a large plane in chunks (0, the default:
        one per usable CPU core; 1: one pass, as before chunking).

    """

    tile_size: int = 512
    overlap: float = 0.25
    batch_size: int = 0
    device: str = "auto"
    blend: str = "gaussian"
    amp: bool = True
    tta: bool | None = None
    scale: float = 1.0
    multiscale: bool = False
    workers: int = 0

    def __post_init__(self) -> None:
        name = type(self).__name__
        _check_range(name, "tile_size", self.tile_size, 32, 8192)
        _check_range(name, "workers", self.workers, 0, 1024)
        _check_range(name, "scale", self.scale, MIN_SCALE, MAX_SCALE)
        _check_range(name, "overlap", self.overlap, 0.0, 0.49)
        _check_range(name, "batch_size", self.batch_size, 0, 256)
        _check_choice(name, "device", self.device, DEVICES)
        _check_choice(name, "blend", self.blend, BLEND_MODES)


@dataclass(frozen=True)
class PostprocessConfig(JsonConfig):
    """Turning class probabilities into instance labels.

    Attributes
    ----------
    foreground_threshold : float
        A pixel is an object if P(interior) + P(boundary) exceeds this.
    seed_threshold : float
        Connected regions with P(interior) above this seed the watershed.
    min_seed_size : int
        Seeds smaller than this many pixels are dropped (avoids over-splits).
    min_size : int
        Objects smaller than this many pixels are removed.
    min_relative_size : float
        Objects smaller than this fraction of the median object area of the
        image (of each plane or large-image window) are removed: fragments
        and debris far smaller than the nuclei around them.  0 disables.
    fill_holes : bool
        Fill holes inside each object.
    split_distance : int
        When > 0, seed regions holding several distance-transform peaks at
        least this many pixels apart are split (touching nuclei whose
        interiors fused); the watershed then runs on the foreground's
        distance transform.  0 disables.
    min_confidence : float
        Objects whose mean foreground probability (P(interior) + P(boundary))
        is below this are removed: look-alikes the network is unsure of as a
        whole.  0 disables.

    """

    foreground_threshold: float = 0.5
    seed_threshold: float = 0.6
    min_seed_size: int = 4
    min_size: int = 15
    min_relative_size: float = 0.0
    fill_holes: bool = True
    split_distance: int = 0
    min_confidence: float = 0.0

    def __post_init__(self) -> None:
        name = type(self).__name__
        _check_range(name, "foreground_threshold", self.foreground_threshold, 0.0, 1.0)
        _check_range(name, "seed_threshold", self.seed_threshold, 0.0, 1.0)
        _check_range(name, "min_seed_size", self.min_seed_size, 0, 10**6)
        _check_range(name, "min_size", self.min_size, 0, 10**9)
        _check_range(name, "min_relative_size", self.min_relative_size, 0.0, 1.0)
        _check_range(name, "split_distance", self.split_distance, 0, 1000)
        _check_range(name, "min_confidence", self.min_confidence, 0.0, 1.0)


ANNOTATION_MODES = ("full", "rois", "changed")
SCHEDULES = ("cosine", "plateau", "constant")
LOSSES = ("ce_dice", "focal_dice")
TRAINED_PARTS = ("all", "encoder", "decoder")


@dataclass(frozen=True)
class TrainingConfig(JsonConfig):
    """Settings of a (fine-)tuning run.

    Attributes
    ----------
    patch_size : int
        Edge of the square training patches (pixels).
    batch_size : int
        Patches per optimisation step.
    learning_rate : float
        Peak AdamW learning rate.
    weight_decay : float
        AdamW weight decay.
    warmup_steps : int
        Linear warm-up steps before the schedule.
    schedule : str
        ``cosine``, ``plateau`` or ``constant``.
    max_steps, max_epochs : int or None
        Stop after this many steps / passes over the annotated patches.
    max_seconds : float or None
        Stop after this wall-clock budget (the first limit reached wins).
    val_every : int
        Steps between validations.
    early_stop_patience : int
        Validations without improvement before stopping (0 disables).
    annotation_mode : str
        ``full`` (all pixels reviewed), ``rois`` (only inside given ROIs) or
        ``changed`` (only where the user edited the prediction, plus a margin).
    changed_margin : int
        Margin in pixels around edited areas in ``changed`` mode.
    corrected_weight : float
        Loss weight of pixels the user corrected (1 = no up-weighting).
    loss : str
        ``ce_dice`` (class-weighted cross-entropy + soft Dice) or
        ``focal_dice``.
    augment : bool
        Random flips, rot90, affine/elastic and intensity changes.
    stain_jitter : float
        With ``augment``, the probability that a colour patch's stains
        (haematoxylin, eosin, DAB) are jittered
        (:func:`~napari_unet.core.train.augment.random_stain`); 0 disables.
        2D training only.
    scale_augment : float
        With ``augment``, a warped patch is zoomed by a factor drawn
        log-uniformly in ``[1 / scale_augment, scale_augment]`` (1.25: nuclei
        0.8x to 1.25x as large as annotated); larger values teach a range of
        magnifications.  2D training only.
    val_fraction : float
        Fraction of annotated images (or image area) held out for validation
        when no validation set is given.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``mps``.
    amp : bool
        Mixed precision: float16 on CUDA, bfloat16 on CPUs that compute it
        natively (AVX512-BF16 or AMX: about 1.5x the fine-tuning steps per
        second); float32 elsewhere.  Weights and optimiser state stay float32.
    seed : int
        Seed for sampling and augmentation.
    num_threads : int
        CPU threads torch may use while training (0 = all cores).
    replay_fraction : float
        Share of training patches drawn from the starting model's replay set
        (annotated crops of its own training images, shipped with the bundled
        default model and inherited by its fine-tuned children), so a
        fine-tune on a few images of one kind keeps what the model knew about
        others (rehearsal); only crops that reach the branches that train
        (:mod:`~napari_unet.core.train.branches`).  Ignored when the model
        has no replay set.
    parent_share : float
        After a validated fine-tune of a trained model, also validate the
        kept weights averaged with the starting ones (this share of the
        starting model) and keep the average unless it validates worse.
    anchor_decay : float
        Pull the trained weights back towards the starting ones after every
        step, ``w -= lr * anchor_decay * (w - w_start)`` (decoupled, as
        AdamW's weight decay pulls towards 0; an L2-SP regulariser, Li et
        al. 2018); 0 disables.  2D training only.
    trained_part : str
        Which part of each UNet learns: ``all``; ``encoder`` (the contracting
        path and the bottleneck; decoder and head keep the starting weights)
        or ``decoder`` (upsamplers, decoder blocks and head; the encoder keeps
        its weights and BatchNorm statistics, and no gradient flows through
        it, so a step costs less).  2D training only.
    freeze_batch_norm : bool
        Keep BatchNorm running statistics as the starting model had them
        (normalise with them, never update them); scales and shifts still learn.
        The fine-tuning recipe sets it for a trained starting model
        (:func:`~napari_unet.core.train.fine_tune.fine_tune_recipe`).
    retune_thresholds : bool
        Rechoose the foreground and seed thresholds of a fine-tuned child on
        the held-out corrections (kept only when strictly better there);
        otherwise the child keeps its parent's.
    quick_checks : bool
        Score the held-out corrections during training with one network pass
        (no test-time flips, about four times cheaper, so more checks fit the
        validation share); the scores reported at the end (before and after)
        are computed as the model runs, with its flips.

    """

    patch_size: int = 128
    batch_size: int = 8
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    schedule: str = "cosine"
    max_steps: int | None = None
    max_epochs: int | None = None
    max_seconds: float | None = 60.0
    val_every: int = 25
    early_stop_patience: int = 0
    annotation_mode: str = "full"
    changed_margin: int = 8
    corrected_weight: float = 2.0
    loss: str = "ce_dice"
    augment: bool = True
    stain_jitter: float = 0.0
    scale_augment: float = 1.25
    val_fraction: float = 0.2
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    num_threads: int = 0
    replay_fraction: float = 0.25
    parent_share: float = 0.0
    anchor_decay: float = 0.0
    trained_part: str = "all"
    freeze_batch_norm: bool = False
    retune_thresholds: bool = False
    quick_checks: bool = True

    def __post_init__(self) -> None:
        name = type(self).__name__
        _check_range(name, "num_threads", self.num_threads, 0, 1024)
        _check_range(name, "replay_fraction", self.replay_fraction, 0.0, 0.9)
        _check_range(name, "parent_share", self.parent_share, 0.0, 0.9)
        _check_range(name, "stain_jitter", self.stain_jitter, 0.0, 1.0)
        _check_range(name, "scale_augment", self.scale_augment, 1.0, 4.0)
        _check_range(name, "anchor_decay", self.anchor_decay, 0.0, 1000.0)
        _check_range(name, "patch_size", self.patch_size, 16, 4096)
        _check_range(name, "batch_size", self.batch_size, 1, 1024)
        _check_range(name, "learning_rate", self.learning_rate, 1e-8, 1.0)
        _check_range(name, "val_fraction", self.val_fraction, 0.0, 0.9)
        _check_range(name, "corrected_weight", self.corrected_weight, 0.0, 100.0)
        _check_choice(name, "schedule", self.schedule, SCHEDULES)
        _check_choice(name, "annotation_mode", self.annotation_mode, ANNOTATION_MODES)
        _check_choice(name, "loss", self.loss, LOSSES)
        _check_choice(name, "trained_part", self.trained_part, TRAINED_PARTS)
        _check_choice(name, "device", self.device, DEVICES)
        if self.max_steps is None and self.max_epochs is None and self.max_seconds is None:
            raise ConfigError(f"{name}: set at least one of max_steps, max_epochs or max_seconds")
