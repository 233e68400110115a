"""Training recipes: data, models, objectives and validation wired into :func:`adit_torch.train.fit`.

:func:`train_vae` trains the autoencoder on MP-20, QM9 or both;
:func:`train_dit` encodes the training set once with a frozen VAE (latent
mean), then trains the DiT by flow matching on the cached latents. Both write
checkpoints whose headers hold every config and the atom-count histograms
used at sampling time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adit_torch._geometry import kabsch_rmsd
from adit_torch.augment import augment_batch
from adit_torch.batching import collate
from adit_torch.checkpoint import load_dit, load_vae, save_checkpoint
from adit_torch.config import (
    CONDITION_FIELDS,
    DiTConfig,
    FlowConfig,
    TrainConfig,
    VAEConfig,
    architecture_differences,
    to_dict,
)
from adit_torch.dit import Condition
from adit_torch.errors import CheckpointError, ConfigError
from adit_torch.flow import flow_matching_loss
from adit_torch.latents import LatentSet, collate_conditioned, collate_latents, encode_dataset
from adit_torch.train import fit, write_json
from adit_torch.vae import VAE


class JointSystems(Sequence):
    """Concatenation of system sequences (e.g. MP-20 then QM9) with a combined ``num_atoms`` and ``periodic``."""

    def __init__(self, parts: Sequence):
        self.parts = list(parts)
        self.sizes = np.array([len(p) for p in self.parts])
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i):
        part = int(np.searchsorted(self.starts, i, side="right") - 1)
        return self.parts[part][int(i - self.starts[part])]

    @property
    def num_atoms(self) -> np.ndarray:
        """Atoms per system ``(M,)``."""
        return np.concatenate([np.asarray(p.num_atoms) for p in self.parts])

    @property
    def periodic(self) -> np.ndarray:
        """True for crystals ``(M,)``."""
        return np.concatenate([np.asarray(p.periodic) for p in self.parts])


def load_training_data(dataset: str, split: str = "train", max_systems: int = 0,
                       crystal_repeat: int = 1) -> JointSystems:
    """``mp20``, ``qm9``, ``joint`` or a user's structures (a path) of one split.

    ``max_systems > 0`` keeps the first ones of each dataset; ``crystal_repeat > 1`` lists the
    MP-20 part (a user dataset's crystals) that many times (a joint run's crystal share, see
    ``TrainConfig.crystal_repeat``). ``split`` may be a half of QM9's training split (``train_a``,
    ``train_b``); the MP-20 part of a joint run then takes its whole ``train`` split. A user dataset
    (:func:`adit_torch.datasets.user.load_user_dataset`) has ``train`` and ``val`` splits; its invalid
    structures are an error, not skipped.
    """
    from adit_torch.datasets import load_dataset
    from adit_torch.datasets.user import is_user_dataset, load_user_dataset

    if is_user_dataset(dataset):
        parts = []
        for ds in load_user_dataset(dataset, split):
            ds = ds[:max_systems] if max_systems > 0 else ds
            parts += [ds] * (crystal_repeat if ds.dataset_id == 0 else 1)
        return JointSystems(parts)
    from adit_torch.datasets import QM9_HALVES

    names = ("mp20", "qm9") if dataset == "joint" else (dataset,)
    parts = []
    for name in names:
        ds = load_dataset(name, "train" if name == "mp20" and dataset == "joint" and split in QM9_HALVES else split,
                          skip_invalid=True)
        ds = ds[:max_systems] if max_systems > 0 else ds
        parts += [ds] * (crystal_repeat if name == "mp20" else 1)
    return JointSystems(parts)


def atom_count_histograms(data) -> dict[str, dict[str, int]]:
    """``{"crystal": {N: count}, "molecule": {N: count}}`` over a sequence with ``num_atoms`` and ``periodic``."""
    out: dict[str, dict[str, int]] = {}
    for kind, sel in (("crystal", data.periodic), ("molecule", ~np.asarray(data.periodic))):
        if np.any(sel):
            values, counts = np.unique(np.asarray(data.num_atoms)[sel], return_counts=True)
            out[kind] = {str(int(v)): int(c) for v, c in zip(values, counts)}
    return out


def space_group_size_histograms(num_atoms, space_group) -> dict[str, dict[str, int]]:
    """``{group: {N: count}}`` of the crystals with a space-group label (``space_group`` 1..230; 0 skipped).

    ``num_atoms`` and ``space_group``: ``(M,)`` integers in the same order.
    """
    num_atoms, space_group = np.asarray(num_atoms), np.asarray(space_group)
    out: dict[str, dict[str, int]] = {}
    for group in np.unique(space_group[space_group > 0]):
        values, counts = np.unique(num_atoms[space_group == group], return_counts=True)
        out[str(int(group))] = {str(int(v)): int(c) for v, c in zip(values, counts)}
    return out


def _val_subset(val, size: int) -> list:
    """Up to ``size`` systems of each kind from a validation sequence (evenly spaced, deterministic)."""
    out = []
    for sel in (np.flatnonzero(val.periodic), np.flatnonzero(~np.asarray(val.periodic))):
        if len(sel):
            pick = sel[np.linspace(0, len(sel) - 1, min(size, len(sel))).astype(int)]
            out += [val[int(i)] for i in pick]
    return out


def _require_same_architecture(stored, requested, init, new_conditions: bool = False) -> None:
    """:class:`CheckpointError` naming every architecture field in which ``--init``'s config differs.

    ``new_conditions``: a condition embedder that the stored model lacks may be switched on
    (:data:`adit_torch.config.CONDITION_FIELDS`; it starts at zero, so the model is unchanged at step 0).
    """
    diff = architecture_differences(stored, requested)
    if new_conditions:
        added = {f"{n}: 0 vs {getattr(requested, n)}" for n in CONDITION_FIELDS if getattr(stored, n, 0) == 0}
        old, new = getattr(stored, "num_properties", 0), getattr(requested, "num_properties", 0)
        if 0 < old < new:  # more property slots: the stored ones keep their weights (grow_property_embedder)
            added.add(f"num_properties: {old} vs {new}")
        diff = [d for d in diff if d not in added]
    if diff:
        what = "VAE" if isinstance(stored, VAEConfig) else "DiT"
        raise CheckpointError(f"--init {init}: its {what} architecture differs from the requested one "
                              f"({'; '.join(diff)})")


def grow_property_embedder(state: dict[str, torch.Tensor], dit_cfg) -> dict[str, torch.Tensor]:
    """``state`` (a DiT's weights) with its property embedder widened to ``dit_cfg.num_properties`` slots.

    The embedder's first layer reads ``[values (P), mask (P)]``: ``(d, 2P)`` weights. The stored
    ``P_old`` slots keep their columns; the new slots' value and mask columns are zero, so the
    model's predictions are unchanged at step 0 whatever the new properties say (the adapter rule
    of fine-tuning with new conditions). A state with as many slots (or none) is returned as is.
    """
    key = "c_embed.properties.0.weight"
    if key not in state or not dit_cfg.num_properties:
        return state
    weight = state[key]
    old, new = weight.shape[1] // 2, dit_cfg.num_properties
    if old == new:
        return state
    if old > new:
        raise CheckpointError(f"the stored model has {old} property slots, more than the {new} asked for")
    grown = weight.new_zeros(weight.shape[0], 2 * new)
    grown[:, :old] = weight[:, :old]
    grown[:, new:new + old] = weight[:, old:]
    return {**state, key: grown}


def write_run_config(out_dir: Path, payload: dict[str, Any], resume_changes: dict | None = None) -> None:
    """Write ``run_config.json`` (the run's configs), keeping its ``resumes`` history.

    ``resume_changes`` (None for a fresh run) appends ``{"at_step", "time", "changes"}`` to the
    history: the step the resume starts from (from ``state.safetensors``) and what it changed.
    """
    import datetime
    import json

    from adit_torch.checkpoint import read_metadata
    from adit_torch.train import STATE_FILE

    path = Path(out_dir) / "run_config.json"
    history = []
    if resume_changes is not None:
        if path.exists():
            history = json.loads(path.read_text()).get("resumes", [])
        state = Path(out_dir) / STATE_FILE
        step = read_metadata(state)["counters"]["step"] if state.exists() else 0
        history.append({"at_step": step, "time": datetime.datetime.now(datetime.UTC).isoformat(
            timespec="seconds"), "changes": resume_changes})
    write_json(path, {**payload, **({"resumes": history} if history else {})})


# ------------------------------------------------------------------------ VAE
def reconstruction_metrics(vae: VAE, systems: list, device="cpu", batch_size: int = 128,
                           rmsd_threshold: float = 0.5) -> dict[str, float]:
    """VAE reconstruction quality on ``systems`` (latent mean, no corruption).

    Crystals match when pymatgen's ``StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)``
    fits original and reconstruction; molecules when every atom type is right and
    the RMSD is below ``rmsd_threshold`` Å: in the same frame (no alignment) for the
    Transformer encoder, after the best proper rotation for the equivariant one (its
    decoder chooses its own frame). ``molecule_match_rate_aligned`` and
    ``molecule_rmsd_aligned`` use the rotation for both, so the two compare.
    """
    from pymatgen.analysis.structure_matcher import StructureMatcher

    matcher = StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)
    vae.eval()
    rec = []
    for i in range(0, len(systems), batch_size):
        rec += vae.reconstruct(collate(systems[i:i + batch_size]).to(device))
    cryst, mol, types_ok, rmsds, mol_aligned, rmsds_aligned = [], [], [], [], [], []
    frame_free = vae.cfg.encoder == "equivariant"
    for orig, r in zip(systems, rec):
        same = bool(len(orig.numbers) == len(r.numbers) and (orig.numbers == r.numbers).all())
        types_ok.append(same)
        if orig.is_periodic:
            try:
                cryst.append(same and bool(matcher.fit(orig.to_pymatgen(), r.to_pymatgen())))
            except Exception:  # noqa: BLE001 - a degenerate decoded lattice counts as a miss
                cryst.append(False)
        else:
            centred = orig.positions - orig.positions.mean(0)
            rmsd = float(np.sqrt(((centred - r.positions) ** 2).sum(-1).mean()))
            aligned = kabsch_rmsd(centred, r.positions) if len(r.positions) == len(centred) else float("inf")
            rmsds_aligned.append(aligned)
            mol_aligned.append(same and aligned < rmsd_threshold)
            rmsd = aligned if frame_free else rmsd
            rmsds.append(rmsd)
            mol.append(same and rmsd < rmsd_threshold)
    out = {"type_accuracy": float(np.mean(types_ok))}
    if cryst:
        out["crystal_match_rate"] = float(np.mean(cryst))
    if mol:
        out["molecule_match_rate"] = float(np.mean(mol))
        out["molecule_rmsd"] = float(np.mean(rmsds))
        out["molecule_match_rate_aligned"] = float(np.mean(mol_aligned))
        out["molecule_rmsd_aligned"] = float(np.mean(rmsds_aligned))
    return out


def vae_loss_fn(augment: bool):
    """Objective for :func:`fit`: augment (rotation + translation), then the VAE loss."""
    def loss_fn(model, batch, generator):
        if augment:
            batch = augment_batch(batch, generator)
        return model.loss(batch, generator)
    return loss_fn


def train_vae(train_cfg: TrainConfig, vae_cfg: VAEConfig, size: str, out_dir, resume: bool = False,
              init: str | None = None, data=None, val=None, progress: bool = True,
              resume_changes: dict | None = None) -> dict[str, Any]:
    """Train a VAE; writes ``vae.safetensors``, ``state.safetensors``, ``log.csv``, ``metrics.json``, ``curves.png``.

    ``data`` / ``val`` default to the configured dataset's train / val splits.
    ``init`` starts from the weights of an existing VAE checkpoint, or of the VAE embedded in a DiT
    checkpoint (fine-tuning: the architecture must match, loss and training settings may differ).
    ``vae_cfg.freeze_encoder`` trains the decoder only. ``resume_changes`` (``{setting: {"from", "to"}}``)
    are the settings a ``resume`` changed; they are recorded in ``run_config.json`` (``resumes``).
    """
    out_dir = Path(out_dir)
    data = (load_training_data(train_cfg.dataset, train_cfg.train_split, train_cfg.max_train_systems,
                               train_cfg.crystal_repeat) if data is None else data)
    torch.manual_seed(train_cfg.seed)  # the initial weights: the same seed gives the same model in any process
    vae = VAE(vae_cfg)
    if init:
        src, _ = load_vae(init)
        _require_same_architecture(src.cfg, vae_cfg, init)
        vae.load_state_dict(src.state_dict())
    vae.apply_freeze()
    val_systems = []
    if train_cfg.val_size > 0:
        if val is None:
            val = load_training_data(train_cfg.dataset, "val", 0)
        val_systems = _val_subset(val, train_cfg.val_size)
    stats = {"dataset": train_cfg.dataset, "num_train": len(data), "num_atoms_hist": atom_count_histograms(data)}
    config = {"vae": to_dict(vae_cfg), "train": to_dict(train_cfg)}

    def save_model(path, ema_model):
        save_checkpoint(path, "vae", size, config, ema_model.state_dict(), stats)

    validate = (lambda m: reconstruction_metrics(m, val_systems, train_cfg.device)) if val_systems else None
    out_dir.mkdir(parents=True, exist_ok=True)
    write_run_config(out_dir, {"kind": "vae", "size": size, "init": None if init is None else str(init), **config},
                     resume_changes if resume else None)
    return fit(vae, vae_loss_fn(train_cfg.augment), data, collate, train_cfg, out_dir, save_model, validate,
               resume=resume, model_file="vae.safetensors", progress=progress)


# ------------------------------------------------------------------------ DiT
def dit_loss_fn(flow_cfg: FlowConfig, cond_drop_prob: float, field_drop_prob: float = 0.0):
    """Objective for :func:`fit`: flow matching on latents with the condition dropped for guidance.

    The whole condition is dropped with ``cond_drop_prob``; a batch that carries optional labels
    (``space_group``, ``elements``: conditioned training) also drops each of them on its own with
    ``field_drop_prob``, so the model learns every subset of conditions (guidance per condition).
    """
    def loss_fn(model, batch, generator):
        keep = torch.rand(len(batch), generator=generator, device=batch.z.device) >= cond_drop_prob
        cond = Condition(periodic=batch.periodic.long())
        for name in ("space_group", "elements"):
            labels = getattr(batch, name, None)
            if labels is not None:
                kept = torch.rand(len(batch), generator=generator, device=batch.z.device) >= field_drop_prob
                setattr(cond, name, labels * kept.view(-1, *([1] * (labels.dim() - 1))).to(labels.dtype))
        if getattr(batch, "properties", None) is not None:  # each property dropped on its own
            kept = torch.rand(batch.properties.shape, generator=generator, device=batch.z.device) >= field_drop_prob
            cond.properties_mask = batch.properties_mask & kept
            cond.properties = batch.properties * cond.properties_mask
        cond = cond.drop(keep)
        net = lambda x, t, sc: model(x, t, batch.mask, cond, sc)
        loss = flow_matching_loss(net, batch.z, batch.mask, flow_cfg, generator)
        return loss, {"flow": float(loss.detach())}
    return loss_fn


def cached_latents(vae: VAE, data, out_dir: Path, vae_path, device="cpu", progress=True) -> LatentSet:
    """Latents of ``data`` from ``out_dir/latents.npz`` when it matches the VAE file and data, else encoded now."""
    path = out_dir / "latents.npz"
    key = f"{Path(vae_path).resolve()}:{Path(vae_path).stat().st_mtime_ns}:{len(data)}:{int(np.sum(data.num_atoms))}"
    if path.exists():
        with np.load(path, allow_pickle=False) as f:
            if str(f["key"]) == key:
                return LatentSet(f["z"], f["offsets"], f["periodic"], f["dataset"])
    lat = encode_dataset(vae, data, device=device, progress=progress)
    tmp = out_dir / ".latents.tmp.npz"
    np.savez(tmp, z=lat.z, offsets=lat.offsets, periodic=lat.periodic, dataset=lat.dataset, key=np.array(key))
    tmp.replace(path)
    return lat


def train_dit(train_cfg: TrainConfig, dit_cfg: DiTConfig, flow_cfg: FlowConfig, vae_path, size: str, out_dir,
              resume: bool = False, init: str | None = None, data=None, progress: bool = True,
              resume_changes: dict | None = None) -> dict[str, Any]:
    """Train a DiT on cached latents of the frozen VAE at ``vae_path``; writes ``dit.safetensors`` and the rest.

    ``vae_path`` is a ``vae`` checkpoint or a ``dit`` checkpoint (its embedded VAE: a pretrained
    model's VAE, so that ``init`` can continue that model's DiT on the same latents).
    ``resume_changes`` as in :func:`train_vae`.

    The DiT checkpoint embeds the VAE (``vae.`` prefix), the latent normalisation
    and the atom-count histograms, so it samples on its own.
    """
    from adit_torch.dit import DiT

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vae, vae_meta = load_vae(vae_path)  # a vae checkpoint, or the VAE embedded in a dit checkpoint
    vae_data = vae_meta.get("data", {}) if vae_meta["kind"] == "vae" else vae_meta.get("data", {}).get("vae_data", {})
    if dit_cfg.latent_dim != vae.cfg.latent_dim:
        raise CheckpointError(f"--vae {vae_path}: latent size {vae.cfg.latent_dim} differs from the DiT's "
                              f"{dit_cfg.latent_dim}")
    data = (load_training_data(train_cfg.dataset, train_cfg.train_split, train_cfg.max_train_systems,
                               train_cfg.crystal_repeat) if data is None else data)
    vae.to(train_cfg.device)
    latents = cached_latents(vae, data, out_dir, vae_path, train_cfg.device, progress)
    mean, std = latents.stats()
    train_set = latents.normalised(mean, std)
    conditioned = bool(dit_cfg.num_space_groups or dit_cfg.num_element_types or dit_cfg.num_properties)
    property_stats = {}
    if conditioned:
        from adit_torch.conditions import (
            NUM_ELEMENT_TYPES,
            PROPERTIES,
            PROPERTY_SLOTS,
            condition_labels,
            property_normalisation,
        )
        from adit_torch.latents import ConditionedLatents

        if (dit_cfg.num_space_groups not in (0, 230) or dit_cfg.num_element_types not in (0, NUM_ELEMENT_TYPES)
                or dit_cfg.num_properties not in PROPERTY_SLOTS):
            raise ConfigError(f"dit.num_space_groups must be 0 or 230, dit.num_element_types 0 or "
                              f"{NUM_ELEMENT_TYPES} and dit.num_properties one of {PROPERTY_SLOTS} "
                              f"(the first of {', '.join(PROPERTIES)}), got {dit_cfg.num_space_groups}, "
                              f"{dit_cfg.num_element_types} and {dit_cfg.num_properties}")
        labels = condition_labels(data)
        if dit_cfg.num_space_groups:
            property_stats["num_atoms_hist_by_space_group"] = space_group_size_histograms(
                data.num_atoms, labels["space_group"])
        if dit_cfg.num_properties:
            slots = dit_cfg.num_properties
            means, stds, trained = property_normalisation(labels, slots)
            labels["properties_mask"] = labels["properties_mask"][:, :slots]
            labels["properties"] = np.where(labels["properties_mask"],
                                            (labels["properties"][:, :slots] - np.float32(means)) / np.float32(stds),
                                            0.0).astype(np.float32)
            property_stats.update({"property_names": list(PROPERTIES)[:slots], "property_trained": trained,
                                   "property_mean": means, "property_std": stds})
        else:
            labels.pop("properties"), labels.pop("properties_mask")
        train_set = ConditionedLatents(train_set, labels)
    torch.manual_seed(train_cfg.seed)  # the initial weights: the same seed gives the same model in any process
    dit = DiT(dit_cfg)
    if init:
        src, _, _, _ = load_dit(init)
        _require_same_architecture(src.cfg, dit_cfg, init, new_conditions=True)
        missing, unexpected = dit.load_state_dict(grow_property_embedder(src.state_dict(), dit_cfg), strict=False)
        new = [k for k in missing if not k.startswith(("c_embed.space_group.", "c_embed.elements.",
                                                       "c_embed.composition.", "c_embed.properties."))]
        if new or unexpected:
            raise CheckpointError(f"--init {init}: weights do not fit (missing {new}, unexpected {unexpected})")
    stats = {"dataset": train_cfg.dataset, "num_train": len(data), "num_atoms_hist": atom_count_histograms(data),
             "latent_mean": mean.tolist(), "latent_std": std.tolist(), "vae_data": vae_data, **property_stats}
    config = {"dit": to_dict(dit_cfg), "vae": to_dict(vae.cfg), "flow": to_dict(flow_cfg), "train": to_dict(train_cfg)}
    vae_tensors = {f"vae.{k}": v for k, v in vae.state_dict().items()}

    def save_model(path, ema_model):
        save_checkpoint(path, "dit", size, config, {**ema_model.state_dict(), **vae_tensors}, stats)

    validate = None
    if train_cfg.val_samples > 0:
        def validate(ema_model):
            from adit_torch.sample import quick_validity, sample_systems

            out = {}
            for kind in stats["num_atoms_hist"]:
                systems = sample_systems(ema_model, vae, flow_cfg, stats, kind, train_cfg.val_samples,
                                         steps=min(flow_cfg.steps, 50), seed=0, device=train_cfg.device,
                                         progress=False)
                out.update({f"{kind}_{k}": v for k, v in quick_validity(systems, kind).items()})
            return out
    write_run_config(out_dir, {"kind": "dit", "size": size, "vae_path": str(vae_path),
                               "init": None if init is None else str(init), **config},
                     resume_changes if resume else None)
    return fit(dit, dit_loss_fn(flow_cfg, dit_cfg.cond_drop_prob, dit_cfg.cond_field_drop_prob), train_set,
               collate_conditioned if conditioned else collate_latents, train_cfg, out_dir,
               save_model, validate, resume=resume, model_file="dit.safetensors", progress=progress)
