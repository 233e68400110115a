"""Named pretrained models: the ones that ship inside the package, and others by URL and sha256.

A model is a DiT checkpoint (the VAE embedded, see :mod:`adit_torch.checkpoint`)
plus a model card (Markdown: data and splits, steps, CPU-hours, recipe,
measured metrics). Shipped weights live in ``adit_torch/resources/models``;
weights that live elsewhere (GPU-trained sizes, too large for the package) are
named by URL and sha256 and downloaded only when asked for
(``download=True`` or ``adit models download NAME``), into
``$ADIT_MODEL_DIR`` or ``~/.cache/aiida-adit/models``. Every file is checked
against its registered sha256 before it is loaded; loading never unpickles.

    >>> from adit_torch.pretrained import load_pretrained
    >>> dit, vae, flow_cfg, meta = load_pretrained("adit-xs-joint")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from adit_torch.datasets.cache import sha256_file
from adit_torch.errors import CheckpointError, ConfigError
from adit_torch.io import atomic_write


@dataclass(frozen=True)
class PretrainedModel:
    """One registered model.

    Attributes:
        name: registry name (``adit models`` lists them; ``adit sample --model NAME``).
        description: one line.
        kinds: what it generates (``crystal``, ``molecule``).
        sha256: hex sha256 of the weights file.
        file: file name in ``adit_torch/resources/models`` (shipped), or None.
        url: where the weights can be downloaded (not shipped), or None.
        card: file name of the model card in ``adit_torch/resources/models``.
        conditions: the ``adit sample --condition`` keys it was trained with (besides num_atoms).
    """

    name: str
    description: str
    kinds: tuple[str, ...]
    sha256: str
    file: str | None = None
    url: str | None = None
    card: str | None = None
    conditions: tuple[str, ...] = ()

    @property
    def shipped(self) -> bool:
        """True when the weights are inside the package."""
        return self.file is not None


#: The registry. The default is the joint MP-20 + QM9 model: one model for both kinds.
MODELS: dict[str, PretrainedModel] = {
    "adit-xs-joint": PretrainedModel(
        name="adit-xs-joint",
        description="XS ADiT trained jointly on MP-20 (partial train split) and QM9 on a 2-core CPU",
        kinds=("crystal", "molecule"),
        sha256="588f15c6de78e39cee09b1d3d58606e7e4665716ab45746fbcf96ec68f9b60d1",
        file="adit-xs-joint.safetensors",
        card="adit-xs-joint.md",
    ),
    "adit-xs-joint-cond": PretrainedModel(
        name="adit-xs-joint-cond",
        description="adit-xs-joint fine-tuned 42 minutes with space-group, chemical-system and property conditions",
        kinds=("crystal", "molecule"),
        sha256="be89d63ee5e704d67dc544a8b66d2c1034ec94abff8e6f18204a42ff86e12b14",
        file="adit-xs-joint-cond.safetensors",
        card="adit-xs-joint-cond.md",
        conditions=("space_group", "chemical_system", "formation_energy_per_atom", "band_gap", "e_above_hull"),
    ),
    "adit-xs-joint-cond-qm9": PretrainedModel(
        name="adit-xs-joint-cond-qm9",
        description="adit-xs-joint-cond fine-tuned 28 minutes with QM9's six properties of EDM's benchmark "
                    "(QM9 train_b half), float16",
        kinds=("crystal", "molecule"),
        sha256="9075f554fd6de760aa5bb049df37b4c37bf321a32657b5cc5c76ea7bc6b2c03d",
        file="adit-xs-joint-cond-qm9.safetensors",
        card="adit-xs-joint-cond-qm9.md",
        conditions=("space_group", "chemical_system", "formation_energy_per_atom", "band_gap", "e_above_hull",
                    "alpha", "gap", "homo", "lumo", "mu", "Cv"),
    ),
}
DEFAULT_MODEL = "adit-xs-joint"


def models_with_conditions(keys) -> list[str]:
    """Names of the registered models trained with every condition key in ``keys`` (registry order).

    ``num_atoms`` needs no training and ``formula`` needs ``chemical_system``; an empty ``keys``
    gives every model.
    """
    need = {"chemical_system" if key == "formula" else key for key in keys} - {"num_atoms"}
    return [name for name, model in MODELS.items() if need <= set(model.conditions)]


def get_model(name: str) -> PretrainedModel:
    """The registry entry ``name``; raises :class:`ConfigError` listing the known names."""
    if name not in MODELS:
        raise ConfigError(f"unknown pretrained model {name!r}; known: {', '.join(MODELS)} (see `adit models`)")
    return MODELS[name]


def _resource(file: str) -> Path:
    return Path(str(resources.files("adit_torch") / "resources" / "models" / file))


def model_card(name: str) -> str:
    """The model card of ``name`` (Markdown text)."""
    model = get_model(name)
    if model.card is None:
        return f"# {model.name}\n\n{model.description}\n"
    return _resource(model.card).read_text(encoding="utf-8")


def cache_dir() -> Path:
    """Where downloaded weights are kept: ``$ADIT_MODEL_DIR`` or ``~/.cache/aiida-adit/models``."""
    return Path(os.environ.get("ADIT_MODEL_DIR") or Path.home() / ".cache" / "aiida-adit" / "models")


def _cached(model: PretrainedModel) -> Path:
    """Where a non-shipped model's weights are kept once downloaded."""
    return cache_dir() / f"{model.name}.safetensors"


def _check(path: Path, model: PretrainedModel) -> Path:
    found = sha256_file(path)
    if found != model.sha256:
        raise CheckpointError(f"pretrained model {model.name}: {path} has sha256 {found}, expected {model.sha256}; "
                              "the file is damaged or not this model")
    return path


def download(name: str, timeout: float = 300.0) -> Path:
    """Download the weights of a registered, non-shipped model into :func:`cache_dir`; returns the path.

    The bytes are checked against the registered sha256 before they are renamed into place,
    so the cache never holds a partial or wrong file.
    """
    model = get_model(name)
    if model.shipped:
        return pretrained_path(name)
    path = _cached(model)
    if path.exists():
        return _check(path, model)
    try:
        with urllib.request.urlopen(model.url, timeout=timeout) as response:
            data = response.read()
    except OSError as exc:
        raise CheckpointError(f"pretrained model {name}: download of {model.url} failed: {exc}") from None
    found = hashlib.sha256(data).hexdigest()
    if found != model.sha256:
        raise CheckpointError(f"pretrained model {name}: {model.url} gave sha256 {found}, expected {model.sha256}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return path


def pretrained_path(name: str, download_missing: bool = False) -> Path:
    """The verified weights file of model ``name``.

    Shipped models resolve inside the package. Others resolve in :func:`cache_dir`; when the
    file is not there, ``download_missing=True`` fetches it, otherwise :class:`CheckpointError`
    says how to get it.
    """
    model = get_model(name)
    if model.shipped:
        path = _resource(model.file)
        if not path.is_file():
            raise CheckpointError(f"pretrained model {name}: {path} is missing from this installation")
        return _check(path, model)
    path = _cached(model)
    if path.exists():
        return _check(path, model)
    if download_missing:
        return download(name)
    raise CheckpointError(f"pretrained model {name} is not downloaded; run `adit models download {name}` "
                          f"(fetches {model.url} into {cache_dir()})")


def load_pretrained(name: str = DEFAULT_MODEL, device="cpu", download_missing: bool = False):
    """Load a registered model: ``(dit, vae, flow_cfg, meta)`` as :func:`adit_torch.checkpoint.load_dit`."""
    from adit_torch.checkpoint import load_dit

    return load_dit(pretrained_path(name, download_missing), device)


def sample_pretrained(kind: str, num_samples: int, name: str = DEFAULT_MODEL, download_missing: bool = False,
                      **kwargs):
    """Sample a registered model: ``(systems, summary)`` as :func:`adit_torch.sample.sample_checkpoint`.

    ``kwargs`` are the sampler's options (``steps``, ``cfg_scale``, ``seed``, ``batch_size``,
    ``num_atoms``, ``device``, ``progress``).

        >>> from adit_torch.pretrained import sample_pretrained
        >>> crystals, summary = sample_pretrained("crystal", 10, seed=1)  # doctest: +SKIP
    """
    from adit_torch.sample import sample_checkpoint

    systems, summary = sample_checkpoint(pretrained_path(name, download_missing), kind, num_samples, **kwargs)
    summary["settings"]["model"] = name
    return systems, summary
