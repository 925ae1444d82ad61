"""``loopml``: each command is a thin call into the library.

Every command takes ``--project P`` (a folder with project.py) and ``--state S`` (where the event
log, online store, registry and prediction log live; default ``P/.loopml``). Commands that need
the event log fill it from the project's sources on first use. Errors print ``ErrorType: message``
and exit 1; progress goes to stderr so that ``--json`` output on stdout stays machine-readable.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from loopml.errors import InvalidConfig, LoopmlError

app = typer.Typer(help="loopml: event log -> features -> train -> evaluate -> registry -> serve -> monitor -> retrain.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
dataset_app = typer.Typer(help="Point-in-time datasets.", no_args_is_help=True)
features_app = typer.Typer(help="Online feature lookups.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")
app.add_typer(features_app, name="features")
app.add_typer(models_app, name="models")
monitor_app = typer.Typer(help="Drift and data monitoring.", no_args_is_help=True)
app.add_typer(monitor_app, name="monitor")

err = Console(stderr=True)
out = Console()

ProjectOpt = Annotated[Path, typer.Option("--project", "-p", help="Folder with the project's project.py.")]
StateOpt = Annotated[Path | None, typer.Option("--state", "-s", help="State folder (default: PROJECT/.loopml).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def _examples_dir() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "examples" / "flights"
        if (candidate / "project.py").exists():
            return candidate
    raise LoopmlError("cannot find examples/flights next to the loopml package; run from a checkout "
                      "(make demo installs it in editable mode)")


def _policy_results(proj: Any) -> Path | None:
    """The project folder's ``results/`` (a retraining-policy experiment's summary), if it has one."""
    folder = proj.path / "results" if proj.path is not None else None
    return folder if folder is not None and folder.is_dir() else None


def _open(project: Path, state: Path | None) -> tuple[Any, Any]:
    from loopml.project import load_project
    from loopml.workspace import Workspace

    proj = load_project(project)
    ws = Workspace.for_project(proj, state)
    if not ws.ingested(proj):
        with _progress() as bar:
            task = bar.add_task("ingesting sources", total=None)
            ws.ensure_ingested(proj, progress=lambda name: bar.update(task, description=f"ingesting {name}"))
    return proj, ws


@contextmanager
def _progress() -> Iterator[Progress]:
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=False) as bar:
        yield bar


def _progress_callback(bar: Progress) -> Callable[[str, int, int], None]:
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return update


def _time(value: str, name: str) -> datetime:
    from loopml.timeutil import parse_time

    return parse_time(value, field=name)


def _clean(value: Any) -> Any:
    """JSON-safe: NaN becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(_clean(doc), indent=2, default=str) + "\n")


# -- commands -----------------------------------------------------------------------------------
@app.command()
def ingest(project: ProjectOpt, state: StateOpt = None) -> None:
    """Fill the event log from the project's sources (once; later runs do nothing)."""
    proj, ws = _open(project, state)
    log = ws.log
    for s in log.sources():
        err.print(f"{s}: {log.count(s):,} events")


@dataset_app.command("build")
def dataset_build(project: ProjectOpt, start: Annotated[str, typer.Option("--from")],
                  end: Annotated[str, typer.Option("--to")], out_path: Annotated[Path, typer.Option("--out")],
                  state: StateOpt = None) -> None:
    """Write a point-in-time training set: one row per spine event scheduled in [--from, --to)."""
    from loopml.datasets import build_dataset

    proj, ws = _open(project, state)
    t0 = time.perf_counter()
    frame = build_dataset(ws.log, proj, _time(start, "--from"), _time(end, "--to"))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out_path, index=False)
    err.print(f"wrote {len(frame):,} rows x {frame.shape[1]} columns to {out_path} in {time.perf_counter() - t0:.1f}s")


@features_app.command("materialize")
def features_materialize(project: ProjectOpt, at: Annotated[str, typer.Option("--at", help="ISO time (UTC).")],
                         state: StateOpt = None) -> None:
    """Build the online store's state as of --at from the event log (no full replay), for a new deployment."""
    from loopml.features import SQLiteOnlineStore
    from loopml.features.materialize import materialize

    proj, ws = _open(project, state)
    t0 = time.perf_counter()
    ex = materialize(ws.log, proj.features, _time(at, "--at"), store=SQLiteOnlineStore(ws.online_path))
    n = sum(len(s) for s in ex._state.values())
    err.print(f"materialised {n:,} entity states as of {at} into {ws.online_path} in {time.perf_counter() - t0:.1f}s")


@app.command("materialize")
def materialize_cmd(project: ProjectOpt, at: Annotated[str, typer.Option("--at", help="ISO time (UTC).")],
                    state: StateOpt = None) -> None:
    """Same as `loopml features materialize`."""
    features_materialize(project, at, state)


@app.command("stream")
def stream_cmd(project: ProjectOpt, state: StateOpt = None,
               redis_stream: Annotated[str | None, typer.Option("--redis-stream", help="Redis Stream key to consume.")] = None,
               files: Annotated[str | None, typer.Option("--files", help="Glob of appended JSON-lines files to tail.")] = None,
               redis_url: Annotated[str, typer.Option("--redis", help="Server of --redis-stream.")] = "redis://127.0.0.1:6379/0",
               store: Annotated[str | None, typer.Option("--online-store", help="sqlite path or redis:// URL (default: the state folder's SQLite store).")] = None,
               namespace: Annotated[str, typer.Option(help="Key prefix in a Redis online store.")] = "loopml",
               group: str = "loopml", consumer: str = "ingest-1", batch: int = 1000,
               after: Annotated[str | None, typer.Option("--after", help="Skip events available at or before this ISO time (state materialised at it).")] = None,
               follow: Annotated[bool, typer.Option("--follow", help="Keep tailing --files for appended lines.")] = False,
               idle_exit: Annotated[float | None, typer.Option("--idle-exit", help="Stop after this many seconds without events.")] = None,
               claim_idle_ms: Annotated[int, typer.Option(help="Claim a dead consumer's pending entries once idle this long.")] = 30_000,
               as_json: JsonOpt = False) -> None:
    """Apply streamed events to the online store, exactly once in effect (see loopml.events.ingest.Ingestor)."""
    from loopml.events import JsonLinesTail, RedisStreamConsumer
    from loopml.features import OnlineExecutor, RedisOnlineStore, SQLiteOnlineStore
    from loopml.project import load_project
    from loopml.workspace import Workspace

    if (redis_stream is None) == (files is None):
        raise InvalidConfig(f"give exactly one of --redis-stream NAME or --files GLOB; got --redis-stream={redis_stream!r}, --files={files!r}")
    proj = load_project(project)
    online: Any = (RedisOnlineStore(store, namespace=namespace) if store and store.startswith(("redis://", "rediss://"))
                   else SQLiteOnlineStore(store.removeprefix("sqlite:///") if store else Workspace.for_project(proj, state).online_path))
    ex = OnlineExecutor(proj.features, store=online)
    t_after = _time(after, "--after") if after else None
    source: Any
    if redis_stream is not None:
        source = RedisStreamConsumer(ex, redis_url, redis_stream, group=group, consumer=consumer, batch=batch,
                                     claim_idle_ms=claim_idle_ms, after=t_after)
        stats = source.run(idle_exit=idle_exit)
    else:
        source = JsonLinesTail(ex, files, batch=batch, after=t_after)  # type: ignore[arg-type]
        stats = source.run(follow=follow, idle_exit=idle_exit)
    cp = source.ingestor.checkpoint
    doc = {**stats.__dict__, "position": cp.position, "total_applied": cp.applied, "total_quarantined": cp.quarantined}
    if as_json:
        _print_json(doc)
    else:
        err.print(f"applied {stats.applied:,} events ({stats.quarantined:,} quarantined, {stats.duplicates:,} redelivered "
                  f"and skipped) in {stats.commits:,} commits; position {cp.position}")


@features_app.command("get")
def features_get(project: ProjectOpt, entity: Annotated[str, typer.Option("--flight", "--id", help="Spine id, e.g. 2013-06-15:UA:1545:EWR")],
                 at: Annotated[str, typer.Option("--at", help="ISO time (UTC) of the lookup.")],
                 state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Online feature values for one spine entity as of --at (replaying the event log to that time)."""
    from loopml.features.lookup import lookup_entity

    proj, ws = _open(project, state)
    values = lookup_entity(proj, ws.log, entity, _time(at, "--at"))
    if as_json:
        _print_json(values)
        return
    table = Table("feature", "value")
    for k, v in values["features"].items():
        table.add_row(k, str(v))
    out.print(table)


@app.command()
def train(project: ProjectOpt, start: Annotated[str | None, typer.Option("--from")] = None,
          end: Annotated[str | None, typer.Option("--to")] = None, state: StateOpt = None,
          as_json: JsonOpt = False) -> None:
    """Train on [--from, --to), evaluate on the following month against baselines, register the version."""
    from loopml.loop.jobs import train_and_register
    from loopml.registry import ArtifactStore, Registry
    from loopml.reports import training_report

    proj, ws = _open(project, state)
    a, b = _time(start or proj.train_from, "--from"), _time(end or proj.train_to, "--to")
    eval_end = _add_months(b, proj.evaluate_months)
    registry = Registry(ws.registry_url, ArtifactStore(ws.artifacts))
    with _progress() as bar:
        task = bar.add_task("building dataset, training, evaluating", total=None)
        mv, model, ev = train_and_register(proj, ws.log, registry, a, b, eval_start=b, eval_end=eval_end,
                                           info={"trigger": "loopml train"})
        bar.update(task, total=1, completed=1)
    promoted = False
    if not any(Registry.CHAMPION in v.aliases for v in registry.versions(proj.name)):
        registry.promote(proj.name, mv.version, reason="first model: no champion yet")
        promoted = True
    assert ev is not None
    importance = dict(zip(model.features, model.booster.feature_importance("gain").tolist(), strict=True))
    report = training_report(ws.reports / f"train-v{mv.version}.html", project=proj.name, version=mv.version,
                             evaluation=ev.as_dict(), importance=importance)
    doc = {"model": proj.name, "version": mv.version, "champion": promoted, **ev.as_dict(),
           "beats_baselines": ev.beats_baselines(), "report": str(report)}
    if as_json:
        _print_json(doc)
        return
    table = Table(title=f"{proj.name} v{mv.version} on {ev.start[:10]} .. {ev.end[:10]}")
    for c in ("", "log loss", "ROC AUC", "Brier", "n"):
        table.add_column(c)
    for name, m in [("model", ev.model), ("prior rate", ev.prior), ("carrier rate", ev.group_rate)]:
        table.add_row(name, f"{m['log_loss']:.4f}", f"{m['auc']:.4f}", f"{m['brier']:.4f}", f"{m['n']:,}")
    out.print(table)
    out.print(("beats both baselines" if ev.beats_baselines() else "does NOT beat both baselines")
              + (f"; v{mv.version} is now champion" if promoted else "") + f"\nreport: {report}")


def _add_months(t: datetime, n: int) -> datetime:
    y, m = t.year, t.month + n
    y += (m - 1) // 12
    m = (m - 1) % 12 + 1
    return t.replace(year=y, month=m)


@app.command()
def evaluate(project: ProjectOpt, start: Annotated[str, typer.Option("--from")], end: Annotated[str, typer.Option("--to")],
             model_version: Annotated[str, typer.Option("--model-version", help="A number or 'champion'.")] = "champion",
             alpha: Annotated[float, typer.Option(help="Conformal miscoverage level.")] = 0.1,
             state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Metrics with bootstrap intervals, baselines, calibration, conformal coverage, slices and gates on [--from, --to)."""
    from loopml.loop.assess import evaluate_version, prefetch_window
    from loopml.reports.card import FigureRenderer, evaluation_report, model_card

    _done_skip_teardown()  # reads the state, writes the card and the report in one call each
    proj, ws = _open(project, state)
    t0, t1 = _time(start, "--from"), _time(end, "--to")
    # the report's plots are drawn by a child process (it imports matplotlib now) while the bootstrap runs
    figures = FigureRenderer()
    try:
        window = prefetch_window(proj, ws.log, t0, t1)  # DuckDB builds the rows while LightGBM & co. are imported
        from loopml.registry import ArtifactStore, Registry

        registry = Registry(ws.registry_url, ArtifactStore(ws.artifacts))
        with _progress() as bar:
            task = bar.add_task("evaluating", total=None)
            doc = evaluate_version(proj, ws.log, registry, model_version, t0, t1, alpha=alpha, prefetched=window,
                                   before_intervals=figures.submit)
            bar.update(task, total=1, completed=1)
        mv = registry.get(proj.name, doc["model_version"])
        card = model_card(proj.name, {**mv.__dict__}, doc, intended_use=(proj.description or ""),
                          sources=sorted({proj.spine.source, proj.label.source, *proj.feature_sources()}))
        card_path = ws.reports / f"model-card-v{mv.version}.md"
        card_path.parent.mkdir(parents=True, exist_ok=True)
        card_path.write_text(card, encoding="utf-8")
        doc["model_card"] = str(card_path)
        doc["report"] = str(evaluation_report(ws.reports / f"evaluate-v{mv.version}.html", doc, card,
                                              figures=figures.result))
    finally:
        figures.close()
    if as_json:
        _print_json(doc)
        return
    table = Table(title=f"{proj.name} v{doc['model_version']} on {start} .. {end} ({doc['n']:,} labelled)")
    table.add_column("metric")
    table.add_column("value")
    table.add_column("95% interval")
    for k, m in doc["metrics"].items():
        table.add_row(k, _f(m["value"]), f"[{_f(m['ci'][0])}, {_f(m['ci'][1])}]")
    out.print(table)
    c = doc["conformal"]
    out.print(f"conformal (alpha={c['alpha']}): coverage {c['coverage']:.3f}, mean set size {c['mean_set_size']:.2f}")
    for g in doc["gates"]:
        out.print(f"gate {g['gate']}: {'pass' if g['passed'] else 'FAIL'} ({_f(float(g['value']))} vs {_f(float(g['threshold']))})")


@app.command()
def predict(project: ProjectOpt, out_path: Annotated[Path, typer.Option("--out")],
            start: Annotated[str | None, typer.Option("--from", help="Score every spine row from this time...")] = None,
            end: Annotated[str | None, typer.Option("--to", help="...to this time (exclusive).")] = None,
            input_path: Annotated[Path | None, typer.Option(
                "--input", help="Or score the rows of this Parquet file (request fields + the spine time column).")] = None,
            model_version: Annotated[str, typer.Option("--model-version")] = "champion",
            chunk_days: Annotated[float, typer.Option(help="Days per chunk of a time range (bounds memory).")] = 7.0,
            state: StateOpt = None) -> None:
    """Batch scoring through the offline feature path, chunk by chunk: features plus a `score` column."""
    from loopml.registry import ArtifactStore, Registry
    from loopml.serving.batchscore import score_file, score_range

    if (input_path is None) == (start is None or end is None):
        raise InvalidConfig("give either --from and --to (a time range) or --input (a Parquet file), not both")
    proj, ws = _open(project, state)
    _, model = Registry(ws.registry_url, ArtifactStore(ws.artifacts)).load(proj.name, model_version)
    with _progress() as bar:
        task = bar.add_task("building features and scoring", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        if input_path is not None:
            n = score_file(proj, ws.log, model, input_path, out_path, progress=progress)
        else:
            n = score_range(proj, ws.log, model, _time(start, "--from"), _time(end, "--to"), out_path,
                            chunk=timedelta(days=chunk_days), progress=progress)
    err.print(f"wrote {n:,} scored rows to {out_path}")


@monitor_app.command("drift")
def monitor_drift(reference: Annotated[Path, typer.Option("--reference", help="Parquet file of the reference window.")],
                  current: Annotated[Path, typer.Option("--current", help="Parquet file of the current window.")],
                  correction: Annotated[str, typer.Option(help="bh (Benjamini-Hochberg), bonferroni or none.")] = "bh",
                  alpha: float = 0.05,
                  min_psi: Annotated[float, typer.Option(help="Effect floor: PSI below this never alarms.")] = 0.0,
                  min_wasserstein: Annotated[float, typer.Option(
                      help="Effect floor for numeric columns, Wasserstein in reference sd units (0: off).")] = 0.02,
                  min_jensen_shannon: Annotated[float, typer.Option(
                      help="Effect floor for categorical columns, Jensen-Shannon distance (0: off).")] = 0.02,
                  columns: Annotated[str | None, typer.Option(help="Comma-separated columns (default: shared ones).")] = None,
                  as_json: JsonOpt = False) -> None:
    """Compare two tables column by column: KS for numeric, chi-square for categorical, p-values adjusted."""
    import pandas as pd

    from loopml.errors import SchemaError
    from loopml.monitoring import drift_report

    frames = []
    for option, path in (("--reference", reference), ("--current", current)):
        if not path.exists():
            raise SchemaError(f"{option} file {str(path)!r} does not exist")
        try:
            frames.append(pd.read_parquet(path))
        except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
            raise SchemaError(f"{option} file {str(path)!r} is not a readable Parquet file: {exc}") from None
    ref, cur = frames
    chosen = columns.split(",") if columns else [c for c in ref.columns if c in cur.columns]
    report = drift_report(ref, cur, correction=correction, alpha=alpha, min_psi=min_psi,
                          min_wasserstein=min_wasserstein, min_jensen_shannon=min_jensen_shannon, columns=chosen)
    if as_json:
        _print_json(report)
        return
    table = Table("column", "test", "statistic", "p", "p adjusted", "drifted")
    for c in report["columns"]:
        table.add_row(c["column"], c["test"], _f(c["statistic"]), _f(c["p_value"]), _f(c["p_value_adjusted"]),
                      "[red]yes[/red]" if c["drifted"] else "no")
    out.print(table)
    out.print(f"dataset drifted: {report['drifted']} ({correction}, alpha={alpha})")


@monitor_app.command("window")
def monitor_window_cmd(project: ProjectOpt, start: Annotated[str, typer.Option("--from")],
                       end: Annotated[str, typer.Option("--to")], state: StateOpt = None,
                       as_json: JsonOpt = False,
                       metrics_file: Annotated[Path | None, typer.Option(
                           "--metrics-file", help="Write Prometheus metrics here (textfile collector).")] = None,
                       metrics_port: Annotated[int | None, typer.Option(
                           "--metrics-port", help="Serve Prometheus metrics on this port until Ctrl-C.")] = None) -> None:
    """Drift of served features and scores vs the champion's training window, estimated and realised
    performance, data quality and alerts (with hysteresis, state kept in STATE/alerts.json)."""
    from loopml.loop.monitor import monitor_window
    from loopml.loop.quality import served_quality
    from loopml.monitoring.prometheus import monitor_metrics, serve_metrics, write_metrics_file
    from loopml.registry import ArtifactStore, Registry
    from loopml.serving.predictionlog import PredictionLog

    proj, ws = _open(project, state)
    registry = Registry(ws.registry_url, ArtifactStore(ws.artifacts))
    plog, a, b = PredictionLog(ws.predictions), _time(start, "--from"), _time(end, "--to")
    with _progress() as bar:
        task = bar.add_task("monitoring", total=None)
        doc = monitor_window(proj, ws.log, registry, plog, a, b, alerts_path=ws.root / "alerts.json")
        if doc["predictions"]:
            doc["data_quality"] = served_quality(proj, ws.log, registry, plog, a, b)
        bar.update(task, total=1, completed=1)
    alerts_file = ws.root / "alerts.json"
    names = tuple(x["name"] for x in json.loads(alerts_file.read_text())["alerts"]) if alerts_file.exists() else ()
    metrics = monitor_metrics(doc, project=proj.name, alert_names=names)
    if metrics_file is not None:
        err.print(f"metrics written to {write_metrics_file(metrics, metrics_file)}")
    if as_json:
        _print_json(doc)
    elif not doc["predictions"]:
        out.print("no predictions served in that window")
    else:
        _print_window(doc)
    if metrics_port is not None:
        server = serve_metrics(metrics, metrics_port)
        err.print(f"serving metrics on http://127.0.0.1:{metrics_port}/metrics (Ctrl-C to stop)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            server.shutdown()


def _print_window(doc: dict[str, Any]) -> None:
    out.print(f"{doc['predictions']:,} predictions by v{doc['model_version']}; drifted features: "
              f"{', '.join(doc['feature_drift']['drifted_columns']) or 'none'}")
    est, real = doc["estimated_performance"], doc["realised_performance"]
    out.print(f"estimated log loss {est['log_loss']:.4f} ({'reliable' if est['reliable'] else 'UNRELIABLE'}); "
              f"realised {_f(real['log_loss'] if real else None)} on {doc['labelled']:,} labels")
    out.print(f"open alerts: {', '.join(doc['alerts']['open']) or 'none'}")
    q = doc.get("data_quality") or {}
    if q.get("summary"):
        sm = q["summary"]
        out.print(f"data quality: max missing {sm['max_missing_rate']:.3f}, max out-of-range "
                  f"{sm['max_out_of_range_rate']:.3f}, max unseen categories {sm['max_unseen_category_rate']:.3f}, "
                  f"{int(sm['schema_violations'])} schema violation(s); median staleness up to "
                  f"{sm['max_median_staleness_seconds'] / 60:.0f} min")


@models_app.command("list")
def models_list(project: ProjectOpt, state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Registered versions with their lineage and aliases."""
    from loopml.registry import ArtifactStore, Registry

    proj, ws = _open(project, state)
    versions = Registry(ws.registry_url, ArtifactStore(ws.artifacts)).versions(proj.name)
    if as_json:
        _print_json([v.__dict__ for v in versions])
        return
    table = Table("version", "aliases", "train window", "label cutoff", "features", "git", "created")
    for v in versions:
        table.add_row(str(v.version), ",".join(v.aliases), f"{(v.train_from or '')[:10]} .. {(v.train_to or '')[:10]}",
                      (v.label_cutoff or "")[:16], v.feature_hash[:10], (v.git_commit or "")[:10], v.created_at)
    out.print(table)


@models_app.command("promote")
def models_promote(project: ProjectOpt, version: Annotated[str, typer.Argument(help="Version number.")],
                   start: Annotated[str | None, typer.Option("--from", help="Gate window start (default: the "
                                                             "version's training end).")] = None,
                   end: Annotated[str | None, typer.Option("--to", help="Gate window end (default: 30 days later).")] = None,
                   force: Annotated[bool, typer.Option("--force", help="Promote even if gates fail (recorded).")] = False,
                   state: StateOpt = None) -> None:
    """Make VERSION the champion if it passes the promotion gates (the old champion becomes 'previous')."""
    from datetime import timedelta

    from loopml.errors import GateFailed
    from loopml.loop.assess import evaluate_version
    from loopml.registry import ArtifactStore, Registry

    proj, ws = _open(project, state)
    registry = Registry(ws.registry_url, ArtifactStore(ws.artifacts))
    mv = registry.get(proj.name, version)
    a = _time(start, "--from") if start else _time(mv.train_to or proj.train_to, "train_to")
    b = _time(end, "--to") if end else a + timedelta(days=30)
    with _progress() as bar:
        task = bar.add_task(f"checking gates on {a.date()} .. {b.date()}", total=None)
        doc = evaluate_version(proj, ws.log, registry, mv.version, a, b, n_boot=200)
        bar.update(task, total=1, completed=1)
    gates = [{k: g[k] for k in ("gate", "value", "threshold", "passed")} for g in doc["gates"]]
    failed = [g["gate"] for g in gates if not g["passed"]]
    evidence = {"window": doc["window"], "gates": gates, "forced": bool(failed) and force}
    if failed and not force:
        registry.record(proj.name, "promotion_refused", version=mv.version, details=evidence)
        raise GateFailed(f"{proj.name} v{mv.version} failed gate(s) {failed} on {a.date()}..{b.date()}; "
                         f"not promoted (use --force to override; the override is recorded)")
    reason = "manual (CLI), gates passed" if not failed else f"FORCED despite failed gates {failed}"
    registry.promote(proj.name, mv.version, reason=reason, evidence=evidence)
    out.print(f"{proj.name} v{mv.version} is now champion" + (f" (forced past {failed})" if failed else ""))


@models_app.command("rollback")
def models_rollback(project: ProjectOpt, state: StateOpt = None) -> None:
    """Make the previous champion the champion again."""
    from loopml.registry import ArtifactStore, Registry

    proj, ws = _open(project, state)
    mv = Registry(ws.registry_url, ArtifactStore(ws.artifacts)).rollback(proj.name)
    out.print(f"rolled back: {proj.name} v{mv.version} is champion again")


@app.command()
def serve(project: ProjectOpt, state: StateOpt = None, host: str = "127.0.0.1", port: int = 8000,
          model_version: Annotated[str, typer.Option("--model-version")] = "champion",
          log_level: Annotated[str, typer.Option("--log-level", help="JSON logs to stderr at this level; 'info' "
                                                 "adds one line per request.")] = "warning",
          watch: Annotated[float, typer.Option("--watch-champion", help="Seconds between checks of the registry's "
                                               "champion (hot swap on promote/rollback); 0 = off.")] = 2.0,
          batch_window_ms: Annotated[float, typer.Option("--batch-window-ms", help="Score concurrent requests that "
                                                         "arrive within this window as one batch (<= 10); 0 = only "
                                                         "those received in the same event-loop turn (no added wait).")] = 1.0,
          batch: Annotated[bool, typer.Option("--batch/--no-batch", help="Micro-batch concurrent requests (on by "
                                              "default; same answers).")] = True,
          batch_adaptive: Annotated[bool, typer.Option("--batch-adaptive/--batch-fixed", help="Adaptive (default): "
                                                       "wait the window only while other requests are in flight, so a "
                                                       "lone request never waits; fixed: every batch waits it.")] = True,
          backend: Annotated[str, typer.Option("--backend", help="Scoring engine: auto (the one recorded for the version "
                                               "at registration: ONNX Runtime where its verified export was faster), "
                                               "onnx or native (LightGBM).")] = "auto",
          ) -> None:
    """Serve the champion over HTTP (POST /predict) with online features from the online store."""
    import importlib.util

    import uvicorn

    from loopml.serving.factory import build_predictor, champion_resolver, model_loader
    from loopml.serving.http import create_app
    from loopml.serving.logs import configure_json_logging

    configure_json_logging(log_level.upper())
    proj, ws = _open(project, state)
    predictor = build_predictor(proj, ws, model_version, backend=backend)
    token = os.environ.get("LOOPML_ADMIN_TOKEN") or None  # configuration is read here, never in the core
    err.print(f"serving {proj.name} v{predictor.version} ({predictor.model.backend}) on http://{host}:{port}"
              + ("" if token else " (admin endpoints disabled: set LOOPML_ADMIN_TOKEN)"))
    follow = watch > 0 and model_version == "champion"  # a pinned version is not replaced by promotions
    app_ = create_app(predictor, load_model=model_loader(proj, ws, backend=backend), admin_token=token,
                      watch_champion=champion_resolver(proj, ws) if follow else None, watch_interval=watch,
                      batch_window_ms=batch_window_ms if batch else None, batch_adaptive=batch_adaptive)
    # uvloop + httptools (uvicorn[standard]): the asyncio loop and the pure-Python h11 parser cost 3x the CPU
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    uvicorn.run(app_, host=host, port=port, log_level=log_level.lower(), access_log=False, log_config=None,
                loop=loop, http="httptools" if importlib.util.find_spec("httptools") else "h11")


@app.command()
def performance(project: ProjectOpt, state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Live log loss / AUC of logged predictions whose labels have arrived (log and wait)."""
    from loopml.monitoring import performance_by_version
    from loopml.serving.predictionlog import PredictionLog

    proj, ws = _open(project, state)
    doc = performance_by_version(PredictionLog(ws.predictions).joined())
    if as_json:
        _print_json(doc)
        return
    table = Table("model version", "predictions", "labelled", "log loss", "ROC AUC", "Brier", "median label delay")
    for r in doc["versions"]:
        table.add_row(str(r["model_version"]), f"{r['predictions']:,}", f"{r['labelled']:,}", _f(r["log_loss"]),
                      _f(r["auc"]), _f(r["brier"]), str(r["median_label_delay"]))
    out.print(table)


def _f(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and v != v) else f"{v:.4f}"


PolicyOpt = Annotated[str | None, typer.Option(
    "--policy", help="static | monthly | weekly-stateful | triggered (default: the project's policy, else monthly)")]


def _policy_settings(policy: Any) -> dict[str, Any]:
    return {k: (v.total_seconds() if hasattr(v, "total_seconds") else v) for k, v in policy.__dict__.items()}


def _run_loop(proj: Any, ws: Any, start: datetime, until: datetime, as_json: bool, policy: str | None = None) -> None:
    from loopml.loop import LoopController, RetrainPolicy
    from loopml.reports import loop_report

    t0 = time.perf_counter()
    retrain = RetrainPolicy.coerce(policy if policy is not None else proj.policy)
    with _progress() as bar:
        result = LoopController(proj, ws, policy=retrain, progress=_progress_callback(bar)).run(start, until)
    report = loop_report(ws.reports / "report.html", project=proj.name, months=result.months, weekly=result.weekly,
                         decisions=result.decisions, calibration=result.calibration, quality=result.quality,
                         policy_results=_policy_results(proj))
    doc = {"months": result.months, "report": str(report), "wall_seconds": round(time.perf_counter() - t0, 1),
           "policy": policy or ("project" if proj.policy is not None else "monthly"),
           "policy_settings": _policy_settings(retrain), "retrainings": result.retrainings, "retrain_cpu_seconds": result.retrain_cpu_seconds,
           "weeks": result.weekly, "data_quality": result.quality,
           "decisions": [{k: d[k] for k in ("at", "kind", "version")} for d in result.decisions]}
    if as_json:
        _print_json(doc)
        return
    table = Table(title=f"{proj.name}: served predictions per month")
    for c in ("month", "model version", "predictions", "labelled", "log loss", "baseline log loss", "ROC AUC"):
        table.add_column(c)
    for m in result.months:
        table.add_row(m["month"], str(m["model_version"]), f"{m['predictions']:,}", f"{m['labelled']:,}",
                      _f(m["log_loss"]), _f(m["baseline_log_loss"]), _f(m["auc"]))
    out.print(table)
    out.print(f"report: {report}")


@app.command("run")
def run_cmd(project: ProjectOpt, state: StateOpt = None,
            start: Annotated[str | None, typer.Option("--from", help="Clock start (default: now; with --speed, the "
                                                      "project's train_to). A resumed run keeps its own.")] = None,
            until: Annotated[str, typer.Option("--until", help="Stop serving at this time.")] = "2100-01-01",
            speed: Annotated[float, typer.Option(help="Logical seconds per real second (3600: an hour a second).")] = 1.0,
            policy: PolicyOpt = None,
            ingest: Annotated[str, typer.Option(help="'sources': append the project's sources to the event log as "
                                                "they become available; 'none': another process appends.")] = "sources",
            as_json: JsonOpt = False) -> None:
    """Run the loop on the wall clock against live ingestion: the controller of `loopml replay`, live.

    Processes whatever has become available up to now, sleeps until its next due action, and stops
    cleanly on Ctrl-C; run the same command again to resume from STATE/loop.json.
    """
    import signal
    import threading
    from datetime import UTC

    from loopml.errors import InvalidConfig
    from loopml.loop import LiveSource, LoopController, RetrainPolicy, WallClock
    from loopml.loop.controller import checkpoint_info
    from loopml.project import load_project
    from loopml.reports import loop_report
    from loopml.workspace import Workspace

    if ingest not in ("sources", "none"):
        raise InvalidConfig(f"--ingest must be 'sources' or 'none'; got {ingest!r}")
    proj = load_project(project)
    ws = Workspace.for_project(proj, state)
    ckpt = ws.root / "loop.json"
    saved = checkpoint_info(ckpt)
    if saved and not saved["finished"]:
        a, b, origin = _time(saved["start"], "start"), _time(saved["until"], "until"), _time(saved["done_until"], "done")
        err.print(f"resuming the run of {a.date()} .. {b.date()} from {origin.isoformat()}")
    else:
        a = _time(start, "--from") if start else (_time(proj.train_to, "train_to") if speed != 1 else datetime.now(UTC))
        b, origin = _time(until, "--until"), a
    clock = WallClock(origin, speed=speed) if (start or speed != 1 or saved) else WallClock()
    live = None
    if ingest == "sources":
        frames = proj.load_events()
        proj.validate_sources(frames)
        live = LiveSource(ws.log, frames, check_quality=True)
    stop = threading.Event()

    def interrupt(signum: int, frame: Any) -> None:
        err.print("stopping after the current step (Ctrl-C again to abort)")
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, interrupt)
    t0 = time.perf_counter()
    with _progress() as bar:
        retrain = RetrainPolicy.coerce(policy if policy is not None else proj.policy)
        result = LoopController(proj, ws, policy=retrain, progress=_progress_callback(bar)).run(
            a, b, clock=clock, stop=stop, ingest=live, checkpoint=ckpt)
    report = loop_report(ws.reports / "report.html", project=proj.name, months=result.months, weekly=result.weekly,
                         decisions=result.decisions, calibration=result.calibration, quality=result.quality,
                         policy_results=_policy_results(proj))
    doc = {"finished": result.finished, "done_until": result.done_until,
           "policy": policy or ("project" if proj.policy is not None else "monthly"),
           "policy_settings": _policy_settings(retrain), "speed": speed,
           "months": result.months, "retrainings": result.retrainings, "report": str(report),
           "wall_seconds": round(time.perf_counter() - t0, 1), "late_events": result.late_events,
           "data_quality": result.quality,
           "ingest_quality": {"latest": live.quality, "findings": live.findings[-50:]} if live else None,
           "decisions": [{k: d[k] for k in ("at", "kind", "version")} for d in result.decisions]}
    if as_json:
        _print_json(doc)
    elif result.finished:
        out.print(f"finished at {result.done_until}: {result.retrainings} retraining(s); report: {report}")
    else:
        out.print(f"stopped at {result.done_until}; run the same command to resume")


@app.command()
def replay(project: ProjectOpt, start: Annotated[str, typer.Option("--from")],
           until: Annotated[str, typer.Option("--until")], state: StateOpt = None, as_json: JsonOpt = False,
           policy: PolicyOpt = None) -> None:
    """Run the loop (serve, join labels, retrain by policy) on a replayed clock over [--from, --until)."""
    proj, ws = _open(project, state)
    _run_loop(proj, ws, _time(start, "--from"), _time(until, "--until"), as_json, policy)


@app.command()
def demo(directory: Annotated[Path, typer.Option("--dir", help="State folder for the demo.")] = Path("demo-state"),
         until: Annotated[str, typer.Option("--until", help="Stop serving at this date (default: end of 2013).")] = "2014-01-01",
         as_json: JsonOpt = False, policy: PolicyOpt = None) -> None:
    """The whole loop on 2013's flights: ingest, train on Jan-Feb, serve from March, retrain monthly."""
    proj, ws = _open(_examples_dir(), directory)
    start = _time(proj.train_to, "train_to")
    end = _time(until, "--until")
    if end <= start:
        raise LoopmlError(f"--until must be after {start.date()} (serving starts when the Jan-Feb model is trained); got {until!r}")
    _run_loop(proj, ws, start, end, as_json, policy)


_skip_teardown = False  # set by a command that wrote and closed everything it opened; see main()


def _done_skip_teardown() -> None:
    """Let :func:`main` end this process without the interpreter's teardown once the command returns or
    fails with a :class:`LoopmlError` (after printing it).

    Freeing the modules of SciPy, scikit-learn and LightGBM at exit takes ~0.3 s, a tenth of an
    evaluation, and a failed evaluation need not wait for its prefetch thread's DuckDB build. A command
    may ask for it only when nothing it opens needs a finalizer, whether it ends or fails: every file it
    writes is written and closed in one call, its child processes are reaped, its DuckDB connections are
    in memory or read-only.
    """
    global _skip_teardown
    _skip_teardown = True


def main() -> None:
    global _skip_teardown
    _skip_teardown = False  # asked for by this run's command only
    try:
        app()
    except LoopmlError as exc:
        err.print(f"[red]{type(exc).__name__}[/red]: {exc}", highlight=False)
        _end_now(1)
        raise SystemExit(1) from None
    except SystemExit as exc:
        if exc.code in (0, None):
            _end_now(0)
        raise


def _end_now(code: int) -> None:
    """End the process with ``code`` at once if the command asked for it (see :func:`_done_skip_teardown`)."""
    if not _skip_teardown or _traced():
        return
    import logging

    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe: let the interpreter report it as it would
        return
    logging.shutdown()
    os._exit(code)


def _traced() -> bool:
    """Whether a profiler, coverage or a tracer runs: they write their results after the program ends."""
    if sys.gettrace() is not None or sys.getprofile() is not None:
        return True
    monitoring = getattr(sys, "monitoring", None)  # Python 3.12+: coverage's sysmon core, profilers
    return monitoring is not None and any(monitoring.get_tool(i) is not None for i in range(6))


if __name__ == "__main__":  # pragma: no cover
    main()

