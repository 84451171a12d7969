"""Benchmark cartography scores: speed against the reference loop, memory against size.

Writes ``benchmarks/results/scores.md`` (markdown) and prints it. Every measured case runs in a
fresh subprocess so that its peak RSS (``ru_maxrss``) belongs to that case alone; inputs are
generated beforehand by ``benchmarks/synthetic.py`` in another process.

Usage::

    python benchmarks/bench_scores.py [--sizes 1000000,10000000,100000000] [--epochs 10]
        [--workdir DIR] [--in-memory-up-to 10000000] [--skip-reference] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "scores.md"

from workdir import private_workdir  # noqa: E402

# --------------------------------------------------------------------------------------------
# child side


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reference_loop(training_dynamics: dict, burn_out: int, include_ci: bool):
    """A faithful re-implementation of the *algorithm* of allenai/cartography's
    ``compute_train_dy_metrics`` (per-example Python loop, a torch tensor per record), written
    for this benchmark: same steps, same libraries, same per-epoch loss/accuracy side table."""
    import numpy as np
    import pandas as pd
    import torch

    def forgetting(trend):
        if not any(trend):
            return 1000
        learnt, forgotten = False, 0
        for ok in trend:
            if learnt and not ok:
                learnt, forgotten = False, forgotten + 1
            elif not learnt and ok:
                learnt = True
        return forgotten

    if include_ci:
        def spread(conf):
            return np.sqrt(np.var(conf) + np.var(conf) * np.var(conf) / (len(conf) - 1))
    else:
        def spread(conf):
            return np.std(conf)
    n_epochs = len(next(iter(training_dynamics.values()))["logits"])
    logits = {i: [] for i in range(n_epochs)}
    targets = {i: [] for i in range(n_epochs)}
    accuracy = {i: 0.0 for i in range(n_epochs)}
    rows = []
    for guid, rec in training_dynamics.items():
        correct_trend, prob_trend = [], []
        for i, epoch_logits in enumerate(rec["logits"]):
            probs = torch.nn.functional.softmax(torch.Tensor(epoch_logits), dim=-1)
            prob_trend.append(float(probs[rec["gold"]]))
            ok = (np.argmax(epoch_logits) == rec["gold"]).item()
            correct_trend.append(ok)
            accuracy[i] += ok
            logits[i].append(epoch_logits)
            targets[i].append(rec["gold"])
        if burn_out < n_epochs:
            correct_trend, prob_trend = correct_trend[:burn_out], prob_trend[:burn_out]
        conf = np.mean(prob_trend)
        rows.append([guid, conf, spread(prob_trend), sum(correct_trend),
                     forgetting(correct_trend), conf * (1 - conf)])
    df = pd.DataFrame(rows, columns=["guid", "confidence", "variability", "correctness",
                                     "forgetfulness", "threshold_closeness"])
    loss = torch.nn.CrossEntropyLoss()
    side = [[i, loss(torch.Tensor(logits[i]), torch.LongTensor(targets[i])).item(),
             accuracy[i] / len(training_dynamics)] for i in range(n_epochs)]
    return df, side


def child(spec: dict) -> dict:
    import numpy as np
    import pyarrow as pa

    from datamap.dynamics.storage import read_dynamics
    from datamap.scoring.scores import compute_scores

    base = _rss_mib()
    out: dict = {"baseline_rss_mib": base}
    path = spec["path"]
    kind = spec["kind"]
    if kind == "in_memory":
        t0 = time.perf_counter()
        table = read_dynamics(path)
        out["read_s"] = time.perf_counter() - t0
        runs = []
        for _ in range(spec.get("repeat", 1)):
            t0 = time.perf_counter()
            scores = compute_scores(table)
            runs.append(time.perf_counter() - t0)
        out["scores_s"] = min(runs)
        out["scores_runs"] = runs
        out["n"] = len(scores)
    elif kind == "path":
        t0 = time.perf_counter()
        scores = compute_scores(path)
        out["scores_s"] = time.perf_counter() - t0
        out["n"] = len(scores)
    elif kind == "reference":
        table = read_dynamics(path)
        ids = table.column("id").to_numpy()
        gold = table.column("gold").to_numpy()
        epoch = table.column("epoch").to_numpy()
        flat = table.column("logits").combine_chunks().flatten().to_numpy()
        logits = flat.reshape(table.num_rows, -1)
        n_epochs = int(epoch.max()) + 1
        n = table.num_rows // n_epochs
        # the structure read_training_dynamics returns: guid -> {"gold", "logits": [per epoch]}
        per_epoch = [logits[e * n:(e + 1) * n].tolist() for e in range(n_epochs)]
        training_dynamics = {
            int(ids[i]): {"gold": int(gold[i]), "logits": [per_epoch[e][i]
                                                             for e in range(n_epochs)]}
            for i in range(n)
        }
        del per_epoch
        t0 = time.perf_counter()
        ref, _ = _reference_loop(training_dynamics, burn_out=100, include_ci=False)
        out["reference_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours = compute_scores(table)
        out["ours_s"] = time.perf_counter() - t0
        ref = ref.sort_values("guid").reset_index(drop=True)
        diffs = {}
        for col in ("confidence", "variability", "threshold_closeness"):
            diffs[col] = float(np.abs(ref[col].to_numpy() - ours[col].to_numpy()).max())
        r = ours.attrs["records"]
        diffs["correctness"] = float(np.abs(ref["correctness"].to_numpy() / r
                                            - ours["correctness"].to_numpy()).max())
        ref_forget = ref["forgetfulness"].to_numpy()
        never = ours["never_learned"].to_numpy()
        diffs["forgetfulness"] = float(np.abs(
            np.where(ref_forget == 1000, 0, ref_forget) - ours["forgetfulness"].to_numpy()).max())
        diffs["never_learned_mismatch"] = int(((ref_forget == 1000) != never).sum())
        out["max_abs_diff"] = diffs
        out["n"] = len(ours)
    else:
        raise ValueError(kind)
    out["peak_rss_mib"] = _rss_mib()
    out["arrow_pool_peak_mib"] = pa.default_memory_pool().max_memory() / 2**20
    return out


# --------------------------------------------------------------------------------------------
# parent side


def run_child(spec: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                          capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"child {spec} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_twice(spec: dict) -> dict:
    """Two fresh processes: the faster time (the first may pay for a just-written file and a
    cold allocator), the larger peak memory; both times are kept."""
    first, second = run_child(spec), run_child(spec)
    best = dict(min((first, second), key=lambda r: r.get("scores_s", 0) + r.get("read_s", 0)))
    for key in ("peak_rss_mib", "arrow_pool_peak_mib", "baseline_rss_mib"):
        best[key] = max(first[key], second[key])
    best["totals"] = [r.get("scores_s", 0) + r.get("read_s", 0) for r in (first, second)]
    return best


def run_scores_command(path: Path, out: Path) -> dict:
    """`datamap scores path out` in a fresh process: wall time and that process's peak RSS."""
    command = [sys.executable, "-c", "import sys; from datamap.cli import main; "
               "sys.exit(main())", "scores", str(path), str(out)]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stdout, stderr = proc.stdout.read().decode(), proc.stderr.read().decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"datamap scores failed:\n{stderr}")
    return {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024, "stdout": stdout}


def generate(path: Path, n: int, epochs: int, logits: bool = False) -> dict:
    cmd = [sys.executable, str(HERE / "synthetic.py"), str(path), "--examples", str(n),
           "--epochs", str(epochs), "--classes", "3"] + (["--logits"] if logits else [])
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return {"gen_s": time.perf_counter() - t0, "file_mib": path.stat().st_size / 2**20}


def machine() -> str:
    import numpy
    import pandas
    import pyarrow

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM; Python "
            f"{platform.python_version()}, NumPy {numpy.__version__}, pandas "
            f"{pandas.__version__}, PyArrow {pyarrow.__version__}; OMP_NUM_THREADS="
            f"{os.environ.get('OMP_NUM_THREADS', 'unset')}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--sizes", default="1000000,10000000,100000000")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--workdir", default=None,
                   help="an empty or new directory of yours where inputs are generated "
                        "(default: a new private temp dir)")
    p.add_argument("--in-memory-up-to", type=int, default=10_000_000,
                   help="also time compute_scores(path) for sizes up to this")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the generated files")
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0

    command = "OMP_NUM_THREADS=1 python " + " ".join(
        [str(Path(sys.argv[0]).as_posix())] + [a for a in (argv or sys.argv[1:])])
    work = private_workdir(args.workdir, "datamap-bench-scores-")
    lines = [
        "# Cartography scores benchmark",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine()}.",
        "",
        "Synthetic dynamics from `benchmarks/synthetic.py` (3 classes; 70 % easy, 20 % "
        "ambiguous, 10 % mislabelled). Each case runs in a fresh Python process. *Peak RSS* is "
        "that process's `ru_maxrss` (everything: interpreter, NumPy/pandas/Arrow, input, "
        "output); *baseline* is its RSS after imports, before any work; *Arrow pool* is the "
        "peak of Arrow's allocator inside that. Times are wall-clock (`time.perf_counter`).",
        "",
    ]

    # --- 200k x 5: scores after reading, and the reference loop ----------------------------
    small = work / "dyn_200k_5.parquet"
    gen = generate(small, 200_000, 5, logits=True)
    res = run_child({"kind": "in_memory", "path": str(small), "repeat": 5})
    lines += [
        "## 200,000 examples x 5 epochs x 3 classes",
        "",
        "| step | time | target |",
        "|---|---:|---:|",
        f"| read_dynamics (read + validate, with logits column) | {res['read_s']:.3f} s | |",
        f"| compute_scores(table) -- best of 5 (runs: "
        f"{', '.join(f'{x:.3f}' for x in res['scores_runs'])}) | {res['scores_s']:.3f} s | "
        "< 0.5 s |",
    ]
    if not args.skip_reference:
        ref = run_child({"kind": "reference", "path": str(small)})
        diffs = ref["max_abs_diff"]
        lines += [
            f"| reference algorithm (per-example loop, torch softmax per record, as in "
            f"`compute_train_dy_metrics`) | {ref['reference_s']:.1f} s | |",
            f"| compute_scores on the same table, same process | {ref['ours_s']:.3f} s | |",
            "",
            f"Speed-up over the reference loop: {ref['reference_s'] / ref['ours_s']:.0f}x. "
            "Largest absolute difference from the reference loop: "
            + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()
                        if k != "never_learned_mismatch")
            + f" (correctness as count / R; forgetfulness with the 1000 sentinel as 0); "
            f"never_learned disagreements with the sentinel: {diffs['never_learned_mismatch']}.",
        ]
    lines += ["", f"Input file: {gen['file_mib']:.0f} MiB (with logits).", ""]
    print("\n".join(lines))

    # --- 1M x 10 ------------------------------------------------------------------------------
    mid = work / "dyn_1000k_10.parquet"
    gen = generate(mid, 1_000_000, 10)
    a = run_twice({"kind": "in_memory", "path": str(mid)})
    b = run_twice({"kind": "path", "path": str(mid)})
    lines += [
        "## 1,000,000 examples x 10 epochs x 3 classes (10 M rows)",
        "",
        "| mode | read | scores | read + scores (target < 5 s) | peak RSS (target < 1.5 GiB) "
        "| baseline | Arrow pool |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| `read_dynamics` then `compute_scores(table)` | {a['read_s']:.2f} s | "
        f"{a['scores_s']:.2f} s | {a['read_s'] + a['scores_s']:.2f} s | "
        f"{a['peak_rss_mib']:.0f} MiB | {a['baseline_rss_mib']:.0f} MiB | "
        f"{a['arrow_pool_peak_mib']:.0f} MiB |",
        f"| `compute_scores(path)` (chunked read) | -- | -- | {b['scores_s']:.2f} s | "
        f"{b['peak_rss_mib']:.0f} MiB | {b['baseline_rss_mib']:.0f} MiB | "
        f"{b['arrow_pool_peak_mib']:.0f} MiB |",
        "",
        f"Input file: {gen['file_mib']:.0f} MiB (no logits). Each mode ran in two fresh "
        f"processes; shown: the faster total (both: in memory "
        f"{', '.join(f'{x:.2f}' for x in a['totals'])} s; chunked "
        f"{', '.join(f'{x:.2f}' for x in b['totals'])} s) and the larger peak.",
        "",
    ]
    print("\n".join(lines[-9:]))
    if not args.keep:
        small.unlink()
        mid.unlink()

    # --- scaling --------------------------------------------------------------------------------
    lines += [
        f"## Scaling: `datamap scores`, {args.epochs} epochs x 3 classes",
        "",
        "`datamap scores IN OUT` (default options: quantile regions, 33 % / 33 %) run as a user "
        "runs it, in a fresh process; wall time and the peak RSS of that process "
        "(`os.wait4`). It writes scores.parquet block by block: a first pass reads p_gold "
        "for confidence and variability and writes their sort keys to a temporary file; radix "
        "selection finds the quantile cut-offs from that file; a checked second pass computes "
        "every score and writes it with its region. *In memory* is `compute_scores(path)` "
        "(the DataFrame the cartography stage holds; nothing written), for comparison.",
        "",
        "Each measured twice: the faster time (both listed), the larger peak.",
        "",
        "| examples | rows | input | generate | `datamap scores` (both runs) | peak RSS | output "
        "| in memory: time | in memory: peak RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in [int(s) for s in args.sizes.split(",") if s]:
        path = work / f"dyn_{n}_{args.epochs}.parquet"
        gen = generate(path, n, args.epochs)
        out = work / f"scores_{n}.parquet"
        runs = [run_scores_command(path, out) for _ in range(2)]
        out_mib = out.stat().st_size / 2**20
        out.unlink()
        best = min(r["wall_s"] for r in runs)
        both = " / ".join(f"{r['wall_s']:.1f}" for r in runs)
        peak = max(r["peak_rss_mib"] for r in runs)
        if n <= args.in_memory_up_to:
            r = run_twice({"kind": "path", "path": str(path)})
            in_memory = f"{r['scores_s']:.1f} s | {r['peak_rss_mib']:,.0f} MiB"
        else:
            in_memory = "-- | --"
        lines.append(
            f"| {n:,} | {n * args.epochs:,} | {gen['file_mib']:,.0f} MiB | {gen['gen_s']:.0f} s "
            f"| {best:.1f} s ({both}) | {peak:,.0f} MiB | {out_mib:,.0f} MiB | {in_memory} |"
        )
        print(lines[-1], flush=True)
        if not args.keep:
            path.unlink()
    lines += [
        "",
        "## Notes",
        "",
        "- The reference row times a re-implementation of the reference's algorithm written "
        "for this benchmark (`_reference_loop`: a Python loop over examples, a torch softmax "
        "per record, `np.mean`/`np.std` per example, plus its per-epoch loss/accuracy table), "
        "run on the same input after building the `guid -> {gold, logits}` dict its reader "
        "returns (not timed). It is not the reference package itself.",
        "- `datamap scores` holds one chunk of the input (about 4 Mi rows), the next one "
        "being read, one row group of output (1 Mi rows) being compressed and the radix "
        "selection's counts: none of it grows with N. `compute_scores(path)` reads the same "
        "way but returns one row of 13 columns per example (~90 bytes), so its peak grows "
        "with N. The temporary key file (24 bytes per example) lives beside the output and "
        "is removed with it.",
        "- `datamap scores` sets Arrow's decoding pool to the cores the process may use "
        "(`--threads`; Arrow otherwise takes OMP_NUM_THREADS=1 as its size); the in-memory "
        "rows run with Arrow's default, as a library call would.",
        "- `read_dynamics` then `compute_scores(table)` validates the table twice (once when "
        "reading, once when scoring) and holds the whole table.",
        "- Inputs and outputs are in datamap's Parquet encodings (`datamap.io.parquet_options`: "
        "floats byte-stream-split with LZ4, delta-encoded ids, dictionary-encoded classes and "
        "epochs, zstd for the rest). With plain zstd everywhere (datamap before this format) "
        "the 100,000,000-example input was 15,661 MiB and `datamap scores` took 70.6 s "
        "(1,131 MiB peak) on this machine.",
        "",
    ]
    from datamap.io import write_text

    write_text(RESULTS, "\n".join(lines) + "\n")  # atomic, through a private temporary
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
