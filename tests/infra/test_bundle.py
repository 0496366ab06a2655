"""The Lambda code asset, built by LocalPip as `cdk synth` builds it, run with nothing else on the
path: the handlers import from it alone and the gateway answers an API Gateway event.

Built for this machine's Python (3.11) so that it can run here: this proves the bundle holds every
module the handlers need (and none of the CLI's), not that the Lambda's cp312 wheels load, whose
tags tests/infra/test_cdk_cli.py checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from infra.constructs.bundling import LocalPip

pytestmark = pytest.mark.integration

PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import deploy_handler, gateway_handler, images_handler, rotation_handler

class Context:
    function_name = "sagegate-gateway"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:eu-west-1:111111111111:function:sagegate-gateway"
    aws_request_id = "r-1"

    def get_remaining_time_in_millis(self):
        return 10_000

event = {
    "resource": "/health", "path": "/health", "httpMethod": "GET", "headers": {"Host": "api"},
    "multiValueHeaders": {}, "queryStringParameters": None, "multiValueQueryStringParameters": None,
    "pathParameters": None, "stageVariables": None, "body": None, "isBase64Encoded": False,
    "requestContext": {"resourcePath": "/health", "httpMethod": "GET", "path": "/api/health", "stage": "api",
                       "requestId": "r-1", "identity": {"sourceIp": "192.0.2.1"}},
}
answer = gateway_handler.handler(event, Context())
loaded = sorted(m for m in ("typer", "rich", "numpy", "onnxruntime") if m in sys.modules)
print(json.dumps({"answer": answer, "loaded": loaded}))
"""


def test_the_bundle_alone_runs_the_handlers(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert LocalPip(python_version=version).try_bundle(str(bundle))
    assert not (bundle / "typer").exists() and not (bundle / "rich").exists()
    # No bytecode: pip's would be for the Python that ran it, never the Lambda's (looked at before the probe runs).
    compiled = [str(p.relative_to(bundle)) for p in bundle.rglob("*.pyc")]
    assert not compiled, compiled[:10]

    env = {"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "x"}
    env["AWS_SECRET_ACCESS_KEY"] = "y"  # clients are made at import; nothing is called
    # -S: no site-packages, so only the standard library and the bundle are importable.
    result = subprocess.run(
        [sys.executable, "-S", "-c", PROBE, str(bundle)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["answer"]["statusCode"] == 200
    assert json.loads(found["answer"]["body"])["status"] == "ok"
    assert found["loaded"] == []


def test_the_code_assets_hash_follows_its_sources_and_nothing_else(tmp_path: Path) -> None:
    """A change in sagegate/ or functions/ must make a new asset (else `cdk deploy` keeps the old
    code); a change anywhere else, or to bytecode, must not."""
    import shutil

    from aws_cdk import FileSystem, IgnoreMode

    from infra.constructs.bundling import ROOT, SOURCE_EXCLUDES

    tree = tmp_path / "repo"
    for part in ("sagegate", "functions"):
        shutil.copytree(ROOT / part, tree / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    (tree / "README.md").write_text("readme")

    def fingerprint() -> str:
        return str(FileSystem.fingerprint(str(tree), exclude=SOURCE_EXCLUDES, ignore_mode=IgnoreMode.GIT))

    first = fingerprint()
    (tree / "README.md").write_text("another readme")
    (tree / "sagegate" / "__pycache__").mkdir(exist_ok=True)
    (tree / "sagegate" / "__pycache__" / "keys.cpython-311.pyc").write_bytes(b"x")
    assert fingerprint() == first
    keys = tree / "sagegate" / "keys.py"
    keys.write_text(keys.read_text() + "\n# changed\n")
    assert fingerprint() != first
    second = fingerprint()
    handler = tree / "functions" / "gateway" / "handler.py"
    handler.write_text(handler.read_text() + "\n# changed\n")
    assert fingerprint() != second
