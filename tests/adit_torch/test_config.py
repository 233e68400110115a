"""Size registry and typed configs."""

import json

import pytest

from adit_torch.config import (
    SIZES,
    DiTConfig,
    TrainConfig,
    VAEConfig,
    dit_config,
    from_dict,
    load_settings,
    to_dict,
    train_config,
    vae_config,
)
from adit_torch.dit import DiT
from adit_torch.errors import ConfigError


def test_registry_sizes_match_the_paper():
    assert set(SIZES) == {"XS", "S", "B", "L"}
    assert (dit_config("S").d_model, dit_config("S").num_layers) == (384, 12)
    assert (dit_config("B").d_model, dit_config("B").num_layers) == (768, 12)
    assert (dit_config("L").d_model, dit_config("L").num_layers) == (1024, 24)
    v = vae_config("S")
    assert (v.d_model, v.num_layers, v.num_heads, v.latent_dim) == (512, 8, 8, 8)
    assert train_config("XS").ema_decay < TrainConfig().ema_decay == 0.9999


def test_dit_s_parameter_count_near_paper():
    """The paper quotes ~30M parameters for DiT-S (384 x 12)."""
    n = DiT(dit_config("S")).num_params()
    assert 25e6 < n < 40e6


def test_round_trip_and_overrides():
    cfg = vae_config("XS", latent_dim=4)
    assert cfg.latent_dim == 4
    assert from_dict(VAEConfig, to_dict(cfg)) == cfg
    assert from_dict(TrainConfig, json.loads(json.dumps(to_dict(TrainConfig())))) == TrainConfig()


@pytest.mark.parametrize("bad", [
    {"d_model": 100, "num_heads": 3},
    {"no_such_field": 1},
    {"num_layers": "four"},
    {"num_layers": 2.5},
])
def test_bad_configs_raise(bad):
    with pytest.raises(ConfigError):
        from_dict(DiTConfig, bad)


def test_bad_size_and_train_values():
    with pytest.raises(ConfigError, match="XXL"):
        vae_config("XXL")
    with pytest.raises(ConfigError, match="dataset"):
        train_config("XS", dataset="oc20")
    with pytest.raises(ConfigError, match="ema_decay"):
        train_config("XS", ema_decay=1.5)
    with pytest.raises(ConfigError, match="true or false"):
        train_config("XS", augment="yes")


def test_load_settings(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"lr": 0.001}))
    assert load_settings(p) == {"train": {"lr": 0.001}}
    p.write_text(json.dumps({"train": {"lr": 0.001}, "vae": {"d_model": 64}}))
    assert load_settings(p)["vae"] == {"d_model": 64}
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_settings(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.json")
