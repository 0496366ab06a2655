"""The batch engine as a SageMaker managed-spot training job (Batch Transform has no spot option).

SageMaker's training container contract: hyperparameters in /opt/ml/input/config, channels under
/opt/ml/input/data (`input`: the shards of this instance, `model`: the package), and
/opt/ml/checkpoints kept in sync with the job's CheckpointConfig S3 URI, also across a spot
interruption: the engine writes its parts and checkpoint there, so a restarted job resumes where
the interrupted one stopped. The joined predictions, the errors and the summary are copied to
/opt/ml/output/data at the end (uploaded to the job's output path); a failure's reason goes to
/opt/ml/output/failure, as SageMaker expects.

    python -m sagegate.batch.spot [--root /opt/ml]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

__all__ = ["main", "run_spot"]


def run_spot(root: Path) -> dict[str, object]:
    from sagegate.batch.engine import run_batch
    from sagegate.batch.runner import batch_model

    hyperparameters = json.loads((root / "input" / "config" / "hyperparameters.json").read_text())
    channels = root / "input" / "data"
    model_channel = channels / "model"
    if not model_channel.is_dir():
        raise RuntimeError("the 'model' channel is missing: give the model package's S3 prefix")
    with batch_model(model_channel, name=str(hyperparameters.get("model", "model"))) as model:
        work = root / "checkpoints" / "output"
        summary = run_batch(
            model,
            channels / "input",
            work,
            chunk_rows=int(hyperparameters.get("chunk_rows", 50_000)),
            id_columns=[c for c in str(hyperparameters.get("id_columns", "")).split(",") if c],
        )
    final = root / "output" / "data"
    final.mkdir(parents=True, exist_ok=True)
    for path in [*map(Path, summary.outputs), work / "errors.jsonl", work / "_summary.json"]:
        target = final / path.name
        if path.is_dir():
            shutil.copytree(path, target, dirs_exist_ok=True)
        else:
            shutil.copy2(path, target)
    return {
        "rows": summary.rows,
        "predicted": summary.predicted,
        "rejected": summary.rejected,
        "resumed_chunks": summary.skipped_chunks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="sagegate batch inference as a SageMaker training job")
    parser.add_argument("--root", type=Path, default=Path("/opt/ml"))
    args = parser.parse_args()
    try:
        print(json.dumps(run_spot(args.root)))
    except Exception as exc:
        failure = args.root / "output" / "failure"
        failure.parent.mkdir(parents=True, exist_ok=True)
        failure.write_text(f"{type(exc).__name__}: {exc}"[:1024])
        print(f"batch job failed: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
