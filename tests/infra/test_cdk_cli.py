"""`cdk synth` through the CDK CLI pinned in package.json, as a user runs it: cdk.json's app
command, the Lambda code bundled for real by pip for the Lambda's platform (no Docker), cdk-nag."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_the_pinned_cli_synthesizes_dev_with_the_lambda_code_bundled_for_python_3_12(tmp_path: Path) -> None:
    cdk = ROOT / "node_modules" / ".bin" / "cdk"
    if not cdk.exists():
        pytest.fail("the CDK CLI is not installed: run `make setup` (npm ci)")
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]["aws-cdk"]
    version = subprocess.run([str(cdk), "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith(pinned)

    out = tmp_path / "cdk.out"
    env = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20", "CDK_DISABLE_VERSION_CHECK": "1"}
    result = subprocess.run(
        [str(cdk), "synth", "-c", "env=dev", "--quiet", "--output", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (out / "sagegate-dev.template.json").exists()
    bundles = [p for p in out.glob("asset.*") if p.is_dir() and (p / "gateway_handler.py").exists()]
    assert len(bundles) == 1, "one code asset for the stack's Lambdas"
    bundle = bundles[0]
    assert {"gateway_handler.py", "deploy_handler.py", "rotation_handler.py", "sagegate"} <= {
        p.name for p in bundle.iterdir()
    }
    native = [p.name for p in bundle.rglob("*.so")]
    assert native and all("cpython-312-x86_64-linux-gnu" in name for name in native), native
    assert not (bundle / "sagegate" / "__pycache__").exists()
    assert not any(bundle.glob("onnxruntime*")), "the gateway extra only: no model runtime in the Lambda"
    shutil.rmtree(out)
