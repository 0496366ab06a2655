"""A multi-account setup for tests: cdk.json's environments, with staging and prod deploying from a
registry in its own account (REGISTRY_ACCOUNT) and dev keeping its own registry (the default)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from infra.config import CONTEXT_KEY

ROOT = Path(__file__).resolve().parents[1]
REGISTRY_ACCOUNT = "444444444444"
CROSS_ACCOUNT = ("staging", "prod")


def context() -> dict[str, Any]:
    found: dict[str, Any] = copy.deepcopy(json.loads((ROOT / "cdk.json").read_text())["context"])
    for name in CROSS_ACCOUNT:
        env = found[CONTEXT_KEY][name]
        env["registry_account"] = REGISTRY_ACCOUNT
        for model in env["models"]:
            for variant in model.get("variants", []):
                head, _, tail = variant["model_package_arn"].partition(":model-package/")
                variant["model_package_arn"] = f"{head.rsplit(':', 1)[0]}:{REGISTRY_ACCOUNT}:model-package/{tail}"
    return found


def pinned_context() -> dict[str, Any]:
    """cdk.json's environments with dev's and prod's models pinned to their version 1 (an environment
    adopting versions registered before it had sagegate): the stack creates those endpoints itself."""
    found: dict[str, Any] = copy.deepcopy(json.loads((ROOT / "cdk.json").read_text())["context"])
    for name in ("dev", "prod"):
        env = found[CONTEXT_KEY][name]
        for model in env["models"]:
            model["variants"] = [
                {
                    "name": "v1",
                    "model_package_arn": (
                        f"arn:aws:sagemaker:{env['region']}:{env['account']}:model-package/{model['name']}/1"
                    ),
                    "instance_type": model.pop("instance_type"),
                    "instance_count": model.pop("instance_count", 1),
                    "gpus": model.pop("gpus", 0),
                }
            ]
    return found
