"""The tensor path and every core: 100-record requests over binary OIP v2, against in-process ONNX
Runtime at batch 128 measured in the same run.

    python benchmarks/oip_throughput.py [--duration 5] [--threads 1] [--max-batch-size 32]

Serves the MLP (128-64) and the 200-tree XGBoost model of benchmarks/server_throughput.py (30
features) with `sagegate serve` and drives it with wrk (1 thread, 16 connections, 100-record
requests) over: OIP v2 REST with the binary tensor data extension (an FP32 tensor `input` [100, 30]
in, every output as binary data out, as tritonclient asks by default), OIP JSON tensors, x-npy on
/invocations (the tensor path, JSON answers) and JSON records on /invocations (the record path).
Binary OIP runs with 1 worker and with one per CPU (`--workers`), for the scaling. Binary OIP also
runs on benchmarks/apps/bare_oip.py under the same uvicorn: the floor of a Python server on this
machine (decode, the model, encode, nothing else). Prints records/s, p50/p99 and the ratios to
in-process batch 128 and to the bare app, and writes benchmarks/results/oip_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.server_throughput import Service, _ms, in_process_limit, uvicorn_command  # noqa: E402
from sagegate.local.examples import build_synthetic_package  # noqa: E402
from sagegate.local.process import free_port  # noqa: E402
from sagegate.server.workers import available_cpus  # noqa: E402

N_FEATURES = 30
RECORDS = 100
CONNECTIONS = 16
TARGETS = {"mlp-128-64": 0.30, "xgboost-200": 0.40}


def bodies(workdir: Path) -> dict[str, tuple[Path, dict[str, str]]]:
    """Each request body of 100 records, with its headers."""
    rng = np.random.default_rng(1)
    x = np.round(rng.normal(size=(RECORDS, N_FEATURES)), 6).astype(np.float32)
    found: dict[str, tuple[Path, dict[str, str]]] = {}
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": list(x.shape),
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    (workdir / "oip-binary.bin").write_bytes(header + x.tobytes())
    found["oip-binary"] = (
        workdir / "oip-binary.bin",
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))},
    )
    document = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.tolist()}]}
    (workdir / "oip-json.json").write_text(json.dumps(document))
    found["oip-json"] = (workdir / "oip-json.json", {"Content-Type": "application/json"})
    np.save(workdir / "body.npy", x)
    found["invocations-npy"] = (workdir / "body.npy", {"Content-Type": "application/x-npy"})
    records = [{f"f{i}": float(v) for i, v in enumerate(row)} for row in x.astype(np.float64)]
    (workdir / "records.json").write_text(json.dumps({"instances": records}))
    found["invocations-json"] = (workdir / "records.json", {"Content-Type": "application/json"})
    return found


def run_wrk(url: str, body: Path, headers: dict[str, str], connections: int, duration: int) -> dict[str, Any]:
    script = body.with_suffix(".lua")
    lines = ['wrk.method = "POST"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    lines += [
        f'local f = io.open("{body}", "rb")',
        'wrk.body = f:read("*a")',
        "f:close()",
        "function response(status, headers, body)",
        "  if status ~= 200 then io.stderr:write('status ' .. status .. '\\n') end",
        "end",
    ]
    script.write_text("\n".join(lines) + "\n")
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    import re

    def grab(pattern: str) -> str:
        found = re.search(pattern, out)
        assert found is not None, out
        return found.group(1)

    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(grab(r"Requests/sec:\s+([\d.]+)")),
        "p50_ms": _ms(grab(r"\s50%\s+(\S+)")),
        "p99_ms": _ms(grab(r"\s99%\s+(\S+)")),
        "errors": (int(errors.group(1)) if errors else 0) + (sum(map(int, sockets.groups())) if sockets else 0),
    }


def check_binary_answer(url: str, body: Path, headers: dict[str, str], expected_rows: int) -> None:
    """The binary answer parses as OIP: a JSON header, then each output's bytes."""
    import urllib.request

    request = urllib.request.Request(url, data=body.read_bytes(), headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        size = int(response.headers["Inference-Header-Content-Length"])
        data = response.read()
    document = json.loads(data[:size])
    prediction = next(o for o in document["outputs"] if o["name"] == "prediction")
    assert prediction["shape"] == [expected_rows], prediction
    assert len(data) - size == sum(o["parameters"]["binary_data_size"] for o in document["outputs"])


def bare_floor(
    package: Path, request: tuple[Path, dict[str, str]], args: argparse.Namespace, log: Path
) -> dict[str, Any]:
    """Binary OIP on benchmarks/apps/bare_oip.py (decode, the model, encode: nothing else), same wrk load."""
    port = free_port()
    env = {"BARE_PACKAGE": str(package), "BARE_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    bare = Service(uvicorn_command("benchmarks.apps.bare_oip:app", port), env, log, port)
    try:
        url = f"{bare.url}/v2/models/{package.name}/infer"
        run_wrk(url, *request, CONNECTIONS, 1)
        load = run_wrk(url, *request, CONNECTIONS, args.duration)
    finally:
        bare.close()
    return load | {"records_per_s": load["rps"] * RECORDS}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="sagegate-oip-bench-"))
    files = bodies(workdir)
    print("building the models (XGBoost 200 trees, MLP 128-64, 30 features)...", flush=True)
    packages = {
        "mlp-128-64": build_synthetic_package(
            workdir / "m1" / "mlp-128-64", "mlp", hidden=(128, 64), name="mlp-128-64"
        ),
        "xgboost-200": build_synthetic_package(
            workdir / "m2" / "xgboost-200", "xgboost", trees=200, name="xgboost-200"
        ),
    }
    cpus = available_cpus()
    results: dict[str, Any] = {"loads": [], "limits": {}, "floors": {}}
    for name, package in packages.items():
        limit = in_process_limit(package, 128, args.threads, args.duration / 2)
        results["limits"][name] = limit
        print(f"  in-proc  {name:12} batch 128: {limit:10.0f} rec/s", flush=True)
        results["floors"][name] = floor = bare_floor(
            package.path, files["oip-binary"], args, workdir / f"bare-{name}.log"
        )
        print(
            f"  bare app {name:12} oip-binary {floor['records_per_s']:10.0f} rec/s "
            f"({100 * floor['records_per_s'] / limit:5.1f}% of b128)  p99 {floor['p99_ms']:6.2f} ms",
            flush=True,
        )
        for workers in sorted({1, cpus}):
            port = free_port()
            command = [sys.executable, "-m", "sagegate", "serve", "--model-dir", str(package.path.parent)]
            command += ["--port", str(port), "--host", "127.0.0.1", "--threads", str(args.threads)]
            command += ["--max-batch-size", str(args.max_batch_size), "--workers", str(workers)]
            server = Service(command, {"SAGEGATE_LOG_LEVEL": "warning"}, workdir / f"{name}-{workers}.log", port)
            try:
                paths = ["oip-binary"] if workers > 1 else list(files)
                for path in paths:
                    body, headers = files[path]
                    url = (
                        f"{server.url}/v2/models/{name}/infer"
                        if path.startswith("oip")
                        else f"{server.url}/invocations"
                    )
                    if path == "oip-binary":
                        check_binary_answer(url, body, headers, RECORDS)
                    run_wrk(url, body, headers, CONNECTIONS, 1)  # warm the connections and caches
                    load = run_wrk(url, body, headers, CONNECTIONS, args.duration)
                    load |= {"model": name, "path": path, "workers": workers, "records_per_s": load["rps"] * RECORDS}
                    results["loads"].append(load)
                    print(
                        f"  {name:12} {path:17} w{workers} {load['records_per_s']:10.0f} rec/s "
                        f"({100 * load['records_per_s'] / limit:5.1f}% of b128)  p50 {load['p50_ms']:6.2f} ms  "
                        f"p99 {load['p99_ms']:6.2f} ms  errors {load['errors']}",
                        flush=True,
                    )
            finally:
                server.close()
    shutil.rmtree(workdir, ignore_errors=True)
    return results


def report(result: dict[str, Any]) -> list[tuple[str, bool]]:
    checks = []
    for name, target in TARGETS.items():
        limit = result["limits"][name]
        binary = next(x for x in result["loads"] if (x["model"], x["path"], x["workers"]) == (name, "oip-binary", 1))
        ratio = binary["records_per_s"] / limit
        checks.append(
            (f"{name}: 100-record binary OIP >= {target:.0%} of in-process batch 128 ({ratio:.0%})", ratio >= target)
        )
        floor = result.get("floors", {}).get(name)
        if floor:
            print(
                f"{name}: the bare app (decode, model, encode) {floor['records_per_s']:.0f} rec/s = "
                f"{floor['records_per_s'] / limit:.0%} of b128; sagegate's one worker is "
                f"{binary['records_per_s'] / floor['records_per_s']:.0%} of the bare app"
            )
        scaled = [x for x in result["loads"] if x["model"] == name and x["path"] == "oip-binary" and x["workers"] > 1]
        for x in scaled:
            speedup = x["records_per_s"] / binary["records_per_s"]
            print(
                f"{name}: {x['workers']} workers {x['records_per_s']:.0f} rec/s = {speedup:.2f}x one worker "
                f"({x['records_per_s'] / limit:.0%} of b128)"
            )
    checks.append(("no errors under load", all(x["errors"] == 0 for x in result["loads"])))
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'} {text}")
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (server and in-process)")
    parser.add_argument("--max-batch-size", type=int, default=32, help="the server's max_batch_size (its default: 32)")
    parser.add_argument("--report", type=Path, help="only print the report of an earlier results file")
    args = parser.parse_args()
    if shutil.which("wrk") is None and args.report is None:
        sys.exit("wrk is not installed: run `bash scripts/ensure-tools.sh wrk` (or `make bench`)")
    out = ROOT / "benchmarks" / "results" / "oip_throughput.json"
    if args.report:
        result = json.loads(args.report.read_text())
    else:
        result = measure(args)
        result["machine"] = {
            "cpus": os.cpu_count(),
            "duration_s": args.duration,
            "ort_threads": args.threads,
            "max_batch_size": args.max_batch_size,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    report(result)


if __name__ == "__main__":
    main()
