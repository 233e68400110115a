"""Band-gap-conditioned crystals, judged by a band-gap predictor trained on MP-20 (there is no cheap oracle).

No band-gap calculation runs offline here, so the judge is a model: an MLP on the composition alone
(the fraction of each element, and the fraction-weighted mean, spread, minimum and maximum of a few
element properties; see :func:`composition_features`), trained with an L1 loss on the partial MP-20
training split's Materials Project band gaps (PBE, eV) and scored on its test split. Its own error
is in the results; it sees no structure, so it can only tell compositions apart (a metal from an
oxide), which is what a band-gap condition mostly changes.

A model trained with the ``band_gap`` condition samples ``--num-samples`` crystals unconditioned and
under each target of ``--targets`` (same seed, solver, steps and guidance). For the valid ones
(the evaluator's structural and SMACT checks), the predicted band gap: its quartiles, the share
predicted metallic (under 0.1 eV), and the MAE to the target.

    python benchmarks/band_gap_conditioning.py --model adit-xs-joint-cond --num-samples 200

Writes ``results/band_gap_conditioning_<model>.json`` with the machine, date and load. The
crystals come from the workplace's partial MP-20 (a skewed 38% of MP-20).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
MACHINE = "2-core CPU, 24 GiB, no GPU"
MAX_Z = 100
#: Element properties of the composition statistics (pymatgen's Element attributes).
ELEMENT_PROPERTIES = ("Z", "X", "row", "group", "atomic_radius", "mendeleev_no")


def _element_table() -> np.ndarray:
    """``(MAX_Z, len(ELEMENT_PROPERTIES))`` element properties, a missing one as the column's mean."""
    from pymatgen.core import Element

    table = np.full((MAX_Z, len(ELEMENT_PROPERTIES)), np.nan)
    for z in range(1, MAX_Z + 1):
        element = Element.from_Z(z)
        for j, name in enumerate(ELEMENT_PROPERTIES):
            try:
                value = getattr(element, name)
                table[z - 1, j] = float(value) if value is not None else np.nan
            except (TypeError, ValueError, AttributeError):
                pass
    means = np.nanmean(table, axis=0)
    return np.where(np.isfinite(table), table, means)


def composition_features(numbers: list[np.ndarray], table: np.ndarray) -> np.ndarray:
    """``(M, MAX_Z + 4 * P)`` float32: element fractions, then the weighted mean, std, min and max of each property.

    Args:
        numbers: M arrays of atomic numbers (1..100), one per crystal.
        table: :func:`_element_table`, ``(MAX_Z, P)``.
    """
    out = np.zeros((len(numbers), MAX_Z + 4 * table.shape[1]), dtype=np.float32)
    for i, z in enumerate(numbers):
        zs, counts = np.unique(np.asarray(z, dtype=np.int64), return_counts=True)
        w = counts / counts.sum()
        out[i, zs - 1] = w
        props = table[zs - 1]
        mean = w @ props
        std = np.sqrt(w @ (props - mean) ** 2)
        out[i, MAX_Z:] = np.concatenate([mean, std, props.min(0), props.max(0)])
    return out


def train_predictor(x: np.ndarray, y: np.ndarray, epochs: int = 150, seed: int = 0):
    """An MLP ``F -> 256 -> 256 -> 1`` with an L1 loss (Adam, cosine decay); returns ``predict(x) -> (M,)`` in eV."""
    import torch

    torch.manual_seed(seed)
    mean, std = x.mean(0), x.std(0) + 1e-6
    xt, yt = torch.tensor((x - mean) / std, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 256), torch.nn.SiLU(), torch.nn.Dropout(0.1),
                              torch.nn.Linear(256, 256), torch.nn.SiLU(), torch.nn.Linear(256, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * ((len(xt) + 127) // 128))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(128):
            loss = (net(xt[idx]).squeeze(-1) - yt[idx]).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()

    def predict(feats: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.tensor((feats - mean) / std, dtype=torch.float32)).squeeze(-1).clamp(min=0).numpy()

    return predict


def band_gap_data(split: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Atomic numbers and band gaps (eV) of the MP-20 ``split`` crystals that have one."""
    from adit_torch.datasets import load_dataset

    data = load_dataset("mp20", split, skip_invalid=True)
    gaps = np.asarray(data.props["band_gap"], dtype=np.float64)
    offsets = np.asarray(data.offsets)
    keep = np.flatnonzero(np.isfinite(gaps))
    return [np.asarray(data.numbers[offsets[i]:offsets[i + 1]]) for i in keep], gaps[keep]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a registered model name or a DiT checkpoint file")
    parser.add_argument("--num-samples", type=int, default=200)
    parser.add_argument("--targets", type=float, nargs="+", default=[0.0, 1.5, 3.0], help="band gaps, eV")
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--solver", default="heun")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path)
    args = parser.parse_args()

    import torch

    from adit_torch.conditions import parse_conditions
    from adit_torch.evaluate.crystals import check_crystal
    from adit_torch.pretrained import MODELS, pretrained_path
    from adit_torch.sample import sample_checkpoint

    torch.set_num_threads(2)
    load_before = os.getloadavg()[0]
    table = _element_table()
    t0 = time.time()
    train_z, train_y = band_gap_data("train")
    test_z, test_y = band_gap_data("test")
    predict = train_predictor(composition_features(train_z, table), train_y, seed=args.seed)
    test_pred = predict(composition_features(test_z, table))
    predictor = {"train_crystals": len(train_y), "test_crystals": len(test_y), "seconds": round(time.time() - t0),
                 "test_mae_ev": round(float(np.mean(np.abs(test_pred - test_y))), 4),
                 "test_mae_ev_guess_train_median": round(float(np.mean(np.abs(np.median(train_y) - test_y))), 4),
                 "test_metal_accuracy": round(float(np.mean((test_pred < 0.1) == (test_y < 0.1))), 4)}
    print(json.dumps({"predictor": predictor}), flush=True)

    path = pretrained_path(args.model) if args.model in MODELS else pathlib.Path(args.model)
    rows = []
    for target in [None, *args.targets]:
        t0 = time.time()
        conditions = (parse_conditions([f"band_gap={target}"], [f"band_gap={args.guidance}"])
                      if target is not None else None)
        systems, _ = sample_checkpoint(path, "crystal", args.num_samples, steps=args.steps, solver=args.solver,
                                       seed=args.seed, conditions=conditions, progress=False)
        valid = [s for s in systems if check_crystal(s)["valid"]]
        pred = predict(composition_features([np.asarray(s.numbers) for s in valid], table)) if valid else np.zeros(0)
        row = {"target_ev": target, "guidance": args.guidance if target is not None else None,
               "samples": len(systems), "valid": len(valid), "validity": round(len(valid) / len(systems), 4),
               "predicted_gap_quartiles": np.percentile(pred, [25, 50, 75]).round(3).tolist() if len(pred) else None,
               "predicted_metallic_share": round(float(np.mean(pred < 0.1)), 4) if len(pred) else None,
               "seconds": round(time.time() - t0, 1)}
        rows.append((row, pred))
        print(json.dumps(row), flush=True)
    for row, pred in rows:
        for target in args.targets:  # each row's MAE to every target: the asked one should be the smallest
            row[f"mae_to_{target:g}_ev"] = round(float(np.mean(np.abs(pred - target))), 4) if len(pred) else None
    result = {"machine": MACHINE, "date": datetime.date.today().isoformat(), "model": str(args.model),
              "num_samples": args.num_samples, "solver": args.solver, "steps": args.steps, "seed": args.seed,
              "predictor": {"what": "MLP on the composition only (element fractions and weighted statistics of "
                                    f"{', '.join(ELEMENT_PROPERTIES)}), trained on partial MP-20 train", **predictor},
              "mp20_note": "partial MP-20 (the workplace's 38% subset): train 9,421 crystals",
              "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2),
              "rows": [row for row, _ in rows]}
    name = pathlib.Path(str(args.model)).stem if args.model not in MODELS else args.model
    out = args.out or ROOT / "benchmarks" / "results" / f"band_gap_conditioning_{name}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
