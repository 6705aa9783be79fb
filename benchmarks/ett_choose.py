"""Choose a configuration per ETT dataset on validation, then report the test table it gives.

    python benchmarks/ett_choose.py --base benchmarks/results/ett_hold4_s2024.json \
        --candidate benchmarks/results/ett_cifg_s2024_*.json --name CIFG \
        --out benchmarks/results/ett_choice_s2024.json

``--base`` is one seed's 16-cell result file of ``ett.py`` (the plain LSTM); ``--candidate``
files hold another configuration's runs with the same seed, any cells (another cell, or a
training option such as ``--ema-decay``). The rule, fixed before
looking at test numbers: per dataset, the candidate replaces the base only if it ran at all four
horizons and its mean validation MSE over them is lower; everywhere else the base stays. The
table lists every cell's validation and test MSE for both, which one the rule took, and the
16-cell average of the chosen cells beside SegRNN, PatchTST and DLinear.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ett import HORIZONS, MODELS, REFERENCE_MSE
from report import write_report


def cells_of(paths: list[Path]) -> dict[tuple[str, int], dict]:
    """(dataset, horizon) -> the row of ``ett.py``'s result files; a cell twice is an error."""
    cells: dict[tuple[str, int], dict] = {}
    for path in paths:
        for row in json.loads(path.read_text())["rows"]:
            key = (row["dataset"], row["horizon"])
            if key in cells:
                raise SystemExit(f"{key[0]} at {key[1]} appears twice (again in {path})")
            if not isinstance(row.get("val_loss"), float) or row["val_loss"] != row["val_loss"]:
                raise SystemExit(f"{key[0]} at {key[1]} in {path} has no validation loss")
            cells[key] = row | {"file": path.name}
    return cells


# ett.py settings that must agree between the files compared (the cell may differ)
SAME = (
    "seed",
    "hidden",
    "dropout",
    "normalization",
    "epochs",
    "patience",
    "batch_size",
    "lr",
    "lr_grid",
    "segment_len",
    "lr_decay",
    "hold_epochs",
    "stride",
    "max_steps",
    "rnn",
)


def check_settings(paths: list[Path]) -> set[str]:
    """The seed the files share; exits naming the setting where two runs differ."""
    first: dict[str, str] = {}
    for path in paths:
        for run in json.loads(path.read_text())["runs"]:
            for key in SAME:
                value = run["settings"].get(key)
                if value is None:  # an older ett.py, before the setting existed
                    continue
                if first.setdefault(key, value) != value:
                    raise SystemExit(f"{path.name}: {key}={value}, another file has {first[key]}")
    return {first["seed"]}


def choose(base: dict, candidate: dict, name: str) -> dict[str, dict]:
    """Per dataset: the mean validation MSE of both over the horizons the candidate ran, and the
    choice: the candidate where it ran every horizon with the lower mean."""
    datasets = {}
    for dataset in REFERENCE_MSE:
        ran = [(dataset, h) for h in HORIZONS if (dataset, h) in candidate]
        over = ran or [(dataset, h) for h in HORIZONS]
        base_val = statistics.mean(base[k]["val_loss"] for k in over)
        cand_val = statistics.mean(candidate[k]["val_loss"] for k in ran) if ran else None
        better = len(ran) == len(HORIZONS) and cand_val < base_val
        datasets[dataset] = {
            "base_val": base_val,
            "candidate_val": cand_val,
            "candidate_horizons": len(ran),
            "chosen": name if better else "LSTM",
        }
    return datasets


def markdown(report: dict) -> str:
    name = report["candidate_name"]
    lines = [
        f"# ETT: LSTM or {name} per dataset, chosen on validation, seed {report['seed']}",
        "",
        f"`{report['command']}`",
        "",
        f"Base: {report['base_file']}. {name}: {', '.join(report['candidate_files'])}. Rule: per "
        f"dataset, {name} replaces the LSTM only if it ran all four horizons with a lower mean "
        "validation MSE.",
        "",
        f"| dataset | horizon | LSTM val | LSTM test | {name} val | {name} test | chosen "
        "| chosen test | SegRNN |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        cand_val = f"{r['candidate_val']:.4f}" if r["candidate_val"] is not None else "—"
        cand_mse = f"{r['candidate_mse']:.4f}" if r["candidate_mse"] is not None else "—"
        lines.append(
            f"| {r['dataset']} | {r['horizon']} | {r['base_val']:.4f} | {r['base_mse']:.4f} | "
            f"{cand_val} | {cand_mse} | {r['chosen']} | {r['chosen_mse']:.4f} | "
            f"{r['SegRNN']:.3f} |"
        )
    lines += ["", "Per dataset, mean validation MSE over the horizons run:", ""]
    for dataset, d in report["datasets"].items():
        cand = f"{d['candidate_val']:.4f}" if d["candidate_val"] is not None else "—"
        lines.append(
            f"- {dataset}: LSTM {d['base_val']:.4f}, {name} {cand} "
            f"({d['candidate_horizons']} of 4 horizons): {d['chosen']}"
        )
    avg = report["averages"]
    lines += [
        "",
        f"Average test MSE over the 16 cells: chosen {avg['chosen']:.4f}, LSTM {avg['base']:.4f}, "
        + ", ".join(f"{m} {avg[m]:.4f}" for m in MODELS)
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--candidate", type=Path, nargs="+", required=True)
    parser.add_argument("--name", default="CIFG", help="the candidate's name in the table")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    base = cells_of([args.base])
    missing = [k for k in ((n, h) for n in REFERENCE_MSE for h in HORIZONS) if k not in base]
    if missing:
        raise SystemExit(f"--base lacks {len(missing)} of the 16 cells, e.g. {missing[0]}")
    candidate = cells_of(args.candidate)
    seeds = check_settings([args.base, *args.candidate])
    datasets = choose(base, candidate, args.name)
    rows = []
    for dataset in REFERENCE_MSE:
        for i, horizon in enumerate(HORIZONS):
            b, c = base[(dataset, horizon)], candidate.get((dataset, horizon))
            chosen = datasets[dataset]["chosen"]
            rows.append(
                {
                    "dataset": dataset,
                    "horizon": horizon,
                    "base_val": b["val_loss"],
                    "base_mse": b["mse"],
                    "candidate_val": c["val_loss"] if c else None,
                    "candidate_mse": c["mse"] if c else None,
                    "chosen": chosen,
                    "chosen_mse": (b if chosen == "LSTM" else c)["mse"],
                }
                | {m: REFERENCE_MSE[dataset][m][i] for m in MODELS}
            )
    averages = {"chosen": statistics.mean(r["chosen_mse"] for r in rows)}
    averages["base"] = statistics.mean(r["base_mse"] for r in rows)
    averages |= {m: statistics.mean(r[m] for r in rows) for m in MODELS}
    report = {
        "command": "python benchmarks/ett_choose.py "
        + " ".join(f"--{k} {v}" for k, v in (("base", args.base), ("name", args.name)))
        + " --candidate "
        + " ".join(str(p) for p in args.candidate)
        + f" --out {args.out}",
        "seed": seeds.pop(),
        "candidate_name": args.name,
        "base_file": args.base.name,
        "candidate_files": [p.name for p in args.candidate],
        "rows": rows,
        "datasets": datasets,
        "averages": averages,
    }
    write_report(args.out, report, markdown)


if __name__ == "__main__":
    main()
