"""The CDK app: one stack per environment of cdk.json's context, and the registry stack
(sagegate-registry) where environments name a `registry_account`; checked by cdk-nag (AwsSolutions).

npx cdk deploy --all -c env=dev      the CDK CLI runs this module (cdk.json "app")
npx cdk deploy -c env=registry       the registry of the environments in other accounts (deploy it first)
python -m infra.app [--env dev]      the same synth without the CLI: templates in cdk.out/
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")  # before jsii starts node

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra.config import CONTEXT_KEY, REGISTRY, ConfigError, load_environments, registry_of
from infra.stacks.registry_stack import RegistryStack
from infra.stacks.sagegate_stack import SagegateStack

ROOT = Path(__file__).resolve().parents[1]


def build(app: cdk.App, *, nag: bool = True) -> dict[str, SagegateStack]:
    """The environments' stacks (the registry stack, where there is one, is the app's child
    `sagegate-registry`: see `registry_stack`)."""
    environments = load_environments(app.node.try_get_context(CONTEXT_KEY))
    registry = registry_of(environments)
    chosen = app.node.try_get_context("env")
    if chosen and chosen not in environments and not (chosen == REGISTRY and registry):
        raise SystemExit(f"error: no environment {chosen!r} in cdk.json (have: {', '.join(environments)})")
    if registry and chosen in (None, REGISTRY):
        stack = RegistryStack(
            app,
            registry.prefix,
            config=registry,
            env=cdk.Environment(account=registry.account, region=registry.region),
            description="sagegate registry: model packages, images, and what the environments' accounts may read",
        )
        cdk.Tags.of(stack).add("project", "sagegate")
        cdk.Tags.of(stack).add("environment", REGISTRY)
    stacks = {
        name: SagegateStack(
            app,
            f"sagegate-{name}",
            config=config,
            env=cdk.Environment(account=config.account, region=config.region),
            description=f"sagegate {name}: prediction API, cache, endpoints, registry workflows, monitoring",
        )
        for name, config in environments.items()
        if not chosen or name == chosen
    }
    for name, env_stack in stacks.items():
        cdk.Tags.of(env_stack).add("project", "sagegate")
        cdk.Tags.of(env_stack).add("environment", name)
    if nag:
        cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    return stacks


def registry_stack(app: cdk.App) -> RegistryStack | None:
    found = app.node.try_find_child(f"sagegate-{REGISTRY}")
    return found if isinstance(found, RegistryStack) else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.app", description="synthesize sagegate's stacks")
    parser.add_argument("--env", help="one environment of cdk.json (default: every one)")
    args = parser.parse_args(argv)
    context: dict[str, object] = {}
    outdir = None
    if "CDK_OUTDIR" not in os.environ:  # not run by the CDK CLI, which passes cdk.json's context itself
        context = json.loads((ROOT / "cdk.json").read_text())["context"]
        outdir = str(ROOT / "cdk.out")
    if args.env:
        context["env"] = args.env
    try:
        app = cdk.App(context=context or None, outdir=outdir)
        build(app)
        app.synth()
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    except RuntimeError as exc:  # cdk-nag's findings, or CDK's own validation: the report says which
        raise SystemExit(f"error: {str(exc).strip()}") from None


if __name__ == "__main__":
    main()
