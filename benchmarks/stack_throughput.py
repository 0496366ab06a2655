"""The whole local stack against the bare inference server, in the same run, on the same model.

    python benchmarks/stack_throughput.py [--duration 10] [--c1-duration 5]

Trains the XGBoost fraud model, registers and approves it in a fresh state folder, starts
`sagegate dev` (gateway, runtime emulator, redis-server, a model server) and deploys it. Then, with
wrk over loopback, it drives at concurrency 1 and 64, alternating: the model server the stack
started (`POST /invocations`, one record) and the gateway (`POST /v1/predict`, the same records with
a user id). Half the gateway's requests repeat one of 200 hot records (cache hits once warm), half
carry an amount never sent before (misses: the emulator and the model server answer them).

Prints requests/s, p50 and p99 per system and concurrency, the errors (non-200 answers, socket
errors, and for the gateway degraded answers), and the targets of issue 14: stack c64 throughput
>= 15% of the bare server's, stack c64 p99 <= 50 ms, stack c1 p50 <= bare c1 p50 + 1 ms, no errors.
Writes benchmarks/results/stack_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.server_throughput import _ms  # noqa: E402
from sagegate.local.process import free_port, wait_healthy  # noqa: E402

HOT_RECORDS = 200
USERS = 1000

_LUA = """
local hot = {HOT}
local template = {TEMPLATE}
local path = {PATH}
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args)
  math.randomseed({SEED})
  bad = 0
  degraded = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end
function request()
  local body
  if math.random() < 0.5 then
    body = hot[math.random(#hot)]
  else
    body = string.format(template, math.random(100, 2000000) / 100 + math.random() / 1000, math.random({USERS}))
  end
  return wrk.format(nil, path, nil, body)
end
function response(status, headers, body)
  if status ~= 200 then
    bad = bad + 1
  elseif string.find(body, '"degraded":true', 1, true) then
    degraded = degraded + 1
  end
end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    io.write(string.format("COUNTS %d %d\\n", t:get("bad"), t:get("degraded")))
  end
end
"""


@dataclass
class Load:
    system: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    degraded: int


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal for this ASCII text


def write_script(path: Path, records: list[dict[str, Any]], *, gateway: bool) -> Path:
    """The request mix: half hot records, half with a new amount; gateway bodies carry a user id."""
    rng = random.Random(7)
    hot = []
    for record in records[:HOT_RECORDS]:
        if gateway:
            body = {"model": "fraud", "features": record, "user_id": f"u{rng.randrange(USERS)}"}
        else:
            body = {"features": record}
        hot.append(json.dumps(body, separators=(",", ":")))
    base = dict(records[HOT_RECORDS])
    base["amount"] = 0.0
    features = json.dumps(base, separators=(",", ":")).replace('"amount":0.0', '"amount":%.5f')
    if gateway:
        template = '{"model":"fraud","features":' + features + ',"user_id":"u%d"}'
    else:  # Lua's string.format ignores the user id argument that this template has no place for
        template = '{"features":' + features + "}"
    script = _LUA.format(
        HOT="{" + ",".join(_lua_string(h) for h in hot) + "}",
        TEMPLATE=_lua_string(template),
        PATH=_lua_string("/v1/predict" if gateway else "/invocations"),
        SEED=11,
        USERS=USERS,
    )
    path.write_text(script)
    return path


def run_wrk(url: str, script: Path, connections: int, duration: int) -> tuple[float, float, float, int, int]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    bad, degraded = (int(n) for n in re.search(r"COUNTS (\d+) (\d+)", out).groups())  # type: ignore[union-attr]
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = bad + (sum(int(g) for g in socket.groups()) if socket else 0)
    return rps, p50, p99, errors, degraded


def _sagegate(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "sagegate", *args], env=env, check=True, capture_output=True, timeout=300)


def measure(duration: int, c1_duration: int) -> tuple[list[Load], dict[str, Any]]:
    from sagegate.local.data import generate_transactions
    from sagegate.local.examples import build_fraud_package
    from sagegate.registry import LocalRegistry

    work = Path(tempfile.mkdtemp(prefix="sagegate-stack-bench-"))
    env = {**os.environ, "SAGEGATE_HOME": str(work / "state")}
    print("training and registering the XGBoost fraud model...", flush=True)
    package = build_fraud_package(work / "fraud", "xgboost")
    registry = LocalRegistry(work / "state" / "registry")
    version = registry.register(package.path)[0].version
    registry.approve("fraud", version, by="bench")
    gateway_port, emulator_port = free_port(), free_port()
    log = (work / "dev.log").open("wb")
    dev = subprocess.Popen(
        [sys.executable, "-m", "sagegate", "dev", "--port", str(gateway_port), "--emulator-port", str(emulator_port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    loads: list[Load] = []
    try:
        gateway = f"http://127.0.0.1:{gateway_port}"
        wait_healthy(f"{gateway}/health", 120, dev)
        print("deploying fraud v1 on the local stack...", flush=True)
        _sagegate(env, "deploy", "fraud", "--version", version)
        status = json.loads((work / "state" / "dev.json").read_text())
        server = status["servers"][f"fraud:{version}"]["url"]
        records = generate_transactions(HOT_RECORDS + 1, seed=5).records
        scripts = {
            "server": write_script(work / "server.lua", records, gateway=False),
            "stack": write_script(work / "stack.lua", records, gateway=True),
        }
        urls = {"server": server, "stack": gateway}
        for system in ("server", "stack"):  # warm-up: the hot records cached, the connection pools full
            run_wrk(urls[system], scripts[system], 16, 3)
        for connections, seconds in ((1, c1_duration), (64, duration)):
            for system in ("server", "stack"):
                rps, p50, p99, errors, degraded = run_wrk(urls[system], scripts[system], connections, seconds)
                loads.append(Load(system, connections, rps, p50, p99, errors, degraded))
                print(f"  {system} c{connections}: {rps:,.0f} req/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms", flush=True)
                time.sleep(1)
        info = {"processes": sorted(status["processes"]), "records": HOT_RECORDS}
    finally:
        dev.terminate()
        try:
            dev.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, 9)
        log.close()
    return loads, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per c64 measurement")
    parser.add_argument("--c1-duration", type=int, default=5, help="seconds per c1 measurement")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    loads, info = measure(args.duration, args.c1_duration)
    by = {(load.system, load.connections): load for load in loads}
    table = Table(title="the local stack vs the bare inference server (same model, same records, same cores)")
    for column in ("system", "connections", "req/s", "p50 ms", "p99 ms", "errors", "degraded"):
        table.add_column(column, justify="right")
    for load in loads:
        table.add_row(
            load.system,
            str(load.connections),
            f"{load.rps:,.0f}",
            f"{load.p50_ms:.2f}",
            f"{load.p99_ms:.2f}",
            str(load.errors),
            str(load.degraded),
        )
    console = Console(width=120)
    console.print(table)
    share = by[("stack", 64)].rps / by[("server", 64)].rps
    added = by[("stack", 1)].p50_ms - by[("server", 1)].p50_ms
    failures = sum(load.errors + load.degraded for load in loads)
    checks = [
        (f"stack c64 throughput >= 15% of the bare server's ({share:.1%})", share >= 0.15),
        (f"stack c64 p99 <= 50 ms ({by[('stack', 64)].p99_ms:.1f} ms)", by[("stack", 64)].p99_ms <= 50),
        (f"stack c1 p50 <= bare c1 p50 + 1 ms (+{added:.2f} ms)", added <= 1.0),
        (f"no errors or degraded answers ({failures})", failures == 0),
    ]
    for text, ok in checks:
        console.print(f"[{'green' if ok else 'red'}]{'PASS' if ok else 'FAIL'}[/] {text}")
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    (results / "stack_throughput.json").write_text(
        json.dumps(
            {"loads": [asdict(load) for load in loads], "share_c64": share, "added_c1_ms": added, **info}, indent=2
        )
    )


if __name__ == "__main__":
    main()
