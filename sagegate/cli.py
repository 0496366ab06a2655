"""The `sagegate` command."""

from __future__ import annotations

import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="sagegate: register models, serve them fast and safely, on AWS or on this machine.",
)
console = Console(stderr=True)


def fail(message: str) -> NoReturn:
    """One readable line on stderr and a non-zero exit; never a traceback."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "input"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def _read_document(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    try:
        return tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        fail(f"{path} is not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}")


@app.command()
def package(
    model: Annotated[
        Path,
        typer.Argument(
            help="trained model: .joblib/.pkl (sklearn), .json/.ubj (XGBoost), .pt2 (torch.export program) or .onnx"
        ),
    ],
    framework: Annotated[str, typer.Option(help="sklearn | xgboost | pytorch | onnx")],
    spec: Annotated[Path, typer.Option(help="JSON or TOML: name, version, features, task, labels, ...")],
    output: Annotated[Path, typer.Option("--output", "-o", help="package folder to write")],
    sample: Annotated[Path | None, typer.Option(help="JSON list of sample records (else the spec's)")] = None,
    name: Annotated[str | None, typer.Option(help="overrides the spec's name")] = None,
    version: Annotated[str | None, typer.Option(help="overrides the spec's version")] = None,
    tolerance: Annotated[float, typer.Option(help="largest allowed |source - ONNX| on the sample")] = 1e-3,
    torch_output: Annotated[str, typer.Option(help="pytorch: the module returns logits or probabilities")] = "logits",
    overwrite: Annotated[bool, typer.Option(help="replace an existing package folder")] = False,
) -> None:
    """Convert a trained model to ONNX, check it against the source, and write a model package."""
    from sagegate.manifest import Framework, Task
    from sagegate.packaging import PackageError, build_package
    from sagegate.packaging.converters import load_model_file

    document = _read_document(spec)
    if not isinstance(document, dict):
        fail(f"{spec} must hold an object with name, version, features, task, ...")
    records = _read_document(sample) if sample else document.pop("sample", None)
    if isinstance(records, dict):
        records = records.get("instances")
    if not isinstance(records, list) or not records:
        fail("a sample input is required: --sample FILE, or 'sample' in the spec")
    document.pop("sample", None)
    known = {
        "name",
        "version",
        "features",
        "task",
        "labels",
        "threshold",
        "metrics",
        "lineage",
        "description",
        "entity_key",
        "default_prediction",
    }
    unknown = sorted(set(document) - known)
    if unknown:
        fail(f"{spec}: unknown field {unknown[0]!r} (known: {', '.join(sorted(known))})")
    document["name"] = name or document.get("name")
    document["version"] = version or document.get("version")
    for field in ("name", "version", "features", "task"):
        if not document.get(field):
            fail(f"{spec}: {field} is required")
    try:
        fw, task = Framework(framework), Task(document["task"])
    except ValueError as exc:
        fail(str(exc))
    try:
        with console.status(f"packaging {document['name']} v{document['version']} ({fw})"):
            trained = load_model_file(model, fw, task)
            built = build_package(
                trained,
                framework=fw,
                sample=records,
                output_dir=output,
                tolerance=tolerance,
                torch_output=torch_output,
                overwrite=overwrite,
                **document,
            )
    except PackageError as exc:
        fail(str(exc))
    except ValidationError as exc:
        fail(_validation_message(exc))
    console.print(
        f"[green]packaged[/] {built.manifest.name} v{built.manifest.version} -> {built.path} "
        f"(sha256 {built.manifest.sha256[:12]}, max |source - onnx| {built.max_abs_diff:.2g})",
        highlight=False,
    )


@app.command()
def serve(
    model_dir: Annotated[Path | None, typer.Option(help="model packages to load (default /opt/ml/model)")] = None,
    port: Annotated[int | None, typer.Option(help="default 8080 or SAGEMAKER_BIND_TO_PORT")] = None,
    host: Annotated[str | None, typer.Option()] = None,
    max_batch_size: Annotated[int | None, typer.Option()] = None,
    max_delay_ms: Annotated[float | None, typer.Option()] = None,
    providers: Annotated[str | None, typer.Option(help="comma-separated: tensorrt,cuda,cpu")] = None,
    threads: Annotated[int | None, typer.Option(help="ONNX Runtime intra-op threads (0: default)")] = None,
    memory_budget_mb: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Run the inference server (the SageMaker container's `serve`)."""
    from sagegate.server.config import ServerConfig
    from sagegate.server.main import serve as run_server

    overrides: dict[str, object] = {
        k: v
        for k, v in {
            "model_dir": model_dir,
            "port": port,
            "host": host,
            "max_batch_size": max_batch_size,
            "max_delay_ms": max_delay_ms,
            "intra_op_threads": threads,
            "memory_budget_mb": memory_budget_mb,
            "providers": tuple(p.strip().lower() for p in providers.split(",")) if providers else None,
        }.items()
        if v is not None
    }
    try:
        config = ServerConfig.from_env(overrides=overrides)
    except ValidationError as exc:
        fail(_validation_message(exc))
    code = run_server(config)
    if code:
        raise typer.Exit(code)


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="port of the example inference server")] = 8080,
    workdir: Annotated[Path, typer.Option(help="where the example package is written")] = Path(".sagegate/demo"),
) -> None:
    """Train an example fraud model, package it, serve it, and send it predictions."""
    from sagegate.local.quickstart import run_quickstart

    try:
        run_quickstart(workdir=workdir, port=port, console=Console())
    except RuntimeError as exc:
        fail(str(exc))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # the last line of defence: one line, unless debugging
        if os.environ.get("SAGEGATE_DEBUG"):
            raise
        console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
