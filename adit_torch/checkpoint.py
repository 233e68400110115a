"""Checkpoints: one ``.safetensors`` file with the weights and a JSON header.

The header's metadata key ``adit`` holds ``{"kind", "size", "config", "data",
"library_version", "created"}``. A DiT checkpoint also stores the VAE it was
trained on (tensor names prefixed ``vae.``) so it samples on its own. Loading
never unpickles: the header is parsed as JSON and tensors are read by
safetensors. Every file is written to a temporary name and renamed.

Training state for resuming (optimizer, EMA, RNG, step) is a separate
``state.safetensors`` (:func:`save_state` / :func:`load_state`).
"""

from __future__ import annotations

import datetime
import json
import os
import struct
from pathlib import Path
from typing import Any

import torch

from adit_torch import __version__
from adit_torch.config import DiTConfig, FlowConfig, VAEConfig, from_dict
from adit_torch.errors import CheckpointError

KINDS = ("vae", "dit", "state")


def _atomic_save(path: Path, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    try:
        save_file(clean, str(tmp), metadata={"adit": json.dumps(header)})
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save_checkpoint(path, kind: str, size: str, config: dict[str, Any], tensors: dict[str, torch.Tensor],
                    data: dict[str, Any] | None = None) -> Path:
    """Write a model checkpoint atomically.

    Args:
        path: destination ``.safetensors``.
        kind: ``"vae"`` or ``"dit"``.
        size: registry size name (``"XS"``...), informational.
        config: ``{"vae": {...}, "dit": {...}, "flow": {...}, "train": {...}}`` dataclass dicts.
        tensors: weights (a DiT checkpoint includes ``vae.``-prefixed VAE weights).
        data: dataset statistics (atom-count histograms, latent scale...).
    """
    if kind not in ("vae", "dit"):
        raise CheckpointError(f"cannot save a checkpoint of kind {kind!r}")
    header = {"kind": kind, "size": size, "config": config, "data": data or {},
              "library_version": __version__,
              "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    return _atomic_save(Path(path), tensors, header)


def export_half(src, dst, prefixes: tuple[str, ...] = ("",), keep: tuple[str, ...] = ("vae.",)) -> Path:
    """A copy of checkpoint ``src`` with its floating-point weights stored as float16 (half the bytes).

    Args:
        src: a ``vae`` or ``dit`` checkpoint.
        dst: destination file (written atomically; the header is kept, with ``weights_dtype``
            ``float16`` added and the tensors converted listed under ``half_precision``).
        prefixes: convert tensors whose names start with one of these (default: all) ...
        keep: ... except those starting with one of these (default: the embedded VAE, whose decoder
            turns latents into Å and stays float32).

    Loading needs nothing special: :func:`load_dit` / :func:`load_vae` copy the weights into float32
    modules. A shipped half-precision model must be measured against its float32 original (same
    seed, same samples) before it replaces it.
    """
    meta, tensors = load_tensors(src)
    if meta["kind"] not in ("vae", "dit"):
        raise CheckpointError(f"checkpoint {src} is a {meta['kind']} file, not a model checkpoint")
    out, converted = {}, []
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and name.startswith(prefixes) and not name.startswith(keep):
            out[name] = tensor.to(torch.float16)
            converted.append(name)
        else:
            out[name] = tensor
    header = {**meta, "weights_dtype": "float16", "half_precision_tensors": len(converted),
              "float32_kept": [f"{k}*" for k in keep], "exported_from": Path(src).name}
    return _atomic_save(Path(dst), out, header)


def read_metadata(path) -> dict[str, Any]:
    """The ``adit`` header of a checkpoint, read without loading tensors.

    Raises :class:`CheckpointError` when the file is missing, not safetensors,
    or has no valid ``adit`` header.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise ValueError("file shorter than the safetensors header")
            (length,) = struct.unpack("<Q", raw)
            if length > min(100_000_000, path.stat().st_size):
                raise ValueError("header length out of range")
            header = json.loads(fh.read(length))
        meta = json.loads(header["__metadata__"]["adit"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or not an aiida-adit safetensors file ({exc})") from None
    if not isinstance(meta, dict) or meta.get("kind") not in KINDS:
        raise CheckpointError(f"checkpoint {path}: header has no valid 'kind'")
    return meta


def load_tensors(path, kind: str | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Header and all tensors of a checkpoint; ``kind`` (if given) must match or :class:`CheckpointError`."""
    meta = read_metadata(path)
    if kind is not None and meta["kind"] != kind:
        raise CheckpointError(f"checkpoint {path} is a {meta['kind']} checkpoint, but a {kind} checkpoint is needed")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt: {exc}") from None
    return meta, tensors


def _config(meta: dict, section: str, cls, path):
    try:
        return from_dict(cls, meta["config"][section], where=f"checkpoint {path} [{section}]")
    except KeyError:
        raise CheckpointError(f"checkpoint {path}: config has no '{section}' section") from None
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path}: invalid {section} config: {exc}") from None


def _load_module(module, tensors: dict[str, torch.Tensor], prefix: str, path) -> None:
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path}: weights do not fit the stored config: {exc}") from None


def load_vae(path, device="cpu"):
    """Rebuild the VAE of a ``vae`` or ``dit`` checkpoint: returns ``(vae, metadata)`` (eval mode)."""
    from adit_torch.vae import VAE

    meta, tensors = load_tensors(path)
    if meta["kind"] not in ("vae", "dit"):
        raise CheckpointError(f"checkpoint {path} is a {meta['kind']} file, not a model checkpoint")
    vae = VAE(_config(meta, "vae", VAEConfig, path))
    _load_module(vae, tensors, "vae." if meta["kind"] == "dit" else "", path)
    return vae.to(device).eval(), meta


def load_dit(path, device="cpu"):
    """Rebuild a DiT checkpoint: returns ``(dit, vae, flow_config, metadata)`` (eval mode)."""
    from adit_torch.dit import DiT
    from adit_torch.vae import VAE

    meta, tensors = load_tensors(path, kind="dit")
    dit = DiT(_config(meta, "dit", DiTConfig, path))
    vae = VAE(_config(meta, "vae", VAEConfig, path))
    flow = _config(meta, "flow", FlowConfig, path)
    _load_module(dit, {k: v for k, v in tensors.items() if not k.startswith("vae.")}, "", path)
    _load_module(vae, tensors, "vae.", path)
    return dit.to(device).eval(), vae.to(device).eval(), flow, meta


# ------------------------------------------------------------------ resume state
def save_state(path, model: torch.nn.Module, ema_state: dict[str, torch.Tensor], ema_updates: int,
               optimizer: torch.optim.Optimizer, generator: torch.Generator, counters: dict[str, Any]) -> Path:
    """Write the full training state (weights, EMA, optimizer, RNG, counters such as step/epoch) atomically."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema_state.items()})
    opt = optimizer.state_dict()
    for idx, st in opt["state"].items():
        for key, val in st.items():
            tensors[f"optim.{idx}.{key}"] = val if torch.is_tensor(val) else torch.tensor(val)
    tensors["rng.generator"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    header = {"kind": "state", "counters": counters, "ema_updates": int(ema_updates),
              "param_groups": opt["param_groups"], "library_version": __version__}
    return _atomic_save(Path(path), tensors, header)


def load_state(path, model: torch.nn.Module, ema, optimizer: torch.optim.Optimizer,
               generator: torch.Generator) -> dict[str, Any]:
    """Restore what :func:`save_state` wrote into the given objects; returns the counters."""
    meta, tensors = load_tensors(path, kind="state")
    _load_module(model, tensors, "model.", path)
    ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}, meta["ema_updates"])
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, key = k.split(".", 2)
            state.setdefault(int(idx), {})[key] = v
    try:
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"training state {path} does not fit this optimizer: {exc}") from None
    generator.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
    return meta["counters"]
