"""UNet architecture and config dataclasses."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from napari_unet.core.config import (
    ConfigError,
    InferenceConfig,
    ModelConfig,
    NormalizeConfig,
    PostprocessConfig,
    TrainingConfig,
)
from napari_unet.core.models.network import UNet, count_parameters, flops_per_pixel

ALL_CONFIGS = [ModelConfig(), NormalizeConfig(), InferenceConfig(), PostprocessConfig(), TrainingConfig()]


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=lambda c: type(c).__name__)
def test_json_round_trip(config) -> None:
    assert type(config).from_json(config.to_json()) == config


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="unknown field"):
        ModelConfig.from_dict({"depht": 3})


def test_invalid_values_name_the_field() -> None:
    with pytest.raises(ConfigError, match="norm"):
        ModelConfig(norm="layer")
    with pytest.raises(ConfigError, match="overlap"):
        InferenceConfig(overlap=0.7)
    with pytest.raises(ConfigError, match="max_steps"):
        TrainingConfig(max_steps=None, max_epochs=None, max_seconds=None)


def test_configs_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().depth = 2  # type: ignore[misc]


@pytest.mark.parametrize("norm", ["batch", "instance", "group", "none"])
def test_unet_2d_output_shape(norm) -> None:
    config = ModelConfig(depth=2, base_channels=4, norm=norm, in_channels=3)
    out = UNet(config).eval()(torch.zeros(2, 3, 32, 48))
    assert out.shape == (2, 3, 32, 48)


def test_unet_3d_output_shape() -> None:
    config = ModelConfig(spatial_dims=3, depth=2, base_channels=4)
    assert UNet(config).eval()(torch.zeros(1, 1, 8, 16, 16)).shape == (1, 3, 8, 16, 16)


def test_unet_rejects_sizes_that_are_not_a_multiple() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        UNet(ModelConfig(depth=2, base_channels=4))(torch.zeros(1, 1, 30, 32))


def test_flops_per_pixel_matches_parameter_count_at_full_resolution() -> None:
    # With depth 1 every conv runs at full or quarter resolution; FLOPs are bounded by 2 * params at full resolution
    # and at least 2 * (full-resolution conv weights).
    config = ModelConfig(depth=1, base_channels=4, norm="none")
    model = UNet(config)
    full_res = sum(
        p.numel()
        for n, p in model.named_parameters()
        if n.startswith(("encoders.0", "decoders", "head")) and n.endswith("weight")
    )
    assert 2 * full_res <= flops_per_pixel(config) <= 2 * count_parameters(model)
