"""`sagegate monitor`: the checks over the local stack's prediction log, for one model's versions.

A library function the CLI calls (and a later scheduled job may): it finds the versions with traffic
in the window (or the one asked for), their manifests and baselines in the local registry, runs the
checks on DuckDB, and answers what to print and draw. Bad input is a MonitorError, one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sagegate.monitoring.monitor import VersionReport

__all__ = ["MonitorError", "MonitorRun", "print_run", "run_monitor"]


class MonitorError(Exception):
    """Input the monitor cannot run on: an unknown model or version, a bad window, no baseline."""


@dataclass
class MonitorRun:
    model: str
    reports: list[VersionReport]
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(r.failed for r in self.reports)


def _end(at: str | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    try:
        end = datetime.fromisoformat(at)
    except ValueError:
        raise MonitorError(f"bad --at {at!r}: an ISO 8601 time, e.g. 2026-12-01T12:00:00Z") from None
    return end if end.tzinfo else end.replace(tzinfo=UTC)


def run_monitor(
    registry_root: Path,
    log: Path,
    model: str,
    *,
    version: str | None = None,
    window: str | None = None,
    at: str | None = None,
) -> MonitorRun:
    from sagegate.monitoring.baseline import Baseline
    from sagegate.monitoring.engine import DuckDBEngine
    from sagegate.monitoring.monitor import monitor_version, parse_window, versions_in_window, window_ending
    from sagegate.registry import LocalRegistry

    end = _end(at)
    if window is not None:
        try:
            parse_window(window)
        except ValueError as exc:
            raise MonitorError(str(exc)) from None
    registered = {v.version: v for v in LocalRegistry(registry_root).versions(model)}
    if not registered:
        raise MonitorError(f"unknown model {model!r}: it is not in the local registry")
    if version is not None and version not in registered:
        raise MonitorError(f"model {model!r} has no version {version!r} (registered: {', '.join(registered)})")
    if not log.is_file():
        raise MonitorError(f"no prediction log at {log}: start the local stack (sagegate dev) and send traffic")
    engine = DuckDBEngine(log)
    try:
        asked = window or "1h"
        if version is not None:
            chosen = [version]
        else:
            latest = list(registered.values())[-1].manifest
            found = versions_in_window(engine, model, window_ending(end, asked), latest)
            chosen = [v for v in found if v in registered]
            if not chosen:
                raise MonitorError(f"model {model!r} has no predictions in the {asked} to {end:%Y-%m-%d %H:%M}Z")
        run = MonitorRun(model, [])
        for name in chosen:
            manifest = registered[name].manifest
            settings = manifest.monitoring
            if settings is None or settings.baseline is None:
                message = f"{model} v{name} has no baseline: package it with --training-data to monitor it"
                if version is not None or len(chosen) == 1:
                    raise MonitorError(message)
                run.notes.append(message)
                continue
            baseline = Baseline.read(Path(registered[name].artifact_uri).parent / settings.baseline)
            run.reports.append(
                monitor_version(
                    engine,
                    manifest,
                    baseline,
                    window=window_ending(end, window or settings.window),
                    accuracy_window=window_ending(end, settings.accuracy_window),
                )
            )
        if not run.reports:
            raise MonitorError(f"no version of {model!r} with traffic in the window has a baseline")
        return run
    finally:
        engine.close()


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def print_run(console: Console, run: MonitorRun, *, everything: bool = False) -> None:
    for note in run.notes:
        console.print(note, highlight=False)
    for report in run.reports:
        counts = report.counts
        shown = report.results if everything else [r for r in report.results if r.status != "ok"]
        table = Table(
            title=f"{report.model} v{report.version}: {counts.rows} predictions, {counts.rejected_rows} refused "
            f"in the {report.window}",
        )
        for column in ("check", "feature", "statistic", "value", "threshold", "window", "result"):
            table.add_column(column, justify="right" if column in ("value", "threshold") else "left")
        for r in shown:
            style = {"fail": "bold red", "skipped": "yellow"}.get(r.status, "green")
            result = f"[{style}]{r.status}[/]" + (f" ({r.note})" if r.note and r.status != "ok" else "")
            table.add_row(r.check, r.feature, r.statistic, _value(r.value), f"{r.threshold:g}", r.window, result)
        if shown:
            console.print(table)
        passed = sum(1 for r in report.results if r.status == "ok")
        skipped = sum(1 for r in report.results if r.status == "skipped")
        failed = len(report.failed)
        verdict = f"[bold red]{failed} failed[/]" if failed else "[green]none failed[/]"
        console.print(
            f"{report.model} v{report.version}: {len(report.results)} checks, {passed} passed, {skipped} skipped, "
            f"{verdict}" + (f"; drifted: {', '.join(report.drifted)}" if report.drifted else ""),
            highlight=False,
        )
