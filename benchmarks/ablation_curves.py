"""Learning curves of training runs side by side: validation metrics against CPU-minutes.

Reads each run folder's ``log.csv`` (written by ``adit train-vae`` / ``train-dit``;
``time_s`` is wall time since the run started, validation included, on the
machine the run had to itself) and ``run_config.json``, and writes one PNG
with a panel per validation metric plus a JSON with the same points and the
settings that differ between the runs.

    python benchmarks/ablation_curves.py --run A=runs/vae_A --run B=runs/vae_B \\
        --out benchmarks/results/ablations/vae_pos_unit --note "2-core CPU, idle, load 1.1"
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def read_run(folder: Path) -> dict:
    """``{"config": run_config, "val": {metric: [(minutes, value), ...]}, "final_step": int}`` of one run."""
    with open(folder / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    config = json.loads((folder / "run_config.json").read_text())
    val: dict[str, list[tuple[float, float]]] = {}
    last_time = {}
    for row in rows:
        if row.get("time_s"):
            last_time[int(row["step"])] = float(row["time_s"])
        for key, value in row.items():
            if key.startswith("val_") and value not in (None, ""):
                step = int(row["step"])
                # validation rows carry no time; take the last training row's time at or before the step
                t = max((s for s in last_time if s <= step), default=None)
                minutes = last_time[t] / 60.0 if t is not None else 0.0
                val.setdefault(key[4:], []).append((round(minutes, 3), float(value)))
    return {"config": config, "val": val, "final_step": int(rows[-1]["step"]) if rows else 0}


def differing(configs: dict[str, dict]) -> dict[str, dict]:
    """The settings (section.key) whose values differ between runs."""
    flat = {name: {f"{sec}.{k}": v for sec, d in cfg.items() if isinstance(d, dict) for k, v in d.items()}
            for name, cfg in configs.items()}
    keys = sorted(set().union(*(f.keys() for f in flat.values())))
    return {k: {name: f.get(k) for name, f in flat.items()} for k in keys
            if len({json.dumps(f.get(k)) for f in flat.values()}) > 1}


def main() -> None:
    """Plot and record the runs given as ``--run NAME=FOLDER``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", default=[], help="NAME=run folder")
    p.add_argument("--recorded", action="append", default=[],
                   help="NAME=JSON written by this script earlier: its first run's curve, for runs whose folder "
                        "is gone (their settings are then not compared)")
    p.add_argument("--out", type=Path, required=True, help="output stem (writes STEM.png and STEM.json)")
    p.add_argument("--note", default="", help="machine, date and load average of the runs")
    args = p.parse_args()
    runs = {}
    for spec in args.run:
        name, folder = spec.split("=", 1)
        runs[name] = read_run(Path(folder))
    recorded = {}
    for spec in args.recorded:
        name, path = spec.split("=", 1)
        first = next(iter(json.loads(Path(path).read_text())["runs"].values()))
        recorded[name] = {"config": None, "val": {k: [tuple(p) for p in v] for k, v in first["val"].items()},
                          "final_step": first["final_step"], "recorded_in": path}
    if not runs and not recorded:
        p.error("give at least one --run or --recorded")
    configs = {n: r["config"] for n, r in runs.items()}
    runs.update(recorded)
    metrics = sorted(set().union(*(r["val"].keys() for r in runs.values())))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(4.2 * max(1, len(metrics)), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name, run in runs.items():
            pts = run["val"].get(metric, [])
            if pts:
                ax.plot(*zip(*pts), marker="o", label=name)
        ax.set_xlabel("training minutes (2-core CPU)")
        ax.set_title(metric)
        ax.legend(fontsize=7)
    fig.suptitle(args.note, fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out.with_suffix(".png"), dpi=90)
    record = {"note": args.note, "differences": differing(configs) if len(configs) > 1 else {},
              "runs": {n: {"final_step": r["final_step"], "val": r["val"],
                           **({"recorded_in": r["recorded_in"]} if "recorded_in" in r else {})}
                       for n, r in runs.items()}}
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out.with_suffix('.png')} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
