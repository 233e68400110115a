"""Side-by-side speed of aiida-adit and the reference ADiT implementation.

Both implementations are built at the same size (our ``XS`` registry entry:
VAE 128 wide x 3 layers x 4 heads, DiT 192 wide x 4 layers x 6 heads, 8 latent
dimensions per atom), fed the same MP-20 crystals, and timed in one run on
the same machine with the same thread count. Measured:

* VAE training: seconds per optimiser step (forward + backward + clip + step
  (+ EMA where the implementation keeps one)) on identical batches of MP-20
  crystals, and, for ours, on bucketed batches of the same systems;
* DiT training: the same, with self-conditioning timed on and off and
  averaged (each implementation draws it with probability 0.5);
* sampling: wall time for ``--num-samples`` crystals at ``--steps`` Euler steps
  and guidance scale ``--cfg-scale``, in batches of ``--sample-batch-size``.

Our side calls the public API only (:func:`adit_torch.recipes.vae_loss_fn`,
:func:`adit_torch.recipes.dit_loss_fn`, :func:`adit_torch.sample.sample_systems`,
:class:`adit_torch.ema.EMA`) with the optimiser settings of
:func:`adit_torch.train.fit`. The reference side runs in its own Python
environment, imports the reference modules from ``--reference-path`` and
builds them from the reference's own YAML configs with the sizes overridden.

Getting the reference (it is not part of this repository)::

    git clone https://github.com/facebookresearch/all-atom-diffusion-transformer /path/adit-ref
    python -m venv /path/venv && /path/venv/bin/pip install torch==2.13.0 numpy pandas \\
        torch_geometric lightning torchmetrics omegaconf hydra-core rich joblib tqdm
    /path/venv/bin/pip install --no-build-isolation torch_scatter   # optional, compiles from source

Only the model, interpolant and training-step code of the reference is
exercised; its evaluation modules (which need matminer, mofchecker, pyxtal,
...) and ``wandb`` are replaced by empty stand-ins before import, because none
of them runs inside a training or sampling step. Without ``torch_scatter``
(whose source build is slow on small machines) the reference's one use of it,
a per-system mean, is served by ``torch_geometric.utils.scatter``; the report
says which one ran.

Run::

    python benchmarks/reference_comparison.py --reference-path /path/adit-ref \\
        --reference-python /path/venv/bin/python --threads 1 --repeats 3

Paired sampling of 1,000 crystals, both sides at once on their own cores (the cores swap
every repeat, so a slower core cannot favour one side), each with its own default batch::

    python benchmarks/reference_comparison.py --reference-path /path/adit-ref \
        --reference-python /path/venv/bin/python --threads 1 --repeats 5 --parts sample \
        --num-samples 1000 --sample-batch-size 256 --reference-sample-batch-size 100 --concurrent \
        --out benchmarks/results/reference_comparison_sampling1000_paired

It writes ``benchmarks/results/reference_comparison.{json,md}`` (text after the
``<!-- findings -->`` line of the Markdown file is kept across runs). ``--sides`` and
``--parts`` run a subset (for example ``--sides ours --parts sample --num-samples 1000``);
``--from-json`` only re-writes the Markdown from a results file.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------ inputs
def prepare_inputs(path: Path, n_batches: int, batch_size: int, seed: int, size: str = "XS") -> dict:
    """Choose the training batches and write them with their systems to ``path`` (``.npz``).

    ``random``: ``n_batches`` batches of MP-20 training crystals drawn at random (as the
    reference's shuffled loader does); both sides train on exactly these. ``bucketed``:
    ``n_batches`` batches of our :class:`~adit_torch.batching.BucketBatchSampler` over the whole
    training split, evenly spaced in padded size so they represent one epoch's mix; only our
    side uses them. Arrays: ``numbers (T,)``, ``frac (T, 3)``, ``lattice (M, 3, 3)`` Å,
    ``lengths/angles (M, 3)`` Å/degrees, ``spacegroup (M,)``, ``offsets (M + 1,)``,
    ``random (n_batches, batch_size)`` and ``bucketed`` (flat, split by ``bucketed_offsets``)
    indices into the M systems, and ``hist_sizes/hist_counts`` (training atom-count histogram).
    """
    from adit_torch.batching import BucketBatchSampler, padding_fraction
    from adit_torch.config import dit_config, to_dict, vae_config
    from adit_torch.datasets import load_dataset

    ds = load_dataset("mp20", "train", skip_invalid=True)
    if n_batches * batch_size > len(ds):
        raise SystemExit(f"asked for {n_batches * batch_size} systems, MP-20 train has {len(ds)}")
    n_all = ds.num_atoms
    random_sel = np.random.default_rng(seed).choice(len(ds), (n_batches, batch_size), replace=False)
    epoch = BucketBatchSampler(n_all, batch_size=batch_size, shuffle=True, seed=seed).batches(0)
    by_size = sorted(epoch, key=lambda b: (int(n_all[b].max()), len(b)))
    bucket_sel = [by_size[int(k)] for k in np.linspace(0, len(by_size) - 1, n_batches).round()]
    pool = np.unique(np.concatenate([random_sel.ravel(), np.concatenate(bucket_sel)]))
    where = {int(g): i for i, g in enumerate(pool)}
    systems = [ds[int(i)] for i in pool]
    sizes, counts = np.unique(n_all, return_counts=True)
    arrays = {
        "numbers": np.concatenate([s.numbers for s in systems]).astype(np.int64),
        "frac": np.concatenate([np.mod(s.frac_coords, 1.0) for s in systems]),
        "lattice": np.stack([s.lattice for s in systems]),
        "lengths": np.stack([s.lengths for s in systems]),
        "angles": np.stack([s.angles for s in systems]),
        "spacegroup": np.array([int(s.info.get("spacegroup", 1)) for s in systems]),
        "offsets": np.concatenate([[0], np.cumsum([s.num_atoms for s in systems])]),
        "random": np.vectorize(where.get)(random_sel),
        "bucketed": np.array([where[int(g)] for b in bucket_sel for g in b]),
        "bucketed_offsets": np.concatenate([[0], np.cumsum([len(b) for b in bucket_sel])]),
        "hist_sizes": sizes, "hist_counts": counts,
        "sizes": json.dumps({"vae": to_dict(vae_config(size)), "dit": to_dict(dit_config(size))}),
    }
    np.savez(path, **arrays)
    return {"train_split_systems": len(ds), "mean_atoms": float(n_all.mean()),
            "padding_random_batches": padding_fraction(n_all, random_sel.tolist()),
            "padding_bucketed_batches": padding_fraction(n_all, bucket_sel),
            "padding_bucketed_full_epoch": padding_fraction(n_all, epoch),
            "padding_random_full_epoch": padding_fraction(
                n_all, np.random.default_rng(seed).permutation(len(ds))[:len(ds) // batch_size * batch_size]
                .reshape(-1, batch_size).tolist())}


def _bucketed(data: dict) -> list[np.ndarray]:
    off = data["bucketed_offsets"]
    return [data["bucketed"][a:b] for a, b in zip(off[:-1], off[1:])]


def _time_steps(step, n: int) -> dict[str, list[float]]:
    """Wall and CPU (this process, all threads) seconds of ``step(i)`` for ``i < n``."""
    wall, cpu = [], []
    for i in range(n):
        t0, c0 = time.perf_counter(), time.process_time()
        step(i)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"wall": wall, "cpu": cpu}


def _timed(fn):
    """``(result, {"wall": s, "cpu": s})`` of calling ``fn()``."""
    t0, c0 = time.perf_counter(), time.process_time()
    res = fn()
    return res, {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}


# --------------------------------------------------------------- our side
def run_ours(inputs: Path, args) -> dict:
    """Time our VAE step, DiT step and sampling on the prepared inputs (see module docstring)."""
    from adit_torch.batching import collate
    from adit_torch.config import DiTConfig, FlowConfig, VAEConfig, from_dict, train_config
    from adit_torch.dit import DiT
    from adit_torch.ema import EMA
    from adit_torch.latents import collate_latents, encode_dataset
    from adit_torch.recipes import dit_loss_fn, vae_loss_fn
    from adit_torch.sample import sample_systems
    from adit_torch.system import AtomicSystem
    from adit_torch.vae import VAE

    data = dict(np.load(inputs))
    off = data["offsets"]
    systems = [AtomicSystem.from_parameters(data["numbers"][a:b], data["frac"][a:b], data["lengths"][i],
                                            data["angles"][i], info={"dataset": "mp20"})
               for i, (a, b) in enumerate(zip(off[:-1], off[1:]))]
    tcfg = train_config("XS")
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    index_sets = {"random": list(data["random"]), "bucketed": _bucketed(data)}
    out: dict = {"systems": {k: [len(b) for b in v] for k, v in index_sets.items()}}

    def trainer(model, loss_fn):
        opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, betas=tuple(tcfg.betas),
                                weight_decay=tcfg.weight_decay)
        ema = EMA(model, tcfg.ema_decay)

        def step(batch):
            loss, _ = loss_fn(model, batch, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
            opt.step()
            ema.update(model)
        return step

    sizes = json.loads(str(data["sizes"]))
    vae = VAE(from_dict(VAEConfig, sizes["vae"]))
    out["vae_params"] = vae.num_params()
    dit = DiT(from_dict(DiTConfig, sizes["dit"]))
    out["dit_params"] = dit.num_params()
    if "train" in args.parts:
        vae.train()
        step = trainer(vae, vae_loss_fn(True))
        for kind, sets in index_sets.items():
            batches = [collate([systems[i] for i in b]) for b in sets]
            for b in batches[:args.warmup]:
                step(b)
            out[f"vae_{kind}"] = _time_steps(lambda i, bs=batches: step(bs[i]), len(batches))
        # the DiT trains on latents cached once per run (the pipeline's design); that cost is reported per system
        latents, t = _timed(lambda: encode_dataset(vae.eval(), _Seq(systems), batch_size=256, progress=False))
        out["latent_cache_per_system"] = {k: v / len(systems) for k, v in t.items()}
        dit.train()
        for p in (1.0, 0.0):
            step = trainer(dit, dit_loss_fn(FlowConfig(self_cond_prob=p), dit.cfg.cond_drop_prob))
            for kind, sets in index_sets.items():
                batches = [collate_latents([latents[i] for i in b]) for b in sets]
                for b in batches[:args.warmup]:
                    step(b)
                out[f"dit_{kind}_selfcond{int(p)}"] = _time_steps(lambda i, s=step, bs=batches: s(bs[i]),
                                                                  len(batches))
    if "sample" in args.parts:
        # untrained weights cost the same; adaLN-Zero starts at zero, so perturb the weights
        with torch.no_grad():
            for prm in dit.parameters():
                prm.add_(0.02 * torch.randn(prm.shape, generator=gen))
        vae.eval()
        dit.eval()
        stats = {"num_atoms_hist": {"crystal": {str(int(k)): int(v) for k, v in
                                                zip(data["hist_sizes"], data["hist_counts"])}}}
        res, out["sample"] = _timed(lambda: sample_systems(
            dit, vae, FlowConfig(), stats, "crystal", args.num_samples, steps=args.steps, cfg_scale=args.cfg_scale,
            seed=args.seed, batch_size=args.sample_batch_size, progress=False))
        out["sampled"] = len(res)
    return out


class _Seq:
    """A list of systems with the ``num_atoms`` attribute :func:`encode_dataset` reads."""

    def __init__(self, items):
        self.items = items
        self.num_atoms = np.array([s.num_atoms for s in items])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


# --------------------------------------------------------- reference side
def _stub_reference_extras() -> str:
    """Empty stand-ins for the reference's evaluation modules and ``wandb`` (never used in a step).

    When the compiled ``torch_scatter`` is missing, its ``scatter`` (the only function the
    reference's VAE and decoder call, for per-system means) is served by
    ``torch_geometric.utils.scatter``. Returns which of the two is in use.
    """
    class Evaluator:
        def __init__(self, *args, **kwargs):
            pass

    names = ["crystal_reconstruction", "mof_reconstruction", "molecule_reconstruction",
             "crystal_generation", "mof_generation", "molecule_generation"]
    for name in names:
        mod = types.ModuleType(f"src.eval.{name}")
        for cls in ("CrystalReconstructionEvaluator", "MOFReconstructionEvaluator",
                    "MoleculeReconstructionEvaluator", "CrystalGenerationEvaluator",
                    "MOFGenerationEvaluator", "MoleculeGenerationEvaluator"):
            setattr(mod, cls, Evaluator)
        sys.modules[mod.__name__] = mod
    try:
        import wandb  # noqa: F401
    except ImportError:
        sys.modules["wandb"] = types.ModuleType("wandb")
    try:
        import torch_scatter  # noqa: F401
        return "torch_scatter (compiled)"
    except ImportError:
        from torch_geometric.utils import scatter as pyg_scatter

        mod = types.ModuleType("torch_scatter")
        mod.scatter = lambda src, index, dim=0, out=None, dim_size=None, reduce="sum": pyg_scatter(
            src, index, dim=dim, dim_size=dim_size, reduce=reduce)
        sys.modules["torch_scatter"] = mod
        return "torch_geometric.utils.scatter (torch_scatter not installed)"


def _reference_data(data: dict, idx) -> list:
    """PyG ``Data`` objects with the fields the reference's MP-20 dataset produces."""
    from torch_geometric.data import Data

    out = []
    for i in idx:
        a, b = data["offsets"][i], data["offsets"][i + 1]
        n = int(b - a)
        lengths = torch.tensor(data["lengths"][i], dtype=torch.float32).view(1, 3)
        angles = torch.tensor(data["angles"][i], dtype=torch.float32).view(1, 3)
        cell = torch.tensor(data["lattice"][i], dtype=torch.float32).unsqueeze(0)
        frac = torch.tensor(data["frac"][a:b], dtype=torch.float32)
        d = Data(atom_types=torch.tensor(data["numbers"][a:b]), frac_coords=frac, cell=cell,
                 lattices=torch.cat([lengths, angles], 1), lengths=lengths, angles=angles,
                 lengths_scaled=lengths / n ** (1 / 3), angles_radians=torch.deg2rad(angles),
                 num_atoms=torch.tensor([n]), num_nodes=n, token_idx=torch.arange(n),
                 dataset_idx=torch.tensor([0]), spacegroup=torch.tensor([int(data["spacegroup"][i])]))
        d.pos = frac @ cell[0]
        out.append(d)
    return out


def build_reference(ref: Path, sizes: dict, hists: dict, tmp: Path):
    """The reference's VAE and latent diffusion module built from its own YAML configs at our sizes.

    ``sizes``: ``{"vae": VAEConfig dict, "dit": DiTConfig dict}``; ``hists``: ``{"mp_20" | "qm9" | "qmof":
    (atom counts, frequencies)}``, written where the reference reads its ``num_nodes_bincount.pt``;
    ``tmp``: a scratch folder for those files. Imports the reference from ``ref`` (its evaluation modules
    stubbed, :func:`_stub_reference_extras`). Returns ``(vae, ldm, conf, scatter_impl)``, ``conf(name)``
    loading one of its YAML files.
    """
    sys.path.insert(0, str(ref))
    scatter_impl = _stub_reference_extras()
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from src.models import ldm_module

    for sub in ("mp_20", "qm9", "qmof", "mp_20/raw"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    for sub, (counts_of, freq) in hists.items():
        hist = torch.zeros(int(np.max(counts_of)) + 1, dtype=torch.long)
        hist[torch.as_tensor(np.asarray(counts_of))] = torch.as_tensor(np.asarray(freq))
        torch.save(hist, tmp / sub / "num_nodes_bincount.pt")
    torch.save(torch.ones(231), tmp / "mp_20" / "spacegroups_bincount.pt")
    torch.save([], tmp / "qm9" / "smiles.pt")
    (tmp / "mp_20/raw/all.csv").write_text("cif\n")

    conf = lambda name: OmegaConf.load(ref / "configs" / name)  # noqa: E731
    v, d = sizes["vae"], sizes["dit"]
    enc = {"d_model": v["d_model"], "nhead": v["num_heads"], "dim_feedforward": int(v["mlp_ratio"] * v["d_model"]),
           "num_layers": v["num_layers"]}
    root = OmegaConf.create({
        "encoder": conf("encoder/transformer.yaml"), "decoder": conf("decoder/transformer.yaml"),
        "autoencoder_module": conf("autoencoder_module/vae.yaml"),
        "diffusion_module": conf("diffusion_module/ldm.yaml"),
        "trainer": {"check_val_every_n_epoch": 1}, "paths": {"viz_dir": str(tmp), "data_dir": str(tmp)},
    })
    root.encoder.update(enc)
    root.decoder.update(enc)
    root.autoencoder_module.latent_dim = v["latent_dim"]
    root.diffusion_module.denoiser.update({"d_x": d["latent_dim"], "d_model": d["d_model"],
                                           "nhead": d["num_heads"], "num_layers": d["num_layers"],
                                           "mlp_ratio": d["mlp_ratio"]})
    OmegaConf.resolve(root)
    vae = instantiate(root.autoencoder_module).train()
    ldm_module.VariationalAutoencoderLitModule.load_from_checkpoint = staticmethod(lambda *a, **k: copy.deepcopy(vae))
    ldm = instantiate(root.diffusion_module)
    return vae, ldm, conf, scatter_impl


def run_reference(inputs: Path, args) -> dict:
    """Time the reference VAE step, DiT step and sampling at the XS size on the prepared inputs."""
    ref = Path(args.reference_path).resolve()
    data = dict(np.load(inputs))
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)  # noqa: NPY002 - the reference draws its corruption with np.random
    import random
    import warnings

    random.seed(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="adit_ref_"))
    hist = (data["hist_sizes"], data["hist_counts"])
    vae, ldm, conf, scatter_impl = build_reference(ref, json.loads(str(data["sizes"])),
                                                   {"mp_20": hist, "qm9": hist, "qmof": hist}, tmp)
    from src.callbacks.ema import EMAOptimizer
    from torch_geometric.data import Batch

    out = {"systems": {"random": [len(b) for b in data["random"]]},
           "vae_params": sum(p.numel() for p in vae.parameters()),
           "dit_params": sum(p.numel() for p in ldm.denoiser.parameters()), "scatter": scatter_impl}
    clip = float(conf("trainer/default.yaml").gradient_clip_val)
    warnings.filterwarnings("ignore", message=".*self.log.*")
    if "train" in args.parts:
        batches = [Batch.from_data_list(_reference_data(data, b)) for b in data["random"]]
        vae.train()
        opt = vae.hparams.optimizer(params=vae.parameters())

        def vae_step(i):
            loss = vae.training_step(batches[i].clone(), i)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), clip)
            opt.step()

        for i in range(args.warmup):
            vae_step(i)
        out["vae_random"] = _time_steps(vae_step, len(batches))
        # the diffusion module holds a frozen copy of the autoencoder; train the denoiser with its EMA optimiser
        ldm.train()
        ldm.autoencoder.eval()
        dopt = EMAOptimizer(ldm.hparams.optimizer(params=ldm.parameters()), torch.device("cpu"),
                            decay=conf("callbacks/ema.yaml").exponetial_moving_average.decay)

        def dit_step(i):
            loss = ldm.training_step(batches[i].clone(), i)
            dopt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ldm.parameters(), clip)
            dopt.step()
            dopt.join()

        for p in (1.0, 0.0):
            ldm.interpolant.self_condition_prob = p
            for i in range(args.warmup):
                dit_step(i)
            out[f"dit_random_selfcond{int(p)}"] = _time_steps(dit_step, len(batches))
        ldm.interpolant.self_condition_prob = 0.5
    if "sample" in args.parts:
        with torch.no_grad():
            for prm in ldm.denoiser.parameters():
                prm.add_(0.02 * torch.randn_like(prm))
        ldm.eval()
        ldm.interpolant.num_timesteps = args.steps

        @torch.no_grad()
        def sample():
            made = 0
            while made < args.num_samples:
                bsz = min(args.sample_batch_size, args.num_samples - made)
                ldm.sample_and_decode(ldm.num_nodes_bincount["mp20"], None, bsz, cfg_scale=args.cfg_scale,
                                      dataset_idx=0)
                made += bsz
            return made

        out["sampled"], out["sample"] = _timed(sample)
    shutil.rmtree(tmp, ignore_errors=True)
    return out


# ------------------------------------------------------------------ report
def _throughput(run: dict, key: str, batches: str, clock: str) -> float | None:
    """Systems per second over the timed batches; for the DiT the mean of self-conditioning on and off."""
    n = sum(run["systems"].get(batches, []))
    if key == "dit":
        on, off = run.get(f"dit_{batches}_selfcond1"), run.get(f"dit_{batches}_selfcond0")
        if on is None or off is None:
            return None
        return n / (0.5 * sum(on[clock]) + 0.5 * sum(off[clock]))
    t = run.get(f"{key}_{batches}")
    return None if t is None else n / sum(t[clock])


def summarise(runs: dict, args) -> dict:
    """Medians over repeats of every throughput, the sampling times and the speed-up ratios."""
    med = lambda xs: None if not xs or any(x is None for x in xs) else float(statistics.median(xs))
    rows = {}
    for clock in ("cpu", "wall"):
        r = {}
        for side, batches in (("reference", "random"), ("ours", "random"), ("ours", "bucketed")):
            for key in ("vae", "dit"):
                r[f"{key}_{side}_{batches}"] = med([_throughput(x, key, batches, clock) for x in runs[side]])
        for side in ("reference", "ours"):
            r[f"sample_{side}_s_per_system"] = med([x["sample"][clock] / x["sampled"] for x in runs[side]
                                                    if "sample" in x])
        ratio = lambda a, b: None if a is None or b is None else a / b
        for key in ("vae", "dit"):
            r[f"{key}_speedup_same_batches"] = ratio(r[f"{key}_ours_random"], r[f"{key}_reference_random"])
            r[f"{key}_speedup_own_batching"] = ratio(r[f"{key}_ours_bucketed"], r[f"{key}_reference_random"])
        r["sample_speedup"] = ratio(r["sample_reference_s_per_system"], r["sample_ours_s_per_system"])
        rows[clock] = r
    ours = runs["ours"][0]
    rows["latent_cache_cpu_s_per_system"] = med([x["latent_cache_per_system"]["cpu"] for x in runs["ours"]
                                                 if "latent_cache_per_system" in x])
    rows["params"] = {side: {"vae": runs[side][0]["vae_params"], "dit": runs[side][0]["dit_params"]}
                      if runs[side] else {"vae": 0, "dit": 0} for side in ("reference", "ours")}
    rows["batches"] = {"random": len(ours["systems"]["random"]), "bucketed": len(ours["systems"]["bucketed"])}
    return rows


def _fmt(x, spec=".1f"):
    return "n/a" if x is None else format(x, spec)


def write_report(out: Path, result: dict) -> None:
    """Write ``out.json`` (everything) and ``out.md`` (tables); text after ``<!-- findings -->`` is kept."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.json.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=float))
    os.replace(tmp, out.with_suffix(".json"))
    md = out.with_suffix(".md")
    kept = ""
    if md.exists() and "<!-- findings -->" in md.read_text():
        kept = md.read_text().split("<!-- findings -->", 1)[1]
    s, a, i = result["summary"], result["settings"], result["inputs"]
    lines = [
        "# Speed: aiida-adit vs the reference ADiT implementation", "",
        f"Machine: {a['machine']}. Date: {a['date']}. Threads: {a['threads']} per process "
        "(`torch.set_num_threads`, OMP/MKL), "
        + ("both sides at the same time, each child process pinned to its own core(s), which swap every repeat"
           if a.get("concurrent") else "both sides in back-to-back child processes"
           + (", each pinned to the same core(s)" if a.get("pin") else ""))
        + f", {a['repeats']} repeats alternating which side goes first; medians. "
        f"Reference commit: `{a['reference_commit']}`; its per-system means run through "
        f"{a['reference_scatter']}.",
        f"Load average (1 min) during the runs: {a['load_min']:.1f} to {a['load_max']:.1f} on 2 cores; the "
        "machine is shared, so wall times are stretched by other work and the **CPU seconds of each process** "
        "(all its threads) are the primary clock. Wall-clock figures are listed too.", "",
        f"Size: XS for both (VAE {s['params']['ours']['vae']:,} parameters ours / "
        f"{s['params']['reference']['vae']:,} reference; DiT {s['params']['ours']['dit']:,} / "
        f"{s['params']['reference']['dit']:,}). Data: MP-20 training crystals "
        f"({i['train_split_systems']} systems, mean {i['mean_atoms']:.2f} atoms).",
        f"Training: {s['batches']['random']} batches of {a['batch_size']} crystals drawn at random (both sides get "
        f"exactly these; padding {100 * i['padding_random_batches']:.0f}%), and for ours also "
        f"{s['batches']['bucketed']} batches of our size-bucketing sampler over the whole split, evenly spaced in "
        f"size (padding {100 * i['padding_bucketed_batches']:.1f}%; a full epoch: "
        f"{100 * i['padding_bucketed_full_epoch']:.1f}% vs {100 * i['padding_random_full_epoch']:.0f}% for random "
        "batches). One step = forward + backward + gradient clipping + optimiser step (+ EMA where the "
        "implementation keeps one). DiT self-conditioning is timed on and off and averaged.",
        f"Sampling: {a['num_samples']} crystals, {a['steps']} Euler steps, guidance scale {a['cfg_scale']}, "
        f"batches of {a['sample_batch_size']}"
        + (f" (ours) and {a['reference_sample_batch_size']} (reference)" if a.get("reference_sample_batch_size")
           else "")
        + ", atom counts drawn from the MP-20 training histogram by each side with its own generator; ours "
        "includes the read-out into `AtomicSystem` objects.", "",
    ]
    if "sample" not in a.get("parts", "train,sample"):
        del lines[-2]  # no sampling was run
    versions = {side: runs[0].get("versions") for side, runs in result.get("runs", {}).items() if runs}
    if any(versions.values()):
        lines += ["Versions, as each child process recorded them: " + "; ".join(
            f"{side}: Python {v['python']}, torch {v['torch']}, numpy {v['numpy']}"
            for side, v in versions.items() if v) + ".", ""]
    train_pairs = paired_train_ratios(result.get("runs", {}))
    if train_pairs:
        lines += ["Training, paired CPU-time ratios ours / reference in systems per CPU-second, one per repeat:", ""]
        for (key, batches), p in train_pairs.items():
            what = "same batches" if batches == "random" else "own (bucketed) batches"
            lines.append(f"- {'VAE' if key == 'vae' else 'DiT'}, {what}: "
                         f"{', '.join(f'{x:.2f}x' for x in p['ratios'])}; median **{p['median']:.2f}x** "
                         f"(min {p['min']:.2f}x, max {p['max']:.2f}x)")
        lines.append("")
    paired = result.get("sample_paired_cpu_ratios") or {}
    if paired.get("ratios"):
        lines += [f"Sampling, paired CPU-time ratios reference / ours, one per repeat: "
                  f"{', '.join(f'{x:.2f}x' for x in paired['ratios'])}; median **{paired['median']:.2f}x** "
                  f"(min {paired['min']:.2f}x, max {paired['max']:.2f}x).", ""]
    for clock, title in (("cpu", "CPU seconds (primary)"), ("wall", "wall clock")):
        r = s[clock]
        unit = "systems per CPU-second" if clock == "cpu" else "systems/s"
        lines += [
            f"## Training throughput, {title}", "",
            "| stage | reference, random batches | ours, same batches | ours, bucketed batches | "
            "speed-up (same batches) | speed-up (own batching) |", "|---|---:|---:|---:|---:|---:|",
        ]
        for key, name in (("vae", "VAE step"), ("dit", "DiT step")):
            lines.append(f"| {name} ({unit}) | {_fmt(r[f'{key}_reference_random'])} | {_fmt(r[f'{key}_ours_random'])}"
                         f" | {_fmt(r[f'{key}_ours_bucketed'])} | {_fmt(r[f'{key}_speedup_same_batches'], '.2f')}x"
                         f" | {_fmt(r[f'{key}_speedup_own_batching'], '.2f')}x |")
        ref_s, our_s = r["sample_reference_s_per_system"], r["sample_ours_s_per_system"]
        if ref_s is None and our_s is None:
            lines.append("")
            continue
        how = "measured" if a["num_samples"] == 1000 else "linear extrapolation; ours batches better at 1,000"
        lines += [
            "", f"## Sampling, {title}", "",
            "| | reference | ours | speed-up |", "|---|---:|---:|---:|",
            f"| seconds per crystal | {_fmt(ref_s, '.3f')} | {_fmt(our_s, '.3f')} | "
            f"{_fmt(r['sample_speedup'], '.2f')}x |",
            f"| 1,000 crystals ({how}) | {_fmt(None if ref_s is None else 1000 * ref_s, '.0f')} s | "
            f"{_fmt(None if our_s is None else 1000 * our_s, '.0f')} s | |", "",
        ]
    if s["latent_cache_cpu_s_per_system"] is not None:
        lines += [f"Our DiT trains on latents cached once per run: {1000 * s['latent_cache_cpu_s_per_system']:.2f}"
                  " ms CPU per training system, once (not per epoch); the reference re-encodes every batch inside "
                  "each step.", ""]
    lines += [
        "Reproduce: `python benchmarks/reference_comparison.py --reference-path ADIT_REF --reference-python "
        f"REF_VENV/bin/python --threads {a['threads']} --repeats {a['repeats']} --train-batches {a['train_batches']} "
        f"--batch-size {a['batch_size']} --warmup {a['warmup']} --num-samples {a['num_samples']} --steps {a['steps']} "
        f"--cfg-scale {a['cfg_scale']} --sample-batch-size {a['sample_batch_size']}"
        + (f" --reference-sample-batch-size {a['reference_sample_batch_size']}"
           if a.get("reference_sample_batch_size") else "")
        + (" --pin" if a.get("pin") else "") + (" --concurrent" if a.get("concurrent") else "")
        + (f" --parts {a['parts']}" if a.get("parts") else "")
        + "` (see the script's docstring for getting the reference).", "",
        "<!-- findings -->",
    ]
    tmp = md.with_name(f".{md.name}.tmp")
    tmp.write_text("\n".join(lines) + (kept if kept else "\n"))
    os.replace(tmp, md)


# ------------------------------------------------------------------ driver
def _start(side: str, inputs: Path, args, python: str, cores: set[int] | None = None):
    """Start one side in a fresh process with ``python``, pinned to ``cores`` when given; returns a handle for
    :func:`_finish`."""
    fd, name = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    result = Path(name)
    batch = args.sample_batch_size
    if side == "reference" and args.reference_sample_batch_size:
        batch = args.reference_sample_batch_size
    cmd = [python, __file__, "--side", side, "--inputs", str(inputs), "--result", str(result),
           "--threads", str(args.threads), "--seed", str(args.seed), "--warmup", str(args.warmup),
           "--num-samples", str(args.num_samples), "--steps", str(args.steps), "--cfg-scale", str(args.cfg_scale),
           "--sample-batch-size", str(batch), "--parts", args.parts]
    if args.reference_path:
        cmd += ["--reference-path", args.reference_path]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    load = os.getloadavg()[0]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=pin)
    return side, proc, result, load, time.time(), sorted(cores) if cores else None


def _finish(handle) -> dict:
    """Wait for a side started by :func:`_start`; its timings plus the load average around it."""
    side, proc, result, load, t0, cores = handle
    _, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{side} side failed:\n{stderr[-4000:]}")
    out = json.loads(result.read_text())
    result.unlink()
    out.update(load_before=load, load_after=os.getloadavg()[0], wall_s=time.time() - t0, pinned=cores)
    print(f"  {side}: {json.dumps({k: v for k, v in out.items() if not isinstance(v, (list, dict))})}", flush=True)
    return out


def _child(side: str, inputs: Path, args, python: str, cores: set[int] | None = None) -> dict:
    """Run one side in a fresh process with ``python`` (pinned to ``cores`` when given) and wait for it."""
    return _finish(_start(side, inputs, args, python, cores))


def start_side(script: str, side: str, inputs: Path, child_argv: list[str], threads: int, python: str,
               cores: set[int] | None):
    """Start ``script --side SIDE`` on ``inputs`` in a fresh process with ``python``, ``threads`` threads, pinned to
    ``cores`` when given; returns a handle for :func:`finish_side` (the child writes its JSON to a temp file)."""
    fd, name = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    cmd = [python, script, "--side", side, "--inputs", str(inputs), "--result", name, *child_argv]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)
    return side, proc, Path(name), os.getloadavg()[0]


def finish_side(handle, describe) -> dict:
    """Wait for a child started by :func:`start_side`; its JSON plus the load average before and after. Prints
    ``describe(result)``; a failed child stops the run with its stderr."""
    side, proc, result, load = handle
    _, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{side} side failed:\n{stderr[-4000:]}")
    out = json.loads(result.read_text())
    result.unlink()
    out.update(load_before=load, load_after=os.getloadavg()[0])
    print(f"  {side}: {describe(out)}", flush=True)
    return out


def paired_ratios(runs: dict) -> dict:
    """Per-repeat ratios reference / ours of the sampling CPU seconds per system: ``{"ratios", "median", "min",
    "max"}`` (pairs are the i-th run of each side; None without both sides)."""
    pairs = [r["sample"]["cpu"] / r["sampled"] / (o["sample"]["cpu"] / o["sampled"])
             for r, o in zip(runs["reference"], runs["ours"]) if "sample" in r and "sample" in o]
    if not pairs:
        return {"ratios": [], "median": None, "min": None, "max": None}
    return {"ratios": pairs, "median": float(statistics.median(pairs)), "min": min(pairs), "max": max(pairs)}


def paired_train_ratios(runs: dict) -> dict:
    """Per-repeat training speed-ups ours / reference (systems per CPU-second), keyed ``(vae|dit, random|bucketed)``:
    ``{"ratios", "median", "min", "max"}``; the i-th run of each side is a pair. Empty without training runs."""
    out = {}
    for key in ("vae", "dit"):
        for batches in ("random", "bucketed"):
            pairs = [_throughput(o, key, batches, "cpu") / _throughput(r, key, "random", "cpu")
                     for o, r in zip(runs.get("ours", []), runs.get("reference", []))
                     if _throughput(o, key, batches, "cpu") and _throughput(r, key, "random", "cpu")]
            if pairs:
                out[key, batches] = {"ratios": pairs, "median": float(statistics.median(pairs)),
                                     "min": min(pairs), "max": max(pairs)}
    return out


def main(argv=None) -> int:
    """Command-line entry: run as driver, or as one side (``--side``) in a child process."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference-path", default=os.environ.get("ADIT_REFERENCE_PATH"))
    ap.add_argument("--reference-python", default=os.environ.get("ADIT_REFERENCE_PYTHON", sys.executable))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-batches", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--num-samples", type=int, default=200)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--cfg-scale", type=float, default=2.0)
    ap.add_argument("--sample-batch-size", type=int, default=100)
    ap.add_argument("--reference-sample-batch-size", type=int,
                    help="the reference side's sampling batch (default: --sample-batch-size); give each side its "
                         "own default with --sample-batch-size 256 (adit sample) --reference-sample-batch-size 100 "
                         "(the reference's ldm.yaml)")
    ap.add_argument("--pin", action="store_true", help="pin each child process to the first --threads cores")
    ap.add_argument("--concurrent", action="store_true",
                    help="run the two sides of a repeat at the same time, each pinned to its own --threads cores "
                         "(swapped every repeat), so that both see the same machine load")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parts", default="train,sample", help="comma-separated: train, sample")
    ap.add_argument("--sides", default="ours,reference", help="comma-separated: ours, reference")
    ap.add_argument("--out", default=str(RESULTS / "reference_comparison"))
    ap.add_argument("--machine", default="2-core CPU, 24 GiB, no GPU")
    ap.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    ap.add_argument("--from-json", help="only re-write the Markdown report from this results JSON")
    ap.add_argument("--side", choices=["ours", "reference"], help=argparse.SUPPRESS)
    ap.add_argument("--inputs", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.side:
        fn = run_ours if args.side == "ours" else run_reference
        out = fn(Path(args.inputs), args)
        out["versions"] = {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
                           "cpus": sorted(os.sched_getaffinity(0))}  # what this process itself ran with
        Path(args.result).write_text(json.dumps(out))
        return 0
    if args.from_json:
        write_report(Path(args.out), json.loads(Path(args.from_json).read_text()))
        return 0
    if "reference" in args.sides and not (Path(args.reference_path or "") / "src" / "models").is_dir():
        raise SystemExit("--reference-path (or $ADIT_REFERENCE_PATH) must point at a checkout of "
                         "facebookresearch/all-atom-diffusion-transformer; see this script's docstring")
    inputs = Path(tempfile.mkdtemp(prefix="adit_cmp_")) / "inputs.npz"
    info = prepare_inputs(inputs, args.train_batches, args.batch_size, args.seed)
    print(f"inputs: {info}", flush=True)
    runs = {"ours": [], "reference": []}
    python = {"ours": sys.executable, "reference": args.reference_python}
    cores = sorted(os.sched_getaffinity(0))
    for r in range(args.repeats):
        print(f"repeat {r + 1}/{args.repeats}", flush=True)
        order = ("ours", "reference") if r % 2 == 0 else ("reference", "ours")
        sides = [x for x in order if x in args.sides.split(",")]
        if args.concurrent:  # both at once, each on its own core(s); the cores swap every repeat
            width = args.threads
            if len(cores) < 2 * width:
                raise SystemExit(f"--concurrent needs {2 * width} cores for {width} thread(s) per side; "
                                 f"this process may use {len(cores)}")
            handles = [_start(side, inputs, args, python[side], set(cores[i * width:(i + 1) * width]))
                       for i, side in enumerate(sides)]
            for handle in handles:
                runs[handle[0]].append(_finish(handle))
        else:
            pin = set(cores[:args.threads]) if args.pin else None
            for side in sides:
                runs[side].append(_child(side, inputs, args, python[side], pin))
    loads = [x[k] for side in runs.values() for x in side for k in ("load_before", "load_after")]
    try:
        commit = subprocess.run(["git", "-C", args.reference_path, "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, TypeError, subprocess.CalledProcessError):
        commit = "unknown"
    settings = {k: getattr(args, k) for k in ("threads", "repeats", "batch_size", "train_batches", "warmup",
                                              "num_samples", "steps", "cfg_scale", "sample_batch_size",
                                              "reference_sample_batch_size", "pin", "concurrent", "parts",
                                              "seed")}
    settings.update(machine=args.machine, date=args.date, reference_commit=commit, load_min=min(loads),
                    reference_scatter=runs["reference"][0].get("scatter") if runs["reference"] else "n/a (not run)",
                    load_max=max(loads), torch=torch.__version__)
    shutil.rmtree(inputs.parent, ignore_errors=True)
    result = {"settings": settings, "inputs": info, "summary": summarise(runs, args),
              "sample_paired_cpu_ratios": paired_ratios(runs), "runs": runs}
    write_report(Path(args.out), result)
    print(json.dumps(result["summary"], indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
