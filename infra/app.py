"""The CDK app: one stack per environment of cdk.json's context, checked by cdk-nag (AwsSolutions).

cdk deploy --all -c env=dev     (or: python -m infra.app, which synthesizes to cdk.out)
"""

from __future__ import annotations

import os

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra.config import CONTEXT_KEY, load_environments
from infra.stacks.sagegate_stack import SagegateStack


def build(app: cdk.App, *, nag: bool = True) -> dict[str, SagegateStack]:
    environments = load_environments(app.node.try_get_context(CONTEXT_KEY))
    chosen = app.node.try_get_context("env")
    if chosen and chosen not in environments:
        raise SystemExit(f"error: no environment {chosen!r} in cdk.json (have: {', '.join(environments)})")
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
    for name, stack in stacks.items():
        cdk.Tags.of(stack).add("project", "sagegate")
        cdk.Tags.of(stack).add("environment", name)
    if nag:
        cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    return stacks


def main() -> None:
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    app = cdk.App()
    build(app)
    app.synth()


if __name__ == "__main__":
    main()
