"""A dimension-aware UNet with a head made for separating touching nuclei.

Output head (``bg_interior_boundary``)
--------------------------------------
The network predicts, per pixel, logits for three classes:

0. background,
1. object interior,
2. object boundary (the inner rim of every instance, so the rim between two
   touching nuclei is boundary, not interior).

Softmax turns them into probabilities.  Interior regions of touching nuclei
are separated by a boundary band, so connected components of high interior
probability are one seed per nucleus; a seeded watershed over the foreground
(interior + boundary) then grows each seed back to the full object
(:mod:`napari_unet.core.labels.postprocess`).  We chose this over a foreground +
distance regression because a 3-class softmax trains stably with few labels
(fine-tuning on a handful of corrected objects) and its probabilities double
as an interpretable map for the user.

The network accepts inputs whose spatial sizes are multiples of
``2**depth``; :mod:`napari_unet.core.predict.planar` pads other sizes.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import nn

from napari_unet.core.config import ModelConfig


def _conv(dims: int) -> type[nn.Module]:
    return nn.Conv2d if dims == 2 else nn.Conv3d


def _norm(kind: str, dims: int, channels: int) -> nn.Module:
    if kind == "batch":
        return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(channels)
    if kind == "instance":
        return (nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d)(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(num_groups=min(8, channels), num_channels=channels)
    return nn.Identity()


class ConvBlock(nn.Sequential):
    """Two (conv 3 -> norm -> ReLU) layers.

    Input ``(N, C_in, *S)`` -> output ``(N, C_out, *S)``.
    """

    def __init__(self, dims: int, c_in: int, c_out: int, norm: str, dropout: float = 0.0) -> None:
        conv = _conv(dims)
        bias = norm == "none"
        layers: list[nn.Module] = [
            conv(c_in, c_out, 3, padding=1, bias=bias),
            _norm(norm, dims, c_out),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [conv(c_out, c_out, 3, padding=1, bias=bias), _norm(norm, dims, c_out), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class UNet(nn.Module):
    """UNet with ``depth`` down/up-sampling levels.

    Parameters
    ----------
    config : ModelConfig
        Architecture; ``config.spatial_dims`` selects 2D or 3D layers.

    Notes
    -----
    ``forward`` maps ``(N, in_channels, *S)`` to logits
    ``(N, out_channels, *S)`` where every entry of ``S`` is a multiple of
    ``config.size_multiple``.

    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        dims, norm = config.spatial_dims, config.norm
        widths = [config.base_channels * 2**level for level in range(config.depth + 1)]
        self.encoders = nn.ModuleList()
        c_prev = config.in_channels
        for level, width in enumerate(widths):
            dropout = config.dropout if level == config.depth else 0.0
            self.encoders.append(ConvBlock(dims, c_prev, width, norm, dropout))
            c_prev = width
        pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d
        self.pools = nn.ModuleList(pool(config.pool_kernel(level)) for level in range(config.depth))
        up_conv = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(config.depth)):
            kernel = config.pool_kernel(level)
            self.upsamplers.append(up_conv(widths[level + 1], widths[level], kernel, stride=kernel))
            self.decoders.append(ConvBlock(dims, 2 * widths[level], widths[level], norm))
        self.head = _conv(dims)(widths[0], config.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, out_channels, *S)`` for input ``(N, in_channels, *S)``."""
        multiples = self.config.size_multiples
        if any(s % m for s, m in zip(x.shape[2:], multiples, strict=True)):
            shown = multiples[0] if len(set(multiples)) == 1 else multiples
            raise ValueError(
                f"UNet input spatial shape {tuple(x.shape[2:])} must be a multiple of {shown}; "
                "use napari_unet.core.predict.planar, which pads for you"
            )
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x)
            if level < self.config.depth:
                skips.append(x)
                x = self.pools[level](x)
        for upsample, decoder in zip(self.upsamplers, self.decoders, strict=True):
            x = decoder(torch.cat([upsample(x), skips.pop()], dim=1))
        return self.head(x)


class GreyColourUNet(nn.Module):
    """Two UNets in one model: a 1-channel one for grey inputs and a 3-channel one for colour inputs.

    Parameters
    ----------
    config : ModelConfig
        ``branches="gray_colour"``, ``in_channels=3``; both branches share its
        depth, width, norm and head.

    Notes
    -----
    ``forward`` maps ``(N, 3, *S)`` to logits ``(N, out_channels, *S)``.  An
    input whose three channels are equal everywhere (a grey image, repeated
    by :func:`napari_unet.core.data.normalize.normalize_plane`) goes to ``grey``
    as its first channel; any other input to ``colour``.  Grey and colour
    images are different problems (bright fluorescent or inverted
    brightfield nuclei versus stained ones): two small networks, each
    trained on its own kind, segment both better than one network of either
    width trained on both (``benchmarks/results/default_model_v2.json``),
    at the cost of one small network per tile.  A colour tile whose pixels
    all have equal R, G and B (a saturated white area) goes to the grey branch.

    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.gray = UNet(replace(config, in_channels=1, branches="single"))  # "gray." names its weights in saved files
        self.colour = UNet(replace(config, branches="single"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, out_channels, *S)`` for input ``(N, 3, *S)``."""
        grey = is_grey_input(x)
        if bool(grey.all()):
            return self.gray(x[:, :1])
        if not bool(grey.any()):
            return self.colour(x)
        grey_logits, colour_logits = self.gray(x[grey, :1]), self.colour(x[~grey])
        out = grey_logits.new_empty((x.shape[0], *grey_logits.shape[1:]))
        out[grey], out[~grey] = grey_logits, colour_logits
        return out


def is_grey_input(x: torch.Tensor) -> torch.Tensor:
    """Per sample of ``x (N, 3, *S)``: whether its three channels are equal everywhere; ``(N,)`` bool."""
    flat = x.flatten(2)
    return ((flat[:, 0] == flat[:, 1]) & (flat[:, 1] == flat[:, 2])).all(dim=1)


def build_model(config: ModelConfig) -> UNet | GreyColourUNet:
    """Return a freshly initialised network for ``config`` (:class:`GreyColourUNet` for ``branches="gray_colour"``)."""
    if config.branches == "gray_colour":
        return GreyColourUNet(config)
    return UNet(config)


def fold_batch_norm(network: nn.Module) -> nn.Module:
    """Return an inference copy of ``network`` with every BatchNorm folded into the convolution before it.

    In eval mode a BatchNorm after a convolution is an affine map per
    channel, so ``conv -> bn`` equals one convolution with scaled weights and
    a bias: the copy computes the same logits (to float rounding) with one
    op fewer per layer.  ``network`` itself is not changed (it may be
    fine-tuned later); the copy is in eval mode.

    Parameters
    ----------
    network : torch.nn.Module
        A :class:`UNet` or :class:`GreyColourUNet` (any module whose
        ``nn.Sequential`` children hold ``Conv -> BatchNorm`` pairs).

    Returns
    -------
    torch.nn.Module
        The folded copy (BatchNorms replaced by ``nn.Identity``).

    """
    folded = copy.deepcopy(network).eval()
    for module in folded.modules():
        if isinstance(module, nn.Sequential):
            for index in range(len(module) - 1):
                conv, norm = module[index], module[index + 1]
                if isinstance(conv, nn.Conv2d | nn.Conv3d) and isinstance(norm, nn.BatchNorm2d | nn.BatchNorm3d):
                    _fold_into(conv, norm)
                    module[index + 1] = nn.Identity()
    return folded


@torch.no_grad()
def _fold_into(conv: nn.Conv2d | nn.Conv3d, norm: nn.BatchNorm2d | nn.BatchNorm3d) -> None:
    """Scale ``conv``'s weights and set its bias so that it also applies ``norm`` (eval statistics)."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
    conv.weight.mul_(scale.reshape(-1, *([1] * (conv.weight.dim() - 1))))
    conv.bias = nn.Parameter((bias - norm.running_mean) * scale + norm.bias)


def count_parameters(model: nn.Module) -> int:
    """Return the number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def flops_per_pixel(config: ModelConfig) -> float:
    """Approximate multiply-accumulate x2 (FLOPs) per input pixel of a forward pass.

    Counts convolutions and transposed convolutions only (norms and
    activations are negligible).  For 2D models; a ``gray_colour`` model
    runs one branch per pixel (its colour branch is counted).
    """
    widths = [config.base_channels * 2**level for level in range(config.depth + 1)]
    flops = 0.0
    c_prev = config.in_channels
    for level, width in enumerate(widths):
        area = 4.0**-level
        flops += 2 * 9 * (c_prev * width + width * width) * area
        c_prev = width
    for level in range(config.depth):
        area = 4.0**-level
        flops += 2 * 4 * widths[level + 1] * widths[level] * (area / 4)  # transposed conv, stride 2
        flops += 2 * 9 * (2 * widths[level] * widths[level] + widths[level] * widths[level]) * area
    flops += 2 * widths[0] * config.out_channels
    return flops
