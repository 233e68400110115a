"""Named pretrained models: the shipped weights, their cards, sha256 checks, downloads and `adit models`."""

import dataclasses
import json
import shutil

import ase.io
import pytest

from adit_torch import pretrained
from adit_torch.checkpoint import read_metadata
from adit_torch.cli import EXIT_CODES, main
from adit_torch.errors import CheckpointError, ConfigError
from adit_torch.pretrained import DEFAULT_MODEL, MODELS, load_pretrained, model_card, pretrained_path


def test_shipped_models_are_small_verified_dit_checkpoints_with_cards():
    shipped = [m for m in MODELS.values() if m.shipped]
    assert DEFAULT_MODEL in MODELS and MODELS[DEFAULT_MODEL].shipped
    total = 0
    for model in shipped:
        path = pretrained_path(model.name)  # raises unless the sha256 matches
        total += path.stat().st_size
        meta = read_metadata(path)
        assert meta["kind"] == "dit"
        assert set(model.kinds) <= set(meta["data"]["num_atoms_hist"])
        card = model_card(model.name)
        assert card.startswith(f"# {model.name}")
        for needed in ("Data", "Recipe", "Metrics", "CPU"):
            assert needed in card, f"{model.name}: the card has no {needed!r} section"
    assert total <= 50 * 2 ** 20


def test_default_model_loads_and_both_kinds_have_atom_counts():
    dit, vae, flow_cfg, meta = load_pretrained()
    assert meta["data"]["dataset"] == "joint"
    assert {"crystal", "molecule"} <= set(meta["data"]["num_atoms_hist"])
    assert dit.cfg.latent_dim == vae.cfg.latent_dim
    assert flow_cfg.steps == 100


def test_registered_conditions_are_those_the_shipped_weights_were_trained_with():
    from adit_torch.conditions import model_conditions
    from adit_torch.config import DiTConfig, from_dict

    for name, model in MODELS.items():
        if model.shipped:
            meta = read_metadata(pretrained_path(name))
            cfg = from_dict(DiTConfig, meta["config"]["dit"])
            assert model_conditions(cfg, meta["data"]) == list(model.conditions), name


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown pretrained model 'nope'; known: adit-xs-joint"):
        pretrained_path("nope")


def test_a_damaged_file_is_refused_with_both_digests(tmp_path, monkeypatch):
    model = MODELS[DEFAULT_MODEL]
    bad = tmp_path / "models" / model.file
    bad.parent.mkdir()
    data = bytearray(pretrained_path(model.name).read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the last tensor
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(pretrained, "_resource", lambda file: tmp_path / "models" / file)
    with pytest.raises(CheckpointError, match=f"has sha256 [0-9a-f]{{64}}, expected {model.sha256}"):
        pretrained_path(model.name)


def test_remote_model_is_only_fetched_on_request_and_checked(tmp_path, monkeypatch):
    source = tmp_path / "remote.safetensors"
    shutil.copy(pretrained_path(DEFAULT_MODEL), source)
    remote = dataclasses.replace(MODELS[DEFAULT_MODEL], name="remote-xs", file=None, url=source.as_uri())
    monkeypatch.setitem(MODELS, "remote-xs", remote)
    monkeypatch.setenv("ADIT_MODEL_DIR", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match="is not downloaded; run `adit models download remote-xs`"):
        pretrained_path("remote-xs")
    assert not (tmp_path / "cache").exists()
    path = pretrained_path("remote-xs", download_missing=True)  # a file:// URL: the real download code, offline
    assert path == tmp_path / "cache" / "remote-xs.safetensors"
    assert pretrained_path("remote-xs") == path
    wrong = dataclasses.replace(remote, name="wrong-xs", sha256="0" * 64)
    monkeypatch.setitem(MODELS, "wrong-xs", wrong)
    with pytest.raises(CheckpointError, match="gave sha256 .* expected 0{64}"):
        pretrained_path("wrong-xs", download_missing=True)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["remote-xs.safetensors"]  # nothing half-written


def test_adit_models_lists_and_shows_cards(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert DEFAULT_MODEL in out and "(default)" in out and "crystal+molecule" in out
    assert main(["models", "show", DEFAULT_MODEL]) == 0
    assert capsys.readouterr().out.startswith(f"# {DEFAULT_MODEL}")
    assert main(["models", "show", "nope"]) == EXIT_CODES["bad_input"]
    assert "unknown pretrained model 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["crystal", "molecule"])
def test_sample_without_a_checkpoint_uses_the_default_model(tmp_path, kind):
    out = tmp_path / f"{kind}.extxyz"
    assert main(["sample", "--kind", kind, "--num-samples", "6", "--steps", "10", "--out", str(out), "--quiet"]) == 0
    frames = ase.io.read(out, index=":")
    assert len(frames) == 6
    assert all(frame.pbc.all() == (kind == "crystal") for frame in frames)
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["settings"]["model"] == DEFAULT_MODEL
    assert summary["settings"]["checkpoint"] == str(pretrained_path(DEFAULT_MODEL))


def test_models_with_conditions_follow_the_registry():
    from adit_torch.pretrained import models_with_conditions

    assert models_with_conditions([]) == list(MODELS)
    assert models_with_conditions(["num_atoms"]) == list(MODELS)
    assert models_with_conditions(["chemical_system"]) == ["adit-xs-joint-cond", "adit-xs-joint-cond-qm9"]
    assert models_with_conditions(["formula", "space_group"]) == ["adit-xs-joint-cond", "adit-xs-joint-cond-qm9"]
    assert models_with_conditions(["homo"]) == ["adit-xs-joint-cond-qm9"]
    assert models_with_conditions(["colour"]) == []


def test_sample_with_a_condition_and_no_model_picks_a_model_trained_with_it(tmp_path, capsys):
    """The issue's own command, with no --model: the default model has no conditions, so the first
    shipped model trained with the chemical system samples it, and says so."""
    out = tmp_path / "lfo.extxyz"
    assert main(["sample", "--kind", "crystal", "--condition", "chemical_system=Li-Fe-O", "--num-samples", "4",
                 "--steps", "4", "--out", str(out), "--quiet"]) == 0
    assert "sampling adit-xs-joint-cond, the first shipped model trained with it" in capsys.readouterr().err
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["settings"]["model"] == "adit-xs-joint-cond"
    assert all(set(f.get_chemical_symbols()) <= {"Li", "Fe", "O"} for f in ase.io.read(out, index=":"))
    # named explicitly, a model without the condition is refused, and the error names those with it
    assert main(["sample", "--model", DEFAULT_MODEL, "--kind", "crystal", "--condition", "chemical_system=Li-Fe-O",
                 "--num-samples", "4", "--out", str(tmp_path / "x.extxyz"), "--quiet"]) == EXIT_CODES["bad_input"]
    assert ("shipped models trained with it: adit-xs-joint-cond, adit-xs-joint-cond-qm9"
            in capsys.readouterr().err)


def test_sample_by_name_matches_sampling_the_file(tmp_path):
    by_name, by_file = tmp_path / "name.extxyz", tmp_path / "file.extxyz"
    common = ["--kind", "crystal", "--num-samples", "4", "--steps", "5", "--seed", "3", "--quiet"]
    assert main(["sample", "--model", DEFAULT_MODEL, *common, "--out", str(by_name)]) == 0
    assert main(["sample", "--checkpoint", str(pretrained_path(DEFAULT_MODEL)), *common, "--out", str(by_file)]) == 0
    assert by_name.read_text() == by_file.read_text()


def test_python_api_samples_by_name_like_the_command_line(tmp_path):
    from adit_torch.pretrained import sample_pretrained

    systems, summary = sample_pretrained("molecule", 3, steps=5, seed=2, progress=False)
    assert len(systems) == 3 and not any(s.is_periodic for s in systems)
    assert summary["settings"]["model"] == DEFAULT_MODEL and summary["num_written"] == 3
    out = tmp_path / "m.extxyz"
    assert main(["sample", "--kind", "molecule", "--num-samples", "3", "--steps", "5", "--seed", "2",
                 "--out", str(out), "--quiet"]) == 0
    frames = ase.io.read(out, index=":")
    assert [f.get_atomic_numbers().tolist() for f in frames] == [s.numbers.tolist() for s in systems]
