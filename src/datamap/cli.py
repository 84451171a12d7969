"""The ``datamap`` command: small utilities around the pipeline.

Every subcommand turns a :class:`~datamap.errors.DatamapError` into one line on stderr and exit
code 2, as the stage scripts do.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence

from datamap.errors import ConfigError, DatamapError

log = logging.getLogger("datamap")


def _compose(args: argparse.Namespace) -> int:
    from datamap.pipeline.config import (
        save_experiment,
        stale_params,
        write_compose_note,
        write_params,
    )

    if args.check:
        message = stale_params(args.output, args.config_dir)
        if message:
            print(message, file=sys.stderr)
            return 1
        print(f"{args.output} is up to date with {args.config_dir}/")
        return 0
    overrides = list(args.overrides)
    if args.save:
        saved = save_experiment(args.save, overrides, args.config_dir, force=args.force)
        print(f"wrote {saved}")
        overrides = [f"experiment={args.save}"]
    path = write_params(args.output, args.config_dir, overrides)
    write_compose_note(".", args.config_dir, overrides)
    print(f"wrote {path}")
    if overrides and not args.save:
        print("note: `dvc exp run` recomposes params.yaml from conf/ and would drop these "
              "overrides (the stages refuse to run then); to run experiments on them, save "
              "them: datamap compose --save NAME " + " ".join(overrides), file=sys.stderr)
    elif args.save:
        print(f"run experiments on it with: dvc exp run -S experiment={args.save} -S ...")
    return 0


def _deps(args: argparse.Namespace) -> int:
    from datamap.pipeline.deps import write_deps

    message = write_deps(".", check=args.check)
    if message:
        print(message, file=sys.stderr)
        return 1
    print("dvc.yaml's code deps are current" if args.check else "wrote dvc.yaml's code deps")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="datamap", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "compose",
        help="compose conf/ into params.yaml (run after editing conf/)",
        description="Compose the Hydra config tree into params.yaml exactly as "
        "`dvc exp run` does with hydra.enabled.",
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. trainer.max_epochs=5")
    p.add_argument("--config-dir", default="conf")
    p.add_argument("--output", default="params.yaml")
    p.add_argument("--check", action="store_true",
                   help="only check that the file is fresh; exit 1 when stale")
    p.add_argument("--save", metavar="NAME",
                   help="also save the overrides as conf/experiment/NAME.yaml and compose "
                   "experiment=NAME (what `dvc exp run -S experiment=NAME` keeps)")
    p.add_argument("--force", action="store_true", help="with --save: replace an existing file")
    p.set_defaults(func=_compose)

    p = sub.add_parser(
        "deps",
        help="write the code deps of every stage into dvc.yaml (run after changing imports)",
        description="Derive each stage's code dependencies from the code (imports, lazy "
        "exports, config _target_s) and write them into dvc.yaml.",
    )
    p.add_argument("--check", action="store_true",
                   help="only check that dvc.yaml's code deps are current; exit 1 when not")
    p.set_defaults(func=_deps)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


#: Modules add subcommands here (each a function taking the subparsers object).
_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


# --------------------------------------------------------------------------------------------
# scores and reference dynamics (datamap.scoring.scores, datamap.dynamics.reference)


def _scores(args: argparse.Namespace) -> int:
    from pathlib import Path

    import pyarrow as pa

    from datamap.scoring.streaming import write_scores_of

    regions: dict[str, object] = {"rule": args.region_rule}
    for key, _, _ in _REGION_OPTIONS:
        value = getattr(args, key)
        if value is not None:
            regions[key] = value
    dynamics, output = Path(args.dynamics), Path(args.output)
    if dynamics.exists() and output.exists() and output.samefile(dynamics):
        raise ConfigError(f"{args.output}: is the dynamics file itself; writing the scores there "
                          "would replace the dynamics: name another output file")
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be at least 1, not {args.threads}")
        # Arrow sizes its decoding pool by OMP_NUM_THREADS, often set to 1 for torch's sake
        pa.set_cpu_count(args.threads)
    written = write_scores_of(
        args.dynamics,
        args.output,
        burn_out=args.burn_out,
        include_ci=args.include_ci,
        el2n_epochs=None if args.el2n_epochs == 0 else args.el2n_epochs,
        regions=regions,
    )
    n = written["examples"]
    shares = ", ".join(f"{r} {c / n:.1%}" for r, c in written["regions"].items())
    print(f"wrote {args.output}: {n} examples over {written['records']} record(s) ({shares})")
    return 0


def _import_dynamics(args: argparse.Namespace) -> int:
    from datamap.dynamics.reference import import_reference_dynamics
    from datamap.dynamics.storage import write_dynamics

    table = import_reference_dynamics(args.directory)
    write_dynamics(args.output, table)
    epochs = table.column("epoch")[-1].as_py() + 1
    print(f"wrote {args.output}: {table.num_rows // epochs} examples x {epochs} epochs")
    return 0


def _export_dynamics(args: argparse.Namespace) -> int:
    from datamap.dynamics.reference import export_reference_dynamics

    files = export_reference_dynamics(args.dynamics, args.directory)
    print(f"wrote {len(files)} epoch file(s) to {args.directory}")
    return 0


def _list_scores(args: argparse.Namespace) -> int:
    from datamap.scoring.registry import registry_table

    print(registry_table())
    return 0


#: Region options of `datamap scores`: flag, the rule it belongs to, what it sets (default).
_REGION_OPTIONS = (
    ("confidence", "threshold", "easy-to-learn at or above this confidence (0.5)"),
    ("variability", "threshold", "ambiguous at or above this variability (0.2)"),
    ("ambiguous", "quantile", "fraction labelled ambiguous (0.33)"),
    ("hard", "quantile", "fraction labelled hard-to-learn (0.33)"),
)


def _usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the system has one)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)


def _register_scores_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scores",
        help="cartography scores of a dynamics table (any split) -> scores.parquet",
        description="Compute every registered score (`datamap list-scores`) and the region of "
        "every example of a dynamics table, read and written a block of ids at a time: memory "
        "does not grow with the number of examples.",
    )
    p.add_argument("dynamics", help="dynamics Parquet file (e.g. data/train/dynamics.parquet)")
    p.add_argument("output", help="scores Parquet file to write")
    p.add_argument("--burn-out", type=int, default=None, metavar="K",
                   help="use only the first K epochs")
    p.add_argument("--include-ci", action="store_true",
                   help="variability as the reference's sqrt(v + v^2/(R-1))")
    p.add_argument("--el2n-epochs", type=int, default=2, metavar="N",
                   help="early epochs of this run averaged by the single-run el2n (default 2; "
                   "0 = every epoch)")
    p.add_argument("--region-rule", choices=("quantile", "threshold"), default="quantile",
                   help="quantile (default: fractions of this run) or threshold (the paper's "
                   "fixed thresholds)")
    for name, rule, what in _REGION_OPTIONS:
        p.add_argument(f"--{name}", type=float, default=None, help=f"{rule} rule: {what}")
    p.add_argument("--threads", type=int, default=_usable_cores(),
                   help="threads decoding the dynamics (default: the cores this process may "
                   "use, whatever OMP_NUM_THREADS says)")
    p.set_defaults(func=_scores)

    p = sub.add_parser(
        "list-scores",
        help="the score registry: each score's definition, type and label-error orientation",
    )
    p.set_defaults(func=_list_scores)

    for name, func, what, arguments in (
        ("import-dynamics", _import_dynamics,
         "allenai/cartography training_dynamics/ directory -> dynamics.parquet",
         (("directory", "directory of dynamics_epoch_<e>.jsonl files"),
          ("output", "dynamics Parquet file to write"))),
        ("export-dynamics", _export_dynamics,
         "dynamics.parquet (with logits) -> allenai/cartography training_dynamics/",
         (("dynamics", "dynamics Parquet file with a logits column"),
          ("directory", "directory to write dynamics_epoch_<e>.jsonl files into"))),
    ):
        p = sub.add_parser(name, help=what)
        for argument, argument_help in arguments:
            p.add_argument(argument, help=argument_help)
        p.set_defaults(func=func)


_EXTRA_COMMANDS.append(_register_scores_commands)


# --------------------------------------------------------------------------------------------
# reload a checkpoint and evaluate it (datamap.evaluation.evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from datamap.evaluation.evaluate import evaluate_checkpoint
    from datamap.io import write_json

    metrics = evaluate_checkpoint(args.checkpoint, args.data, args.prepared,
                                  batch_size=args.batch_size, trusted=args.trust)
    rows = []

    def walk(node: dict, label: str) -> None:
        if "accuracy" in node:
            rows.append((label, node))
            return
        for key, child in node.items():
            walk(child, f"{label}/{key}" if label else key)

    walk(metrics, "")
    width = max(len(label) for label, _ in rows)
    print(f"{args.checkpoint} on {args.prepared}:")
    print(f"{'data':<{width}}  {'n':>7}  {'accuracy':>8}  {'macro_f1':>8}  {'loss':>8}")
    for label, m in rows:
        print(f"{label:<{width}}  {m['n']:>7}  {m['accuracy']:>8.4f}  {m['macro_f1']:>8.4f}  "
              f"{m['loss']:>8.4f}")
    if args.json:
        write_json(args.json, metrics)
        print(f"wrote {args.json}")
    return 0


def _register_evaluate_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="reload a model.ckpt and print its accuracy, macro-F1 and loss on some data",
        description="Reload a checkpoint of the train or retrain stage (its model config and "
        "class names travel inside it) and evaluate it with the evaluate stage's code.",
    )
    p.add_argument("checkpoint", help="a model.ckpt, e.g. data/retrain/full/seed_0/model.ckpt")
    p.add_argument("--data", nargs="+", default=["test", "control"], metavar="DATA",
                   help="test, val, train, control (every control set), control/NAME, or a "
                   "Parquet file of the prepared-split contract (default: test control)")
    p.add_argument("--prepared", default="data/prepared",
                   help="the prepared data (class names, control sets); default data/prepared")
    p.add_argument("--batch-size", type=int, default=512,
                   help="evaluation batch size (the evaluate stage uses "
                   "data.datamodule.eval_batch_size, 512)")
    p.add_argument("--trust", action="append", default=[], metavar="TARGET",
                   help="a class (or module) beyond datamap's and torch's that the checkpoint "
                   "may name as its backbone, optimizer or scheduler, e.g. mypkg.nets.Net; "
                   "repeatable (a checkpoint holds no code, but rebuilding it imports what it "
                   "names)")
    p.add_argument("--json", metavar="OUT", help="also write the metrics as JSON")
    p.set_defaults(func=_evaluate)


_EXTRA_COMMANDS.append(_register_evaluate_command)


# --------------------------------------------------------------------------------------------
# reviewers' decisions through Label Studio (datamap.data.labelstudio, docs/corrections.md)


def _export_labelstudio(args: argparse.Namespace) -> int:
    from pathlib import Path

    from datamap.data.labelstudio import export_labelstudio

    config = args.config or str(Path(args.out).with_name("labeling_config.xml"))
    count = export_labelstudio(args.queue, args.prepared, args.out, config)
    print(f"wrote {count} task(s) to {args.out} and the labeling config to {config}: paste the "
          "config into the project's Settings > Labeling Interface > Code, then import the "
          "tasks")
    return 0


def _import_labelstudio(args: argparse.Namespace) -> int:
    from datamap.data.labelstudio import import_labelstudio

    report = import_labelstudio(args.export, args.corrections, args.prepared)
    print(f"merged {report.describe(args.corrections)}")
    return 0


def _register_corrections_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "corrections",
        help="the review queue to Label Studio and its annotations back into "
        "data/corrections.csv",
        description="Reviewers' decisions (relabel, drop, keep) in data/corrections.csv, "
        "applied by the prepare stage; see docs/corrections.md.",
    )
    commands = p.add_subparsers(dest="corrections_command", required=True)
    e = commands.add_parser(
        "export-labelstudio",
        help="the review queue as Label Studio tasks (JSON) + labeling_config.xml",
        description="One task per queued example (its input, id, given and model label), the "
        "model's label as a pre-annotation, and the labeling config to paste.",
    )
    e.add_argument("--out", required=True, help="the tasks file to write, e.g. tasks.json")
    e.add_argument("--config", default=None,
                   help="the labeling config to write (default: labeling_config.xml next to "
                   "--out)")
    e.add_argument("--queue", default="data/cartography/review/hard_to_learn.csv",
                   help="the review queue (default data/cartography/review/hard_to_learn.csv)")
    e.add_argument("--prepared", default="data/prepared",
                   help="the prepared data (default data/prepared)")
    e.set_defaults(func=_export_labelstudio)
    i = commands.add_parser(
        "import-labelstudio",
        help="merge a Label Studio JSON export into data/corrections.csv",
        description="The given label chosen: keep; another class: relabel; drop ticked: drop. "
        "A new decision replaces an earlier one for the same id.",
    )
    i.add_argument("export", help="Label Studio's JSON export (Export > JSON)")
    i.add_argument("--corrections", default="data/corrections.csv",
                   help="the corrections file to merge into (default data/corrections.csv)")
    i.add_argument("--prepared", default="data/prepared",
                   help="the prepared data, for its class names (default data/prepared)")
    i.set_defaults(func=_import_labelstudio)


_EXTRA_COMMANDS.append(_register_corrections_commands)


# --------------------------------------------------------------------------------------------
# the retraining grid's plan (datamap.selection.plan)


def _plan(args: argparse.Namespace) -> int:
    from pathlib import Path

    from omegaconf import OmegaConf

    from datamap.selection.plan import plan_from_config

    params = Path(args.params)
    if not params.is_file():
        raise ConfigError(f"{params}: no composed configuration; run `datamap compose` first")
    cfg = OmegaConf.load(params)
    if args.examples is not None:
        n_train = args.examples
    else:
        meta = Path(args.prepared) / "meta.json"
        if not meta.is_file():
            raise ConfigError(f"{meta} is missing: run `dvc repro prepare` first, or give the "
                              "training split's size with --examples N")
        n_train = int(json.loads(meta.read_text())["sizes"]["train"])
    plan = plan_from_config(cfg, n_train)
    print(plan.table())
    print()
    print(plan.summary())
    return 0


def _register_plan_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="the retraining grid: fits per spec, their cost against the train stage, an "
        "estimate of the time",
        description="Count the select/retrain fits params.yaml asks for (selection.all_specs x "
        "selection.retrain_seeds) and state their cost in train-stage fits; with the train "
        "stage's wall time on this machine (recorded when it runs), in minutes.",
    )
    p.add_argument("--params", default="params.yaml", help="the composed config (params.yaml)")
    p.add_argument("--prepared", default="data/prepared",
                   help="the prepared data, for the training split's size")
    p.add_argument("--examples", type=int, default=None, metavar="N",
                   help="the training split's size, before prepare has run")
    p.set_defaults(func=_plan)


_EXTRA_COMMANDS.append(_register_plan_command)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DatamapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
