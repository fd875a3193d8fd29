"""The study's whole plan as five stages over one experiment directory:

    DIR/baseline   train --no-prune          -> metrics.json
    DIR/pruned     train --preset compact    -> metrics.json   (or the budget given: params, MACs, ms)
    both           export + quantize         -> bundle/meta.json, export/parity.json
    both           bench, interleaved        -> DIR/bench-<machine>.json, RUN/bench/*.json
    DIR            report                    -> report.md, report.html, report.json, figures

Each stage is a plain function that returns what it did; it is skipped when its output exists
and is newer than its input, and an interrupted training resumes from its checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgeprune.errors import UserError
from edgeprune.prune import budget as budgets
from edgeprune.prune.guard import DEFAULT_METRIC
from edgeprune.run import RunDir, atomic_write_json, read_json

RAN, RESUMED, SKIPPED = "ran", "resumed", "skipped"


class Interrupted(UserError):
    exit_code = 130


@dataclass(frozen=True)
class ExperimentOptions:
    dataset: str
    model: str | None = None  # any model train takes (default: the dataset's)
    model_kwargs: dict = field(default_factory=dict)  # the model's options over its defaults
    embeddings: Path | None = None  # text: word vectors both runs' embeddings start from
    weights: Path | None = None  # a state dict both runs' models start from
    target_params: float | None = None  # the pruned run's budget (default: the preset's)
    target_macs: float | None = None
    target_latency_ms: float | None = None
    latency_table: Path | None = None  # a table measured on the device (default: measured here)
    max_accuracy_drop: str | float | None = None  # the pruned run's accuracy guard (default: train's)
    guard_metric: str = DEFAULT_METRIC
    guard_recovery: str | int | None = None  # steps before the guard judges a step (default: train's, auto)
    epochs: int | None = None
    limit: int | None = None
    out: Path | None = None
    data_dir: Path | None = None
    preset: str = "compact"
    quantize: str = "auto"
    target: str | None = None
    bench_runs: int | None = None  # timed runs per round (bench's default when None)
    bench_rounds: int = 5
    bench_warmup: int = 10
    seed: int = 0
    export: dict = field(default_factory=dict)  # further export_run options (eval_limit, calib, ...)
    data_options: dict = field(default_factory=dict)  # how your own data is read (edgeprune.data.options)
    quiet: bool = False


@dataclass(frozen=True)
class Plan:
    """Everything the stages need, resolved and validated before any work starts."""

    out: Path
    baseline: object  # TrainConfig
    pruned: object  # TrainConfig
    export_options: dict
    bench_settings: object  # edgeprune.bench.Settings
    notes: tuple[str, ...] = ()

    @property
    def runs(self) -> list[Path]:
        return [Path(self.baseline.out), Path(self.pruned.out)]

    @property
    def bench_file(self) -> Path:
        return self.out / f"bench-{self.bench_settings.label}.json"


def make_plan(opts: ExperimentOptions) -> Plan:
    """Resolve both training configurations and check every flag: a typo fails now, not after training."""
    from edgeprune.bench import make_settings
    from edgeprune.config import PRESETS, resolve_train_config, schedule_of
    from edgeprune.data.registry import get_spec
    from edgeprune.export.pipeline import ExportOptions
    from edgeprune.models.external import slug

    spec = get_spec(opts.dataset, opts.data_options)
    default_out = f"experiment-{spec.name}" + (f"-{slug(opts.model)}" if opts.model else "")
    out = Path(opts.out) if opts.out is not None else Path("runs") / default_out
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a directory for the experiment.")
    common = {
        "dataset": spec.id,
        "data_options": opts.data_options,
        "epochs": opts.epochs,
        "limit": opts.limit,
        "seed": opts.seed,
        "data_dir": Path(opts.data_dir) if opts.data_dir else None,
        "model": opts.model,
        "model_config": dict(opts.model_kwargs),
        "embeddings": str(opts.embeddings) if opts.embeddings else None,
        "weights": str(opts.weights) if opts.weights else None,
    }
    settings = make_settings(
        runs=opts.bench_runs, rounds=opts.bench_rounds, warmup=opts.bench_warmup, target=opts.target
    )  # validates --target and --bench-runs
    budget = {
        "target_params": opts.target_params,
        "target_macs": opts.target_macs,
        "target_latency_ms": opts.target_latency_ms,
        "latency_table": str(opts.latency_table) if opts.latency_table else None,
        "max_accuracy_drop": opts.max_accuracy_drop,
        "guard_metric": opts.guard_metric,
        "guard_recovery": opts.guard_recovery,
        # a latency budget is for the threads its table was measured with, or else for the ones the
        # bench stage will time the models with
        "latency_threads": _table_threads(opts.latency_table) or settings.threads
        if opts.target_latency_ms is not None
        else None,
    }
    common_pruned = {**common, **budget}
    baseline = resolve_train_config(out=out / "baseline", prune=False, **common)
    pruned = resolve_train_config(out=out / "pruned", prune=True, preset=opts.preset, **common_pruned)
    notes = []
    if schedule_of(pruned).prune_steps == 0:
        # Short runs: the default warm-up would use the only epoch that may prune.
        if pruned.epochs < 2:
            raise UserError(
                f"--epochs {pruned.epochs} leaves no epoch to prune and then fine-tune; use --epochs 2 or more."
            )
        pruned = resolve_train_config(
            out=out / "pruned", prune=True, preset=opts.preset, warmup_epochs=0, **common_pruned
        )
        if schedule_of(pruned).prune_steps == 0:
            raise UserError(
                f"with --epochs {pruned.epochs} the pruning schedule has no pruning epoch; use more epochs."
            )
        last = schedule_of(pruned).last_prune_epoch
        notes.append(
            f"with {pruned.epochs} epochs the pruned run skips the warm-up, so that it prunes "
            f"after epoch{' 1' if last == 1 else f's 1-{last}'} and fine-tunes after that"
            + (
                "; with no warm-up there is no model to distill from, so distillation is off."
                if not pruned.distill and PRESETS[opts.preset].get("distill")
                else "."
            )
        )
    export_options = {
        "quantize": opts.quantize,
        "target": opts.target,
        "data_dir": str(opts.data_dir) if opts.data_dir else None,
        **opts.export,
    }
    ExportOptions.of(**export_options).validate()  # the export stage's own check, now rather than after training
    return Plan(
        out=out,
        baseline=baseline,
        pruned=pruned,
        export_options=export_options,
        bench_settings=settings,
        notes=tuple(notes),
    )


def _table_threads(path: Path | None) -> int | None:
    """The threads a latency table was measured with (None without a readable table: the
    configuration check then names what is wrong with it)."""
    from edgeprune.latency.model import read_table

    if path is None or not Path(path).is_file():
        return None
    try:
        return read_table(Path(path)).get("threads")
    except UserError:
        return None


def budget_text(cfg, preset: str) -> str:
    """The pruned run's budget in words: what the stage title shows (a parameter budget is the
    presets' kind, so the preset is named with it)."""
    budget = budgets.Budget.from_config(cfg)
    if budget is None:
        return f"preset {preset}"
    return budget.text() + (f", preset {preset}" if preset and budget.unit == "params" else "")


def _result(stage: str, status: str, t0: float, detail: str) -> dict:
    return {"stage": stage, "status": status, "seconds": round(time.perf_counter() - t0, 2), "detail": detail}


def _newer(outputs: list[Path], inputs: list[Path]) -> bool:
    """Every output exists and none is older than any existing input."""
    if not all(p.is_file() for p in outputs):
        return False
    newest_in = max((p.stat().st_mtime for p in inputs if p.is_file()), default=0.0)
    return min(p.stat().st_mtime for p in outputs) >= newest_in


def _check_same_config(run: RunDir, cfg) -> None:
    from edgeprune.config import TrainConfig
    from edgeprune.rundir import readable_run_config

    saved = readable_run_config(run)
    if saved is None:
        return  # config.json is damaged but a checkpoint holds a copy: train_run rebuilds and checks it
    try:
        saved_id = TrainConfig(**saved["config"]).identity()
    except (KeyError, TypeError):
        raise UserError(f"{run.config} was not written by this edgeprune; choose another --out.") from None
    new_id = cfg.identity()
    diff = sorted(k for k in set(saved_id) | set(new_id) if saved_id.get(k) != new_id.get(k))
    # where these live is left out of a resume's identity, but another file is another experiment
    diff += [k for k in ("latency_table", "embeddings") if saved["config"].get(k) != getattr(cfg, k)]
    if diff:
        raise UserError(
            f"{run.root} holds a run with a different configuration ({', '.join(diff)} differ); "
            "choose another --out or delete that directory."
        )


def train_stage(cfg, quiet: bool = False) -> dict:
    """Train one run: skipped when finished, resumed when interrupted, else from scratch."""
    from edgeprune.report import test_acc
    from edgeprune.train import train_run

    t0 = time.perf_counter()
    run = RunDir(Path(cfg.out))
    name = f"train {run.root.name}"
    if run.config.exists():
        _check_same_config(run, cfg)  # never pass off another configuration's results as these
        if run.metrics.exists():
            return _result(name, SKIPPED, t0, f"{run.root.name}/metrics.json exists")
    resuming = run.checkpoint.exists()
    # a checkpoint is resumed even when config.json was lost: train_run rebuilds it from the checkpoint
    metrics = train_run(cfg, resume=run.config.exists() or resuming, quiet=quiet)
    budget = budgets.from_metrics(metrics)
    missed = "" if budget is None or budget["met"] else "; " + budgets.status_line({**budget, "reasons": []})
    return _result(
        name,
        RESUMED if resuming else RAN,
        t0,
        f"test acc {test_acc(metrics)}, {metrics['params']:,} params{missed}",
    )


def export_stage(run_dir: Path, options: dict) -> dict:
    """Export, simplify and quantize one run; skipped when its bundle is newer than its model."""
    from edgeprune.export.pipeline import export_run

    t0 = time.perf_counter()
    run = RunDir(Path(run_dir))
    name = f"export {run.root.name}"
    if _newer([run.bundle / "meta.json", run.export / "parity.json"], [run.model]):
        return _result(name, SKIPPED, t0, f"{run.root.name}/bundle/meta.json exists")
    summary = export_run(run.root, **options)
    kept = summary.get("int8_kept")
    return _result(name, RAN, t0, f"float{' + int8 ' + kept if kept else ''}; default {summary.get('chosen')}")


def bench_stage(
    bundles: list[Path], settings, out_file: Path, progress: Callable[[str], None] = lambda s: None
) -> dict:
    """Benchmark every model of every bundle in one interleaved call, so they are compared fairly."""
    from edgeprune.bench import bench
    from edgeprune.bench.discover import discover
    from edgeprune.bench.runner import run_dir_files

    t0 = time.perf_counter()
    if _newer([out_file], [b / "meta.json" for b in bundles]):
        return _result("bench", SKIPPED, t0, f"{out_file.name} exists")
    command = ["edgeprune", "bench", *map(str, bundles)]
    report = bench(bundles, settings, command=command, progress=progress)
    for path, obj in run_dir_files(discover(bundles), report).items():
        atomic_write_json(path, obj)
    atomic_write_json(out_file, report)  # last: its presence means the stage finished
    failed = [r["name"] for r in report["results"] if r["status"] != "ok"]
    detail = f"{len(report['results'])} models, {settings.label}, {settings.threads} threads"
    return _result("bench", RAN, t0, detail + (f"; failed: {', '.join(failed)}" if failed else ""))


def report_inputs(run_dirs: list[Path]) -> list[Path]:
    """The files a report reads: when none is newer than the report, it is up to date."""
    files = []
    for root in run_dirs:
        run = RunDir(Path(root))
        files += [
            run.config,
            run.metrics,
            run.history,
            run.export / "parity.json",
            run.bundle / "meta.json",
            *run.bench_files(),
        ]
    return files


def report_stage(run_dirs: list[Path], out: Path) -> tuple[dict, dict]:
    """Write the report into `out`; skipped when it is newer than everything it reads."""
    from edgeprune.report import write_report

    t0 = time.perf_counter()
    outputs = [out / "report.md", out / "report.html", out / "report.json"]
    if _newer(outputs, report_inputs(run_dirs)):
        try:
            return _result("report", SKIPPED, t0, "report.md is up to date"), read_json(out / "report.json")
        except UserError:
            pass  # unreadable: write it again
    result = write_report(run_dirs, out)
    return _result("report", RAN, t0, "report.md, report.html, report.json"), result


def run_experiment(opts: ExperimentOptions, console=None) -> dict:
    """Run (or continue) every stage; prints progress and the final tables; returns what was done."""
    from rich.console import Console

    console = console or Console()
    plan = make_plan(opts)
    plan.out.mkdir(parents=True, exist_ok=True)
    stages: list[dict] = []
    titles = [
        "train the baseline (no pruning)",
        f"train with pruning ({budget_text(plan.pruned, opts.preset)}) and fine-tuning",
        "export and quantize both runs",
        "benchmark every variant (interleaved)",
        "write the report",
    ]
    total = len(titles)
    for note in plan.notes:
        console.print(f"note: {note}", highlight=False)

    def announce(i: int) -> None:
        console.rule(f"[bold]\\[{i}/{total}] {titles[i - 1]}", align="left")

    def done(res: dict) -> dict:
        stages.append(res)
        mark = "[green]done[/]" if res["status"] != SKIPPED else "[yellow]skipped[/]"
        console.print(f"{mark} {res['stage']}: {res['detail']} ({res['seconds']:.1f}s)", highlight=False)
        _save_state(plan, opts, stages)
        return res

    current = titles[0]
    try:
        announce(1)
        done(train_stage(plan.baseline, quiet=opts.quiet))
        announce(2)
        current = titles[1]
        done(train_stage(plan.pruned, quiet=opts.quiet))
        announce(3)
        current = titles[2]
        for root in plan.runs:
            with console.status(f"exporting {root.name}"):
                done(export_stage(root, plan.export_options))
        announce(4)
        current = titles[3]
        with console.status("benchmarking") as spinner:
            done(
                bench_stage(
                    [r / "bundle" for r in plan.runs],
                    plan.bench_settings,
                    plan.bench_file,
                    progress=lambda s: spinner.update(f"benchmarking: {s}"),
                )
            )
        announce(5)
        current = titles[4]
        res, report = report_stage(plan.runs, plan.out)
        done(res)
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted while {current.split(' (')[0]}; finished stages are saved, so running "
            "the same command again continues from there."
        ) from None
    _print_summary(console, report, stages)
    return {"out": str(plan.out), "runs": [str(r) for r in plan.runs], "stages": stages, "report": report}


def _save_state(plan: Plan, opts: ExperimentOptions, stages: list[dict]) -> None:
    """DIR/experiment.json: the options and what the last invocation did, for the record."""
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()}
    atomic_write_json(
        plan.out / "experiment.json",
        {
            "format": 1,
            "options": json.loads(json.dumps(options, default=str)),
            "runs": {"baseline": plan.baseline.out, "pruned": plan.pruned.out},
            "bench_file": str(plan.bench_file),
            "stages": stages,
        },
    )


def _print_summary(console, report: dict, stages: list[dict]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from edgeprune.report import render

    console.rule("[bold]summary", align="left")
    table = Table(box=box.SIMPLE_HEAD, title="stages")
    for col in ("stage", "status", "seconds", "detail"):
        table.add_column(col, justify="right" if col == "seconds" else "left")
    for s in stages:
        table.add_row(s["stage"], s["status"], f"{s['seconds']:.1f}", s["detail"])
    console.print(table)
    # The comparison needs ~130 columns; a narrow or piped console would fold every cell.
    wide = Console(
        file=console.file, width=max(console.width, 140), force_terminal=console.is_terminal, no_color=console.no_color
    )
    wide.print(render(report))
    console.print(
        f"report: {Path(report.get('out_dir', '.')) / 'report.html'} (and report.md, report.json)", highlight=False
    )
