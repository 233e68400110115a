"""Typed configuration of the models and of training, and the size registry.

Every hyperparameter is a field of a dataclass; the dataclasses are saved as
JSON in each checkpoint, so a checkpoint alone rebuilds its model. Sizes
(XS for CPU work, S/B/L as in the ADiT paper) live in :data:`SIZES`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adit_torch.errors import ConfigError
from adit_torch.system import MAX_ATOMIC_NUMBER


@dataclass
class VAEConfig:
    """Transformer VAE over atoms (encoder and decoder share width and depth).

    Loss weights follow the reference configuration: crystals are scored on
    lengths (1), angles (10) and fractional coordinates (10); molecules on
    centred Cartesian positions (10); both on atom types (1) and KL (1e-5).
    """

    d_model: int = 512
    num_layers: int = 8
    num_heads: int = 8
    mlp_ratio: float = 4.0
    latent_dim: int = 8
    dropout: float = 0.0
    vocab_size: int = MAX_ATOMIC_NUMBER + 2  # 0 = padding, 1..MAX = elements, MAX+1 = [MASK]
    num_datasets: int = 2
    w_types: float = 1.0
    w_lengths: float = 1.0
    w_angles: float = 10.0
    w_frac: float = 10.0
    w_pos_crystal: float = 0.0
    w_pos_molecule: float = 10.0
    w_kl: float = 1e-5
    # length unit of the centred-position loss, in Å: 1 = Å; 10 = nm, the reference's choice (its
    # position loss is on positions / 10), which weighs molecular positions 100x less against types
    pos_loss_unit: float = 1.0
    # denoising corruption applied in training only; loss targets stay clean
    mask_type_prob: float = 0.1
    jitter_prob: float = 0.1
    jitter_std: float = 0.1  # Å
    # decoder robustness: in training, add Gaussian noise to the sampled latents with a std drawn per
    # system from U(0, latent_noise), in units of the per-dimension std of the batch's latent means
    # (the DiT's normalised units). The posterior std alone is ~0.01 of the latent spread (KL 1e-5),
    # so without it the decoder only tolerates DiT errors of that size. 0 = the reference (off).
    latent_noise: float = 0.0
    # fine-tune the decoder only: the encoder's weights stay fixed, so its latents (and a DiT trained
    # on them) stay valid
    freeze_encoder: bool = False
    # "transformer" (default) or "equivariant": the e3nn message-passing encoder of
    # adit_torch.equivariant, whose latents are invariant to rotations and translations by construction
    encoder: str = "transformer"
    eq_layers: int = 3  # gated equivariant layers (plus one output layer)
    eq_channels: int = 32  # even and odd scalars per layer; vectors and rank-2 tensors get 1/2 and 1/4 of it
    eq_lmax: int = 2  # highest spherical-harmonic degree of the edge directions and of the features
    eq_num_basis: int = 10  # radial basis functions of the edge length
    eq_num_neighbors: float = 20.0  # the messages' sum is divided by its square root
    cutoff: float = 5.0  # Å: neighbours (periodic images included) closer than this exchange messages

    @property
    def mask_token(self) -> int:
        """Index of the [MASK] atom type used by the denoising corruption."""
        return self.vocab_size - 1


@dataclass
class DiTConfig:
    """Diffusion Transformer with adaLN-Zero over per-atom latents.

    Optional conditions are switched on by a non-zero size: ``num_space_groups``
    (230 for 1..230 plus null), ``num_element_types`` (the chemical system: a
    multi-hot vector over atomic numbers 1..num_element_types), ``num_elements``
    (composition vector length) and ``num_properties`` (scalar properties). They
    add to the conditioning vector. ``cond_drop_prob`` drops the whole condition
    (classifier-free guidance); ``cond_field_drop_prob`` drops each optional
    condition on its own, so one model samples with any subset of them.
    """

    d_model: int = 384
    num_layers: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    latent_dim: int = 8
    self_condition: bool = True
    # predict x1 as x_t + (1 - t) * f(...): the clean estimate tends to the identity as t -> 1.
    # A plain x1 head over-smooths (sample spread shrinks) in short trainings; False = the reference head.
    residual_x1: bool = True
    cond_drop_prob: float = 0.1
    cond_field_drop_prob: float = 0.3
    num_space_groups: int = 0
    num_element_types: int = 0
    num_elements: int = 0
    num_properties: int = 0


@dataclass
class FlowConfig:
    """Flow matching (linear interpolant, clean-sample prediction)."""

    t_clip: float = 0.9  # x1 error divided by 1 - min(t, t_clip) before squaring (the velocity error)
    # loss weight on the squared x1 error is 1 / (1 - min(t, t_clip)) ** weight_power: 2 is the velocity
    # error of the reference; 1 is what aiida-adit 0.1.0 used (kept to reproduce the ablation)
    weight_power: float = 2.0
    self_cond_prob: float = 0.5
    steps: int = 100
    cfg_scale: float = 2.0


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping of one training run."""

    dataset: str = "joint"  # mp20 | qm9 | joint | path of a user's structures (adit_torch.datasets.user)
    # the training split: "train", or one half of QM9's ("train_a" / "train_b", EDM's property
    # benchmark; a joint run's MP-20 part keeps its whole training split)
    train_split: str = "train"
    batch_size: int = 256
    max_atoms_per_batch: int = 0  # >0: batches hold at most this many atoms (overrides batch_size)
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    # learning rate after warm-up: "constant", or "cosine" from lr down to lr * min_lr_ratio at max_steps
    lr_schedule: str = "constant"
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    max_steps: int = 100_000
    max_minutes: float = 0.0  # 0 = no limit
    seed: int = 0
    num_workers: int = 0
    compile: bool = False
    augment: bool = True  # random SO(3) rotation + translation
    log_every: int = 20
    val_every: int = 1000
    ckpt_every: int = 500
    val_size: int = 64  # systems per kind scored at validation
    val_samples: int = 32  # DiT samples per kind at validation (0 = off)
    max_train_systems: int = 0  # >0: use only the first systems of the split (quick runs)
    # each MP-20 training crystal appears this many times per epoch. The reference concatenates MP-20
    # (27k train) and QM9 (100k): about 1 system in 5 is a crystal. The partial MP-20 at hand gives
    # 9,421 training crystals (1 in 12 without repeats); 3 restores the reference's share, and the
    # shipped joint model used 10 (crystals about half of the systems; see its model card)
    crystal_repeat: int = 1
    device: str = "cpu"


#: VAE encoders (``VAEConfig.encoder``): the Transformer, and the invariant one of :mod:`adit_torch.equivariant`.
ENCODERS = ("transformer", "equivariant")

#: Learning-rate schedules after warm-up (see :func:`adit_torch.train.lr_at`).
LR_SCHEDULES = ("constant", "cosine")

#: Fields that fix a model's weights' shapes; a checkpoint can initialise (fine-tune) a model whose
#: config differs from its own in any other field (loss weights, corruption, dropout, ...).
ARCHITECTURE_FIELDS = {
    "VAEConfig": ("d_model", "num_layers", "num_heads", "mlp_ratio", "latent_dim", "vocab_size", "num_datasets",
                  "encoder", "eq_layers", "eq_channels", "eq_lmax", "eq_num_basis"),
    "DiTConfig": ("d_model", "num_layers", "num_heads", "mlp_ratio", "latent_dim", "self_condition",
                  "residual_x1", "num_space_groups", "num_element_types", "num_elements", "num_properties"),
}
#: DiT fields that add a condition embedder; a model fine-tuned with one of them switched on (``--init``
#: from a model without it) starts with that embedder at zero, so it is the base model at step 0.
CONDITION_FIELDS = ("num_space_groups", "num_element_types", "num_elements", "num_properties")


def architecture_differences(a, b) -> list[str]:
    """Names of the architecture fields (:data:`ARCHITECTURE_FIELDS`) in which configs ``a`` and ``b`` differ."""
    names = ARCHITECTURE_FIELDS[type(a).__name__]
    return [f"{n}: {getattr(a, n)} vs {getattr(b, n)}" for n in names if getattr(a, n) != getattr(b, n)]


@dataclass(frozen=True)
class SizeSpec:
    """Widths and depths of one registered size, plus its training defaults."""

    vae: dict[str, Any]
    dit: dict[str, Any]
    train: dict[str, Any] = field(default_factory=dict)


#: Registered sizes. XS trains on a 2-core CPU in about an hour; it uses a
#: smaller EMA decay (0.999) because 0.9999 averages over ~10k steps, more than
#: such a run takes. S, B and L are the paper's DiT sizes with the reference VAE.
SIZES: dict[str, SizeSpec] = {
    "XS": SizeSpec(
        vae={"d_model": 128, "num_layers": 3, "num_heads": 4},
        dit={"d_model": 192, "num_layers": 4, "num_heads": 6},
        train={"ema_decay": 0.999, "batch_size": 64, "lr": 5e-4, "warmup_steps": 100},
    ),
    "S": SizeSpec(vae={"d_model": 512, "num_layers": 8, "num_heads": 8},
                  dit={"d_model": 384, "num_layers": 12, "num_heads": 6}),
    "B": SizeSpec(vae={"d_model": 512, "num_layers": 8, "num_heads": 8},
                  dit={"d_model": 768, "num_layers": 12, "num_heads": 12}),
    "L": SizeSpec(vae={"d_model": 512, "num_layers": 8, "num_heads": 8},
                  dit={"d_model": 1024, "num_layers": 24, "num_heads": 16}),
}


def _check_size(size: str) -> SizeSpec:
    if size not in SIZES:
        raise ConfigError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")
    return SIZES[size]


def vae_config(size: str, **overrides) -> VAEConfig:
    """The VAE config of a registered size, with field overrides."""
    return from_dict(VAEConfig, {**_check_size(size).vae, **overrides}, where=f"VAE size {size}")


def dit_config(size: str, **overrides) -> DiTConfig:
    """The DiT config of a registered size, with field overrides."""
    return from_dict(DiTConfig, {**_check_size(size).dit, **overrides}, where=f"DiT size {size}")


def train_config(size: str, **overrides) -> TrainConfig:
    """The training config of a registered size (its defaults), with field overrides."""
    return from_dict(TrainConfig, {**_check_size(size).train, **overrides}, where=f"training size {size}")


def from_dict(cls, values: dict[str, Any], where: str = "config"):
    """Build dataclass ``cls`` from a dict; unknown keys or wrong types raise :class:`ConfigError`."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {unknown}; known: {sorted(names)}")
    clean = {}
    for key, value in values.items():
        default = getattr(cls(), key)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
            if isinstance(default, int) and not float(value).is_integer():
                raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
            value = type(default)(value)
        elif isinstance(default, tuple):
            value = tuple(value)
        clean[key] = value
    cfg = cls(**clean)
    validate(cfg, where)
    return cfg


def validate(cfg, where: str = "config") -> None:
    """Raise :class:`ConfigError` for impossible values (non-positive sizes, heads not dividing width...)."""
    if isinstance(cfg, (VAEConfig, DiTConfig)):
        if cfg.d_model <= 0 or cfg.num_layers <= 0 or cfg.num_heads <= 0:
            raise ConfigError(f"{where}: d_model, num_layers and num_heads must be positive")
        if cfg.d_model % cfg.num_heads:
            raise ConfigError(f"{where}: d_model {cfg.d_model} is not divisible by num_heads {cfg.num_heads}")
        if cfg.latent_dim <= 0:
            raise ConfigError(f"{where}: latent_dim must be positive")
    if isinstance(cfg, VAEConfig) and not cfg.pos_loss_unit > 0:
        raise ConfigError(f"{where}: pos_loss_unit must be positive (Å), got {cfg.pos_loss_unit}")
    if isinstance(cfg, VAEConfig) and not cfg.latent_noise >= 0:
        raise ConfigError(f"{where}: latent_noise must not be negative, got {cfg.latent_noise}")
    if isinstance(cfg, VAEConfig):
        if cfg.encoder not in ENCODERS:
            raise ConfigError(f"{where}: encoder must be one of {', '.join(ENCODERS)}, got {cfg.encoder!r}")
        if min(cfg.eq_layers, cfg.eq_channels, cfg.eq_lmax, cfg.eq_num_basis) <= 0 or not cfg.eq_num_neighbors > 0:
            raise ConfigError(f"{where}: eq_layers, eq_channels, eq_lmax, eq_num_basis and eq_num_neighbors must be "
                              "positive")
        if not cfg.cutoff > 0:
            raise ConfigError(f"{where}: cutoff must be positive (Å), got {cfg.cutoff}")
    if isinstance(cfg, TrainConfig):
        if cfg.dataset not in ("mp20", "qm9", "joint"):
            from adit_torch.datasets.user import is_user_dataset

            if not is_user_dataset(cfg.dataset):
                raise ConfigError(f"{where}: dataset must be mp20, qm9, joint or the path of a structure file or "
                                  f"folder of CIFs, got {cfg.dataset!r} (no such file or folder)")
        if cfg.batch_size <= 0 or cfg.max_steps <= 0 or cfg.lr <= 0:
            raise ConfigError(f"{where}: batch_size, max_steps and lr must be positive")
        if cfg.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"{where}: lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {cfg.lr_schedule!r}")
        if not 0.0 <= cfg.min_lr_ratio <= 1.0:
            raise ConfigError(f"{where}: min_lr_ratio must lie in [0, 1], got {cfg.min_lr_ratio}")
        if cfg.crystal_repeat < 1:
            raise ConfigError(f"{where}: crystal_repeat must be at least 1, got {cfg.crystal_repeat}")
        if not 0.0 <= cfg.ema_decay < 1.0:
            raise ConfigError(f"{where}: ema_decay must lie in [0, 1), got {cfg.ema_decay}")
        if cfg.device not in ("cpu", "cuda"):
            raise ConfigError(f"{where}: device must be cpu or cuda, got {cfg.device!r}")


def to_dict(cfg) -> dict[str, Any]:
    """A JSON-serialisable dict of a config dataclass."""
    out = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def load_settings(path: str | Path) -> dict[str, Any]:
    """Read a ``--settings`` JSON file: ``{"train": {...}, "vae": {...}, "dit": {...}, "flow": {...}}``
    or flat training keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"settings file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"settings file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"settings file {path} must hold a JSON object")
    sections = {"train", "vae", "dit", "flow"}
    if not set(data) & sections:
        data = {"train": data}
    unknown = sorted(set(data) - sections)
    if unknown:
        raise ConfigError(f"settings file {path}: unknown section(s) {unknown}; use train, vae, dit, flow")
    return data
