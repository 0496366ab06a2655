"""Explanation latency, and what explanations cost plain predictions, in one run.

    python benchmarks/explain_latency.py [--requests 300] [--duration 5] [--rounds 5]

Packages a 200-tree depth-6 XGBoost model and the 128-64 MLP (PyTorch) on 30 features, with 256
training records as the background, and serves each with `sagegate serve` (dynamic batching on,
the default). For each model it measures:
- single-record explain latency over HTTP (/invocations with X-Sagegate-Explain, one client, one
  request at a time): p50 and p99 (targets: XGBoost p99 <= 10 ms, MLP p99 <= 50 ms), and the same
  in process (LoadedModel.explain_rows) to show what is the explainer's and what is HTTP's;
- plain single-record predictions driven by wrk at 16 connections while a second client sends
  `--rate` requests per second on the side: plain ones, then explain ones (the same load but for
  the explaining), `--rounds` such pairs back to back: wrk's requests/s and p99 of the pair with
  the median ratio (target: with the explanations, plain throughput within 10% of the run with
  plain requests on the side), and every round's ratio.
Writes benchmarks/results/explain_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.server_throughput import Service, run_wrk  # noqa: E402
from sagegate.local.examples import build_synthetic_package, synthetic_features  # noqa: E402
from sagegate.local.process import free_port  # noqa: E402
from sagegate.packaging import BuiltPackage, build_package  # noqa: E402

N_FEATURES = 30
PLAIN_CONNECTIONS = 16


def xgboost_package(output: Path) -> BuiltPackage:
    import xgboost

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, N_FEATURES)).astype(np.float32)
    w = rng.normal(size=N_FEATURES)
    y = ((x @ w + 0.5 * np.sin(3 * x[:, 0]) * x[:, 1] + rng.normal(0, 1, len(x))) > 0).astype(int)
    model = xgboost.XGBClassifier(n_estimators=200, max_depth=6, tree_method="hist").fit(x, y)
    records = [{f"f{i}": float(v) for i, v in enumerate(row)} for row in x[:256].tolist()]
    return build_package(
        model,
        framework="xgboost",
        name="xgb",
        version="1",
        features=synthetic_features(N_FEATURES),
        task="binary",
        labels=["legit", "fraud"],
        sample=records[:8],
        background=records,
        output_dir=output,
        overwrite=True,
    )


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def explain_latencies(url: str, bodies: list[bytes], requests: int) -> list[float]:
    import httpx

    headers = {"Content-Type": "application/json", "X-Sagegate-Explain": "true"}
    found = []
    with httpx.Client(timeout=30) as client:
        for i in range(requests + 20):
            started = time.perf_counter()
            answer = client.post(url, content=bodies[i % len(bodies)], headers=headers)
            elapsed = (time.perf_counter() - started) * 1000
            if answer.status_code != 200 or "explanation" not in answer.json()["predictions"][0]:
                raise RuntimeError(f"explain answered {answer.status_code}: {answer.text[:200]}")
            if i >= 20:  # the first ones warm the explainer's thread and caches
                found.append(elapsed)
    return found


def in_process(package: BuiltPackage, records: list[dict[str, Any]], requests: int) -> list[float]:
    from sagegate.server.model import LoadedModel

    model = LoadedModel.load(package.manifest.name, package.path, ["CPUExecutionProvider"], intra_op_threads=1)
    rows = [model.pipeline.rows_from_records([r]) for r in records]
    found = []
    for i in range(requests + 20):
        started = time.perf_counter()
        model.explain_rows(rows[i % len(rows)])
        if i >= 20:
            found.append((time.perf_counter() - started) * 1000)
    return found


def measure(name: str, package: BuiltPackage, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    records = package.manifest.sample
    bodies = [json.dumps({"features": r}).encode() for r in records]
    local = in_process(package, records, args.requests)
    port = free_port()
    server = Service(
        [sys.executable, "-m", "sagegate", "serve", "--model-dir", str(package.path), "--port", str(port)],
        {"SAGEGATE_LOG_LEVEL": "warning"},
        workdir / f"{name}.log",
        port,
    )
    try:
        url = f"{server.url}/invocations"
        latencies = explain_latencies(url, bodies, args.requests)
        body_file = workdir / f"{name}.json"
        body_file.write_bytes(bodies[0])
        # Rounds of (plain beside plain, plain beside explained), back to back: the machine's drift
        # between two long runs is larger than the effect, so each round's pair gives a ratio.
        rounds = [
            (beside(url, body_file, bodies, args, explain=False), beside(url, body_file, bodies, args, explain=True))
            for _ in range(args.rounds)
        ]
    finally:
        server.close()
    # each run is (req/s, p50, p99, errors), beside the count of side requests
    ratios = [mixed[0] / alone[0] if alone[0] else 0.0 for (alone, _), (mixed, _) in rounds]
    middle = sorted(range(len(ratios)), key=ratios.__getitem__)[len(ratios) // 2]
    (alone, side_plain), (mixed, side_explained) = rounds[middle]
    return {
        "model": name,
        "method": package.manifest.explainer.method if package.manifest.explainer else None,
        "explain_http_ms": {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "n": len(latencies)},
        "explain_in_process_ms": {"p50": percentile(local, 50), "p99": percentile(local, 99)},
        "plain_alone": {"rps": alone[0], "p50_ms": alone[1], "p99_ms": alone[2], "errors": alone[3]},
        "plain_with_explain": {"rps": mixed[0], "p50_ms": mixed[1], "p99_ms": mixed[2], "errors": mixed[3]},
        "side_requests": {"plain": side_plain, "explain": side_explained},
        "ratios": ratios,
    }


def beside(
    url: str, body_file: Path, bodies: list[bytes], args: argparse.Namespace, *, explain: bool
) -> tuple[tuple[float, float, float, int], int]:
    """wrk's plain load while a paced client sends `args.rate` requests/s beside it."""
    import httpx

    stop = threading.Event()
    sent: list[int] = []
    headers = {"Content-Type": "application/json", **({"X-Sagegate-Explain": "true"} if explain else {})}

    def paced() -> None:
        with httpx.Client(timeout=30) as client:
            next_at = time.perf_counter()
            while not stop.is_set():
                answer = client.post(url, content=bodies[len(sent) % len(bodies)], headers=headers)
                if answer.status_code == 200:
                    sent.append(1)
                next_at += 1 / args.rate
                time.sleep(max(0.0, next_at - time.perf_counter()))

    thread = threading.Thread(target=paced, daemon=True)
    thread.start()
    time.sleep(0.5)
    measured = run_wrk(url, body_file, PLAIN_CONNECTIONS, args.duration)
    stop.set()
    thread.join(30)
    return measured, len(sent)


TARGETS = {"xgb": 10.0, "synthetic-mlp": 50.0}


def report(results: list[dict[str, Any]]) -> None:
    print(f"\nexplain latency (single record, {os.cpu_count()} CPUs, dynamic batching on)")
    for r in results:
        http, local = r["explain_http_ms"], r["explain_in_process_ms"]
        target = TARGETS[r["model"]]
        verdict = "PASS" if http["p99"] <= target else "FAIL"
        print(
            f"  {r['model']:14} {r['method']:11} HTTP p50 {http['p50']:6.2f} ms  p99 {http['p99']:6.2f} ms"
            f"  (target <= {target:g} ms: {verdict});  in process p50 {local['p50']:6.2f} ms"
            f"  p99 {local['p99']:6.2f} ms"
        )
        alone, mixed = r["plain_alone"], r["plain_with_explain"]
        ratio = mixed["rps"] / alone["rps"] if alone["rps"] else 0.0
        verdict = "PASS" if ratio >= 0.9 else "FAIL"
        side = r["side_requests"]
        print(
            f"  {'':14} plain c{PLAIN_CONNECTIONS} beside {side['plain']} plain: {alone['rps']:8.0f} req/s p99"
            f" {alone['p99_ms']:6.2f} ms; beside {side['explain']} explained: {mixed['rps']:8.0f} req/s p99"
            f" {mixed['p99_ms']:6.2f} ms = {ratio:.1%}, the median round of"
            f" {', '.join(f'{x:.0%}' for x in r['ratios'])} (target >= 90%: {verdict})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="explain requests per model")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rate", type=float, default=20, help="side requests per second (plain, then explain)")
    parser.add_argument("--rounds", type=int, default=5, help="pairs of plain and explained side load (median)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: run `bash scripts/ensure-tools.sh wrk` (or `make bench`)")
    workdir = Path(tempfile.mkdtemp(prefix="sagegate-explain-bench-"))
    try:
        print("packaging the models ...", flush=True)
        packages = {
            "xgb": xgboost_package(workdir / "xgb"),
            "synthetic-mlp": build_synthetic_package(workdir / "mlp", "mlp"),
        }
        results = [measure(name, package, args, workdir) for name, package in packages.items()]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out = ROOT / "benchmarks" / "results" / "explain_latency.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results, "cpus": os.cpu_count()}, indent=2))
    report(results)


if __name__ == "__main__":
    main()
