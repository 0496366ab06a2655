"""`sagegate package` as a user runs it: a subprocess, real model files, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sagegate.local.data import Transactions, fraud_features
from sagegate.manifest import ModelManifest

pytestmark = pytest.mark.integration


def sagegate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sagegate", *args], check=False, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def spec_files(tmp_path_factory: pytest.TempPathFactory, transactions: Transactions) -> dict[str, Any]:
    from sagegate.features import FeaturePipeline

    root = tmp_path_factory.mktemp("cli")
    features = fraud_features(transactions)
    spec = {
        "name": "fraud",
        "version": "3",
        "task": "binary",
        "labels": ["legit", "fraud"],
        "features": [f.model_dump(exclude_none=True) for f in features],
        "metrics": {"auc": 0.97},
        "lineage": {"training_data_uri": "s3://bucket/train.parquet", "code_version": "abc123"},
    }
    (root / "spec.json").write_text(json.dumps(spec))
    (root / "sample.json").write_text(json.dumps(transactions.records[:10]))
    x = FeaturePipeline(features).transform_records(transactions.records)
    return {"root": root, "x": x, "y": transactions.label}


def test_package_from_each_model_file_format(spec_files: dict[str, Any]) -> None:
    import joblib
    import torch
    import xgboost
    from sklearn.linear_model import LogisticRegression

    root, x, y = spec_files["root"], spec_files["x"], spec_files["y"]
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), root / "model.joblib")
    xgboost.XGBClassifier(n_estimators=10).fit(x, y).save_model(root / "model.json")
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    torch.export.save(
        torch.export.export(net, (torch.zeros(2, x.shape[1]),), dynamic_shapes=({0: torch.export.Dim("batch")},)),
        root / "model.pt2",
    )
    for model, framework in (("model.joblib", "sklearn"), ("model.json", "xgboost"), ("model.pt2", "pytorch")):
        out = root / f"pkg-{framework}"
        done = sagegate(
            "package",
            str(root / model),
            "--framework",
            framework,
            "--spec",
            str(root / "spec.json"),
            "--sample",
            str(root / "sample.json"),
            "--output",
            str(out),
        )
        assert done.returncode == 0, done.stderr
        assert "packaged fraud v3" in done.stderr
        manifest = ModelManifest.read(out)
        assert (manifest.framework, manifest.lineage.code_version if manifest.lineage else None) == (
            framework,
            "abc123",
        )
        assert len(manifest.sample) == 5 and (out / "model.tar.gz").exists()
    again = sagegate(
        "package",
        str(root / "pkg-sklearn" / "model.onnx"),
        "--framework",
        "onnx",
        "--spec",
        str(root / "spec.json"),
        "--sample",
        str(root / "sample.json"),
        "--output",
        str(root / "onnx"),
        "--version",
        "4",
    )
    assert again.returncode == 0, again.stderr
    assert ModelManifest.read(root / "onnx").version == "4"
    assert np.isclose(ModelManifest.read(root / "onnx").metrics["auc"], 0.97)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--framework", "caffe"],
            "--framework must be one of sklearn, xgboost, lightgbm, catboost, pytorch, tensorflow, onnx, not 'caffe'",
        ),
        (["--framework", "sklearn", "--sample", "missing.json"], "cannot read"),
        (["--framework", "xgboost", "--model", "nothing.json"], "model file not found"),
        (["--framework", "pytorch", "--model", "spec.json"], "saved as .pt2"),
        (["--framework", "sklearn", "--spec", "bad.json"], "is not valid JSON"),
        (["--framework", "sklearn", "--spec", "nofeatures.json"], "features is required"),
        (["--framework", "sklearn", "--spec", "extra.json"], "unknown field 'colour'"),
        (["--framework", "sklearn", "--tolerance", "0"], "outputs differ by"),
        (["--framework", "sklearn", "--output", "spec.json/pkg"], "cannot write to"),
        (["--framework", "sklearn", "--background", "spec.json"], "expected a JSON list of records"),
        (["--framework", "sklearn", "--background", "sample-bad.json"], "background record 0"),
    ],
)
def test_errors_are_one_line_with_a_non_zero_exit(spec_files: dict[str, Any], args: list[str], message: str) -> None:
    import joblib
    from sklearn.linear_model import LogisticRegression

    root = spec_files["root"]
    if not (root / "model.joblib").exists():
        joblib.dump(LogisticRegression(max_iter=500).fit(spec_files["x"], spec_files["y"]), root / "model.joblib")
    (root / "bad.json").write_text("{oops")
    spec = json.loads((root / "spec.json").read_text())
    (root / "nofeatures.json").write_text(json.dumps({**spec, "features": []}))
    (root / "extra.json").write_text(json.dumps({**spec, "colour": "red"}))
    (root / "sample-bad.json").write_text(json.dumps([{"amount": "lots"}]))
    options = {"--model": "model.joblib", "--spec": "spec.json", "--sample": "sample.json", "--output": "out-err"}
    rest: list[str] = []
    i = 0
    while i < len(args):
        if args[i] in options:
            options[args[i]] = args[i + 1]
        elif args[i] == "--background":  # a file beside the spec
            rest += [args[i], str(root / args[i + 1])]
        else:
            rest += args[i : i + 2]
        i += 2
    command = [
        "package",
        str(root / options["--model"]),
        "--spec",
        str(root / options["--spec"]),
        "--sample",
        str(root / options["--sample"]),
        "--output",
        str(root / options["--output"]),
        *rest,
    ]
    done = sagegate(*command)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error:") and message in lines[0]
    assert not (root / "out-err").exists()


def test_serve_rejects_bad_settings_in_one_line(tmp_path: Path) -> None:
    done = sagegate("serve", "--model-dir", str(tmp_path), "--max-batch-size", "0")
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: max_batch_size:")


def test_package_with_training_data_writes_a_baseline_and_says_when_there_is_none(
    spec_files: dict[str, Any], transactions: Transactions
) -> None:
    import joblib
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    root, x, y = spec_files["root"], spec_files["x"], spec_files["y"]
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), root / "baseline-model.joblib")
    frame = pd.DataFrame(transactions.records)
    frame.iloc[:3000].to_csv(root / "train.csv", index=False)
    frame.iloc[3000:].assign(is_fraud=transactions.label[3000:]).to_parquet(root / "holdout.parquet")
    common = [
        "package",
        str(root / "baseline-model.joblib"),
        "--framework",
        "sklearn",
        "--spec",
        str(root / "spec.json"),
    ]
    common += ["--sample", str(root / "sample.json"), "--overwrite"]
    done = sagegate(*common, "-o", str(root / "with"), "--training-data", str(root / "train.csv"),
                    "--holdout", str(root / "holdout.parquet"), "--label-column", "is_fraud")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"monitoring baseline -> {root / 'with' / 'baseline.json'}" in done.stderr
    baseline = json.loads((root / "with" / "baseline.json").read_text())
    assert baseline["rows"] == 3000 and baseline["holdout_rows"] == len(frame) - 3000 and "auc" in baseline["metrics"]
    assert ModelManifest.read(root / "with").monitoring is not None

    bare = sagegate(*common, "-o", str(root / "without"))
    assert bare.returncode == 0 and "monitoring will have no baseline" in bare.stderr
    wrong = sagegate(*common, "-o", str(root / "bad"), "--holdout", str(root / "holdout.parquet"))
    assert wrong.returncode == 1 and wrong.stderr.strip().splitlines()[-1].startswith("error: --holdout needs")
