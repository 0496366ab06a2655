"""The quickstart: a real model packaged, served by the real inference server, and asked for predictions."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from sagegate.local.data import generate_transactions
from sagegate.local.process import ServerProcess

__all__ = ["run_quickstart"]


def _post(url: str, body: bytes, content_type: str) -> tuple[Any, float]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type, "Accept": "application/json"}
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    return answer, (time.perf_counter() - started) * 1000


def run_quickstart(workdir: Path, port: int, console: Console, requests: int = 200) -> dict[str, Any]:
    from sagegate.local.examples import build_fraud_package

    workdir.mkdir(parents=True, exist_ok=True)
    models = workdir / "models"
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=False
    ) as progress:
        step = progress.add_task("training a fraud model on 20,000 generated transactions", total=None)
        built = build_fraud_package(models / "fraud", "logreg")
        progress.update(
            step,
            description=f"packaged fraud v1 (AUC {built.manifest.metrics['auc']:.3f}, "
            f"sha256 {built.manifest.sha256[:12]})",
            completed=1,
            total=1,
        )
        step = progress.add_task("starting the inference server", total=None)
        server = ServerProcess(models, port, workdir / "server.log")
        try:
            server.wait_healthy()
            progress.update(step, description=f"inference server healthy on {server.url}", completed=1, total=1)
            data = generate_transactions(requests, seed=7)
            step = progress.add_task(f"sending {requests} single-record predictions", total=requests)
            latencies, answers = [], []
            for record in data.records:
                answer, ms = _post(
                    f"{server.url}/invocations", json.dumps({"features": record}).encode(), "application/json"
                )
                latencies.append(ms)
                answers.append(answer["predictions"][0])
                progress.advance(step)
            header = ",".join(data.records[0])
            lines = [
                ",".join(str(v).lower() if isinstance(v, bool) else str(v) for v in r.values())
                for r in data.records[:100]
            ]
            csv_answer, csv_ms = _post(f"{server.url}/invocations", "\n".join([header, *lines]).encode(), "text/csv")
        finally:
            code = server.stop()
    _show(
        console,
        data.records[:5],
        answers[:5],
        latencies=latencies,
        csv_count=len(csv_answer["predictions"]),
        csv_ms=csv_ms,
    )
    flagged = sum(a["label"] == "fraud" for a in answers)
    console.print(f"{flagged} of {requests} transactions flagged as fraud; server stopped (exit code {code}).")
    console.print(f"Package: {built.path}   Server log: {workdir / 'server.log'}")
    console.print("Next: [bold]sagegate serve --model-dir " + str(models) + "[/] and POST /invocations yourself.")
    return {"answers": answers, "latencies_ms": latencies, "exit_code": code}


def _show(
    console: Console,
    records: list[dict[str, Any]],
    answers: list[dict[str, Any]],
    *,
    latencies: list[float],
    csv_count: int,
    csv_ms: float,
) -> None:
    table = Table(title="fraud v1: predictions over HTTP")
    for column in ("amount", "category", "channel", "hour", "label", "P(fraud)", "confidence"):
        table.add_column(column, justify="right" if column not in ("category", "channel", "label") else "left")
    for record, answer in zip(records, answers, strict=True):
        table.add_row(
            f"{record['amount']:.2f}",
            record["merchant_category"],
            record["channel"],
            str(record["hour"]),
            answer["label"],
            f"{answer['prediction']:.3f}",
            f"{answer['confidence']:.3f}",
        )
    console.print(table)
    ordered = sorted(latencies)
    p50, p99 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    console.print(
        f"single-record latency over loopback (client-measured): p50 {p50:.2f} ms, p99 {p99:.2f} ms; "
        f"one CSV request of {csv_count} records: {csv_ms:.1f} ms"
    )
