"""The `sagegate` command."""

from __future__ import annotations

import json
import os
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

if TYPE_CHECKING:
    from sagegate.registry.protocol import ModelVersion

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="sagegate: register models, serve them fast and safely, on AWS or on this machine.",
)
console = Console(stderr=True)


def _version(show: bool) -> None:
    if show:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"sagegate {version('sagegate')}")
        except PackageNotFoundError:
            print("sagegate (not installed as a package)")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """sagegate: register models, serve them fast and safely, on AWS or on this machine."""


def fail(message: str, code: int = 1) -> NoReturn:
    """One readable line on stderr and a non-zero exit; never a traceback."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


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
            help="trained model: .joblib (sklearn), .json/.ubj (XGBoost), .txt/.joblib (LightGBM), .cbm (CatBoost), "
            ".pt2 (torch.export program), .keras/.h5 (TensorFlow) or .onnx"
        ),
    ],
    framework: Annotated[
        str, typer.Option(help="sklearn | xgboost | lightgbm | catboost | pytorch | tensorflow | onnx")
    ],
    spec: Annotated[Path, typer.Option(help="JSON or TOML: name, version, features, task, labels, ...")],
    output: Annotated[Path, typer.Option("--output", "-o", help="package folder to write")],
    sample: Annotated[Path | None, typer.Option(help="JSON list of sample records (else the spec's)")] = None,
    name: Annotated[str | None, typer.Option(help="overrides the spec's name")] = None,
    version: Annotated[str | None, typer.Option(help="overrides the spec's version")] = None,
    tolerance: Annotated[
        float, typer.Option(help="largest allowed |source - ONNX| on the sample and the generated records")
    ] = 1e-3,
    torch_output: Annotated[str, typer.Option(help="pytorch: the module returns logits or probabilities")] = "logits",
    overwrite: Annotated[bool, typer.Option(help="replace an existing package folder")] = False,
    explain: Annotated[bool, typer.Option(help="give the package an explainer (per-feature contributions)")] = True,
    background: Annotated[
        Path | None,
        typer.Option(help="JSON list of records like the training data: what explanations are relative to"),
    ] = None,
    training_data: Annotated[
        Path | None, typer.Option(help="CSV or Parquet of training rows (or a sample): the monitoring baseline")
    ] = None,
    holdout: Annotated[
        Path | None, typer.Option(help="CSV or Parquet of labelled holdout rows: the baseline's metrics")
    ] = None,
    label_column: Annotated[str | None, typer.Option(help="the holdout's label column")] = None,
) -> None:
    """Convert a trained model to ONNX, check it against the source, and write a model package."""
    from sagegate.manifest import Framework, Task, one_of
    from sagegate.packaging import PackageError, build_package
    from sagegate.packaging.converters import load_model_file

    try:
        fw = one_of(Framework, framework, "--framework")
    except ValueError as exc:
        fail(str(exc))
    document = _read_document(spec)
    if not isinstance(document, dict):
        fail(f"{spec} must hold an object with name, version, features, task, ...")
    records = _read_document(sample) if sample else document.pop("sample", None)
    if isinstance(records, dict):
        records = records.get("instances")
    if not isinstance(records, list) or not records:
        fail("a sample input is required: --sample FILE, or 'sample' in the spec")
    document.pop("sample", None)
    background_records = _background_records(background)
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
        "monitoring",
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
        task = one_of(Task, document["task"], f"{spec}: task")
    except ValueError as exc:
        fail(str(exc))
    if holdout is not None and label_column is None:
        fail("--holdout needs --label-column (the column holding the truth)")
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
                explain=explain,
                background=background_records or None,
                training_data=_table_file(training_data) if training_data else None,
                holdout=_table_file(holdout) if holdout else None,
                label_column=label_column,
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
    if built.manifest.explainer is not None:
        spec_ = built.manifest.explainer
        console.print(f"explainer: {spec_.method} ({spec_.output_space}) over {spec_.background_rows} background rows")
    if built.baseline is None:
        console.print("no --training-data: monitoring will have no baseline for this package", highlight=False)
    else:
        console.print(f"monitoring baseline -> {built.baseline}", highlight=False, soft_wrap=True)


def _background_records(path: Path | None) -> list[dict[str, Any]] | None:
    """--background: a JSON list of records, or none given."""
    if path is None:
        return None
    found = _read_document(path)
    if not isinstance(found, list) or not all(isinstance(r, dict) for r in found):
        fail(f"--background {path}: expected a JSON list of records (objects of feature names to values)")
    return found


def _table_file(path: Path) -> Any:
    """A CSV or Parquet file as a DataFrame; one line on failure."""
    import pandas as pd

    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except FileNotFoundError:
        fail(f"no file {path}")
    except Exception as exc:  # pandas and pyarrow raise many kinds
        fail(f"cannot read {path} as {'Parquet' if path.suffix.lower() in ('.parquet', '.pq') else 'CSV'}: {exc}")


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
    grpc_port: Annotated[int | None, typer.Option(help="OIP v2 gRPC on this port (0: off)")] = None,
    workers: Annotated[int | None, typer.Option(help="server processes sharing the ports (0: one per CPU)")] = None,
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
            "grpc_port": grpc_port,
            "workers": workers,
            "providers": tuple(p.strip().lower() for p in providers.split(",")) if providers else None,
        }.items()
        if v is not None
    }
    try:
        config = ServerConfig.from_env(overrides=overrides)
    except ValidationError as exc:
        fail(_validation_message(exc))
    if not config.multi_model and not config.model_dir.is_dir():
        fail(f"--model-dir {config.model_dir}: no such directory")
    code = run_server(config)
    if code:
        raise typer.Exit(code)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@app.command()
def demo(
    requests: Annotated[int, typer.Option(help="predictions to send through the gateway")] = 3000,
    port: Annotated[int, typer.Option(help="the gateway's port")] = 8000,
    emulator_port: Annotated[int, typer.Option(help="the SageMaker runtime emulator's port")] = 8001,
    serve: Annotated[
        bool | None, typer.Option(help="keep the stack up after the report (default: on a terminal)")
    ] = None,
    shifted: Annotated[int, typer.Option(help="shifted predictions sent after the A/B test, then monitored")] = 1500,
) -> None:
    """Train two fraud models, deploy them as an 80/20 A/B test, send traffic and feedback, report;
    then shift the traffic and monitor it against the training baselines."""
    import signal

    from sagegate.local.demo import DemoResult, run_demo
    from sagegate.targets import state_dir

    out = Console() if sys.stdout.isatty() else Console(width=150)  # a log file gets the whole table
    keep = sys.stdin.isatty() if serve is None else serve

    def wait(result: DemoResult) -> None:
        features = '{"amount": 950, "hour": 2, "merchant_category": "gaming", "channel": "web"}'
        tries = (
            f"  sagegate predict fraud --features '{features}' --user u1\n"
            "  sagegate models list        sagegate models show fraud\n"
            "  sagegate bench fraud --no-cache --requests 2000\n"
            "  sagegate package / register / deploy with your own model (README.md)"
        )
        if not keep:
            out.print(
                "\nThe demo's stack is stopped; its models and deployments stay in "
                f"{state_dir()}/. `sagegate dev` serves them again, and then:\n{tries}",
                soft_wrap=True,
            )
            return
        out.print(f"\nAPI docs: {result.docs_url}\nTry next, in another terminal:\n{tries}", soft_wrap=True)
        out.print("The demo stack keeps serving; Ctrl-C stops it.")
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass

    import time

    started = time.monotonic()
    try:
        run_demo(
            root=state_dir(),
            console=out,
            requests=requests,
            port=port,
            emulator_port=emulator_port,
            shifted=shifted,
            keep_serving=wait,
        )
    except RuntimeError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted")
    console.print(f"demo finished in {time.monotonic() - started:.0f} s", highlight=False)


TargetOption = Annotated[str | None, typer.Option("--target", "-t", help="local (default), aws, or a profile")]
models_app = typer.Typer(no_args_is_help=True, help="Registered models: list, show, approve, reject, stage.")
app.add_typer(models_app, name="models")


def _registry(target: str | None, *, gpu: bool = False) -> Any:
    from sagegate.registry import RegistryError
    from sagegate.targets import open_registry, resolve_target

    try:
        return open_registry(resolve_target(target), gpu=gpu)
    except RegistryError as exc:
        fail(str(exc))


def _registry_call(call: Any) -> Any:
    """Runs a registry operation, turning its errors (and AWS's) into one line."""
    from sagegate.registry import RegistryError

    try:
        return call()
    except RegistryError as exc:
        fail(str(exc))
    except Exception as exc:
        if type(exc).__module__.startswith("botocore"):
            fail(f"AWS: {exc}")
        raise


@app.command()
def register(
    package_path: Annotated[Path, typer.Argument(metavar="PACKAGE", help="package folder or model.tar.gz")],
    stage: Annotated[str, typer.Option(help="dev | staging | production")] = "dev",
    target: TargetOption = None,
    gpu: Annotated[bool, typer.Option(help="AWS: it serves on GPU instances (the environment's GPU image)")] = False,
) -> None:
    """Register a model package: its artifact is stored, its hash checked, its version numbered."""
    from sagegate.registry import Stage

    try:
        chosen = Stage(stage)
    except ValueError:
        fail(f"stage must be dev, staging or production, not {stage!r}")
    registry = _registry(target, gpu=gpu)
    with console.status(f"registering {package_path}"):
        version, created = _registry_call(lambda: registry.register(package_path, stage=chosen))
    what = "registered" if created else "already registered as"
    console.print(
        f"[green]{what}[/] {version.model} v{version.version} ({version.status.value}, stage "
        f"{version.stage.value}, sha256 {version.sha256[:12]})",
        highlight=False,
    )


@models_app.command("list")
def models_list(target: TargetOption = None) -> None:
    """Every registered model with its latest version."""
    from rich.table import Table

    registry = _registry(target)
    table = Table(title="registered models")
    for column in ("model", "versions", "latest", "status", "stage", "framework", "metrics"):
        table.add_column(column)
    for name in _registry_call(registry.models):
        versions = _registry_call(lambda name=name: registry.versions(name))
        latest = versions[-1]
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in sorted(latest.manifest.metrics.items())[:3])
        table.add_row(
            name,
            str(len(versions)),
            latest.version,
            latest.status.value,
            latest.stage.value,
            latest.manifest.framework.value,
            metrics,
        )
    Console().print(table)


@models_app.command("show")
def models_show(
    model: str,
    version: Annotated[str | None, typer.Option(help="one version in detail")] = None,
    target: TargetOption = None,
) -> None:
    """A model's versions, or one version's manifest."""
    from rich.table import Table

    registry = _registry(target)
    if version is not None:
        found = _registry_call(lambda: registry.get(model, version))
        Console().print_json(
            json.dumps(
                {
                    **found.summary(),
                    "artifact": found.artifact_uri,
                    "decision_reason": found.decision_reason,
                    "manifest": found.manifest.model_dump(mode="json", exclude_none=True),
                }
            )
        )
        _print_importance(found)
        return
    from sagegate.registry import chosen_version

    versions = _registry_call(lambda: registry.versions(model))
    if not versions:
        fail(f"model {model!r} is not registered")
    table = Table(title=f"{model}: versions")
    for column in ("version", "status", "stage", "framework", "metrics", "sha256", "created", "decided by"):
        table.add_column(column)
    for v in versions:
        metrics = ", ".join(f"{k} {x:.3f}" for k, x in sorted(v.manifest.metrics.items())[:3])
        table.add_row(
            v.version,
            v.status.value,
            v.stage.value,
            v.manifest.framework.value,
            metrics,
            v.sha256[:12],
            v.created_at.strftime("%Y-%m-%d %H:%M"),
            v.decided_by or "",
        )
    Console().print(table)
    # the importance of the version that serves (the latest approved), else of the newest
    _print_importance(chosen_version(versions) or versions[-1])


def _print_importance(version: ModelVersion) -> None:
    """The version's feature importance, where it was packaged with an explainer."""
    if version.manifest.explainer is not None:
        from sagegate.explain.waterfall import importance_table

        Console().print(importance_table(version.manifest.explainer, version=version.version))


@models_app.command("approve")
def models_approve(
    model: str,
    version: str,
    by: Annotated[str, typer.Option(help="who approves")],
    reason: Annotated[str | None, typer.Option()] = None,
    target: TargetOption = None,
) -> None:
    """Approve a version for deployment."""
    registry = _registry(target)
    done = _registry_call(lambda: registry.approve(model, version, by=by, reason=reason))
    console.print(f"[green]approved[/] {done.model} v{done.version} by {by}", highlight=False)


@models_app.command("reject")
def models_reject(
    model: str,
    version: str,
    by: Annotated[str, typer.Option(help="who rejects")],
    reason: Annotated[str, typer.Option(help="why (required)")],
    target: TargetOption = None,
) -> None:
    """Reject a version, with the reason."""
    registry = _registry(target)
    done = _registry_call(lambda: registry.reject(model, version, by=by, reason=reason))
    console.print(f"[yellow]rejected[/] {done.model} v{done.version} by {by}: {reason}", highlight=False)


@models_app.command("stage")
def models_stage(model: str, version: str, stage: str, target: TargetOption = None) -> None:
    """Move a version to a stage: dev, staging or production."""
    from sagegate.registry import Stage

    try:
        chosen = Stage(stage)
    except ValueError:
        fail(f"stage must be dev, staging or production, not {stage!r}")
    registry = _registry(target)
    done = _registry_call(lambda: registry.set_stage(model, version, chosen))
    console.print(f"{done.model} v{done.version} is now in {done.stage.value}", highlight=False)


def _stack_paths() -> Any:
    from sagegate.local.stack import StackPaths
    from sagegate.targets import state_dir

    return StackPaths(state_dir())


@app.command()
def monitor(
    model: Annotated[str, typer.Argument(help="the model to check")],
    version: Annotated[str | None, typer.Option(help="one version (default: every version with traffic)")] = None,
    window: Annotated[str | None, typer.Option(help="e.g. 30m, 1h, 7d (default: the manifest's, 1h)")] = None,
    report: Annotated[Path | None, typer.Option(help="write the HTML report (plots) to this file")] = None,
    at: Annotated[str | None, typer.Option(help="end of the window, ISO 8601 (default: now)")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="list every check, not only those not passed")] = False,
) -> None:
    """Check a model's recent predictions against its training baseline: data quality, drift,
    accuracy from feedback, bias. Exits 1 when a check fails, 2 on bad input."""
    from sagegate.monitoring.command import MonitorError, print_run, run_monitor

    paths = _stack_paths()
    try:
        run = run_monitor(paths.registry, paths.predictions, model, version=version, window=window, at=at)
    except MonitorError as exc:
        fail(str(exc), code=2)
    out = Console()
    print_run(out, run, everything=show_all)
    if report is not None:
        from sagegate.monitoring.report import write_report

        try:
            write_report(report, run)
        except OSError as exc:
            fail(f"cannot write the report to {report}: {exc.strerror or exc}", code=2)
        out.print(f"report -> {report}", highlight=False, soft_wrap=True)
    if run.failed:
        raise typer.Exit(1)


@app.command()
def deploy(
    model: str,
    version: Annotated[str, typer.Option(help="the registered, approved version to deploy")],
    traffic: Annotated[float | None, typer.Option(help="percent of traffic for the new version (A/B, canary)")] = None,
    shadow: Annotated[bool, typer.Option(help="copy traffic to the new version, answers discarded")] = False,
    replace: Annotated[bool, typer.Option(help="send all traffic to the new version")] = False,
    strategy: Annotated[
        str | None, typer.Option(help="canary | linear (a ramp with alarms); AWS also: ab, shadow, replace")
    ] = None,
    steps: Annotated[str | None, typer.Option(help="ramp steps in percent, e.g. 5,20,50,100")] = None,
    bake_seconds: Annotated[int, typer.Option(help="time at each step, watching the alarms")] = 600,
    max_error_rate: Annotated[float, typer.Option(help="5XX rate that rolls back")] = 0.01,
    max_p99_ms: Annotated[float, typer.Option(help="p99 latency (ms) that rolls back")] = 250.0,
    min_requests: Annotated[int, typer.Option(help="requests a bake needs for a verdict")] = 20,
    target: TargetOption = None,
) -> None:
    """Deploy a version: a server for it, then the route and weights (local), or the workflow (AWS)."""
    from sagegate.deploy.local import deploy as deploy_local
    from sagegate.targets import resolve_target

    chosen = _registry_call(lambda: resolve_target(target))
    if chosen.kind != "local":
        _deploy_aws(
            chosen,
            model,
            version,
            traffic=traffic,
            shadow=shadow,
            replace=replace,
            strategy=strategy,
            policy={
                "steps": _steps(steps),
                "bake_seconds": bake_seconds,
                "alarms": {
                    "max_error_rate": max_error_rate,
                    "max_p99_latency_ms": max_p99_ms,
                    "min_requests": min_requests,
                },
            },
        )
        return
    if strategy in ("canary", "linear"):
        _ramp_local(model, version, strategy, steps, bake_seconds, (max_error_rate, max_p99_ms, min_requests))
        return
    if strategy is not None:
        fail("on the local stack --strategy is canary or linear; use --traffic, --shadow or --replace for the rest")
    with console.status(f"deploying {model} v{version}"):
        route = _registry_call(
            lambda: deploy_local(_stack_paths(), model, version, traffic=traffic, shadow=shadow, replace=replace)
        )
    _print_route(route)


def _steps(steps: str | None) -> list[float]:
    try:
        return [float(s) for s in steps.split(",")] if steps else []
    except ValueError:
        fail(f"--steps takes percentages separated by commas, e.g. 5,20,50,100, not {steps!r}")


def _deploy_aws(
    target: Any,
    model: str,
    version: str,
    *,
    traffic: float | None,
    shadow: bool,
    replace: bool,
    strategy: str | None,
    policy: dict[str, Any],
) -> None:
    from botocore.session import get_session

    from sagegate.deploy.aws import follow_rollout, rollout_input, start_rollout

    if not target.state_machine_arn:
        fail(f"target {target.name!r} has no state_machine_arn (the deployment workflow's ARN)")
    chosen = strategy or ("shadow" if shadow else "replace" if replace else "ab" if traffic is not None else "canary")
    payload = _registry_call(lambda: rollout_input(model, version, strategy=chosen, traffic=traffic, **policy))
    sfn = get_session().create_client("stepfunctions", region_name=target.region)
    arn = _registry_call(lambda: start_rollout(sfn, target.state_machine_arn, payload))
    console.print(f"rollout started: {arn}", highlight=False)
    with console.status("following the rollout") as status:
        final = _registry_call(lambda: follow_rollout(sfn, arn, on_step=lambda name: status.update(f"rollout: {name}")))
    if final != "SUCCEEDED":
        fail(f"the rollout ended {final}: see {arn}")
    console.print(f"[green]{model} v{version} rolled out ({chosen})[/]", highlight=False)


def _ramp_local(
    model: str, version: str, strategy: str, steps: str | None, bake_seconds: int, alarms: tuple[float, float, int]
) -> None:
    from sagegate.deploy.canary import rollout
    from sagegate.deploy.policy import AlarmThresholds, RolloutPolicy

    try:
        policy = RolloutPolicy(
            strategy=strategy,
            steps=_steps(steps),
            bake_seconds=bake_seconds,
            alarms=AlarmThresholds(max_error_rate=alarms[0], max_p99_latency_ms=alarms[1], min_requests=alarms[2]),
        )
    except ValueError as exc:
        message = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        fail(f"rollout policy: {message}")
    with console.status(f"rolling out {model} v{version} ({strategy} {policy.steps})") as status:
        route = _registry_call(lambda: rollout(_stack_paths(), model, version, policy, on_step=status.update))
    _print_route(route)


def _print_route(route: Any) -> None:
    shares = ", ".join(
        f"{v.name} (v{v.model_version}) {v.weight:g}%" + (" shadow" if v.name == route.shadow else "")
        for v in route.variants
    )
    console.print(f"[green]{route.model}[/] on {route.endpoint}: {shares}", highlight=False)


@app.command()
def route(
    model: str,
    timeout_ms: Annotated[
        int | None, typer.Option(help="time for an endpoint call, retries included; then the answer degrades")
    ] = None,
    attempts: Annotated[
        int | None, typer.Option(help="endpoint attempts at most (a retry only when one can help)")
    ] = None,
    cache_ttl_s: Annotated[int | None, typer.Option(help="how long a prediction is served from the cache")] = None,
    fallback: Annotated[str | None, typer.Option(help="model asked when this one cannot answer ('' for none)")] = None,
) -> None:
    """Show the model's live route, or change its settings (time budget, attempts, cache TTL, fallback)."""
    from pydantic import ValidationError

    from sagegate.deploy.routes import SqliteRouteStore

    store = SqliteRouteStore(_stack_paths().routes)
    current = store.get(model)
    if current is None:
        fail(f"model {model!r} is not deployed")
    changes: dict[str, Any] = {
        name: value
        for name, value in (("timeout_ms", timeout_ms), ("attempts", attempts), ("cache_ttl_s", cache_ttl_s))
        if value is not None
    }
    if fallback is not None:
        if fallback and store.get(fallback) is None:
            fail(f"fallback model {fallback!r} is not deployed")
        changes["fallback"] = fallback or None
    if changes:
        try:
            current = type(current).model_validate({**current.model_dump(), **changes})
        except ValidationError as exc:
            error = exc.errors()[0]
            fail(f"--{str(error['loc'][0]).replace('_', '-')}: {error['msg']}")
        store.put(current, "settings " + ", ".join(f"{k}={v}" for k, v in changes.items()))
    _print_route(current)
    budget = f"{current.timeout_ms} ms" if current.timeout_ms else "the gateway's default"
    tries = current.attempts or "the gateway's default"
    console.print(
        f"time budget {budget}, attempts {tries}, cache TTL {current.cache_ttl_s} s, "
        f"fallback {current.fallback or 'none'}",
        highlight=False,
    )


@app.command()
def rollback(model: str) -> None:
    """Put the model's previous route (versions and weights) back."""
    from sagegate.deploy.local import rollback as rollback_local

    with console.status(f"rolling back {model}"):
        route = _registry_call(lambda: rollback_local(_stack_paths(), model))
    _print_route(route)


@app.command()
def undeploy(model: str) -> None:
    """Take the model off the gateway and stop its servers."""
    from sagegate.deploy.local import undeploy as undeploy_local

    _registry_call(lambda: undeploy_local(_stack_paths(), model))
    console.print(f"{model} undeployed", highlight=False)


@app.command()
def dev(
    port: Annotated[int, typer.Option(help="the gateway's port")] = 8000,
    emulator_port: Annotated[int, typer.Option(help="the SageMaker runtime emulator's port")] = 8001,
    redis_port: Annotated[int | None, typer.Option(help="redis-server's port (default: a free one)")] = None,
    server_ports: Annotated[
        int | None, typer.Option(help="model servers on this port and up (default: free ones)")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="require this x-api-key on /v1 requests (default: SAGEGATE_API_KEY, else none)")
    ] = None,
) -> None:
    """Run the local stack: gateway, runtime emulator, one server per deployed version, Redis."""
    import signal
    import time

    from rich.table import Table

    from sagegate.local.stack import DevStack, read_status, reap_orphans

    paths = _stack_paths()
    if read_status(paths) is not None:
        fail(f"a local stack is already running from {paths.root} (see {paths.status})")
    reaped = reap_orphans(paths)
    if reaped:
        console.print(f"stopped {len(reaped)} processes left by a local stack that was killed", highlight=False)
    stack = DevStack(
        paths,
        gateway_port=port,
        emulator_port=emulator_port,
        redis_url=os.environ.get("REDIS_URL"),
        redis_port=redis_port,
        server_ports=server_ports,
        api_key=api_key or os.environ.get("SAGEGATE_API_KEY"),
    )

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # Both set explicitly: a shell that starts us in the background leaves SIGINT ignored.
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    try:
        with console.status("starting the local stack"):
            stack.start()
        for note in stack.notes:
            console.print(note, highlight=False)
        table = Table(title="sagegate dev")
        for column in ("process", "pid", "url", "OIP gRPC", "log"):
            table.add_column(column)
        for child in [*stack.children.values(), *stack.servers.values()]:
            table.add_row(child.name, str(child.child.pid), child.url, child.grpc, str(child.child.spec.log))
        Console().print(table)
        console.print(f"API docs: {stack.children['gateway'].url}/docs   (Ctrl-C stops everything)", highlight=False)
        while True:
            try:
                stack.reconcile()
            except Exception as exc:  # the supervisor outlives its own bugs as it outlives its children
                console.print(f"supervisor: {type(exc).__name__}: {exc}", highlight=False)
            for event in stack.new_events():
                console.print(event, highlight=False)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        fail(str(exc))
    finally:
        stack.stop()
    console.print("local stack stopped", highlight=False)


def _gateway(target: str | None, url: str | None, api_key: str | None, connections: int = 16) -> Any:
    from sagegate.client import gateway_for

    return _registry_call(
        lambda: gateway_for(
            target, url=url, api_key=api_key or os.environ.get("SAGEGATE_API_KEY"), connections=connections
        )
    )


UrlOption = Annotated[str | None, typer.Option(help="the API's URL (default: the target's)")]
ApiKeyOption = Annotated[str | None, typer.Option(help="API key (default: SAGEGATE_API_KEY; else SigV4)")]


@app.command()
def predict(
    model: str,
    features: Annotated[str, typer.Option(help="JSON object of features, or @FILE")],
    user: Annotated[str | None, typer.Option(help="user id (sticky A/B variant, online features)")] = None,
    version: Annotated[str | None, typer.Option(help="pin a version")] = None,
    target: TargetOption = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    explain: Annotated[bool, typer.Option(help="each feature's contribution too, drawn as a waterfall")] = False,
) -> None:
    """Ask the prediction API for one prediction."""
    from sagegate.client import ApiError

    if features.startswith("@"):
        try:
            text = Path(features[1:]).read_text()
        except OSError as exc:
            fail(f"--features {features}: {exc.strerror or exc}")
    else:
        text = features
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        fail(f"--features is not valid JSON: {exc}")
    if not isinstance(parsed, dict):
        fail("--features must be a JSON object of feature names to values")
    client = _gateway(target, url, api_key)
    try:
        answer = client.predict(model, parsed, user_id=user, version=version, explain=explain)
    except ApiError as exc:
        fail(str(exc))
    console = Console()
    console.print_json(json.dumps(answer))
    if explain and answer.get("explanation"):
        from sagegate.explain.waterfall import waterfall

        console.print(waterfall(answer["explanation"], parsed))


@app.command()
def bench(
    model: str,
    requests: Annotated[int, typer.Option(help="predictions to send")] = 2000,
    concurrency: Annotated[int, typer.Option(help="requests in flight")] = 16,
    users: Annotated[int, typer.Option(help="distinct simulated users")] = 500,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="a different record per request, generated from the manifest: no hits")
    ] = False,
    data: Annotated[Path | None, typer.Option(help="records to send: a JSON list or JSON Lines file")] = None,
    target: TargetOption = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Load the prediction API and print throughput and a latency histogram. By default the model's
    sample records are sent again and again (mostly cache hits); --no-cache or --data send others."""
    from sagegate.client import ApiError
    from sagegate.local.loadtest import run_load, show_load

    if no_cache and data is not None:
        fail("--no-cache and --data are two ways to choose the records: give one")
    client = _gateway(target, url, api_key, connections=concurrency)
    try:
        manifests = list(client.model(model).get("manifests", {}).values())
    except ApiError as exc:
        fail(str(exc))
    if data is not None:
        records = _records_file(data)
    elif no_cache:
        from sagegate.manifest import Feature
        from sagegate.packaging.builder import generated_records

        latest = manifests[-1] if manifests else {}
        features = [Feature.model_validate(f) for f in latest.get("features", [])]
        records = generated_records(features, latest.get("sample", []), n=requests, seed=os.getpid())
    else:
        records = [r for m in manifests for r in m.get("sample", [])]
    if not records:
        fail(f"model {model!r} has no records to send (give --data FILE)")
    result = run_load(
        client,
        model,
        records,
        requests=requests,
        concurrency=concurrency,
        users=users,
        console=console,
        in_order=no_cache or data is not None,
    )
    show_load(Console(), result)
    if result.errors == requests:
        fail("every request failed")


def _records_file(path: Path) -> list[dict[str, Any]]:
    """Records from a JSON list or a JSON Lines file, or one line and exit 1."""
    try:
        text = path.read_text()
    except OSError as exc:
        fail(f"--data {path}: {exc.strerror or exc}")
    try:
        parsed = (
            json.loads(text)
            if text.lstrip().startswith("[")
            else [json.loads(x) for x in text.splitlines() if x.strip()]
        )
    except ValueError as exc:
        fail(f"--data {path}: not a JSON list or JSON Lines: {exc}")
    records = [r.get("features", r) if isinstance(r, dict) else r for r in parsed]
    if not all(isinstance(r, dict) for r in records):
        fail(f"--data {path}: every record must be a JSON object of feature names to values")
    return records


@app.command()
def batch(
    source: Annotated[Path, typer.Argument(metavar="INPUT", help="a CSV, JSON Lines or Parquet file, or a folder")],
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for predictions, errors and checkpoints")],
    model: Annotated[str | None, typer.Option(help="a registered model (local registry)")] = None,
    version: Annotated[str | None, typer.Option(help="its version (default: the latest approved)")] = None,
    package_dir: Annotated[Path | None, typer.Option("--package", help="a model package folder instead")] = None,
    id_column: Annotated[list[str] | None, typer.Option(help="input columns copied to the output")] = None,
    chunk_rows: Annotated[int, typer.Option(help="rows per chunk (and per checkpoint)")] = 50_000,
    threads: Annotated[int, typer.Option(help="ONNX Runtime threads (0: all cores)")] = 0,
    restart: Annotated[
        bool, typer.Option(help="predict everything again, discarding a run in --output that cannot continue")
    ] = False,
    explain: Annotated[
        bool, typer.Option(help="add base_value and a contribution.<feature> column per feature to each row")
    ] = False,
) -> None:
    """Predict every record of a file or folder; a killed run resumes from its checkpoint."""
    from contextlib import ExitStack

    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.text import Text

    class RowsPerSecond(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{task.speed:,.0f} rows/s" if task.speed else "")

    from sagegate.batch.engine import RunConflict, count_rows, run_batch, shards
    from sagegate.batch.runner import batch_model
    from sagegate.registry import chosen_version
    from sagegate.server.exceptions import ModelLoadError

    if (model is None) == (package_dir is None):
        fail("give --model (registered) or --package (a package folder)")
    if chunk_rows < 1:
        fail("--chunk-rows must be at least 1")
    if not source.exists():
        fail(f"no input at {source}")
    if model is not None:
        registry = _registry("local")
        found = chosen_version(_registry_call(lambda: registry.versions(model)), version)
        if found is None:
            fail(f"model {model!r} has no {'version ' + version if version else 'approved version'}")
        package_dir = Path(found.artifact_uri)
    assert package_dir is not None
    with ExitStack() as stack:
        try:
            loaded = stack.enter_context(batch_model(package_dir, threads=threads))
            files = shards(source)
        except (ModelLoadError, ValueError, FileNotFoundError) as exc:
            fail(getattr(exc, "message", str(exc)))
        if explain and loaded.explainer is None:
            name = f"{loaded.manifest.name} v{loaded.manifest.version}"
            fail(f"model {name} has no explainer: package it with explanations on (the default)")
        total = sum(count_rows(f) for f in files)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f} rows"),
            RowsPerSecond(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task(
                f"{loaded.manifest.name} v{loaded.manifest.version} over {len(files)} file(s)", total=total
            )
            try:
                summary = run_batch(
                    loaded,
                    source,
                    output,
                    chunk_rows=chunk_rows,
                    id_columns=id_column,
                    on_chunk=lambda n: progress.advance(task, n),
                    restart=restart,
                    explain=explain,
                )
            except RunConflict as exc:
                progress.stop()
                fail(str(exc))
            elapsed = progress.tasks[0].elapsed or 1e-9
    console.print(
        f"{summary.rows:,} rows: {summary.predicted:,} predicted, {summary.rejected:,} rejected "
        f"(see {output / 'errors.jsonl'}), {summary.skipped_chunks} chunks already done; "
        f"{summary.rows / elapsed:,.0f} rows/s",
        highlight=False,
    )
    for path in summary.outputs:
        console.print(f"  {path}", highlight=False)


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
