"""`adit train-vae`, `adit train-dit` and `adit sample` end to end on the small real-data fixtures."""

import csv
import json
import math
from pathlib import Path

import ase.io
import pytest

from adit_torch.cli import EXIT_CODES, main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TINY = {"vae": {"d_model": 32, "num_layers": 1, "num_heads": 4},
        "dit": {"d_model": 32, "num_layers": 1, "num_heads": 4},
        "flow": {"steps": 3},
        "train": {"batch_size": 8, "val_every": 0, "val_size": 4, "val_samples": 0, "log_every": 2}}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    mp = pytest.MonkeyPatch()
    mp.setenv("ADIT_MP20_DIR", str(FIXTURES / "mp20"))
    mp.setenv("ADIT_QM9_DIR", str(FIXTURES / "qm9"))
    mp.setenv("ADIT_CACHE_DIR", str(root / "cache"))
    settings = root / "tiny.json"
    settings.write_text(json.dumps(TINY))
    yield root, settings
    mp.undo()


@pytest.fixture(scope="module")
def trained(env):
    root, settings = env
    rc = main(["train-vae", "--dataset", "joint", "--out-dir", str(root / "vae"), "--settings", str(settings),
               "--max-steps", "4", "--quiet"])
    assert rc == 0
    rc = main(["train-dit", "--vae", str(root / "vae" / "vae.safetensors"), "--dataset", "joint",
               "--out-dir", str(root / "dit"), "--settings", str(settings), "--max-steps", "4", "--quiet"])
    assert rc == 0
    return root


def test_training_writes_the_contract_files(trained):
    for name in ("vae.safetensors", "state.safetensors", "metrics.json", "log.csv", "curves.png"):
        assert (trained / "vae" / name).is_file()
    for name in ("dit.safetensors", "state.safetensors", "metrics.json", "log.csv", "curves.png"):
        assert (trained / "dit" / name).is_file()
    metrics = json.loads((trained / "dit" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["step"] == 4


def test_resume_continues_to_more_steps(trained, env):
    _, settings = env
    rc = main(["train-vae", "--out-dir", str(trained / "vae"), "--resume", "--max-steps", "6", "--quiet"])
    assert rc == 0
    assert json.loads((trained / "vae" / "metrics.json").read_text())["step"] == 6


def test_sample_crystals_and_molecules(trained):
    ckpt = str(trained / "dit" / "dit.safetensors")
    out = trained / "s" / "cryst.extxyz"
    args = ["sample", "--checkpoint", ckpt, "--kind", "crystal", "--num-samples", "5", "--seed", "1", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    summary = json.loads((trained / "s" / "cryst.summary.json").read_text())
    assert summary["num_requested"] == summary["num_written"] == 5
    assert summary["settings"]["steps"] == 3 and "sample_s" in summary["timing"]
    assert len(list((trained / "s" / "cryst_cif").glob("*.cif"))) == 5
    frames = ase.io.read(out, index=":")  # untrained samples may overlap, so read without validation
    assert len(frames) == 5 and all(f.pbc.all() for f in frames)
    # same seed -> same file
    assert main([*args, "--out", str(trained / "s" / "again.extxyz")]) == 0
    assert out.read_text() == (trained / "s" / "again.extxyz").read_text()
    mol = trained / "s" / "mol.extxyz"
    assert main(["sample", "--checkpoint", ckpt, "--kind", "molecule", "--num-samples", "3", "--steps", "2",
                 "--num-atoms", "5", "--out", str(mol), "--quiet"]) == 0
    assert (trained / "s" / "mol.sdf").is_file()
    assert all(len(f) == 5 and not f.pbc.any() for f in ase.io.read(mol, index=":"))


def test_checkpoint_errors_exit_3(trained, tmp_path, capsys):
    vae = str(trained / "vae" / "vae.safetensors")
    state = str(trained / "vae" / "state.safetensors")
    out = str(tmp_path / "o.extxyz")
    base = ["--kind", "crystal", "--num-samples", "2", "--out", out]
    assert main(["sample", "--checkpoint", str(tmp_path / "missing.safetensors"), *base]) == EXIT_CODES["checkpoint"]
    assert "does not exist" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", vae, *base]) == EXIT_CODES["checkpoint"]
    assert "needs a dit checkpoint" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"garbage" * 10)
    assert main(["sample", "--checkpoint", str(corrupt), *base]) == EXIT_CODES["checkpoint"]
    assert main(["train-dit", "--vae", state, "--out-dir", str(tmp_path / "d")]) == EXIT_CODES["checkpoint"]
    assert main(["train-vae", "--init", state, "--out-dir", str(tmp_path / "v")]) == EXIT_CODES["checkpoint"]
    assert "needs a vae or dit checkpoint" in capsys.readouterr().err
    rc = main(["train-dit", "--vae", vae, "--init", vae, "--out-dir", str(tmp_path / "d")])
    assert rc == EXIT_CODES["checkpoint"]
    assert not (tmp_path / "d").exists() and not (tmp_path / "v").exists()
    assert not list(tmp_path.glob("o*"))


def test_bad_input_exits_2(trained, tmp_path, capsys):
    dit = str(trained / "dit" / "dit.safetensors")
    assert main(["sample", "--checkpoint", dit, "--kind", "crystal", "--num-samples", "0",
                 "--out", str(tmp_path / "o.extxyz")]) == EXIT_CODES["bad_input"]
    assert main(["sample", "--checkpoint", dit, "--kind", "crystal", "--num-samples", "2",
                 "--out", str(tmp_path / "o.cif")]) == EXIT_CODES["bad_input"]
    capsys.readouterr()
    # --keep-lattice needs a crystal to keep
    assert main(["sample", "--checkpoint", dit, "--kind", "crystal", "--num-samples", "2", "--keep-lattice",
                 "--out", str(tmp_path / "o.extxyz")]) == EXIT_CODES["bad_input"]
    assert "give --keep FILE" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", dit, "--kind", "molecule", "--num-samples", "2", "--no-exact-keep",
                 "--out", str(tmp_path / "o.extxyz")]) == EXIT_CODES["bad_input"]
    assert "--no-exact-keep is about the atoms given with --keep" in capsys.readouterr().err
    ring = tmp_path / "ring.xyz"
    ring.write_text("3\n\nC 0 0 0\nC 1.4 0 0\nC 0.7 1.2 0\n")
    assert main(["sample", "--checkpoint", dit, "--kind", "molecule", "--num-samples", "2", "--keep", str(ring),
                 "--keep-lattice", "--out", str(tmp_path / "o.extxyz")]) == EXIT_CODES["bad_input"]
    assert "--keep-lattice is for crystals" in capsys.readouterr().err
    assert not list(tmp_path.glob("o.*"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"vae": {"d_model": 30, "num_heads": 4}}))
    assert main(["train-vae", "--settings", str(bad), "--out-dir", str(tmp_path / "v")]) == EXIT_CODES["bad_input"]
    assert "divisible" in capsys.readouterr().err
    assert main(["train-dit", "--vae", str(trained / "vae" / "vae.safetensors"), "--resume",
                 "--out-dir", str(trained / "vae")]) == EXIT_CODES["bad_input"]


def test_nan_loss_exits_4(env, tmp_path):
    _, settings = env
    s = json.loads(settings.read_text())
    s["vae"]["w_kl"] = float("inf")
    bad = tmp_path / "nan.json"
    bad.write_text(json.dumps(s))
    rc = main(["train-vae", "--dataset", "mp20", "--out-dir", str(tmp_path / "run"), "--settings", str(bad),
               "--max-steps", "3", "--quiet"])
    assert rc == EXIT_CODES["nan_loss"]


def test_decoder_fine_tune_from_a_dit_checkpoint(trained, tmp_path):
    """`train-vae --init DIT` starts from the embedded VAE; --settings on top of its config (latent noise,
    a frozen encoder) are kept, the encoder's weights do not move and the decoder's do."""
    from adit_torch.checkpoint import load_vae, read_metadata

    dit = trained / "dit" / "dit.safetensors"
    settings = tmp_path / "ft.json"
    settings.write_text(json.dumps({"vae": {"latent_noise": 0.3, "freeze_encoder": True},
                                    "train": {"batch_size": 8, "val_every": 0, "val_size": 0, "val_samples": 0,
                                              "lr_schedule": "cosine"}}))
    out = tmp_path / "ft"
    assert main(["train-vae", "--init", str(dit), "--dataset", "joint", "--settings", str(settings),
                 "--out-dir", str(out), "--max-steps", "3", "--quiet"]) == 0
    cfg = read_metadata(out / "vae.safetensors")["config"]
    assert cfg["vae"]["latent_noise"] == 0.3 and cfg["vae"]["freeze_encoder"] is True
    assert cfg["vae"]["d_model"] == 32 and cfg["train"]["lr_schedule"] == "cosine"
    before, _ = load_vae(dit)
    after, _ = load_vae(out / "vae.safetensors")
    encoder = {id(p) for p in before.encoder_parameters()}
    names = [n for n, p in before.named_parameters() if id(p) in encoder]
    old, new = before.state_dict(), after.state_dict()
    assert names and all(old[n].equal(new[n]) for n in names)
    assert any(not old[n].equal(new[n]) for n in old if n not in names)


def test_init_with_another_architecture_is_refused(trained, tmp_path, capsys):
    settings = tmp_path / "wide.json"
    settings.write_text(json.dumps({"vae": {"d_model": 64}}))
    assert main(["train-vae", "--init", str(trained / "vae" / "vae.safetensors"), "--settings", str(settings),
                 "--out-dir", str(tmp_path / "v"), "--max-steps", "1", "--quiet"]) == EXIT_CODES["checkpoint"]
    assert "d_model: 32 vs 64" in capsys.readouterr().err


def test_dit_continues_on_the_vae_of_a_dit_checkpoint(trained, env, tmp_path):
    """`train-dit --vae DIT --init DIT` continues a model's DiT on its own VAE's latents (the VAE is
    embedded unchanged; the latent normalisation is recomputed from the same encoder, so it is equal)."""
    from adit_torch.checkpoint import load_tensors

    _, settings = env
    dit = trained / "dit" / "dit.safetensors"
    out = tmp_path / "more"
    assert main(["train-dit", "--vae", str(dit), "--init", str(dit), "--dataset", "joint", "--settings",
                 str(settings), "--out-dir", str(out), "--max-steps", "2", "--lr-schedule", "cosine", "--quiet"]) == 0
    old_meta, old = load_tensors(dit)
    new_meta, new = load_tensors(out / "dit.safetensors")
    assert all(old[k].equal(new[k]) for k in old if k.startswith("vae."))
    assert any(not old[k].equal(new[k]) for k in old if not k.startswith("vae."))
    assert new_meta["data"]["latent_mean"] == old_meta["data"]["latent_mean"]
    assert new_meta["data"]["vae_data"] == old_meta["data"]["vae_data"]


def test_nan_loss_then_resume_with_a_lower_learning_rate(env, tmp_path, capsys):
    """The restart work chain's NaN recovery for real: a run resumed with an absurd learning rate stops
    with exit status 4 and keeps its last good state; `--resume --lr` continues from that state with the
    lower rate, which is used and recorded, and the run finishes. A resume may not change the data."""
    from adit_torch.checkpoint import read_metadata

    _, settings = env
    out = tmp_path / "nan"
    base = ["train-vae", "--dataset", "joint", "--out-dir", str(out), "--ckpt-every", "6", "--quiet"]
    assert main([*base, "--settings", str(settings), "--lr", "1e-3", "--max-steps", "6"]) == 0
    assert main([*base, "--resume", "--lr", "1e9", "--max-steps", "20"]) == EXIT_CODES["nan_loss"]
    assert "non-finite loss" in capsys.readouterr().err
    assert read_metadata(out / "state.safetensors")["counters"]["step"] == 6  # the last good state
    assert main([*base, "--resume", "--crystal-repeat", "3"]) == EXIT_CODES["bad_input"]
    assert "crystal_repeat cannot change" in capsys.readouterr().err
    assert main([*base, "--resume", "--lr", "1e-3", "--batch-size", "4", "--max-steps", "20"]) == 0
    assert "lr 1000000000.0 -> 0.001" in capsys.readouterr().out
    cfg = json.loads((out / "run_config.json").read_text())
    assert cfg["train"]["lr"] == 1e-3 and cfg["train"]["batch_size"] == 4
    assert [(r["at_step"], r["changes"]) for r in cfg["resumes"]] == [
        (6, {"lr": {"from": 1e-3, "to": 1e9}, "max_steps": {"from": 6, "to": 20}}),
        (6, {"lr": {"from": 1e9, "to": 1e-3}, "batch_size": {"from": 8, "to": 4}}),
    ]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["step"] == 20
    rows = [r for r in csv.DictReader(open(out / "log.csv")) if r.get("loss")]
    # the new rate is the one used: 1e-3 at step 20 of XS's 100 warm-up steps
    assert float(rows[-1]["lr"]) == pytest.approx(1e-3 * 20 / 100) and math.isfinite(float(rows[-1]["loss"]))


def test_the_exit_status_is_written_by_adit_itself(trained, tmp_path, monkeypatch):
    """$ADIT_STATUS_FILE gets the status of the command (what the AiiDA parsers read): 0, a bad input's 2,
    argparse's 2; a worker of rank > 0 writes its own file, and only when it fails."""
    status = tmp_path / "status"
    monkeypatch.setenv("ADIT_STATUS_FILE", str(status))
    dit = str(trained / "dit" / "dit.safetensors")
    assert main(["sample", "--checkpoint", dit, "--kind", "molecule", "--num-samples", "1", "--num-atoms", "4",
                 "--steps", "2", "--out", str(tmp_path / "m.extxyz"), "--quiet"]) == 0
    assert status.read_text() == "0\n"
    assert main(["sample", "--checkpoint", dit, "--kind", "molecule", "--num-samples", "0",
                 "--out", str(tmp_path / "n.extxyz")]) == EXIT_CODES["bad_input"]
    assert status.read_text() == "2\n"
    with pytest.raises(SystemExit):
        main(["sample", "--no-such-flag"])
    assert status.read_text() == "2\n"
    status.unlink()
    monkeypatch.setenv("RANK", "3")
    assert main(["sample", "--checkpoint", dit, "--kind", "molecule", "--num-samples", "1", "--num-atoms", "4",
                 "--steps", "2", "--out", str(tmp_path / "w.extxyz"), "--quiet"]) == 0
    assert not status.exists() and not (tmp_path / "status.rank3").exists()
    assert main(["train-dit", "--vae", str(tmp_path / "missing.safetensors"), "--out-dir",
                 str(tmp_path / "x")]) == EXIT_CODES["checkpoint"]
    assert (tmp_path / "status.rank3").read_text() == "3\n" and not status.exists()


def test_equivariant_encoder_trains_a_vae_whose_latents_a_dit_trains_and_samples_on(env, tmp_path):
    """`train-vae --encoder equivariant` on both kinds, then `train-dit` on its latents and `sample` from it; a
    resume cannot switch the encoder."""
    from adit_torch.checkpoint import read_metadata

    _, settings = env
    vae_dir, dit_dir = tmp_path / "vae", tmp_path / "dit"
    assert main(["train-vae", "--encoder", "equivariant", "--dataset", "joint", "--out-dir", str(vae_dir),
                 "--settings", str(settings), "--max-steps", "3", "--quiet"]) == 0
    assert read_metadata(vae_dir / "vae.safetensors")["config"]["vae"]["encoder"] == "equivariant"
    assert main(["train-vae", "--encoder", "transformer", "--out-dir", str(vae_dir), "--resume", "--max-steps", "4",
                 "--quiet"]) == EXIT_CODES["bad_input"]
    assert main(["train-dit", "--vae", str(vae_dir / "vae.safetensors"), "--dataset", "joint", "--out-dir",
                 str(dit_dir), "--settings", str(settings), "--max-steps", "3", "--quiet"]) == 0
    out = tmp_path / "s" / "c.extxyz"
    assert main(["sample", "--checkpoint", str(dit_dir / "dit.safetensors"), "--kind", "crystal", "--num-samples",
                 "4", "--out", str(out), "--quiet"]) == 0
    assert len(ase.io.read(out, index=":")) == 4
