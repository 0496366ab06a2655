"""The gateway's own cost per request, in process, and the import time of its Lambda handler.

    python benchmarks/gateway_overhead.py [--requests 3000]

Each request is an API Gateway proxy event handed to the real Lambda handler (Mangum -> FastAPI
-> Predictor), the way Lambda calls it, with a real redis-server for the cache. Paths measured:

- cache hit: validation, routing, a Redis GET, the answer;
- cache miss against a trivial endpoint: the same plus the single-flight lock, the endpoint call
  (an in-process client answering a constant: the model is excluded) and the cache write;
- floor: a FastAPI route answering a constant, through the same Mangum handler, measured in the
  same run, so the gateway's own work can be read as the difference.

Cold start proxy: `python -X importtime` of functions/gateway/handler.py in a fresh interpreter
(best of 5), and the making of the AWS clients the gateway needs in AWS from one botocore session
against five (how they were grouped before), each in a fresh interpreter (best of 5). Targets on
this machine: hit p50 < 1 ms, miss overhead p50 < 3 ms, import < 400 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sagegate.endpoints import EndpointResponse  # noqa: E402
from sagegate.local.data import generate_transactions  # noqa: E402
from sagegate.local.process import free_port, redis_server_command  # noqa: E402

ANSWER = orjson.dumps({"predictions": [{"prediction": 0.12, "label": "legit", "confidence": 0.88}]})


class TrivialEndpoint:
    async def invoke(self, endpoint: str, body: bytes, **kwargs: Any) -> EndpointResponse:
        return EndpointResponse(ANSWER, "application/json", kwargs.get("target_variant"))


def event(body: bytes, path: str = "/v1/predict") -> dict[str, Any]:
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": "POST",
        "headers": {"content-type": "application/json", "host": "api.example.com"},
        "multiValueHeaders": {"content-type": ["application/json"], "host": ["api.example.com"]},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "body": body.decode(),
        "isBase64Encoded": False,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": "POST",
            "path": path,
            "stage": "prod",
            "requestId": "r",
            "identity": {"sourceIp": "203.0.113.7"},
            "accountId": "1",
            "apiId": "a",
        },
    }


class Context:
    function_name = "sagegate-gateway"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:sagegate-gateway"
    aws_request_id = "bench"


_LOAD = (
    "import sys, time; sys.stderr.write('LOADING\\n'); t = time.perf_counter(); import importlib.util as u; "
    "s = u.spec_from_file_location('h', 'functions/gateway/handler.py'); m = u.module_from_spec(s); "
    "s.loader.exec_module(m); print((time.perf_counter() - t) * 1000)"
)


def import_time_ms(tracing: bool) -> tuple[float, float]:
    """Best of 5 in a new interpreter: (sum of the top-level `-X importtime` entries, wall time of loading
    the handler module with its module-scope clients), in ms."""
    env = {**os.environ, "AWS_LAMBDA_FUNCTION_NAME": "sagegate-gateway"}
    env.pop("POWERTOOLS_TRACE_DISABLED", None)
    if not tracing:
        env["POWERTOOLS_TRACE_DISABLED"] = "true"
    best_imports = best_wall = float("inf")
    for _ in range(5):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", _LOAD],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            check=True,
        )
        total = 0
        # only what loading the handler imports, not the interpreter's own start-up (site, encodings)
        for line in done.stderr.split("LOADING\n", 1)[1].splitlines():
            if not line.startswith("import time:") or "|" not in line:
                continue
            _, cumulative, name = line.split("|")
            if cumulative.strip().isdigit() and not name.startswith("  "):  # depth 0: top-level imports
                total += int(cumulative)
        best_imports = min(best_imports, total / 1000)
        wall = subprocess.run(
            [sys.executable, "-c", _LOAD], capture_output=True, text=True, cwd=ROOT, env=env, check=True
        )
        best_wall = min(best_wall, float(wall.stdout.strip().splitlines()[-1]))
    return best_imports, best_wall


# The clients the gateway makes at a cold start in AWS (sagegate.gateway.app), grouped by the botocore
# session each group had before they shared one: endpoints; registry and route table; Redis token;
# prediction log; batch jobs.
AWS_CLIENT_GROUPS = (
    ("sagemaker-runtime",),
    ("sagemaker", "s3", "dynamodb"),
    ("secretsmanager",),
    ("firehose",),
    ("stepfunctions", "s3"),
)
_CLIENTS = f"""
import sys, time
from botocore.session import get_session
started = time.perf_counter()
one = get_session()
for group in {AWS_CLIENT_GROUPS!r}:
    session = one if sys.argv[1] == "shared" else get_session()
    for service in group:
        session.create_client(service, region_name="eu-west-1")
print((time.perf_counter() - started) * 1000)
"""


def aws_clients_ms(shared: bool) -> float:
    """Best of 5 in a new interpreter: making the gateway's AWS clients from one botocore session, or
    from a session per group as before, in ms. botocore is imported before the clock starts."""
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    runs = [
        subprocess.run(
            [sys.executable, "-c", _CLIENTS, "shared" if shared else "grouped"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        for _ in range(5)
    ]
    return min(float(r.stdout.strip().splitlines()[-1]) for r in runs)


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed: run `make services`")

    workdir = Path(tempfile.mkdtemp(prefix="sagegate-gw-bench-"))
    port = free_port()
    redis_process = subprocess.Popen(redis_server_command(binary, port, workdir), stdout=subprocess.DEVNULL)
    try:
        measure(args, workdir, f"redis://127.0.0.1:{port}/0")
    finally:
        redis_process.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def measure(args: argparse.Namespace, workdir: Path, redis_url: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from sagegate.local.data import fraud_features
    from sagegate.manifest import ModelManifest

    data = generate_transactions(args.requests, seed=11)
    manifest = ModelManifest.model_validate(
        {
            "name": "fraud",
            "version": "1",
            "framework": "sklearn",
            "sha256": "0" * 64,
            "features": [f.model_dump() for f in fraud_features(data)],
            "sample": data.records[:1],
            "outputs": {"task": "binary", "labels": ["legit", "fraud"], "onnx_output": "probabilities"},
        }
    )
    (workdir / "catalog" / "fraud-1").mkdir(parents=True)
    (workdir / "catalog" / "fraud-1" / "manifest.json").write_text(manifest.dumps())
    (workdir / "catalog" / "routes.json").write_bytes(
        orjson.dumps(
            [
                {
                    "model": "fraud",
                    "endpoint": "fraud-prod",
                    "variants": [{"name": "v1", "model_version": "1", "weight": 1}],
                }
            ]
        )
    )
    os.environ.update(
        {
            "SAGEGATE_GATEWAY_REDIS_URL": redis_url,
            "SAGEGATE_GATEWAY_CATALOG_DIR": str(workdir / "catalog"),
            "SAGEGATE_GATEWAY_REGION": "eu-west-1",
            "POWERTOOLS_TRACE_DISABLED": "1",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "LOG_LEVEL": "WARNING",
            # as in Lambda: routes run inline on the event loop, EMF metrics are printed per request
            "AWS_LAMBDA_FUNCTION_NAME": "sagegate-gateway",
        }
    )
    spec = importlib.util.spec_from_file_location("gateway_handler", ROOT / "functions/gateway/handler.py")
    assert spec is not None and spec.loader is not None
    handler = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handler)
    handler.predictor.endpoints = TrivialEndpoint()

    app: FastAPI = handler.app

    @app.post("/bench/floor")
    async def floor() -> dict[str, Any]:
        return {"prediction": 0.12, "label": "legit", "confidence": 0.88}

    bodies = [orjson.dumps({"model": "fraud", "features": r, "user_id": f"u{i}"}) for i, r in enumerate(data.records)]
    context = Context()

    def run(events: list[dict[str, Any]], check: str | None) -> list[float]:
        samples = []
        for e in events:
            started = time.perf_counter()
            response = handler.handler(e, context)
            samples.append((time.perf_counter() - started) * 1000)
            if response["statusCode"] != 200 or (
                check and orjson.loads(response["body"])["cache_hit"] != (check == "hit")
            ):
                raise SystemExit(f"unexpected answer: {response}")
        return samples

    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):  # EMF lines go to stdout in Lambda
        run([event(b) for b in bodies[:200]], None)
        run([event(b"{}", "/bench/floor")] * 200, None)
        misses = run([event(b) for b in bodies[200:]], "miss")
        hits = run([event(b) for b in bodies[200:]], "hit")
        floors = run([event(b"{}", "/bench/floor")] * len(hits), None)
    imports, wall = import_time_ms(tracing=False)
    traced_imports, traced_wall = import_time_ms(tracing=True)
    one_session, five_sessions = aws_clients_ms(shared=True), aws_clients_ms(shared=False)

    (miss50, miss99), (hit50, hit99), (floor50, floor99) = percentiles(misses), percentiles(hits), percentiles(floors)
    table = Table(title=f"gateway cost per request, in process ({len(hits)} requests each)")
    for column in ("path", "p50 ms", "p99 ms", "p50 over the floor"):
        table.add_column(column, justify="right")
    table.add_row("floor: Mangum + FastAPI constant", f"{floor50:.3f}", f"{floor99:.3f}", "")
    table.add_row("cache hit (Redis GET)", f"{hit50:.3f}", f"{hit99:.3f}", f"+{hit50 - floor50:.3f}")
    table.add_row("cache miss, trivial endpoint", f"{miss50:.3f}", f"{miss99:.3f}", f"+{miss50 - floor50:.3f}")
    console = Console(width=120)
    console.print(table)
    console.print(
        f"handler module, best of 5: imports {imports:.0f} ms (-X importtime), loading it with its clients "
        f"{wall:.0f} ms; with X-Ray tracing on: {traced_imports:.0f} ms / {traced_wall:.0f} ms"
    )
    clients = sum(len(g) for g in AWS_CLIENT_GROUPS)
    console.print(
        f"the {clients} AWS clients of a cold start in AWS, best of 5: one botocore session {one_session:.0f} ms, "
        f"{len(AWS_CLIENT_GROUPS)} sessions as before {five_sessions:.0f} ms ({five_sessions / one_session:.1f}x)"
    )
    for text, ok in (
        (f"cache-hit p50 < 1 ms ({hit50:.3f} ms)", hit50 < 1),
        (f"cache-miss p50 < 3 ms, model excluded ({miss50:.3f} ms)", miss50 < 3),
        (f"handler import < 400 ms ({imports:.0f} ms; {wall:.0f} ms with its clients)", imports < 400),
    ):
        console.print(f"[{'green' if ok else 'red'}]{'PASS' if ok else 'FAIL'}[/] {text}")


if __name__ == "__main__":
    main()
