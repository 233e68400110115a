"""The paper's speed figure, side by side: time to sample crystals and molecules against steps, ours and the
reference ADiT code in the same run, on identical atom counts.

Both implementations are built at our ``XS`` size with perturbed initial weights (sampling costs the same
trained or not; the reference side is built from its own YAML configs, as in
``benchmarks/reference_comparison.py``). The driver draws the atom counts once per kind from the MP-20 and
QM9 training histograms (``--seed``) and hands both sides exactly these counts: ours passes them as
``num_atoms``, the reference's ``sample_and_decode`` gets them in place of its own histogram draw, in its own
(random) order and batches. Each repeat runs both sides at once, each pinned to its own core (the cores swap
every repeat) with ``--threads`` threads, or back to back on the same cores with ``--sequential`` (needed
for 2 threads on a 2-core machine). Timed per kind and setting:

* the reference: its Euler sampler at each of ``--steps`` (``linspace(0.01, 1, steps)`` and a final clean
  prediction: ``steps`` network evaluations, each of the guided pair), batches of
  ``--reference-batch-size`` (its ``ldm.yaml``: 100);
* ours: Euler on the reference's grid at each of ``--steps`` (the same evaluations) and every extra
  ``--ours SOLVER:GRID:STEPS`` (default ``heun:uniform:10``, the setting that matches 100 Euler steps in
  ``benchmarks/results/sampling_nfe_*.json``), batches of ``--batch-size`` (``adit sample``'s 256), with the
  read-out into ``AtomicSystem`` objects.

The report gives CPU seconds per 1,000 systems (median over repeats), the per-repeat paired ratios
reference / ours at equal steps, and the time-to-equal-quality ratio: the reference at 100 Euler steps
against each ``--ours`` setting. Writes ``OUT.json``, ``OUT.md`` and ``OUT.png``::

    python benchmarks/reference_sampling.py --reference-path /path/adit-ref \\
        --reference-python /path/venv/bin/python --num-samples 200 --steps 10,20,50,100 --repeats 5 \\
        --out benchmarks/results/reference_sampling

See ``benchmarks/reference_comparison.py`` for getting the reference and its virtualenv.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_comparison import RESULTS, build_reference, finish_side, start_side  # noqa: E402

KINDS = ("crystal", "molecule")
DATASETS = {"crystal": "mp20", "molecule": "qm9"}


def prepare_inputs(path: Path, num_samples: int, seed: int, size: str = "XS") -> dict:
    """Atom counts of ``num_samples`` systems per kind, drawn from each training histogram, written to ``path``.

    Arrays: ``counts_<kind> (num_samples,)``, ``hist_<kind>_sizes / _counts`` (the training histogram) and
    ``sizes`` (our registry's VAE and DiT configs as JSON). Returns the mean atom count per kind.
    """
    from adit_torch.config import dit_config, to_dict, vae_config
    from adit_torch.datasets import load_dataset

    rng = np.random.default_rng(seed)
    arrays, info = {}, {}
    for kind in KINDS:
        n_all = load_dataset(DATASETS[kind], "train", skip_invalid=True).num_atoms
        sizes, freq = np.unique(n_all, return_counts=True)
        arrays[f"counts_{kind}"] = rng.choice(sizes, num_samples, p=freq / freq.sum())
        arrays[f"hist_{kind}_sizes"], arrays[f"hist_{kind}_counts"] = sizes, freq
        info[f"mean_atoms_{kind}"] = float(arrays[f"counts_{kind}"].mean())
        info[f"train_systems_{kind}"] = len(n_all)
    arrays["sizes"] = json.dumps({"vae": to_dict(vae_config(size)), "dit": to_dict(dit_config(size))})
    np.savez(path, **arrays)
    return info


def _timed(fn) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}


def run_ours(data: dict, args) -> list[dict]:
    """Our sampler at every setting, on the given counts; one timing row per kind and setting."""
    from adit_torch.config import DiTConfig, FlowConfig, VAEConfig, from_dict
    from adit_torch.dit import DiT
    from adit_torch.sample import sample_systems
    from adit_torch.vae import VAE

    torch.manual_seed(args.seed)
    sizes = json.loads(str(data["sizes"]))
    vae, dit = VAE(from_dict(VAEConfig, sizes["vae"])).eval(), DiT(from_dict(DiTConfig, sizes["dit"])).eval()
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():  # adaLN-Zero starts at zero: perturb so every layer does its work
        for prm in dit.parameters():
            prm.add_(0.02 * torch.randn(prm.shape, generator=gen))
    stats = {"num_atoms_hist": {k: {str(int(a)): int(b) for a, b in zip(data[f"hist_{k}_sizes"],
                                                                         data[f"hist_{k}_counts"])} for k in KINDS}}
    settings = [("euler", "reference", s) for s in args.steps] + args.ours
    rows = []
    for kind in args.kinds:
        counts = [int(c) for c in data[f"counts_{kind}"]]
        for solver, grid, steps in settings:
            def sample(kind=kind, counts=counts, solver=solver, grid=grid, steps=steps):
                sample_systems(dit, vae, FlowConfig(), stats, kind, len(counts), steps=steps, cfg_scale=args.cfg_scale,
                               seed=args.seed, batch_size=args.batch_size, num_atoms=counts, progress=False,
                               solver=solver, grid=grid)

            t = _timed(sample)
            rows.append({"kind": kind, "solver": solver, "grid": grid, "steps": steps, "n": len(counts), **t})
    return rows


def run_reference(data: dict, args) -> list[dict]:
    """The reference's ``sample_and_decode`` at every ``--steps``, on the given counts in its own batches."""
    import warnings

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)  # noqa: NPY002 - the reference draws with np.random in places
    tmp = Path(tempfile.mkdtemp(prefix="adit_ref_"))
    hists = {"mp_20": (data["hist_crystal_sizes"], data["hist_crystal_counts"]),
             "qm9": (data["hist_molecule_sizes"], data["hist_molecule_counts"])}
    hists["qmof"] = hists["mp_20"]
    _, ldm, _, scatter_impl = build_reference(Path(args.reference_path).resolve(), json.loads(str(data["sizes"])),
                                              hists, tmp)
    warnings.filterwarnings("ignore", message=".*self.log.*")
    with torch.no_grad():
        for prm in ldm.denoiser.parameters():
            prm.add_(0.02 * torch.randn_like(prm))
    ldm.eval()
    pending: list[torch.Tensor] = []
    draw = torch.multinomial

    def given_counts(inp, num_samples, replacement=False, *, generator=None, out=None):
        """The reference's atom-count draw, answered with the driver's counts (any other draw passes through)."""
        if pending and num_samples == len(pending[0]):
            return pending.pop()
        return draw(inp, num_samples, replacement, generator=generator, out=out)

    rows = []
    torch.multinomial = given_counts
    try:
        for kind in args.kinds:
            counts = torch.as_tensor(data[f"counts_{kind}"], dtype=torch.long)
            name, idx = ("mp20", 0) if kind == "crystal" else ("qm9", 1)
            for steps in args.steps:
                ldm.interpolant.num_timesteps = steps

                @torch.no_grad()
                def sample(counts=counts, name=name, idx=idx):
                    for start in range(0, len(counts), args.reference_batch_size):
                        part = counts[start:start + args.reference_batch_size]
                        pending.append(part)
                        ldm.sample_and_decode(ldm.num_nodes_bincount[name], None, len(part),
                                              cfg_scale=args.cfg_scale, dataset_idx=idx)
                        if pending:
                            raise RuntimeError("the reference did not draw its atom counts where expected")

                rows.append({"kind": kind, "solver": "euler", "grid": "reference", "steps": steps,
                             "n": len(counts), **_timed(sample)})
    finally:
        torch.multinomial = draw
    rows.append({"scatter": scatter_impl})
    return rows


def _key(row: dict) -> tuple:
    return row["kind"], row["solver"], row["grid"], row["steps"]


def summarise(runs: dict, args) -> dict:
    """Median CPU seconds per 1,000 systems per side and setting, paired ratios at equal steps, and the
    time-to-equal-quality ratios (reference at 100 Euler steps over each extra setting of ours)."""
    per1000 = lambda r: 1000 * r["cpu"] / r["n"]  # noqa: E731
    table: dict = {}
    for side, reps in runs.items():
        for rows in reps:
            for r in rows:
                if "kind" in r:
                    table.setdefault(side, {}).setdefault(_key(r), []).append(per1000(r))
    out = {"cpu_s_per_1000": [], "paired": [], "equal_quality": []}
    for side, rows in table.items():
        for key, vals in rows.items():
            out["cpu_s_per_1000"].append({"side": side, "kind": key[0], "solver": key[1], "grid": key[2],
                                          "steps": key[3], "median": statistics.median(vals), "all": vals})

    def ratios(ref_key, our_key):
        ref, ours = table.get("reference", {}).get(ref_key), table.get("ours", {}).get(our_key)
        if not ref or not ours:
            return None
        rs = [a / b for a, b in zip(ref, ours)]
        return {"ratios": rs, "median": statistics.median(rs), "min": min(rs), "max": max(rs)}

    for kind in args.kinds:
        for steps in args.steps:
            r = ratios((kind, "euler", "reference", steps), (kind, "euler", "reference", steps))
            if r:
                out["paired"].append({"kind": kind, "steps": steps, **r})
        if 100 in args.steps:
            for solver, grid, steps in args.ours:
                r = ratios((kind, "euler", "reference", 100), (kind, solver, grid, steps))
                if r:
                    out["equal_quality"].append({"kind": kind, "ours": f"{solver}:{grid}:{steps}", **r})
    return out


def write_report(out: Path, result: dict) -> None:
    """``out.json``, ``out.md`` (tables) and ``out.png`` (minutes per 10k systems against steps)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=float))
    a, s, i = result["settings"], result["summary"], result["inputs"]
    lines = [
        "# Time to sample against steps: aiida-adit vs the reference ADiT code, same run", "",
        f"Machine: {a['machine']}. Date: {a['date']}. {a['threads']} thread(s) per process, "
        + ("both sides back to back on the same cores" if a["sequential"]
           else "both sides at the same time, each pinned to its own core (swapped every repeat)")
        + f", {a['repeats']} repeats. Load average (1 min) {a['load_min']:.1f} to {a['load_max']:.1f}. "
        f"Reference commit `{a['reference_commit']}`. XS size for both, perturbed initial weights (timing only). "
        f"{a['num_samples']} systems per kind and setting, the same atom counts on both sides (mean "
        + ", ".join(f"{i[f'mean_atoms_{k}']:.1f} atoms per {k}" for k in a["kinds"])
        + f"), guidance scale {a['cfg_scale']}; batches of {a['batch_size']} (ours) and "
        f"{a['reference_batch_size']} (reference). Versions as the children recorded them: "
        + "; ".join(f"{k}: torch {v['torch']}, numpy {v['numpy']}" for k, v in result["versions"].items()) + ".", "",
        "## CPU seconds per 1,000 systems (median over repeats)", "",
        "| kind | steps (NFE) | reference, Euler | ours, Euler (same grid) | paired ratio, median (min-max) |",
        "|---|---:|---:|---:|---:|",
    ]
    med = {(r["side"], r["kind"], r["solver"], r["grid"], r["steps"]): r["median"] for r in s["cpu_s_per_1000"]}
    for p in s["paired"]:
        ref, ours = (med[(side, p["kind"], "euler", "reference", p["steps"])] for side in ("reference", "ours"))
        lines.append(f"| {p['kind']} | {p['steps']} | {ref:.1f} | {ours:.1f} | **{p['median']:.2f}x** "
                     f"({p['min']:.2f}-{p['max']:.2f}) |")
    if s["equal_quality"]:
        lines += ["", "## Time to equal quality: the reference at 100 Euler steps against ours", "",
                  "| kind | ours | ours, CPU s per 1,000 | paired ratio, median (min-max) |", "|---|---|---:|---:|"]
        for e in s["equal_quality"]:
            solver, grid, steps = e["ours"].split(":")
            lines.append(f"| {e['kind']} | {solver}, {grid} grid, {steps} steps | "
                         f"{med[('ours', e['kind'], solver, grid, int(steps))]:.1f} | **{e['median']:.1f}x** "
                         f"({e['min']:.1f}-{e['max']:.1f}) |")
    lines += ["", f"Reproduce: `{result['command']}`", ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    plot(result, out.with_suffix(".png"))


def plot(result: dict, path: Path) -> None:
    """Minutes per 10,000 systems against steps, one panel per kind, a line per side (CPU, median)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = result["settings"]["kinds"]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 3.8), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for side, style in (("reference", "s--"), ("ours", "o-")):
            pts = sorted((r["steps"], r["median"] * 10 / 60) for r in result["summary"]["cpu_s_per_1000"]
                         if r["side"] == side and r["kind"] == kind and r["solver"] == "euler")
            if pts:
                ax.plot(*zip(*pts), style, label=f"{side}, Euler")
        for r in result["summary"]["cpu_s_per_1000"]:
            if r["side"] == "ours" and r["kind"] == kind and r["solver"] != "euler":
                ax.plot([r["steps"]], [r["median"] * 10 / 60], "D", label=f"ours, {r['solver']} {r['steps']} steps")
        ax.set_xlabel("steps")
        ax.set_ylabel("CPU minutes per 10,000 systems")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{kind}s", fontsize=9)
        ax.legend(fontsize=7)
    a = result["settings"]
    fig.suptitle(f"XS, {a['threads']} thread(s), {a['machine']}, {a['date']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def parse_args(argv=None):
    """Command-line options (the child processes get the same ones)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference-path", default=os.environ.get("ADIT_REFERENCE_PATH"))
    ap.add_argument("--reference-python", default=os.environ.get("ADIT_REFERENCE_PYTHON", sys.executable))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sequential", action="store_true", help="run the sides back to back on the same cores")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--num-samples", type=int, default=200)
    ap.add_argument("--kinds", default="crystal,molecule")
    ap.add_argument("--steps", default="10,20,50,100", help="comma-separated Euler step counts, both sides")
    ap.add_argument("--ours", action="append", help="extra settings of ours, SOLVER:GRID:STEPS "
                                                    "(default heun:uniform:10)")
    ap.add_argument("--cfg-scale", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--reference-batch-size", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "reference_sampling"))
    ap.add_argument("--machine", default="2-core CPU, 24 GiB, no GPU")
    ap.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    ap.add_argument("--side", choices=["ours", "reference"], help=argparse.SUPPRESS)
    ap.add_argument("--inputs", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.kinds = [k for k in args.kinds.split(",") if k]
    if any(k not in KINDS for k in args.kinds):
        ap.error(f"--kinds takes crystal and/or molecule, got {args.kinds}")
    args.steps = [int(s) for s in args.steps.split(",")]
    extra = args.ours or ["heun:uniform:10"]
    args.ours = [(p[0], p[1], int(p[2])) for p in (x.split(":") for x in extra)]
    args.child_argv = ["--threads", str(args.threads), "--num-samples", str(args.num_samples),
                       "--kinds", ",".join(args.kinds), "--steps", ",".join(map(str, args.steps)),
                       "--cfg-scale", str(args.cfg_scale), "--batch-size", str(args.batch_size),
                       "--reference-batch-size", str(args.reference_batch_size), "--seed", str(args.seed)]
    args.child_argv += [a for x in extra for a in ("--ours", x)]
    if args.reference_path:
        args.child_argv += ["--reference-path", args.reference_path]
    return args


def reproduce_command(args) -> str:
    """The command line that repeats this run, with the reference's paths as placeholders."""
    argv = list(args.child_argv)
    if "--reference-path" in argv:
        i = argv.index("--reference-path")
        del argv[i:i + 2]
    return " ".join(["python benchmarks/reference_sampling.py --reference-path ADIT_REF --reference-python",
                     "REF_VENV/bin/python", *argv, "--repeats", str(args.repeats)]
                    + (["--sequential"] if args.sequential else []))


def main(argv=None) -> int:
    """Driver (both sides, repeats, report) or one side in a child process (``--side``)."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.side:
        data = dict(np.load(args.inputs))
        rows = (run_ours if args.side == "ours" else run_reference)(data, args)
        Path(args.result).write_text(json.dumps({"rows": rows, "versions": {
            "python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
            "cpus": sorted(os.sched_getaffinity(0))}}))
        return 0
    if not (Path(args.reference_path or "") / "src" / "models").is_dir():
        raise SystemExit("--reference-path (or $ADIT_REFERENCE_PATH) must point at a checkout of "
                         "facebookresearch/all-atom-diffusion-transformer; see benchmarks/reference_comparison.py")
    inputs = Path(tempfile.mkdtemp(prefix="adit_refsample_")) / "inputs.npz"
    info = prepare_inputs(inputs, args.num_samples, args.seed)
    print(f"inputs: {info}", flush=True)
    python = {"ours": sys.executable, "reference": args.reference_python}
    cores = sorted(os.sched_getaffinity(0))
    runs: dict = {"ours": [], "reference": []}
    loads, versions = [], {}
    for r in range(args.repeats):
        print(f"repeat {r + 1}/{args.repeats}", flush=True)
        order = ("ours", "reference") if r % 2 == 0 else ("reference", "ours")
        start = lambda side, pin: start_side(__file__, side, inputs, args.child_argv, args.threads,  # noqa: E731
                                             python[side], pin)
        describe = lambda res: json.dumps([r for r in res["rows"] if "kind" in r])  # noqa: E731
        if args.sequential:
            pin = set(cores[:args.threads])
            done = [finish_side(start(side, pin), describe) for side in order]
        else:
            if len(cores) < 2 * args.threads:
                raise SystemExit(f"running both sides at once needs {2 * args.threads} cores; use --sequential")
            handles = [start(side, set(cores[i * args.threads:(i + 1) * args.threads])) for i, side in enumerate(order)]
            done = [finish_side(h, describe) for h in handles]
        for side, res in zip(order, done):
            runs[side].append(res["rows"])
            loads += [res["load_before"], res["load_after"]]
            versions[side] = res["versions"]
    commit = subprocess.run(["git", "-C", args.reference_path, "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    settings = {k: getattr(args, k) for k in ("threads", "sequential", "repeats", "num_samples", "kinds", "steps",
                                              "cfg_scale", "batch_size", "reference_batch_size", "seed",
                                              "machine", "date")}
    settings.update(ours=[":".join(map(str, o)) for o in args.ours], reference_commit=commit,
                    load_min=min(loads), load_max=max(loads))
    result = {"settings": settings, "inputs": info, "versions": versions, "summary": summarise(runs, args),
              "runs": runs, "command": reproduce_command(args)}
    write_report(Path(args.out), result)
    print(json.dumps(result["summary"]["paired"], indent=1), json.dumps(result["summary"]["equal_quality"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
