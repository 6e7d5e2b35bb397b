"""Train one default-model candidate from the data pack, with every augmentation on the GPU.

Made for a GPU machine that has torch, numpy, scipy, scikit-image and
Pillow but no ``../shared``: it reads ``data_pack/nuclei_v2.npz``
(:mod:`training.data_pack`) and napari-unet's own network (:mod:`napari_unet.core.models.network`),
trains for a wall-clock budget with bf16 autocast and channels-last, and writes
the exponential moving average of the weights as ``<out>/<name>.safetensors``
(the model config in its metadata) and a JSON log ``<logs>/<name>.json``.
It runs on the CPU too (``training/cpu_train.sh``): in bfloat16 where the processor computes it natively
(``runtime.mixed_precision_on``), else in float32; ``--float32`` forces float32 anywhere.

Per training sample, on the device: an image is drawn (groups weighted, see
``GROUP_WEIGHTS``; images within a group by the square root of their area),
a random rotation, flip and zoom (log-uniform in ``ZOOM``) are applied in one
``grid_sample`` (labels by nearest neighbour), the 3-class target
(background / interior / boundary) is rebuilt from the resampled labels by
:func:`napari_unet.core.train.pixel_classes.labels_to_classes_torch` (the same
classes as the product's ``labels_to_classes``, computed on the device for the
whole batch), and contrast, brightness, gamma, blur, noise and (colour
images) channel jitter are applied.  Grey fluorescence images are sometimes
put in one colour channel of an otherwise black RGB image, as RGB
fluorescence files are.  Pixels outside the source image weigh 0.

Usage::

    python -m training.gpu_train --name rgb_b16 --in-channels 3 --base-channels 16 --seconds 390 --out OUT
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi
from torch.nn import functional

from napari_unet.core.config import ModelConfig
from napari_unet.core.models.network import UNet, count_parameters
from napari_unet.core.predict.runtime import mixed_precision_on
from napari_unet.core.train.losses import class_weights_from_targets, segmentation_loss
from napari_unet.core.train.pixel_classes import labels_to_classes_torch
from training.data_pack import PackedImage, load_pack

GROUP_WEIGHTS = {"fluorescence": 0.35, "brightfield": 0.12, "colour": 0.25, "tissue": 0.28}
ZOOM = (0.7, 1.45)
FOREGROUND_CENTRED = 0.5
PSEUDO_COLOUR = 0.1


@dataclass
class DeviceImage:
    """One training image on the device.

    Attributes
    ----------
    smooth : tensor (C + 2, Y, X) float32
        Normalised image channels, normalised distance to the object edge, ones (validity).
    labels : tensor (1, Y, X) float32
        Instance labels.
    foreground : array (K, 2) int
        Sampled ``(y, x)`` foreground pixels for foreground-centred crops.
    colour, fluorescence : bool
        Whether the image is RGB; whether it is grey fluorescence.

    """

    smooth: torch.Tensor
    labels: torch.Tensor
    foreground: np.ndarray
    colour: bool
    fluorescence: bool


def edge_distance(labels: np.ndarray) -> np.ndarray:
    """Distance to the object's edge divided by the object's largest distance, ``(Y, X)`` float32 in [0, 1]."""
    out = np.zeros(labels.shape, dtype=np.float32)
    for index, window in enumerate(ndi.find_objects(labels), start=1):
        if window is None:
            continue
        window = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in window)
        mask = labels[window] == index
        distance = ndi.distance_transform_edt(mask)
        out[window][mask] = distance[mask] / max(float(distance.max()), 1.0)
    return out


def to_device(item: PackedImage, in_channels: int, device: torch.device, rng: np.random.Generator) -> DeviceImage:
    """Move one packed image (normalised, with its distance map) to ``device``."""
    image = item.normalized()[:in_channels]
    if in_channels == 1 and item.image.shape[-1] == 3:
        raise ValueError(f"{item.key} is colour; a 1-channel model trains on grey groups only")
    distance = edge_distance(item.labels)
    smooth = np.concatenate([image, distance[None], np.ones_like(distance)[None]]).astype(np.float32)
    ys, xs = np.nonzero(item.labels)
    pick = rng.choice(len(ys), size=min(len(ys), 4096), replace=False) if len(ys) else np.zeros(0, dtype=int)
    return DeviceImage(
        smooth=torch.from_numpy(smooth).to(device),
        labels=torch.from_numpy(item.labels.astype(np.float32)[None]).to(device),
        foreground=np.stack([ys[pick], xs[pick]], axis=1),
        colour=item.image.shape[-1] == 3,
        fluorescence=item.group == "fluorescence",
    )


class Sampler:
    """Draws augmented training batches from images on the device."""

    def __init__(
        self,
        images: list[DeviceImage],
        groups: list[str],
        patch: int,
        seed: int,
        sources: list[str] | None = None,
        source_shares: dict[str, float] | None = None,
        contact_weight: float = 0.0,
    ) -> None:
        self.images, self.patch, self.contact_weight = images, patch, contact_weight
        self.rng = np.random.default_rng(seed)
        weights = np.array([GROUP_WEIGHTS[g] / sum(1 for h in groups if h == g) for g in groups], dtype=np.float64)
        area = np.array([math.sqrt(i.labels.shape[-1] * i.labels.shape[-2]) for i in images])
        share = {g: area[[k for k, h in enumerate(groups) if h == g]].mean() for g in set(groups)}
        weights *= area / np.array([share[g] for g in groups])
        self.probabilities = with_source_shares(weights / weights.sum(), sources or [], source_shares or {})
        device = images[0].labels.device
        offsets = torch.arange(patch, device=device, dtype=torch.float32) - patch / 2 + 0.5
        self.offsets = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), dim=-1)  # (P, P, 2) as (u_y, u_x)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``image (N, C, P, P)``, ``classes (N, P, P)`` int64, ``distance (N, P, P)``, ``weight (N, P, P)``.

        The random draws happen on the host and reach the device in one
        non-blocking copy, so drawing a batch never waits for the GPU.
        """
        picks = self.rng.choice(len(self.images), size=size, p=self.probabilities)
        params = np.stack([self._transform(self.images[index]) for index in picks])  # (N, 8)
        params = _to_device(params, self.offsets.device)
        grids = self._grids(params)
        smooth, labels = [], []
        for number, index in enumerate(picks):
            item, grid = self.images[index], grids[number : number + 1]
            smooth.append(functional.grid_sample(item.smooth[None], grid, align_corners=False))
            labels.append(functional.grid_sample(item.labels[None], grid, mode="nearest", align_corners=False))
        smooth_t, labels_t = torch.cat(smooth), torch.cat(labels)[:, 0]
        image, distance, valid = smooth_t[:, :-2], smooth_t[:, -2], smooth_t[:, -1]
        image = self._intensity(image, params[:, 8:10].bool())
        weight = (valid > 0.999).float()
        if self.contact_weight:
            weight = weight * (1.0 + self.contact_weight * near_contacts(labels_t))
        classes = labels_to_classes_torch(labels_t.to(torch.int32))  # ids < 2**24: exact in the float32 labels
        return image, classes, distance.clamp(0, 1), weight

    def _transform(self, item: DeviceImage) -> np.ndarray:
        """Host-side draw for one sample: 2x2 matrix, centre (y, x), image size (y, x), colour, fluorescence."""
        height, width = item.labels.shape[-2:]
        if len(item.foreground) and self.rng.random() < FOREGROUND_CENTRED:
            centre_y, centre_x = item.foreground[self.rng.integers(len(item.foreground))]
        else:
            centre_y, centre_x = self.rng.uniform(0, height), self.rng.uniform(0, width)
        zoom = math.exp(self.rng.uniform(math.log(ZOOM[0]), math.log(ZOOM[1])))
        angle = self.rng.uniform(0, 2 * math.pi)
        flip = -1.0 if self.rng.random() < 0.5 else 1.0
        cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
        return np.array(
            [cos, -sin * flip, sin, cos * flip, centre_y, centre_x, height, width, item.colour, item.fluorescence],
            dtype=np.float32,
        )

    def _grids(self, params: torch.Tensor) -> torch.Tensor:
        """``grid_sample`` grids ``(N, P, P, 2)`` (x, y in [-1, 1]) from the drawn transforms ``(N, 10)``."""
        matrix = params[:, :4].view(-1, 1, 1, 2, 2)
        source = (matrix @ self.offsets[None, ..., None])[..., 0] + params[:, None, None, 4:6]
        size = params[:, None, None, 6:8]
        normalised = (2 * source + 1) / size - 1  # (N, P, P, 2) as (y, x)
        return normalised.flip(-1)

    def _intensity(self, image: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
        """Intensity augmentations of ``image (N, C, P, P)``; ``flags (N, 2)``: colour, grey fluorescence."""
        n, channels = image.shape[:2]
        device = image.device
        rand = lambda *shape: torch.rand(*shape, device=device)  # noqa: E731
        contrast = torch.exp((rand(n, 1, 1, 1) * 2 - 1) * math.log(1.35))
        image = image * contrast + (rand(n, 1, 1, 1) - 0.5) * 0.2
        colour = flags[:, 0].view(n, 1, 1, 1)
        if channels == 3:
            jitter = 1 + (rand(n, 3, 1, 1) - 0.5) * 0.2
            image = torch.where(colour, image * jitter + (rand(n, 3, 1, 1) - 0.5) * 0.1, image)
        gamma = torch.exp((rand(n, 1, 1, 1) * 2 - 1) * math.log(1.5))
        use_gamma = rand(n, 1, 1, 1) < 0.3
        image = torch.where(use_gamma, image.clamp(min=0) ** gamma, image)
        image = torch.where(rand(n, 1, 1, 1) < 0.2, gaussian_blur(image, float(self.rng.uniform(0.6, 1.6))), image)
        noise = torch.randn_like(image) * rand(n, 1, 1, 1) * 0.06
        image = torch.where(rand(n, 1, 1, 1) < 0.3, image + noise, image)
        if channels == 3:
            fluorescence = flags[:, 1].view(n, 1, 1, 1)
            keep = functional.one_hot(torch.randint(0, 3, (n,), device=device), 3).view(n, 3, 1, 1).bool()
            pseudo = fluorescence & (rand(n, 1, 1, 1) < PSEUDO_COLOUR)
            image = torch.where(pseudo & ~keep, torch.zeros_like(image), image)
        return image


def with_source_shares(probabilities: np.ndarray, sources: list[str], shares: dict[str, float]) -> np.ndarray:
    """Give each source in ``shares`` that fraction of the draws; the others share the rest as before.

    Parameters
    ----------
    probabilities : array (N,) float64
        Draw probability of each image (sums to 1).
    sources : list of str
        Source of each image (``key`` before the ``/``); may be empty when ``shares`` is.
    shares : dict of str to float
        Wanted fraction of the draws per source (their sum below 1).

    Returns
    -------
    array (N,) float64
        New probabilities: within a source, images keep their relative weights.

    """
    if not shares:
        return probabilities
    if sum(shares.values()) >= 1.0 or min(shares.values()) <= 0.0:
        sys.exit(f"gpu_train: source shares must be positive and sum below 1, got {shares}")
    source_array = np.array(sources)
    out = probabilities.copy()
    chosen = np.isin(source_array, list(shares))
    if chosen.all():
        sys.exit(f"gpu_train: every training image is from {sorted(shares)}: their shares cannot sum below 1")
    out[~chosen] *= (1.0 - sum(shares.values())) / out[~chosen].sum()
    for source, fraction in shares.items():
        members = source_array == source
        if not members.any():
            sys.exit(f"gpu_train: no training image from source {source!r}")
        out[members] *= fraction / out[members].sum()
    return out


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Copy a host array to ``device`` without blocking (through pinned memory on CUDA)."""
    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur every channel of ``image (N, C, Y, X)`` with a Gaussian of ``sigma`` pixels."""
    radius = max(1, round(3 * sigma))
    x = torch.arange(-radius, radius + 1, device=image.device, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = image.shape[1]
    out = functional.conv2d(
        functional.pad(image, (radius, radius, 0, 0), mode="reflect"),
        kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1),
        groups=channels,
    )
    return functional.conv2d(
        functional.pad(out, (0, 0, radius, radius), mode="reflect"),
        kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1),
        groups=channels,
    )


def four_neighbours(labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Up, down, left and right neighbour of every pixel of ``labels (N, Y, X)`` (edges replicated), each (N, Y, X)."""
    padded = functional.pad(labels[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    return padded[:, :-2, 1:-1], padded[:, 2:, 1:-1], padded[:, 1:-1, :-2], padded[:, 1:-1, 2:]


def near_contacts(labels: torch.Tensor) -> torch.Tensor:
    """``(N, Y, X)`` float 1 within one pixel of where two objects of ``labels (N, Y, X)`` touch, else 0.

    Where nuclei touch, the boundary class is all that separates them; weighting these pixels up (the UNet
    paper's border weights, in their simplest form) asks the network to keep touching nuclei apart.
    """
    contact = torch.zeros_like(labels, dtype=torch.bool)
    for neighbour in four_neighbours(labels):
        contact |= (neighbour != labels) & (neighbour > 0)
    contact &= labels > 0
    return functional.max_pool2d(contact[:, None].float(), 3, stride=1, padding=1)[:, 0]


def training_loss(
    logits: torch.Tensor,
    classes: torch.Tensor,
    distance: torch.Tensor,
    weight: torch.Tensor,
    class_weights: torch.Tensor,
) -> torch.Tensor:
    """CE + Dice on the 3 class channels; plus BCE on the distance channel when the network has a fourth."""
    loss = segmentation_loss(logits[:, :3], classes, weight, class_weights=class_weights)
    if logits.shape[1] == 4:
        per_pixel = functional.binary_cross_entropy_with_logits(logits[:, 3].float(), distance, reduction="none")
        loss = loss + (per_pixel * weight).sum() / weight.sum().clamp(min=1.0)
    return loss


class Ema:
    """Exponential moving average of a network's parameters and float buffers."""

    def __init__(self, network: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in network.state_dict().items()}
        self.float_keys = [k for k, v in self.state.items() if v.is_floating_point()]

    @torch.no_grad()
    def update(self, network: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        live = network.state_dict()
        torch._foreach_lerp_([self.state[k] for k in self.float_keys], [live[k] for k in self.float_keys], 1 - decay)
        for key in self.state:
            if key not in self.float_keys:
                self.state[key].copy_(live[key])


def save_weights(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write ``state`` as safetensors through a temporary file (float16 above base 16, to stay under 16 MiB)."""
    from safetensors.torch import save_file

    half = json.loads(metadata["model_config"])["base_channels"] > 16
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.half() if half and v.is_floating_point() else v).contiguous().cpu() for k, v in state.items()}
    temporary = path.with_name(path.name + ".partial")
    save_file(tensors, str(temporary), metadata=metadata)
    temporary.replace(path)


def val_loss(network: torch.nn.Module, batches: list, class_weights: torch.Tensor, amp: bool) -> float:
    """Mean training loss of ``network`` (eval mode) on fixed validation batches."""
    network.eval()
    total = 0.0
    device_type = next(network.parameters()).device.type
    with torch.no_grad(), torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
        for image, classes, distance, weight in batches:
            total += float(training_loss(network(image), classes, distance, weight, class_weights))
    network.train()
    return total / len(batches)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--pack", type=Path, default=Path("data_pack/nuclei_v2.npz"))
    parser.add_argument("--in-channels", type=int, default=3, choices=(1, 3))
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--distance", action="store_true", help="add a distance-to-edge output (4th channel)")
    parser.add_argument("--groups", default=",".join(GROUP_WEIGHTS), help="image groups to train on")
    parser.add_argument("--seconds", type=float, default=390.0, help="wall-clock budget of this invocation")
    parser.add_argument(
        "--steps", type=int, default=0, help="schedule over this many steps (across resumed runs) instead of --seconds"
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--init", type=Path, default=None, help="start from these weights (a .safetensors file)")
    parser.add_argument(
        "--init-prefix",
        default="",
        help="take only the --init weights under this prefix (e.g. 'gray.' from the bundled two-network default)",
    )
    parser.add_argument(
        "--snapshot-at", type=float, default=0.0, help="also save the EMA weights as <name>_mid at this budget fraction"
    )
    parser.add_argument("--warmup", type=int, default=300, help="steps of linear learning-rate warm-up")
    parser.add_argument("--limit", type=int, default=0, help="use at most this many images (smoke tests)")
    parser.add_argument(
        "--contact-weight", type=float, default=0.0, help="extra loss weight near where two nuclei touch (0: none)"
    )
    parser.add_argument(
        "--source-share",
        default="",
        help="SOURCE=FRACTION[,...]: these sources get that fraction of the training draws (e.g. dsb2018_train=0.3)",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="resume from / save the full training state (optimizer, step) here",
    )
    parser.add_argument("--checkpoint-every", type=float, default=300.0, help="seconds between checkpoint saves")
    parser.add_argument(
        "--float32", action="store_true", help="train in float32 even where bfloat16 is native (a side-by-side pace)"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--logs", type=Path, default=None, help="folder for the JSON log (default: --out)")
    return parser.parse_args(argv)


@dataclass
class Run:
    """Everything one training invocation works with."""

    config: ModelConfig
    sampler: Sampler
    val_batches: list
    class_weights: torch.Tensor
    network: torch.nn.Module
    optimizer: torch.optim.Optimizer
    ema: Ema
    log: dict
    step: int = 0
    samples: int = 0


def parse_shares(text: str) -> dict[str, float]:
    """``"a=0.2,b=0.1"`` as ``{"a": 0.2, "b": 0.1}`` (empty text: no shares)."""
    shares = {}
    for part in filter(None, text.split(",")):
        source, _, fraction = part.partition("=")
        try:
            shares[source.strip()] = float(fraction)
        except ValueError:
            sys.exit(f"gpu_train: --source-share wants SOURCE=FRACTION, got {part!r}")
    return shares


def build_run(args: argparse.Namespace, device: torch.device) -> Run:
    """Load the data onto ``device``, build the network (from ``--init``), optimizer and EMA."""
    rng = np.random.default_rng(args.seed)
    groups = args.groups.split(",")
    packed = [p for p in load_pack(args.pack, ("train", "val")) if p.group in groups]
    packed = packed[: args.limit] if args.limit else packed
    train = [p for p in packed if p.split == "train"]
    val = [p for p in packed if p.split == "val"] or train[:2]
    images = [to_device(p, args.in_channels, device, rng) for p in train]
    sources = [p.key.split("/", 1)[0] for p in train]
    shares = parse_shares(args.source_share)
    sampler = Sampler(images, [p.group for p in train], args.patch, args.seed, sources, shares, args.contact_weight)
    val_images = [to_device(p, args.in_channels, device, rng) for p in val]
    val_batches = [Sampler(val_images, [p.group for p in val], args.patch, 1).batch(args.batch) for _ in range(4)]
    warm = [sampler.batch(args.batch) for _ in range(8)]
    targets, weights = [b[1].cpu().numpy() for b in warm], [b[3].cpu().numpy() for b in warm]
    class_weights = torch.as_tensor(class_weights_from_targets(targets, weights), device=device)
    head = "bg_interior_boundary_distance" if args.distance else "bg_interior_boundary"
    config = ModelConfig(
        in_channels=args.in_channels,
        out_channels=4 if args.distance else 3,
        base_channels=args.base_channels,
        head=head,
    )
    network = UNet(config)
    if args.init is not None:
        network.load_state_dict(_float_state(args.init, args.init_prefix))
    network = network.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=1e-4, fused=device.type == "cuda")
    log = {
        "name": args.name,
        "args": {k: str(v) for k, v in vars(args).items()},
        "model_config": config.to_dict(),
        "head": head,
        "parameters": count_parameters(network),
        "train_images": len(train),
        "val_images": len(val),
        "class_weights": class_weights.tolist(),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "records": [],
    }
    return Run(config, sampler, val_batches, class_weights, network, optimizer, Ema(network, decay=0.999), log)


def _float_state(path: Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """Float32 weights of ``path`` (a .safetensors file), only those under ``prefix``, with the prefix removed."""
    from safetensors.torch import load_file

    weights = {k[len(prefix) :]: v for k, v in load_file(str(path)).items() if k.startswith(prefix)}
    if not weights:
        sys.exit(f"gpu_train: no weights under the prefix {prefix!r} in {path}")
    return {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}


def save_checkpoint(run: Run, path: Path) -> None:
    """Write the whole training state (weights, EMA, optimizer, step, random states) through a temporary file."""
    state = {
        "network": run.network.state_dict(),
        "ema": run.ema.state,
        "optimizer": run.optimizer.state_dict(),
        "step": run.step,
        "samples": run.samples,
        "records": run.log["records"],
        "sampler_rng": run.sampler.rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    torch.save(state, temporary)
    temporary.replace(path)


def load_checkpoint(run: Run, path: Path) -> None:
    """Continue ``run`` from a :func:`save_checkpoint` file."""
    state = torch.load(path, map_location=next(run.network.parameters()).device, weights_only=False)
    run.network.load_state_dict(state["network"])
    run.ema.state = state["ema"]
    run.optimizer.load_state_dict(state["optimizer"])
    run.step, run.samples = int(state["step"]), int(state["samples"])
    run.log["records"] = list(state["records"])
    run.sampler.rng.bit_generator.state = state["sampler_rng"]
    torch.set_rng_state(state["torch_rng"])
    run.log["resumed_from_step"] = run.step


def schedule_fraction(run: Run, args: argparse.Namespace, elapsed: float) -> float:
    """How far along the learning-rate schedule is: by steps with ``--steps``, else by this run's seconds."""
    return run.step / args.steps if args.steps else elapsed / args.seconds


def train_step(run: Run, args: argparse.Namespace, lr: float, amp: bool) -> torch.Tensor:
    """One optimizer step on a fresh augmented batch; returns the loss (not synchronised)."""
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    image, classes, distance, weight = run.sampler.batch(args.batch)
    with torch.autocast(image.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = run.network(image.contiguous(memory_format=torch.channels_last))
    loss = training_loss(logits, classes, distance, weight, run.class_weights)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    run.ema.update(run.network, run.step)
    run.step += 1
    run.samples += args.batch
    return loss


def train(run: Run, args: argparse.Namespace, amp: bool) -> None:
    """Train until ``--steps`` are done or ``--seconds`` have passed, logging and checkpointing as it goes."""
    metadata = _weights_metadata(run, args)
    started = last_log = last_checkpoint = time.perf_counter()
    snapshot_pending = args.snapshot_at > 0
    losses: list[float] = []
    first_sample = run.samples
    while (elapsed := time.perf_counter() - started) < args.seconds and not (args.steps and run.step >= args.steps):
        fraction = min(1.0, schedule_fraction(run, args, elapsed))
        if snapshot_pending and fraction >= args.snapshot_at:
            snapshot_pending = False
            save_weights(run.ema.state, args.out / f"{args.name}_mid.safetensors", {**metadata, "steps": str(run.step)})
            run.log["snapshot_step"] = run.step
        lr = args.lr * min(1.0, (run.step + 1) / max(1, args.warmup)) * 0.5 * (1 + math.cos(math.pi * fraction))
        loss = train_step(run, args, lr, amp)
        if run.step % 10 == 1:
            losses.append(float(loss.detach()))  # synchronises: only every 10th step
        now = time.perf_counter()
        if now - last_log > 30 or run.step == 1:
            last_log = now
            _record(run, args, elapsed, lr, losses, (run.samples - first_sample) / max(elapsed, 1e-6))
        if args.checkpoint is not None and now - last_checkpoint > args.checkpoint_every:
            last_checkpoint = now
            save_checkpoint(run, args.checkpoint)
    run.log["train_s"] = time.perf_counter() - started


def _record(
    run: Run, args: argparse.Namespace, elapsed: float, lr: float, losses: list[float], samples_per_s: float
) -> None:
    record = {
        "step": run.step,
        "elapsed_s": round(elapsed, 1),
        "lr": lr,
        "samples_per_s": samples_per_s,
        "train_loss": float(np.mean(losses[-20:])) if losses else float("nan"),
    }
    run.log["records"].append(record)
    print(json.dumps({"name": args.name, **record}), flush=True)


def _weights_metadata(run: Run, args: argparse.Namespace) -> dict[str, str]:
    return {"model_config": json.dumps(run.config.to_dict()), "head": run.log["head"], "name": args.name}


def finish(run: Run, args: argparse.Namespace, amp: bool) -> None:
    """Score the live and EMA weights on the validation batches; write the EMA weights and the log."""
    ema_network = UNet(run.config).to(next(run.network.parameters()).device).to(memory_format=torch.channels_last)
    ema_network.load_state_dict(run.ema.state)
    run.log.update(
        steps=run.step,
        samples=run.samples,
        val_loss_live=val_loss(run.network, run.val_batches, run.class_weights, amp),
        val_loss_ema=val_loss(ema_network, run.val_batches, run.class_weights, amp),
        finished=not args.steps or run.step >= args.steps,
    )
    metadata = {**_weights_metadata(run, args), "steps": str(run.step)}
    save_weights(run.ema.state, args.out / f"{args.name}.safetensors", metadata)
    logs = args.logs or args.out
    logs.mkdir(parents=True, exist_ok=True)
    (logs / f"{args.name}.json").write_text(json.dumps(run.log, indent=1))
    print(json.dumps({k: v for k, v in run.log.items() if k != "records"}), flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    amp = mixed_precision_on(device) and not args.float32
    torch.backends.cudnn.benchmark = True
    run = build_run(args, device)
    if args.checkpoint is not None and args.checkpoint.is_file():
        load_checkpoint(run, args.checkpoint)
        print(json.dumps({"name": args.name, "resumed_at_step": run.step}), flush=True)
    run.log["setup_s"] = time.perf_counter() - started
    run.log["precision"] = "bfloat16" if amp else "float32"
    args.out.mkdir(parents=True, exist_ok=True)
    train(run, args, amp)
    if args.checkpoint is not None:
        save_checkpoint(run, args.checkpoint)
    finish(run, args, amp)


if __name__ == "__main__":
    main()
