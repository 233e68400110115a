"""Training: one plain PyTorch loop shared by the VAE and the DiT.

:func:`fit` runs AdamW with linear warm-up, gradient clipping, EMA, bf16
autocast on CUDA only, optional ``torch.compile`` and DDP (``torchrun``). It
logs to ``log.csv`` / ``metrics.json`` / ``curves.png``, writes the model
checkpoint (EMA weights) and ``state.safetensors`` every ``ckpt_every`` steps,
and resumes exactly (step, data order, optimizer, EMA, RNG). A non-finite loss
stops with :class:`~adit_torch.cli.NaNLossError` before the weights are
touched, so the last good checkpoint stays. SIGTERM (a scheduler's time limit
or pre-emption), SIGUSR1 (Slurm's ``--signal`` warning) and a first Ctrl-C stop
the loop after the current step and save everything (status ``interrupted``),
so no finished step is lost. :func:`train_vae` and
:func:`train_dit` (in :mod:`adit_torch.recipes`) wire data and models into it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from adit_torch.batching import BucketBatchSampler
from adit_torch.checkpoint import load_state, save_state
from adit_torch.config import TrainConfig
from adit_torch.ema import EMA
from adit_torch.errors import AditError, ConfigError

STATE_FILE = "state.safetensors"


class NonFiniteLoss(AditError):
    """Raised inside :func:`fit`; the command line maps it to ``NaNLossError`` (exit status 4)."""


class Objective(nn.Module):
    """Wraps ``loss_fn(model, batch, generator) -> (loss, parts)`` as a module so DDP syncs its gradients."""

    def __init__(self, model: nn.Module, loss_fn: Callable):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch, generator):
        """Scalar loss and a dict of float parts."""
        return self.loss_fn(self.model, batch, generator)


# ------------------------------------------------------------------ distributed
def dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` from the ``torchrun`` environment (``(0, 1)`` when not distributed)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def local_device(device: str) -> torch.device:
    """The device of this process: ``cuda:$LOCAL_RANK`` for CUDA under ``torchrun``, else ``device``.

    With several GPUs per node every process must own one; ``LOCAL_RANK`` (not ``RANK``,
    which counts across nodes) picks it.
    """
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        index = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device(device)


def init_distributed(device: str) -> tuple[int, int]:
    """Start the process group when launched by ``torchrun`` (gloo on CPU, nccl on CUDA)."""
    rank, world = dist_info()
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device == "cuda" else "gloo")
    return rank, world


def any_rank(flag: bool, device: torch.device, world: int) -> bool:
    """Whether ``flag`` is true on any process (a MAX all-reduce; just ``flag`` when not distributed).

    Decisions that end the loop (a non-finite loss, the time limit) must be taken by all
    processes at the same step, or the others wait forever in the next gradient all-reduce.
    """
    if world == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item() > 0)


# ---------------------------------------------------------------------- logging
class RunLog:
    """Appends rows to ``log.csv`` and plots ``curves.png`` (rank 0 only)."""

    def __init__(self, out_dir: Path, enabled: bool = True):
        self.path = out_dir / "log.csv"
        self.out_dir = out_dir
        self.enabled = enabled
        self.rows: list[dict[str, Any]] = []
        if enabled and self.path.exists():
            with open(self.path, newline="") as fh:
                self.rows = list(csv.DictReader(fh))

    def add(self, row: dict[str, Any]) -> None:
        """Record one row (training or validation metrics at a step)."""
        if not self.enabled:
            return
        self.rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)

    def plot(self) -> None:
        """Loss and validation curves against step, to ``curves.png``."""
        if not self.enabled or not self.rows:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = [k for k in self.rows[0] if k not in ("step", "epoch", "time_s", "lr", "systems_per_s")]
        keys = [k for k in dict.fromkeys(k for r in self.rows for k in r) if k in keys or k.startswith("val_")]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for key in keys:
            pts = [(float(r["step"]), float(r[key])) for r in self.rows if r.get(key) not in (None, "")]
            if not pts:
                continue
            ax = axes[1] if key.startswith("val_") else axes[0]
            ax.plot(*zip(*pts), label=key, marker="." if key.startswith("val_") else None)
        axes[0].set_yscale("log")
        for ax, title in zip(axes, ("training loss (parts)", "validation")):
            ax.set_xlabel("step")
            ax.set_title(title)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        fig.tight_layout()
        tmp = self.out_dir / ".curves.tmp.png"
        fig.savefig(tmp, dpi=90)
        plt.close(fig)
        os.replace(tmp, self.out_dir / "curves.png")


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    os.replace(tmp, path)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate of optimisation step ``step`` (0-based): linear warm-up over ``cfg.warmup_steps``,
    then ``cfg.lr`` ("constant") or a cosine from ``cfg.lr`` to ``cfg.lr * cfg.min_lr_ratio`` at
    ``cfg.max_steps`` ("cosine"). A function of the step only, so ``--resume`` continues it exactly."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    if cfg.lr_schedule == "constant":
        return cfg.lr * warm
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, max(0.0, (step - cfg.warmup_steps) / span))
    factor = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * warm * factor


# ---------------------------------------------------------------------- signals
#: Signals that stop training after the current step, with everything saved: SIGTERM (Slurm and other
#: schedulers send it at the time limit, then SIGKILL after their grace period, Slurm's ``KillWait``),
#: SIGUSR1 (what ``sbatch --signal=<time>`` sends before the limit) and SIGINT (Ctrl-C; a second one
#: stops at once).
STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")


@contextlib.contextmanager
def stop_on_signals():
    """Within the block, :data:`STOP_SIGNALS` set ``stop["signal"]`` (the signal's name) instead of
    killing the process; the old handlers come back on exit. Does nothing off the main thread."""
    stop: dict[str, str | None] = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if name == "SIGINT" and stop["signal"] is not None:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        stop["signal"] = stop["signal"] or name

    old = {}
    for name in STOP_SIGNALS:
        number = getattr(signal, name, None)
        if number is not None:
            old[number] = signal.signal(number, handler)
    try:
        yield stop
    finally:
        for number, previous in old.items():
            signal.signal(number, previous)


# ------------------------------------------------------------------------- loop
def _batches(data: Sequence, idx_batches, collate_fn, num_workers: int):
    if num_workers <= 0:
        for idx in idx_batches:
            yield collate_fn([data[i] for i in idx])
        return
    loader = torch.utils.data.DataLoader(data, batch_sampler=idx_batches, collate_fn=collate_fn,
                                         num_workers=num_workers, persistent_workers=False)
    yield from loader


def fit(model: nn.Module, loss_fn: Callable, data: Sequence, collate_fn: Callable, cfg: TrainConfig,
        out_dir: str | Path, save_model: Callable[[Path, nn.Module], None],
        validate: Callable[[nn.Module], dict[str, float]] | None = None, resume: bool = False,
        model_file: str = "model.safetensors", progress: bool = True) -> dict[str, Any]:
    """Train ``model`` on ``data`` and return the final metrics.

    Args:
        model: the module whose parameters are optimised.
        loss_fn: ``(model, batch, generator) -> (loss, parts)``; applies augmentation itself.
        data: indexable systems (or latents) with a ``num_atoms`` array.
        collate_fn: list of items -> batch with ``.to(device)`` and ``len``.
        cfg: optimisation settings.
        out_dir: run folder (created).
        save_model: ``(path, ema_model)`` writes the model checkpoint (rank 0 only).
        validate: ``ema_model -> {name: value}`` run every ``cfg.val_every`` steps and at the end.
        resume: continue from ``out_dir/state.safetensors`` when it exists.
        model_file: file name of the model checkpoint inside ``out_dir``.

    Returns the metrics written to ``metrics.json``: ``status`` is ``completed``, ``time_limit``
    (``cfg.max_minutes``) or ``interrupted`` (one of :data:`STOP_SIGNALS`, named in ``signal``);
    the state is saved in every case.
    """
    with stop_on_signals() as stop:
        return _fit(model, loss_fn, data, collate_fn, cfg, Path(out_dir), save_model, validate, resume,
                    model_file, progress, stop)


def _fit(model, loss_fn, data, collate_fn, cfg, out_dir, save_model, validate, resume, model_file, progress,
         stop) -> dict[str, Any]:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but no CUDA device is available")
    device = local_device(cfg.device)
    rank, world = init_distributed(cfg.device)
    main = rank == 0
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model.to(device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed * 1009 + rank)
    trainable = [p for p in model.parameters() if p.requires_grad]  # frozen parts (e.g. a VAE's encoder) stay out
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    ema = EMA(model, cfg.ema_decay)
    counters = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "elapsed_s": 0.0, "batch_size": cfg.batch_size}
    state_path = out_dir / STATE_FILE
    if resume and state_path.exists():
        counters = load_state(state_path, model, ema, opt, generator)
        old_batch = int(counters.get("batch_size", cfg.batch_size))
        if old_batch != cfg.batch_size:  # a resume with another batch size: continue at the same point of the epoch
            counters["batch_in_epoch"] = counters["batch_in_epoch"] * old_batch // cfg.batch_size
    counters["batch_size"] = cfg.batch_size
    objective: nn.Module = Objective(model, loss_fn)
    if world > 1:
        objective = nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        objective = torch.compile(objective)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cfg.device == "cuda"
                else contextlib.nullcontext())
    sampler = BucketBatchSampler(data.num_atoms, batch_size=cfg.batch_size, max_atoms_per_batch=cfg.max_atoms_per_batch,
                                 shuffle=True, seed=cfg.seed, drop_last=False, rank=rank, world_size=world)
    log = RunLog(out_dir, enabled=main)
    step, t0 = counters["step"], time.time() - counters["elapsed_s"]
    # rows a crashed or killed run logged after its last saved state are redone by this run
    log.rows = [r for r in log.rows if int(float(r.get("step") or 0)) <= step] if resume else []
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not (progress and main), unit="step", dynamic_ncols=True)
    status, last_loss = "completed", math.nan
    window = {"loss": 0.0, "n": 0, "systems": 0, "t": time.time(), "parts": {}}

    def save_all():
        counters.update(step=step, elapsed_s=time.time() - t0)
        if main:
            save_model(out_dir / model_file, ema.model)
            save_state(state_path, model, ema.state_dict(), ema.num_updates, opt, generator, dict(counters))

    model.train()
    while step < cfg.max_steps and status == "completed":
        epoch_batches = sampler.batches(counters["epoch"])
        todo = epoch_batches[counters["batch_in_epoch"]:]
        for batch in _batches(data, todo, collate_fn, cfg.num_workers):
            batch = batch.to(device)
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, step)
            with autocast:
                loss, parts = objective(batch, generator)
            if any_rank(not bool(torch.isfinite(loss)), device, world):
                bar.close()
                value = f"on at least one of {world} processes" if world > 1 else f"({float(loss.detach())})"
                raise NonFiniteLoss(f"non-finite loss {value} at step {step + 1}; "
                                    f"the last good checkpoint in {out_dir} is kept")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            ema.update(model)
            step += 1
            counters["batch_in_epoch"] += 1
            last_loss = float(loss.detach())
            window["loss"] += last_loss
            window["n"] += 1
            window["systems"] += len(batch) * world
            for k, v in parts.items():
                window["parts"][k] = window["parts"].get(k, 0.0) + v
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                rate = window["systems"] / max(time.time() - window["t"], 1e-9)
                row = {"step": step, "epoch": counters["epoch"], "time_s": time.time() - t0,
                       "lr": opt.param_groups[0]["lr"], "loss": window["loss"] / window["n"], "systems_per_s": rate}
                row.update({k: v / window["n"] for k, v in window["parts"].items()})
                log.add(row)
                bar.set_postfix(loss=f"{row['loss']:.4f}", sys_s=f"{rate:.0f}")
                window = {"loss": 0.0, "n": 0, "systems": 0, "t": time.time(), "parts": {}}
            if validate is not None and main and cfg.val_every > 0 and step % cfg.val_every == 0:
                _validate(validate, ema.model, log, step, counters["epoch"])
                model.train()
            if step % cfg.ckpt_every == 0:
                save_all()
            if step >= cfg.max_steps:
                break
            if any_rank(stop["signal"] is not None, device, world):
                status = "interrupted"
                break
            if cfg.max_minutes > 0 and any_rank((time.time() - t0) / 60.0 >= cfg.max_minutes, device, world):
                status = "time_limit"
                break
        else:
            counters["epoch"] += 1
            counters["batch_in_epoch"] = 0
    bar.close()
    save_all()
    metrics: dict[str, Any] = {"status": status, "step": step, "epoch": counters["epoch"], "final_loss": last_loss,
                               "elapsed_s": time.time() - t0, "world_size": world}
    if status == "interrupted":
        metrics["signal"] = stop["signal"] or "another process's signal"
    if validate is not None and main:
        metrics.update(_validate(validate, ema.model, log, step, counters["epoch"]))
    if main:
        metrics["num_params"] = sum(p.numel() for p in model.parameters())
        rates = [float(r["systems_per_s"]) for r in log.rows if r.get("systems_per_s") not in (None, "")]
        metrics["systems_per_s"] = float(np.median(rates)) if rates else None
        write_json(out_dir / "metrics.json", metrics)
        log.plot()
    return metrics


def _validate(validate, ema_model, log: RunLog, step: int, epoch: int) -> dict[str, float]:
    ema_model.eval()
    values = validate(ema_model)
    log.add({"step": step, "epoch": epoch, **{f"val_{k}": v for k, v in values.items()}})
    return {f"val_{k}": v for k, v in values.items()}
