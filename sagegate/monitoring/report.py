"""The monitoring report: one self-contained HTML page per model and window (plotly.js inlined, so
it opens offline and from S3 alike).

Per version: the checks that failed, a plot per drifted feature (its training histogram beside the
window's, bin by bin), the prediction distribution, accuracy over time from feedback, and the rates
per group of each protected attribute. Every plot is a `<section class="plot" data-kind=...>`.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from sagegate.monitoring.command import MonitorRun
from sagegate.monitoring.monitor import Histogram, VersionReport

__all__ = ["render_report", "write_report"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
td, th { border-bottom: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: left; }
td.fail { color: #b00020; font-weight: 600; } td.skipped { color: #8a6d00; }
section.plot { margin: 1.5rem 0; }
"""


def _figure(kind: str, div_id: str, figure: Any, title: str, **data: str) -> str:
    attributes = "".join(f' data-{k}="{html.escape(v)}"' for k, v in data.items())
    body = figure.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config={"displaylogo": False})
    return f'<section class="plot" data-kind="{kind}"{attributes}><h3>{html.escape(title)}</h3>{body}</section>'


def _histogram(histogram: Histogram, title: str) -> Any:
    import plotly.graph_objects as go

    figure = go.Figure(
        [
            go.Bar(name="training baseline", x=histogram.bins, y=histogram.baseline),
            go.Bar(name="this window", x=histogram.bins, y=histogram.current),
        ]
    )
    figure.update_layout(barmode="group", title=title, yaxis_title="share", height=360, margin={"t": 50, "b": 40})
    return figure


def _accuracy(report: VersionReport) -> Any:
    import plotly.graph_objects as go

    days = [day for day, _ in report.accuracy_by_day]
    names = sorted({m for _, a in report.accuracy_by_day for m in a.metrics})
    figure = go.Figure(
        [
            go.Scatter(name=m, x=days, y=[a.metrics.get(m) for _, a in report.accuracy_by_day], mode="lines+markers")
            for m in names
        ]
    )
    figure.update_layout(title="accuracy from feedback, per day", height=340, margin={"t": 50, "b": 40})
    figure.update_xaxes(type="category")
    return figure


def _bias(report: VersionReport, feature: str) -> Any:
    import plotly.graph_objects as go

    groups = report.bias[feature]
    names = [g.group for g in groups]
    bars = [go.Bar(name="selection rate", x=names, y=[g.selection_rate for g in groups])]
    if any(g.true_positive_rate is not None for g in groups):
        bars.append(go.Bar(name="true positive rate", x=names, y=[g.true_positive_rate for g in groups]))
        bars.append(go.Bar(name="false positive rate", x=names, y=[g.false_positive_rate for g in groups]))
    figure = go.Figure(bars)
    figure.update_layout(barmode="group", title=f"rates per group of {feature}", height=340, margin={"t": 50})
    return figure


def _results_table(report: VersionReport) -> str:
    shown = [r for r in report.results if r.status != "ok"]
    rows = "".join(
        f"<tr><td>{html.escape(r.check)}</td><td>{html.escape(r.feature)}</td><td>{html.escape(r.statistic)}</td>"
        f"<td>{'-' if r.value is None else f'{r.value:.4g}'}</td><td>{r.threshold:g}</td>"
        f"<td>{html.escape(r.window)}</td><td class='{r.status}'>{r.status}</td><td>{html.escape(r.note)}</td></tr>"
        for r in shown
    )
    passed = sum(1 for r in report.results if r.status == "ok")
    head = "<tr><th>check</th><th>feature</th><th>statistic</th><th>value</th><th>threshold</th><th>window</th>"
    return f"<p>{len(report.results)} checks: {passed} passed, {len(report.failed)} failed.</p>" + (
        f"<table>{head}<th>result</th><th>note</th></tr>{rows}</table>" if rows else ""
    )


def _version(report: VersionReport) -> str:
    key = f"v{report.version}"
    parts = [
        f"<h2>{html.escape(report.model)} v{html.escape(report.version)}</h2>",
        f"<p>{report.counts.rows} predictions and {report.counts.rejected_rows} refused requests in the "
        f"{html.escape(str(report.window))}; feedback over the {html.escape(str(report.accuracy_window))}.</p>",
        _results_table(report),
    ]
    for i, name in enumerate(report.drifted):
        histogram = report.histograms[name]
        parts.append(
            _figure(
                "feature",
                f"{key}-feature-{i}",
                _histogram(histogram, f"{name}: training vs this window"),
                f"drifted feature: {name}",
                feature=name,
            )
        )
    if report.prediction is not None:
        title = f"prediction distribution ({report.prediction.name})"
        parts.append(_figure("prediction", f"{key}-prediction", _histogram(report.prediction, title), title))
    if report.accuracy_by_day:
        parts.append(_figure("accuracy", f"{key}-accuracy", _accuracy(report), "accuracy over time"))
    for i, feature in enumerate(report.bias):
        parts.append(_figure("bias", f"{key}-bias-{i}", _bias(report, feature), f"bias: {feature}", feature=feature))
    return "\n".join(parts)


def render_report(run: MonitorRun) -> str:
    from plotly.offline import get_plotlyjs

    title = f"sagegate monitoring: {run.model}"
    notes = "".join(f"<p>{html.escape(n)}</p>" for n in run.notes)
    body = "\n".join(_version(r) for r in run.reports)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style><script type='text/javascript'>{get_plotlyjs()}</script></head>"
        f"<body><h1>{html.escape(title)}</h1>{notes}{body}</body></html>"
    )


def write_report(path: Path, run: MonitorRun) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(run), encoding="utf-8")
    return path
