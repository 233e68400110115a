"""`adit train-vae` and `adit train-dit`: train the autoencoder and the diffusion model.

Settings resolve in this order: the size's registry defaults, then the
``--settings`` JSON (sections ``train``, ``vae``, ``dit``, ``flow``, or flat
training keys), then command-line flags. ``--resume`` reuses the run folder's
``run_config.json`` and ``state.safetensors``. Every problem with the inputs
is reported before any training starts.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from adit_torch.checkpoint import read_metadata
from adit_torch.cli import NaNLossError
from adit_torch.config import (
    ENCODERS,
    LR_SCHEDULES,
    SIZES,
    DiTConfig,
    FlowConfig,
    TrainConfig,
    VAEConfig,
    dit_config,
    from_dict,
    load_settings,
    train_config,
    vae_config,
)
from adit_torch.errors import CheckpointError, ConfigError

#: command-line flag -> TrainConfig field
_FLAGS = {"max_steps": "max_steps", "max_minutes": "max_minutes", "batch_size": "batch_size", "lr": "lr",
          "device": "device", "seed": "seed", "num_workers": "num_workers", "dataset": "dataset",
          "train_split": "train_split",
          "max_train_systems": "max_train_systems", "val_every": "val_every", "ckpt_every": "ckpt_every",
          "log_every": "log_every", "ema_decay": "ema_decay", "crystal_repeat": "crystal_repeat",
          "lr_schedule": "lr_schedule", "warmup_steps": "warmup_steps"}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", help="training data: mp20, qm9, joint (default), or your own structures: a folder of "
                                      "CIFs, an extxyz or SDF file, or a CSV with a `cif` column (90/10 train/val "
                                      "split; fine-tune a shipped model with --init)")
    p.add_argument("--size", default="XS", choices=tuple(SIZES), help="model size from the registry (default XS)")
    p.add_argument("--out-dir", required=True, type=Path, help="run folder for checkpoints, logs and curves")
    p.add_argument("--settings", type=Path, help="JSON file with train/vae/dit/flow settings")
    p.add_argument("--max-steps", type=int, help="optimisation steps to run in total")
    p.add_argument("--max-minutes", type=float, help="stop (and save) after this many minutes")
    p.add_argument("--batch-size", type=int, help="systems per batch")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                   help="learning rate after warm-up: constant, or cosine down to lr * min_lr_ratio at --max-steps")
    p.add_argument("--warmup-steps", type=int, help="steps of linear learning-rate warm-up")
    p.add_argument("--ema-decay", type=float, help="EMA decay of the saved weights")
    p.add_argument("--device", choices=("cpu", "cuda"), help="device (default cpu)")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--num-workers", type=int, help="data-loading worker processes")
    p.add_argument("--train-split", choices=("train", "train_a", "train_b"),
                   help="training split (default train); train_a / train_b: the halves of QM9's training "
                        "split for EDM's property benchmark")
    p.add_argument("--max-train-systems", type=int, help="use only the first N systems of each dataset")
    p.add_argument("--crystal-repeat", type=int,
                   help="list each MP-20 training crystal this many times per epoch (joint runs; default 1)")
    p.add_argument("--val-every", type=int, help="validate every N steps")
    p.add_argument("--ckpt-every", type=int, help="write checkpoint and state every N steps")
    p.add_argument("--log-every", type=int, help="log every N steps")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--resume", action="store_true", help="continue the run in --out-dir from state.safetensors")
    p.add_argument("--init", type=Path,
                   help="start from the weights of this checkpoint, or of a pretrained model by name such as "
                        "adit-xs-joint (fine-tuning; train-vae also takes a DiT and starts from its embedded VAE)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(subparsers) -> None:
    """Add ``train-vae`` and ``train-dit`` to the ``adit`` parser."""
    p = subparsers.add_parser("train-vae", help="train the VAE (atoms <-> per-atom latents)",
                              description="Train the ADiT autoencoder on MP-20, QM9 or both.")
    p.add_argument("--encoder", choices=ENCODERS,
                   help="encoder: transformer (default; learns the symmetries from random rotations) or "
                        "equivariant (e3nn message passing over neighbours within the cutoff, periodic images "
                        "included: latents invariant to rotations and translations by construction)")
    _common(p)
    p.set_defaults(handler=run_train_vae)
    p = subparsers.add_parser("train-dit", help="train the diffusion transformer on a frozen VAE's latents",
                              description="Train the ADiT diffusion transformer by flow matching.")
    p.add_argument("--vae", required=True, type=Path,
                   help="VAE checkpoint (vae.safetensors), or a DiT checkpoint (or pretrained model name) whose "
                        "embedded VAE is used")
    _common(p)
    p.set_defaults(handler=run_train_dit)


def _train_cfg(args, settings: dict) -> TrainConfig:
    values = dict(settings.get("train", {}))
    values.update({field: getattr(args, flag) for flag, field in _FLAGS.items()
                   if getattr(args, flag, None) is not None})
    if args.compile:
        values["compile"] = True
    return train_config(args.size, **values)


#: Training settings a ``--resume`` may change (flags or the ``train`` section of ``--settings``); every
#: change is recorded in ``run_config.json`` (``resumes``). The restart work chain lowers ``lr`` after a
#: NaN loss and halves ``batch_size`` after running out of memory; the rest is bookkeeping.
RESUME_CHANGEABLE = ("max_steps", "max_minutes", "device", "num_workers", "lr", "batch_size", "log_every",
                     "val_every", "ckpt_every", "val_size", "val_samples")


def _resume_config(args, kind: str, run_cfg: Path) -> dict:
    """The stored configs of a run with this call's allowed changes applied (and recorded)."""
    stored = json.loads(run_cfg.read_text())
    if stored.get("kind") != kind:
        raise ConfigError(f"--resume: {args.out_dir} holds a {stored.get('kind')} run, not a {kind} run")
    settings = load_settings(args.settings) if args.settings else {}
    asked = dict(settings.get("train", {}))
    asked.update({field: getattr(args, flag) for flag, field in _FLAGS.items()
                  if getattr(args, flag, None) is not None})
    train = dict(stored["train"])
    changes = {}
    for key, value in asked.items():
        if json.dumps(value) == json.dumps(train.get(key)):
            continue
        if key not in RESUME_CHANGEABLE:
            raise ConfigError(f"--resume: {key} cannot change when resuming {args.out_dir} (stored "
                              f"{train.get(key)!r}, asked {value!r}); a resume may change only "
                              f"{', '.join(RESUME_CHANGEABLE)}")
        changes[key] = {"from": train.get(key), "to": value}
        train[key] = value
    asked_model = {"vae": {**settings.get("vae", {}), **(_encoder_flag(args) if kind == "vae" else {})},
                   "dit": settings.get("dit", {}), "flow": settings.get("flow", {})}
    for section in ("vae", "dit", "flow"):
        for key, value in asked_model[section].items():
            if json.dumps(value) != json.dumps(stored.get(section, {}).get(key)):
                raise ConfigError(f"--resume: {section}.{key} cannot change when resuming {args.out_dir} (stored "
                                  f"{stored.get(section, {}).get(key)!r}, asked {value!r})")
    out = {"size": stored["size"], "train": from_dict(TrainConfig, train, where=f"{run_cfg} [train]")}
    if kind == "vae":
        out["vae"] = from_dict(VAEConfig, stored["vae"], where=f"{run_cfg} [vae]")
    else:
        out["dit"] = from_dict(DiTConfig, stored["dit"], where=f"{run_cfg} [dit]")
        out["flow"] = from_dict(FlowConfig, stored["flow"], where=f"{run_cfg} [flow]")
    out["resume_changes"] = changes
    return out


def _encoder_flag(args) -> dict:
    """``{"encoder": ...}`` when ``--encoder`` was given (it overrides ``--settings``), else nothing."""
    encoder = getattr(args, "encoder", None)
    return {} if encoder is None else {"encoder": encoder}


def _resolve(args, kind: str) -> dict:
    """Configs for a new run or the stored ones for ``--resume``; raises before any work starts."""
    run_cfg = args.out_dir / "run_config.json"
    if args.resume and run_cfg.exists():
        return _resume_config(args, kind, run_cfg)
    settings = load_settings(args.settings) if args.settings else {}
    out = {"size": args.size, "train": _train_cfg(args, settings)}
    if kind == "vae":
        out["vae"] = vae_config(args.size, **{**settings.get("vae", {}), **_encoder_flag(args)})
    else:
        out["dit"] = dit_config(args.size, **settings.get("dit", {}))
        out["flow"] = from_dict(FlowConfig, settings.get("flow", {}), where="flow settings")
    if args.init is not None:
        meta = read_metadata(args.init)
        accepted = ("vae", "dit") if kind == "vae" else ("dit",)  # a DiT checkpoint embeds its VAE
        if meta["kind"] not in accepted:
            raise CheckpointError(f"--init {args.init} is a {meta['kind']} checkpoint, but train-{kind} needs a "
                                  f"{' or '.join(accepted)} checkpoint")
        # the checkpoint's config, with the --settings of this run on top (loss weights, corruption, ...)
        stored = {**meta["config"].get(kind, {}), **settings.get(kind, {}),
                  **(_encoder_flag(args) if kind == "vae" else {})}
        out[kind] = from_dict(type(out[kind]), stored, where=f"--init {args.init}")
    return out


def checkpoint_or_model(path: Path | None) -> Path | None:
    """``path`` when it exists; else, when it names a pretrained model (``adit models``), that model's file."""
    if path is None or path.exists():
        return path
    from adit_torch.pretrained import MODELS, pretrained_path

    if str(path) in MODELS:
        return pretrained_path(str(path))
    return path  # reading it fails with the missing file's name


def _report_changes(cfg: dict) -> None:
    for key, change in cfg.get("resume_changes", {}).items():
        print(f"resume: {key} {change['from']!r} -> {change['to']!r} (recorded in run_config.json)")


def _run(fn, out_dir: Path):
    from adit_torch.train import NonFiniteLoss

    try:
        metrics = fn()
    except NonFiniteLoss as exc:
        raise NaNLossError(str(exc)) from None
    print(json.dumps({k: metrics[k] for k in ("status", "step", "final_loss") if k in metrics}))
    print(f"outputs in {out_dir}")
    if metrics.get("status") == "interrupted":
        # saved and resumable, but not finished: a shell chain (`train-vae && train-dit`) must stop here
        name = metrics.get("signal", "")
        print(f"adit: stopped by {name} after step {metrics['step']}; state saved, continue with --resume",
              file=sys.stderr)
        number = getattr(signal, name, None) if isinstance(name, str) else None
        return 128 + int(number) if number is not None else 128 + int(signal.SIGTERM)
    return 0


def run_train_vae(args) -> int:
    """Handler of ``adit train-vae``."""
    from adit_torch.recipes import train_vae

    args.init = checkpoint_or_model(args.init)
    cfg = _resolve(args, "vae")
    _report_changes(cfg)
    return _run(lambda: train_vae(cfg["train"], cfg["vae"], cfg["size"], args.out_dir, resume=args.resume,
                                  init=args.init, progress=not args.quiet,
                                  resume_changes=cfg.get("resume_changes", {})), args.out_dir)


def run_train_dit(args) -> int:
    """Handler of ``adit train-dit``."""
    from adit_torch.recipes import train_dit

    args.vae, args.init = checkpoint_or_model(args.vae), checkpoint_or_model(args.init)
    meta = read_metadata(args.vae)
    if meta["kind"] not in ("vae", "dit"):  # a DiT checkpoint embeds its VAE
        raise CheckpointError(f"--vae {args.vae} is a {meta['kind']} checkpoint, but train-dit needs a vae "
                              "checkpoint (or a dit checkpoint, whose embedded VAE is used)")
    cfg = _resolve(args, "dit")
    _report_changes(cfg)
    return _run(lambda: train_dit(cfg["train"], cfg["dit"], cfg["flow"], args.vae, cfg["size"], args.out_dir,
                                  resume=args.resume, init=args.init, progress=not args.quiet,
                                  resume_changes=cfg.get("resume_changes", {})), args.out_dir)
