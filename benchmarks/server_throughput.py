"""Inference server throughput and latency, against baselines measured in the same run.

    python benchmarks/server_throughput.py [--duration 5] [--threads 1]

Serves a 200-tree XGBoost model and an MLP (128-64) on 30 features and drives each server over
loopback with wrk (bounded: fixed duration, fixed connections) at concurrency 1, 16 and 64 with
single-record requests, and at concurrency 16 with 100-record requests. In the same run, on the
same cores, it measures: in-process ONNX Runtime at batch 32 and 128 (the model's limit), a
minimal ASGI app answering constant JSON (the HTTP floor), and a naive FastAPI endpoint that
calls ONNX Runtime per request. It prints requests/s, records/s, p50/p99 and the ratios that the
targets are stated in, and writes them to benchmarks/results/server_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sagegate.local.examples import build_synthetic_package  # noqa: E402
from sagegate.local.process import free_port, wait_healthy  # noqa: E402
from sagegate.packaging import BuiltPackage  # noqa: E402

N_FEATURES = 30
CONCURRENCY = (1, 16, 64)
BATCH_RECORDS = 100
BATCH_CONCURRENCY = 16


@dataclass
class Load:
    system: str
    model: str
    records: int
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def records_per_s(self) -> float:
        return self.rps * self.records


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def run_wrk(url: str, body_file: Path, connections: int, duration: int) -> tuple[float, float, float, int]:
    script = body_file.with_suffix(".lua")
    content_type = "application/x-npy" if body_file.suffix == ".npy" else "application/json"
    script.write_text(
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "{content_type}"\n'
        f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
        "function response(status, headers, body)\n"
        "  if status ~= 200 then io.stderr:write('status ' .. status .. '\\n') end\nend\n"
    )
    command = ["wrk", "-t1", f"-c{connections}", f"-d{int(duration)}s", "--latency", "-s", str(script), url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=True)
    out = done.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    return rps, p50, p99, errors


class Service:
    """A server process on loopback, started for one set of measurements."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        try:
            wait_healthy(f"{self.url}/ping", 180, self.process)
        except RuntimeError:
            self.close()  # never leave a server behind
            raise

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


def uvicorn_command(target: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
    ]


def in_process_limit(package: BuiltPackage, batch: int, threads: int, seconds: float) -> float:
    """Records/s of bare session.run on preprocessed float32 batches: what the model alone can do."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(package.path / "model.onnx"), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(batch, N_FEATURES)).astype(np.float32)
    output = package.manifest.outputs.onnx_output
    for _ in range(20):
        session.run([output], {"input": x})
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        session.run([output], {"input": x})
        count += 1
    return count * batch / elapsed


def bodies(workdir: Path) -> dict[int | str, Path]:
    """JSON bodies of 1 and 100 records, and the same 100 records as an application/x-npy body."""
    rng = np.random.default_rng(1)
    files: dict[int | str, Path] = {}
    for n in (1, BATCH_RECORDS):
        matrix = np.round(rng.normal(size=(n, N_FEATURES)), 6)
        records = [{f"f{i}": float(v) for i, v in enumerate(row)} for row in matrix]
        files[n] = workdir / f"body-{n}.json"
        files[n].write_text(json.dumps({"instances": records}))
    np.save(workdir / "body-npy.npy", matrix.astype(np.float32))
    files["npy"] = workdir / "body-npy.npy"
    return files


def check_same_answer(urls: list[str], body: Path) -> None:
    import urllib.request

    answers = []
    for url in urls:
        request = urllib.request.Request(url, data=body.read_bytes(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            answers.append([p["prediction"] for p in json.loads(response.read())["predictions"]])
    for other in answers[1:]:
        np.testing.assert_allclose(other, answers[0], atol=1e-5)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="sagegate-bench-"))
    files = bodies(workdir)
    print("building the models (XGBoost 200 trees, MLP 128-64, 30 features)...", flush=True)
    packages = {
        "xgboost-200": build_synthetic_package(
            workdir / "models" / "xgboost-200", "xgboost", trees=200, name="xgboost-200"
        ),
        "mlp-128-64": build_synthetic_package(
            workdir / "models" / "mlp-128-64", "mlp", hidden=(128, 64), name="mlp-128-64"
        ),
    }
    loads: list[Load] = []
    limits: dict[str, dict[str, float]] = {}

    def drive(
        system: str, model: str, url: str, records: int, connections: int, *, body: int | str | None = None
    ) -> None:
        body_file = files[records if body is None else body]
        run_wrk(url, body_file, connections, 1)  # warm the connections and caches
        rps, p50, p99, errors = run_wrk(url, body_file, connections, args.duration)
        load = Load(system if body is None else f"{system}-{body}", model, records, connections, rps, p50, p99, errors)
        loads.append(load)
        print(
            f"  {load.system:12} {model:12} {records:>3} rec x c{connections:<3} {rps:9.0f} req/s "
            f"{load.records_per_s:10.0f} rec/s  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  errors {errors}",
            flush=True,
        )

    port = free_port()
    floor = Service(uvicorn_command("benchmarks.apps.floor:app", port), {}, workdir / "floor.log", port)
    floor_url = f"{floor.url}/invocations"
    # /ping is not a route of the floor app but any answer means it is up; it answers 200 to everything.
    try:
        for c in CONCURRENCY:
            drive("floor", "-", floor_url, 1, c)
    finally:
        floor.close()

    for name, package in packages.items():
        limits[name] = {str(b): in_process_limit(package, b, args.threads, args.duration / 2) for b in (32, 128)}
        print(
            f"  in-proc  {name:12} batch 32: {limits[name]['32']:10.0f} rec/s  batch 128: {limits[name]['128']:10.0f} "
            "rec/s",
            flush=True,
        )
        port = free_port()
        sagegate = Service(
            [
                sys.executable,
                "-m",
                "sagegate",
                "serve",
                "--model-dir",
                str(package.path.parent),
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
                "--threads",
                str(args.threads),
                "--workers",  # one process, as these results have always been
                "1",
            ],
            {"SAGEGATE_LOG_LEVEL": "warning"},
            workdir / f"sagegate-{name}.log",
            port,
        )
        try:
            # the model dir holds both packages: name the one under test.
            url = f"{sagegate.url}/models/{name}/invoke"
            for c in CONCURRENCY:
                drive("sagegate", name, url, 1, c)
            drive("sagegate", name, url, BATCH_RECORDS, BATCH_CONCURRENCY)
            drive("sagegate", name, url, BATCH_RECORDS, BATCH_CONCURRENCY, body="npy")
            port = free_port()
            naive = Service(
                uvicorn_command("benchmarks.apps.naive:app", port),
                {"NAIVE_PACKAGE": str(package.path), "NAIVE_THREADS": str(args.threads)},
                workdir / f"naive-{name}.log",
                port,
            )
            try:
                check_same_answer([url, f"{naive.url}/invocations"], files[BATCH_RECORDS])
                for c in CONCURRENCY:
                    drive("naive", name, f"{naive.url}/invocations", 1, c)
                drive("naive", name, f"{naive.url}/invocations", BATCH_RECORDS, BATCH_CONCURRENCY)
            finally:
                naive.close()
        finally:
            sagegate.close()
    shutil.rmtree(workdir, ignore_errors=True)
    return {"loads": [asdict(x) | {"records_per_s": x.records_per_s} for x in loads], "limits": limits}


def report(result: dict[str, Any]) -> list[tuple[str, bool]]:
    from rich.console import Console
    from rich.table import Table

    loads = [Load(**{k: v for k, v in x.items() if k != "records_per_s"}) for x in result["loads"]]

    def find(system: str, model: str, records: int, c: int) -> Load:
        return next(
            x
            for x in loads
            if (x.system, x.records, x.connections) == (system, records, c) and (system == "floor" or x.model == model)
        )

    console = Console(width=170)
    table = Table(title="sagegate inference server vs baselines (same run, same cores)")
    for column in (
        "model",
        "load",
        "sagegate req/s",
        "naive req/s",
        "floor req/s",
        "vs naive",
        "% of floor",
        "sagegate p50/p99 ms",
        "naive p50/p99 ms",
    ):
        table.add_column(column, justify="right")
    checks: list[tuple[str, bool]] = []
    for model, limit in result["limits"].items():
        for c in CONCURRENCY:
            ours, naive, floor = find("sagegate", model, 1, c), find("naive", model, 1, c), find("floor", model, 1, c)
            table.add_row(
                model,
                f"1 rec x c{c}",
                f"{ours.rps:.0f}",
                f"{naive.rps:.0f}",
                f"{floor.rps:.0f}",
                f"{ours.rps / naive.rps:.2f}x",
                f"{100 * ours.rps / floor.rps:.0f}%",
                f"{ours.p50_ms:.2f} / {ours.p99_ms:.2f}",
                f"{naive.p50_ms:.2f} / {naive.p99_ms:.2f}",
            )
        ours, naive = (
            find("sagegate", model, BATCH_RECORDS, BATCH_CONCURRENCY),
            find("naive", model, BATCH_RECORDS, BATCH_CONCURRENCY),
        )
        table.add_row(
            model,
            f"{BATCH_RECORDS} rec x c{BATCH_CONCURRENCY}",
            f"{ours.records_per_s:.0f} rec/s",
            f"{naive.records_per_s:.0f} rec/s",
            "",
            f"{ours.rps / naive.rps:.2f}x",
            f"{100 * ours.records_per_s / limit['128']:.0f}% of b128",
            f"{ours.p50_ms:.2f} / {ours.p99_ms:.2f}",
            f"{naive.p50_ms:.2f} / {naive.p99_ms:.2f}",
        )
        npy = find("sagegate-npy", model, BATCH_RECORDS, BATCH_CONCURRENCY)
        table.add_row(
            model,
            f"{BATCH_RECORDS} rec x c{BATCH_CONCURRENCY} npy",
            f"{npy.records_per_s:.0f} rec/s",
            "",
            "",
            "",
            f"{100 * npy.records_per_s / limit['128']:.0f}% of b128",
            f"{npy.p50_ms:.2f} / {npy.p99_ms:.2f}",
            "",
        )
        c64, n64, f64 = find("sagegate", model, 1, 64), find("naive", model, 1, 64), find("floor", model, 1, 64)
        c1, n1 = find("sagegate", model, 1, 1), find("naive", model, 1, 1)
        b = find("sagegate", model, BATCH_RECORDS, BATCH_CONCURRENCY)
        limit128 = limit["128"]
        checks += [
            (f"{model}: c64 single-record >= 1.5x naive ({c64.rps / n64.rps:.2f}x)", c64.rps >= 1.5 * n64.rps),
            (
                f"{model}: c64 single-record >= 25% of HTTP floor ({100 * c64.rps / f64.rps:.0f}%)",
                c64.rps >= 0.25 * f64.rps,
            ),
            (f"{model}: c64 p99 <= 20 ms ({c64.p99_ms:.2f} ms)", c64.p99_ms <= 20),
            (
                f"{model}: c1 p50 <= 1.5x naive p50 ({c1.p50_ms:.2f} vs {n1.p50_ms:.2f} ms)",
                c1.p50_ms <= 1.5 * n1.p50_ms,
            ),
            (
                f"{model}: 100-record records/s >= 30% of in-process batch-128 "
                f"({100 * b.records_per_s / limit128:.0f}%)",
                b.records_per_s >= 0.3 * limit128,
            ),
            (
                f"{model}: 100-record x-npy records/s >= 30% of in-process batch-128 "
                f"({100 * npy.records_per_s / limit128:.0f}%)",
                npy.records_per_s >= 0.3 * limit128,
            ),
            (f"{model}: no errors under load", all(x.errors == 0 for x in loads if x.model == model)),
        ]
    console.print(table)
    for text, ok in checks:
        console.print(f"[{'green' if ok else 'red'}]{'PASS' if ok else 'FAIL'}[/] {text}")
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (all systems)")
    parser.add_argument("--report", type=Path, help="only print the report of an earlier results file")
    args = parser.parse_args()
    if shutil.which("wrk") is None and args.report is None:
        sys.exit("wrk is not installed: run `bash scripts/ensure-tools.sh wrk` (or `make bench`)")
    out = ROOT / "benchmarks" / "results" / "server_throughput.json"
    if args.report:
        result = json.loads(args.report.read_text())
    else:
        result = measure(args)
        result["machine"] = {"cpus": os.cpu_count(), "duration_s": args.duration, "ort_threads": args.threads}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    report(result)


if __name__ == "__main__":
    main()
