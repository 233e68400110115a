"""The training loop: outputs, exact resume, NaN stop, DDP on CPU (gloo, 2 processes)."""

import csv
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from adit_model_data import mp20_systems, qm9_systems
from safetensors.torch import load_file, save_file

from adit_torch.batching import collate
from adit_torch.checkpoint import read_metadata
from adit_torch.config import TrainConfig, VAEConfig
from adit_torch.datasets import SystemDataset
from adit_torch.recipes import train_vae, vae_loss_fn
from adit_torch.train import NonFiniteLoss, fit
from adit_torch.vae import VAE

VCFG = VAEConfig(d_model=32, num_layers=1, num_heads=4)


def _data():
    return SystemDataset.from_systems("mixed", mp20_systems(6) + qm9_systems(6, skip=400))


def _cfg(**kw):
    base = dict(dataset="joint", batch_size=4, lr=1e-3, ema_decay=0.9, max_steps=6, log_every=2, val_every=0,
                ckpt_every=100, val_size=0, val_samples=0, seed=7)
    return TrainConfig(**{**base, **kw})


def test_outputs_and_metrics(tmp_path):
    data = _data()
    m = train_vae(_cfg(val_size=2, val_every=3), VCFG, "XS", tmp_path, data=data, val=data, progress=False)
    for name in ("vae.safetensors", "state.safetensors", "metrics.json", "log.csv", "curves.png"):
        assert (tmp_path / name).is_file(), name
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"status", "step", "epoch", "final_loss"} <= set(metrics)
    assert metrics["status"] == "completed" and metrics["step"] == 6 == m["step"]
    assert "val_crystal_match_rate" in metrics and "val_molecule_rmsd" in metrics
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [r["step"] for r in rows if r["loss"]] == ["2", "4", "6"]
    meta = read_metadata(tmp_path / "vae.safetensors")
    assert meta["data"]["num_atoms_hist"]["crystal"] and meta["data"]["num_atoms_hist"]["molecule"]
    assert meta["config"]["train"]["max_steps"] == 6


def test_resume_equals_uninterrupted(tmp_path):
    data = _data()
    train_vae(_cfg(max_steps=7), VCFG, "XS", tmp_path / "full", data=data, progress=False)
    train_vae(_cfg(max_steps=3), VCFG, "XS", tmp_path / "part", data=data, progress=False)
    m = train_vae(_cfg(max_steps=7), VCFG, "XS", tmp_path / "part", resume=True, data=data, progress=False)
    assert m["step"] == 7
    full = load_file(tmp_path / "full" / "state.safetensors")
    part = load_file(tmp_path / "part" / "state.safetensors")
    assert full.keys() == part.keys()
    for k in full:
        if not k.startswith("rng."):
            torch.testing.assert_close(part[k], full[k], atol=1e-6, rtol=1e-5, msg=k)
    # and a run that does not resume differs (the comparison has power)
    train_vae(_cfg(max_steps=4), VCFG, "XS", tmp_path / "other", data=data, progress=False)
    other = load_file(tmp_path / "other" / "state.safetensors")
    assert not torch.allclose(other["model.type_head.weight"], full["model.type_head.weight"])


def test_the_same_seed_gives_the_same_model_whatever_ran_before(tmp_path):
    """The initial weights come from the run's seed, not from the process's RNG state (another process,
    an earlier run), so a job resumed elsewhere can equal one run in one go."""
    data = _data()
    torch.manual_seed(1)
    train_vae(_cfg(max_steps=2), VCFG, "XS", tmp_path / "a", data=data, progress=False)
    torch.manual_seed(2)
    torch.rand(1000)
    train_vae(_cfg(max_steps=2), VCFG, "XS", tmp_path / "b", data=data, progress=False)
    a, b = load_file(tmp_path / "a" / "vae.safetensors"), load_file(tmp_path / "b" / "vae.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    train_vae(_cfg(max_steps=2, seed=8), VCFG, "XS", tmp_path / "c", data=data, progress=False)
    c = load_file(tmp_path / "c" / "vae.safetensors")
    assert not torch.equal(a["type_head.weight"], c["type_head.weight"])


def test_a_signal_stops_after_the_step_and_saves_for_an_exact_resume(tmp_path):
    """SIGTERM (a scheduler's time limit) in the middle of training: the loop stops after that step with
    status ``interrupted``, saves, and ``--resume`` then ends where one uninterrupted run ends."""
    import signal

    data = _data()
    train_vae(_cfg(max_steps=7), VCFG, "XS", tmp_path / "full", data=data, progress=False)
    calls = {"n": 0}
    good = vae_loss_fn(True)

    def loss_fn(model, batch, g):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while step 3 runs
        return good(model, batch, g)

    cfg = _cfg(max_steps=7)
    torch.manual_seed(cfg.seed)
    model = VAE(VCFG)
    previous = signal.getsignal(signal.SIGTERM)
    m = fit(model, loss_fn, data, collate, cfg, tmp_path / "part", lambda p, mod: save_file(mod.state_dict(), str(p)),
            progress=False)
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is only there while training
    assert (m["status"], m["signal"], m["step"]) == ("interrupted", "SIGTERM", 3)
    assert read_metadata(tmp_path / "part" / "state.safetensors")["counters"]["step"] == 3
    torch.manual_seed(cfg.seed)
    m = fit(VAE(VCFG), good, data, collate, cfg, tmp_path / "part", lambda p, mod: save_file(mod.state_dict(), str(p)),
            resume=True, progress=False)
    assert (m["status"], m["step"]) == ("completed", 7)
    full, part = load_file(tmp_path / "full" / "state.safetensors"), load_file(tmp_path / "part" / "state.safetensors")
    for k in full:
        if not k.startswith("rng."):
            torch.testing.assert_close(part[k], full[k], atol=1e-6, rtol=1e-5, msg=k)


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path):
    data = _data()
    calls = {"n": 0}
    good = vae_loss_fn(False)

    def loss_fn(model, batch, g):
        calls["n"] += 1
        loss, parts = good(model, batch, g)
        return (loss * float("nan"), parts) if calls["n"] > 4 else (loss, parts)

    saved = []
    with pytest.raises(NonFiniteLoss, match="step 5"):
        fit(VAE(VCFG), loss_fn, data, collate, _cfg(ckpt_every=2), tmp_path,
            lambda p, m: saved.append(p) or save_file(m.state_dict(), str(p)), progress=False)
    assert len(saved) == 2 and (tmp_path / "state.safetensors").exists()
    assert read_metadata(tmp_path / "state.safetensors")["counters"]["step"] == 4


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out_dir, data):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.manual_seed(100 + rank)  # different initial weights per rank: DDP must broadcast rank 0's
    model = VAE(VCFG)
    fit(model, vae_loss_fn(True), data, collate, _cfg(max_steps=3), out_dir,
        lambda p, m: save_file(m.state_dict(), str(p)), progress=False)
    save_file(model.state_dict(), os.path.join(out_dir, f"rank{rank}.safetensors"))
    torch.distributed.destroy_process_group()


def test_ddp_two_cpu_processes_hold_identical_weights(tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path), _data()), nprocs=2, join=True)
    w0 = load_file(tmp_path / "rank0.safetensors")
    w1 = load_file(tmp_path / "rank1.safetensors")
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["step"] == 3
    init = VAE(VCFG).state_dict()
    assert not torch.equal(init["type_head.weight"], w0["type_head.weight"])


def _any_rank_worker(rank, world, port, out_dir):
    from adit_torch.train import any_rank

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo")
    answers = [any_rank(rank == 1, torch.device("cpu"), world), any_rank(False, torch.device("cpu"), world)]
    with open(os.path.join(out_dir, f"any{rank}.json"), "w") as fh:
        json.dump(answers, fh)
    torch.distributed.destroy_process_group()


def test_a_stop_decided_on_one_process_is_taken_by_all(tmp_path):
    """A non-finite loss or the time limit on one rank must stop every rank at the same step."""
    mp.spawn(_any_rank_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        assert json.loads((tmp_path / f"any{rank}.json").read_text()) == [True, False]


def test_learning_rate_schedules():
    from adit_torch.train import lr_at

    const = _cfg(lr=1e-3, warmup_steps=10, max_steps=110)
    assert lr_at(const, 0) == pytest.approx(1e-4) and lr_at(const, 9) == pytest.approx(1e-3)
    assert lr_at(const, 100) == pytest.approx(1e-3)
    cos = _cfg(lr=1e-3, warmup_steps=10, max_steps=110, lr_schedule="cosine", min_lr_ratio=0.1)
    values = [lr_at(cos, s) for s in range(10, 111)]
    assert values[0] == pytest.approx(1e-3) and values[-1] == pytest.approx(1e-4)
    assert lr_at(cos, 60) == pytest.approx(0.55e-3)  # half-way: the mean of the two ends
    assert all(a >= b for a, b in zip(values, values[1:]))
    with pytest.raises(Exception, match="lr_schedule"):
        from adit_torch.config import from_dict

        from_dict(TrainConfig, {"lr_schedule": "linear"})


def test_frozen_encoder_is_not_optimised(tmp_path):
    """With ``freeze_encoder`` AdamW holds state for the decoder's parameters only."""
    cfg = VAEConfig(d_model=32, num_layers=1, num_heads=4, freeze_encoder=True, latent_noise=0.2)
    train_vae(_cfg(max_steps=3), cfg, "XS", tmp_path, data=_data(), progress=False)
    state = load_file(tmp_path / "state.safetensors")
    slots = {k.split(".")[1] for k in state if k.startswith("optim.")}
    vae = VAE(cfg)
    encoder = {id(p) for p in vae.encoder_parameters()}
    num_decoder = sum(1 for p in vae.parameters() if id(p) not in encoder)
    assert 0 < num_decoder < len(list(vae.parameters()))
    assert len(slots) == num_decoder


def test_resume_redoes_the_log_rows_written_after_the_last_state(tmp_path):
    """A run that crashed after logging step 5 but saving its state at step 4 logs steps 5.. once on resume."""
    data = _data()
    train_vae(_cfg(max_steps=4, log_every=1, ckpt_every=2), VCFG, "XS", tmp_path, data=data, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    with open(tmp_path / "log.csv", "a", newline="") as fh:  # what the crashed run had logged beyond its state
        csv.DictWriter(fh, fieldnames=list(rows[0])).writerow({**rows[-1], "step": "5", "loss": "123.0"})
    train_vae(_cfg(max_steps=6, log_every=1, ckpt_every=2), VCFG, "XS", tmp_path, resume=True, data=data,
              progress=False)
    steps = [r["step"] for r in csv.DictReader(open(tmp_path / "log.csv")) if r["loss"]]
    assert steps == ["1", "2", "3", "4", "5", "6"]
    assert "123.0" not in (tmp_path / "log.csv").read_text()
