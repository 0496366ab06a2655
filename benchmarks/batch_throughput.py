"""Batch engine throughput and memory, against in-process ONNX Runtime on the same arrays.

    python benchmarks/batch_throughput.py [--rows 1000000] [--big-rows 4000000] [--formats parquet,csv]

Generates transactions straight into Parquet (row groups of 100k, never all in memory) and, for
`csv`, the same rows as a CSV file written block by block; trains the XGBoost fraud model, and in
fresh processes runs: the engine end to end (read, validate, preprocess, infer, write) over 1M rows
and over 4M rows of each format (peak RSS of each), and bare `session.run` over the same rows
already preprocessed (the limit). The 1M Parquet engine run and the limit are each measured twice,
alternating, and the best of each kept. Prints rows/s, the ratio, the peak memories and the time
10M rows would take here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sagegate.local.data import CATEGORIES, CHANNELS  # noqa: E402

_ENGINE = """
import json, resource, sys, time
from pathlib import Path
from sagegate.batch.engine import run_batch
from sagegate.server.model import LoadedModel
package, source, out = map(Path, sys.argv[1:4])
model = LoadedModel.load("fraud", package, ["CPUExecutionProvider"])
started = time.perf_counter()
summary = run_batch(model, source, out, chunk_rows=int(sys.argv[4]), id_columns=["id"])
seconds = time.perf_counter() - started
print(json.dumps({"rows": summary.rows, "predicted": summary.predicted, "seconds": seconds,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

_LIMIT = """
import json, resource, sys, time
import pyarrow.parquet as pq
from pathlib import Path
from sagegate.batch.columns import validate_columns
from sagegate.server.model import LoadedModel
package, source = map(Path, sys.argv[1:3])
model = LoadedModel.load("fraud", package, ["CPUExecutionProvider"])
matrices = [validate_columns(model.pipeline, pq.read_table(source).slice(i, int(sys.argv[3]))).matrix
            for i in range(0, pq.ParquetFile(source).metadata.num_rows, int(sys.argv[3]))]
started = time.perf_counter()
rows = sum(len(model.infer(x)) for x in matrices)
print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started}))
"""


def generate(path: Path, rows: int, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    writer = None
    for start in range(0, rows, 100_000):
        n = min(100_000, rows - start)
        table = pa.table(
            {
                "id": np.arange(start, start + n),
                "amount": np.round(rng.lognormal(3.6, 1.1, n), 2),
                "hour": rng.integers(0, 24, n),
                "merchant_category": np.array(CATEGORIES)[rng.integers(0, len(CATEGORIES), n)],
                "channel": np.array(CHANNELS)[rng.integers(0, len(CHANNELS), n)],
                "account_age_days": rng.integers(0, 5000, n),
                "transactions_24h": rng.poisson(2.0, n),
                "distance_from_home_km": np.round(rng.lognormal(1.5, 1.2, n), 1),
                "is_foreign": rng.random(n) < 0.07,
                "card_present": rng.random(n) < 0.6,
            }
        )
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()


def to_csv(parquet: Path, path: Path) -> None:
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    source = pq.ParquetFile(parquet)
    with pa_csv.CSVWriter(path, source.schema_arrow) as writer:
        for batch in source.iter_batches(100_000):
            writer.write_batch(batch)


def run(script: str, *args: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=ROOT, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


Result = dict[str, float]


def measure(
    rows: int, big_rows: int, chunk_rows: int, formats: list[str]
) -> tuple[Result, Result, Result, list[Result]]:
    """(best 1M engine run, best limit run, the big engine run, the CSV runs: small then big)."""
    from sagegate.local.examples import build_fraud_package

    work = Path(tempfile.mkdtemp(prefix="sagegate-batch-bench-"))
    try:
        print("training the XGBoost fraud model and generating the inputs...", flush=True)
        package = build_fraud_package(work / "model", "xgboost").path
        small, big = work / "small.parquet", work / "big.parquet"
        generate(small, rows)
        generate(big, big_rows, seed=1)
        chunk = str(chunk_rows)
        # Best of two runs each, alternating (the machine is shared and noisy); a fresh output each time.
        engines, limits = [], []
        for attempt in range(2):
            engines.append(run(_ENGINE, str(package), str(small), str(work / f"out-small-{attempt}"), chunk))
            limits.append(run(_LIMIT, str(package), str(small), chunk))
        engine_big = run(_ENGINE, str(package), str(big), str(work / "out-big"), chunk)
        csv_runs = []
        if "csv" in formats:
            for name, source in (("small", small), ("big", big)):
                text = work / f"{name}.csv"
                to_csv(source, text)
                csv_runs.append(run(_ENGINE, str(package), str(text), str(work / f"out-{name}-csv"), chunk))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = min(engines, key=lambda r: r["seconds"])
    return best, min(limits, key=lambda r: r["seconds"]), engine_big, csv_runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big-rows", type=int, default=4_000_000)
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--formats", default="parquet,csv", help="comma-separated: parquet, csv")
    args = parser.parse_args()
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if not set(formats) <= {"parquet", "csv"} or "parquet" not in formats:
        parser.error("--formats: parquet (always) and optionally csv")

    from rich.console import Console
    from rich.table import Table

    engine, limit, engine_big, csv_runs = measure(args.rows, args.big_rows, args.chunk_rows, formats)
    engine_rate = engine["rows"] / engine["seconds"]
    limit_rate = limit["rows"] / limit["seconds"]
    table = Table(title="batch engine vs in-process ONNX Runtime (same model, same rows, same cores)")
    for column in ("run", "rows", "seconds", "rows/s", "peak RSS MB"):
        table.add_column(column, justify="right")
    runs = [("engine end to end", engine), ("engine end to end", engine_big)]
    runs += [("engine end to end, CSV", r) for r in csv_runs]
    for name, result in runs:
        table.add_row(
            name,
            f"{result['rows']:,.0f}",
            f"{result['seconds']:.2f}",
            f"{result['rows'] / result['seconds']:,.0f}",
            f"{result['peak_mb']:.0f}",
        )
    table.add_row(
        "ONNX Runtime only (preprocessed)", f"{limit['rows']:,.0f}", f"{limit['seconds']:.2f}", f"{limit_rate:,.0f}", ""
    )
    console = Console(width=120)
    console.print(table)
    ratio = engine_rate / limit_rate
    growth = engine_big["peak_mb"] / engine["peak_mb"]
    console.print(
        f"end to end = {ratio:.0%} of the in-process limit; peak memory {args.big_rows / args.rows:.0f}x "
        f"the rows -> {growth:.2f}x the memory; 10M rows would take {1e7 / engine_rate / 60:.1f} min here"
    )
    checks = [
        (f"end to end >= 70% of in-process ONNX Runtime ({ratio:.0%})", ratio >= 0.7),
        (f"peak memory flat in input size ({growth:.2f}x for {args.big_rows / args.rows:.0f}x rows)", growth < 1.25),
    ]
    if csv_runs:
        csv_growth = csv_runs[1]["peak_mb"] / csv_runs[0]["peak_mb"]
        checks.append((f"CSV peak memory flat in input size ({csv_growth:.2f}x)", csv_growth < 1.25))
    for text, ok in checks:
        console.print(f"[{'green' if ok else 'red'}]{'PASS' if ok else 'FAIL'}[/] {text}")


if __name__ == "__main__":
    main()
