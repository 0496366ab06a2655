"""`sagegate demo`: the product end to end on one machine, with an A/B test read from its own logs.

Trains fraud models v1 (logistic regression) and v2 (XGBoost) on generated transactions, packages,
registers and approves both, starts the local stack, deploys v1, starts an 80/20 A/B test to v2,
sends requests from simulated users through the gateway (some users repeat a transaction, so the
cache shows), posts the delayed ground truth to /v1/feedback, and reports per variant from the
prediction log: traffic share, latency, cache hit rate, precision, recall and AUC, and whether
the AUC difference is significant (Hanley-McNeil z-test for two independent AUCs).

Then the traffic shifts (amounts x3, a merchant mix leaning to electronics and gaming) and the
monitor checks the shifted window against each version's training baseline, as `sagegate monitor
fraud --window ...` does: it names the drifted features and the prediction shift, and writes the
HTML report beside the stack's state.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from sagegate.local.data import generate_transactions, shifted_records
from sagegate.local.stack import DevStack, StackPaths
from sagegate.monitoring.command import MonitorRun

__all__ = ["DemoResult", "VariantReport", "auc_z_test", "run_demo"]


@dataclass(frozen=True)
class VariantReport:
    variant: str
    version: str
    requests: int
    share: float
    p50_ms: float
    p99_ms: float
    cache_hit_rate: float
    frauds: int
    precision: float
    recall: float
    auc: float


@dataclass(frozen=True)
class DemoResult:
    variants: list[VariantReport]
    z: float
    p_value: float
    docs_url: str
    degraded: int = 0  # answers served degraded, left out of the comparison
    monitoring: MonitorRun | None = None  # the checks over the shifted traffic's window
    report: Path | None = None


def auc_z_test(first: tuple[float, int, int], second: tuple[float, int, int]) -> tuple[float, float]:
    """z and two-sided p for the difference of two AUCs from independent samples (Hanley & McNeil 1982).

    Each sample is (AUC, positives, negatives)."""
    from scipy.stats import norm

    def variance(a: float, pos: int, neg: int) -> float:
        q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
        return (a * (1 - a) + (pos - 1) * (q1 - a * a) + (neg - 1) * (q2 - a * a)) / (pos * neg)

    spread = math.sqrt(variance(*first) + variance(*second))
    z = (first[0] - second[0]) / spread if spread > 0 else 0.0
    return z, float(2 * norm.sf(abs(z)))


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def run_demo(
    *,
    root: Path,
    console: Console,
    requests: int = 3000,
    users: int = 600,
    port: int = 8000,
    emulator_port: int = 8001,
    shifted: int = 1500,
    keep_serving: Callable[[DemoResult], None] | None = None,
) -> DemoResult:
    from sagegate.deploy.local import deploy
    from sagegate.local.examples import build_fraud_package
    from sagegate.local.stack import read_status
    from sagegate.registry import LocalRegistry

    paths = StackPaths(root)
    if read_status(paths) is not None:
        raise RuntimeError(
            f"a local stack is already running from {root}: stop it (Ctrl-C where `sagegate dev` runs) "
            "and run the demo again, which starts its own"
        )
    registry = LocalRegistry(paths.registry)
    versions: list[str] = []
    with _progress(console) as progress:
        step = progress.add_task("generating 30,000 transactions (2% fraud) and training v1, v2", total=4)
        training = generate_transactions(30_000, seed=1)
        v1 = build_fraud_package(root / "packages" / "v1", "logreg", data=training)
        progress.advance(step)
        v2 = build_fraud_package(root / "packages" / "v2", "xgboost", data=training)
        progress.advance(step)
        for built in (v1, v2):
            # Trained and packaged deterministically: a second demo finds the same versions registered.
            version, _ = registry.register(built.path)
            registry.approve(
                "fraud", version.version, by="demo", reason=f"holdout AUC {built.manifest.metrics['auc']:.3f}"
            )
            versions.append(version.version)
            progress.advance(step)
        progress.update(
            step,
            description=f"v1 logistic regression (AUC {v1.manifest.metrics['auc']:.3f}) and v2 "
            f"XGBoost (AUC {v2.manifest.metrics['auc']:.3f}) registered and approved",
        )

    stack = DevStack(paths, gateway_port=port, emulator_port=emulator_port)
    supervisor_stop = _supervise(stack)
    try:
        with console.status("starting the local stack (gateway, emulator, Redis) and deploying v1, then A/B 80/20"):
            stack.start()
            supervisor_stop.start()
            deploy(paths, "fraud", versions[0], replace=True)
            deploy(paths, "fraud", versions[1], traffic=20)
        gateway = stack.children["gateway"].url
        traffic = generate_transactions(requests, seed=99)
        outcomes = _send(console, gateway, traffic.records, traffic.label, users)
        _feedback(console, gateway, outcomes)
        result = _report(paths.predictions, outcomes, f"{gateway}/docs")
        _print(console, result)
        if shifted:
            result = _drift(console, gateway, paths, result, n=shifted, users=users)
        if keep_serving is not None:
            keep_serving(result)
        return result
    finally:
        supervisor_stop.stop()
        stack.stop()


class _supervise:
    """Reconciles the stack in a background thread while the demo drives it."""

    def __init__(self, stack: DevStack) -> None:
        import threading

        self._stack = stack
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.wait(0.3):
            self._stack.reconcile()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(10)


def _drift(console: Console, gateway: str, paths: StackPaths, result: DemoResult, *, n: int, users: int) -> DemoResult:
    """Shifted traffic, then the monitor over exactly its window, printed and drawn."""
    from sagegate.monitoring.command import print_run, run_monitor
    from sagegate.monitoring.report import write_report

    started = time.time()
    traffic = generate_transactions(n, seed=123)
    what = f"sending {n} shifted predictions (amounts x3, more electronics and gaming)"
    sent = _send(console, gateway, shifted_records(traffic, seed=4), traffic.label, users, what=what)
    _logged(paths.predictions, {o["prediction_id"] for o in sent})
    window = f"{math.ceil(time.time() - started) + 1}s"
    run = run_monitor(paths.registry, paths.predictions, "fraud", window=window)
    console.print(
        f"\nMonitoring the shifted window against the training baselines (sagegate monitor fraud --window {window}):"
    )
    print_run(console, run)
    report = write_report(paths.root / "monitoring-report.html", run)
    console.print(f"report -> {report}", highlight=False, soft_wrap=True)
    return dataclasses.replace(result, monitoring=run, report=report)


def _logged(log: Path, ids: set[str], timeout: float = 10) -> None:
    """Until every one of `ids` is in the log (the gateway flushes it in batches)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = log.read_bytes().splitlines() if log.exists() else []
        if len({x["prediction_id"] for x in map(orjson.loads, lines) if x.get("prediction_id") in ids}) >= len(ids):
            return
        time.sleep(0.2)


def _send(
    console: Console,
    gateway: str,
    records: list[dict[str, Any]],
    labels: np.ndarray,
    users: int,
    *,
    what: str | None = None,
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(5)
    owners = rng.integers(0, users, size=len(records))
    # One transaction in ten is a user's earlier transaction sent again (a retry): the cache answers it.
    repeats = rng.random(len(records)) < 0.1
    plan = []
    for i in range(len(records)):
        j = int(rng.integers(0, i)) if repeats[i] and i > 0 else i
        plan.append((f"user-{owners[j]}", records[j], int(labels[j])))
    outcomes: list[dict[str, Any]] = []
    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=16)) as client, _progress(console) as progress:
        task = progress.add_task(
            what or f"sending {len(plan)} predictions from {users} simulated users", total=len(plan)
        )

        def one(item: tuple[str, dict[str, Any], int]) -> dict[str, Any]:
            user, features, label = item
            answer = client.post(
                f"{gateway}/v1/predict", json={"model": "fraud", "features": features, "user_id": user}
            )
            answer.raise_for_status()
            progress.advance(task)
            return {**answer.json(), "outcome": label}

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(one, plan))
    return outcomes


def _feedback(console: Console, gateway: str, outcomes: list[dict[str, Any]]) -> None:
    with httpx.Client(timeout=30) as client, _progress(console) as progress:
        task = progress.add_task("posting delayed ground truth to /v1/feedback", total=len(outcomes))
        for o in outcomes:
            client.post(
                f"{gateway}/v1/feedback",
                json={"prediction_id": o["prediction_id"], "outcome": o["outcome"], "model": "fraud"},
            ).raise_for_status()
            progress.advance(task)


def _report(log: Path, outcomes: list[dict[str, Any]], docs_url: str) -> DemoResult:
    """Per variant, from the prediction log joined with the feedback the log also holds."""
    from sklearn.metrics import roc_auc_score

    deadline = time.monotonic() + 10
    ids = {o["prediction_id"] for o in outcomes}
    lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline:  # the gateway flushes after each response
        lines = [orjson.loads(x) for x in log.read_bytes().splitlines()] if log.exists() else []
        if sum(1 for x in lines if x.get("type") == "feedback" and x["prediction_id"] in ids) >= len(outcomes):
            break
        time.sleep(0.2)
    ours = {o["prediction_id"] for o in outcomes}  # the log also holds earlier runs and other traffic
    truth = {
        x["prediction_id"]: int(x["outcome"])
        for x in lines
        if x.get("type") == "feedback" and x["prediction_id"] in ours
    }
    answered = [x for x in lines if x.get("type") != "feedback" and x["prediction_id"] in truth]
    # A degraded answer (the default, a stale value) is not the variant's model speaking: not scored.
    predictions = [x for x in answered if not x.get("degraded") and x.get("variant")]
    reports = []
    for variant in sorted({p["variant"] for p in predictions}):
        mine = [p for p in predictions if p["variant"] == variant]
        y = np.array([truth[p["prediction_id"]] for p in mine])
        score = np.array([p["prediction"] for p in mine], dtype=float)
        flagged = np.array([p["label"] == "fraud" for p in mine])
        latency = np.array([p["latency_ms"] for p in mine])
        true_positive = int((flagged & (y == 1)).sum())
        reports.append(
            VariantReport(
                variant=variant,
                version=mine[0]["version"],
                requests=len(mine),
                share=len(mine) / len(predictions),
                p50_ms=float(np.percentile(latency, 50)),
                p99_ms=float(np.percentile(latency, 99)),
                cache_hit_rate=float(np.mean([p["cache_hit"] for p in mine])),
                frauds=int(y.sum()),
                precision=true_positive / max(int(flagged.sum()), 1),
                recall=true_positive / max(int(y.sum()), 1),
                auc=float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else float("nan"),
            )
        )
    z, p_value = float("nan"), float("nan")
    if len(reports) == 2 and not any(math.isnan(r.auc) for r in reports):
        a, b = reports
        z, p_value = auc_z_test((a.auc, a.frauds, a.requests - a.frauds), (b.auc, b.frauds, b.requests - b.frauds))
    return DemoResult(reports, z, p_value, docs_url, degraded=len(answered) - len(predictions))


def _print(console: Console, result: DemoResult) -> None:
    table = Table(title="A/B test fraud v1 (logistic regression) vs v2 (XGBoost), from the prediction log")
    for column in (
        "variant",
        "version",
        "requests",
        "share",
        "p50 ms",
        "p99 ms",
        "cache hits",
        "frauds",
        "precision",
        "recall",
        "AUC",
    ):
        table.add_column(column, justify="right")
    for r in result.variants:
        table.add_row(
            r.variant,
            r.version,
            str(r.requests),
            f"{r.share:.1%}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.cache_hit_rate:.1%}",
            str(r.frauds),
            f"{r.precision:.3f}",
            f"{r.recall:.3f}",
            f"{r.auc:.3f}",
        )
    console.print(table)
    if result.degraded:
        console.print(f"{result.degraded} degraded answers (default or stale values) are left out of the comparison.")
    if math.isnan(result.p_value):
        console.print("Significance: not enough outcomes in both variants to compare AUCs.")
    else:
        verdict = "significant" if result.p_value < 0.05 else "not significant"
        console.print(
            f"AUC difference: z = {result.z:.2f}, p = {result.p_value:.3g} (Hanley-McNeil z-test for two "
            f"independent AUCs): {verdict} at the 5% level."
        )
