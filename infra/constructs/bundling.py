"""The Lambda code asset, built on this machine without Docker: pip installs the `gateway` extra's
dependencies as manylinux wheels for the Lambda's Python and architecture, then the sagegate
package and the handlers are copied beside them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import BundlingOptions, DockerImage, IgnoreMode, ILocalBundling
from aws_cdk import aws_lambda as lambda_

ROOT = Path(__file__).resolve().parents[2]
# The Lambdas' runtime; the bundle's wheels are built for its Python (LocalPip below).
RUNTIME = lambda_.Runtime.PYTHON_3_12
HANDLERS = {
    "gateway_handler.py": "functions/gateway/handler.py",
    "deploy_handler.py": "functions/deploy/handler.py",
    "rotation_handler.py": "functions/rotation/handler.py",
    "images_handler.py": "functions/images/handler.py",
    "endpoint_handler.py": "functions/endpoint/handler.py",
}


def lambda_requirements() -> list[str]:
    """The `gateway` extra: what the handlers import. The core dependencies beyond it (typer, rich)
    are the CLI's, which no Lambda runs."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements: list[str] = project["optional-dependencies"]["gateway"]
    return requirements


@jsii.implements(ILocalBundling)
class LocalPip:
    def __init__(
        self, python_version: str = RUNTIME.name.removeprefix("python"), platform: str = "manylinux2014_x86_64"
    ) -> None:
        self.python_version, self.platform = python_version, platform

    def try_bundle(self, output_dir: str, *, image: Any = None, **_: Any) -> bool:
        out = Path(output_dir)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--target",
                str(out),
                "--platform",
                self.platform,
                "--implementation",
                "cp",
                "--python-version",
                self.python_version,
                "--only-binary=:all:",
                "--upgrade",
                # No .pyc: pip compiles with the Python that runs it (cpython-311 here), which the Lambda's never loads.
                "--no-compile",
                *lambda_requirements(),
            ],
            check=True,
        )
        shutil.copytree(
            ROOT / "sagegate",
            out / "sagegate",
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        for target, source in HANDLERS.items():
            shutil.copy(ROOT / source, out / target)
        return True


# What the bundle is made of, as git-style excludes: everything at the top but these, and no bytecode.
# (The glob form "*" then "!sagegate/**" excludes the folders themselves, so a change in them left
# the asset's source hash as it was.)
SOURCE_EXCLUDES = ["/*", "!/sagegate/", "!/functions/", "!/pyproject.toml", "__pycache__/", "*.pyc"]


def lambda_code() -> lambda_.Code:
    """One asset for every Lambda of the stack (same package, one handler each)."""
    return lambda_.Code.from_asset(
        str(ROOT),
        exclude=SOURCE_EXCLUDES,
        ignore_mode=IgnoreMode.GIT,
        bundling=BundlingOptions(image=DockerImage.from_registry("unused-local-bundling"), local=LocalPip()),
    )
