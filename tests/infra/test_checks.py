"""The checks a template must pass before anyone deploys it: cdk-nag's AwsSolutions pack (every
finding fixed or acknowledged with its reason), cfn-lint (no errors; the warnings it may skip
are listed with reasons in .cfnlintrc.yaml) and checkov, a second scanner of its own rules (no
failed check; each skip says why, on its resource or in .checkov.yaml)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk
from aws_cdk import aws_iam as iam

from infra.app import build
from infra.nag import acknowledge
from tests.multi_account import context as multi_account_context

ROOT = Path(__file__).resolve().parents[2]
CONTEXT = json.loads((ROOT / "cdk.json").read_text())["context"]
# checkov has an environment of its own (`make setup`): its pins (boto3, packaging) would downgrade ours.
CHECKOV = Path(sys.prefix) / "checkov" / "bin" / "checkov"


def _app(outdir: Path, base: dict[str, object] = CONTEXT, **context: object) -> cdk.App:
    return cdk.App(context={**base, "aws:cdk:bundling-stacks": [], **context}, outdir=str(outdir))


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> tuple[cdk.App, Path]:
    outdir = tmp_path_factory.mktemp("cdk.out")
    app = _app(outdir)
    build(app)  # with cdk-nag: synth raises on any finding that is not acknowledged
    app.synth()
    return app, outdir


@pytest.fixture(scope="module")
def multi_account(tmp_path_factory: pytest.TempPathFactory) -> tuple[cdk.App, Path]:
    """tests/multi_account.py's settings: the registry stack, and environments that read from it."""
    outdir = tmp_path_factory.mktemp("cdk.out-multi")
    app = _app(outdir, multi_account_context())
    build(app)
    app.synth()
    return app, outdir


def _cross_account_templates(outdir: Path) -> list[Path]:
    return [outdir / f"sagegate-{name}.template.json" for name in ("registry", "staging", "prod")]


def test_the_registry_and_the_environments_reading_it_pass_aws_solutions_and_cfn_lint(
    multi_account: tuple[cdk.App, Path],
) -> None:
    _, outdir = multi_account  # synth passed cdk-nag
    templates = [str(p) for p in _cross_account_templates(outdir)]
    result = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), "--config-file", str(ROOT / ".cfnlintrc.yaml"), *templates],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_fails_no_check_of_the_registry_and_the_environments_reading_it(
    multi_account: tuple[cdk.App, Path],
) -> None:
    _, outdir = multi_account
    if not CHECKOV.exists():
        pytest.fail(f"checkov is not installed at {CHECKOV}: run `make setup`")
    files = [arg for p in _cross_account_templates(outdir) for arg in ("--file", str(p))]
    result = subprocess.run(
        [str(CHECKOV), "--config-file", str(ROOT / ".checkov.yaml"), "--output", "json", *files],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    found = json.loads(result.stdout)
    reports = found if isinstance(found, list) else [found]
    failed = [(c["check_id"], c["resource"]) for r in reports for c in r["results"]["failed_checks"]]
    assert not failed, "\n".join(map(str, sorted(set(failed))))
    assert result.returncode == 0, result.stderr[-3000:]


def test_every_environment_passes_aws_solutions_and_every_acknowledgment_says_why(
    synthesized: tuple[cdk.App, Path],
) -> None:
    app, outdir = synthesized
    assert {p.name for p in outdir.glob("*.template.json")} == {
        "sagegate-dev.template.json",
        "sagegate-staging.template.json",
        "sagegate-prod.template.json",
    }
    acknowledged = {
        (construct.node.path, rule): reason
        for construct in app.node.find_all()
        for entry in construct.node.metadata
        if entry.type == "aws:cdk:acknowledged-rules"
        for rule, reason in (entry.data or {}).items()
        if "AwsSolutions" in rule
    }
    assert len(acknowledged) > 20
    short = {key: reason for key, reason in acknowledged.items() if len(reason) < 40}
    assert not short, f"acknowledgments without a real reason: {short}"
    # What is fixed, not acknowledged: no managed policies on our Lambdas, no WAF exception in prod.
    assert not any(
        ("AWSLambdaBasicExecutionRole" in rule or "AWSLambdaVPCAccessExecutionRole" in rule)
        and "/framework-" not in path  # the CDK provider framework's own functions (custom_resources.Provider)
        for path, rule in acknowledged
    )
    assert not any(path.startswith("sagegate-prod") and rule.endswith("APIG3") for path, rule in acknowledged)


def test_an_unacknowledged_finding_fails_the_synth_and_is_named(tmp_path: Path) -> None:
    app = _app(tmp_path, env="dev")
    stacks = build(app)
    stacks["dev"].api.function.add_to_role_policy(iam.PolicyStatement(actions=["s3:*"], resources=["*"]))
    with pytest.raises(RuntimeError, match=r"ValidationFailed[\s\S]*AwsSolutions-IAM5\[Action::s3:\*\]"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    found = {v["ruleName"] for p in report["pluginReports"] for v in p["violations"]}
    # The role's Resource::* is acknowledged (its VPC and registry statements); the action wildcard is not.
    assert found == {"AwsSolutions-IAM5[Action::s3:*]"}


def test_cfn_lint_finds_no_errors_in_any_template(synthesized: tuple[cdk.App, Path]) -> None:
    _, outdir = synthesized
    templates = sorted(str(p) for p in outdir.glob("*.template.json"))
    result = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), "--config-file", str(ROOT / ".cfnlintrc.yaml"), *templates],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_fails_no_check_and_every_skip_says_why(synthesized: tuple[cdk.App, Path]) -> None:
    _, outdir = synthesized
    if not CHECKOV.exists():
        pytest.fail(f"checkov is not installed at {CHECKOV}: run `make setup`")
    config = ROOT / ".checkov.yaml"
    files = [arg for p in sorted(outdir.glob("*.template.json")) for arg in ("--file", str(p))]
    result = subprocess.run(
        [str(CHECKOV), "--config-file", str(config), "--output", "json", *files],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    found = json.loads(result.stdout)
    reports = found if isinstance(found, list) else [found]
    results = [r["results"] for r in reports]
    failed = [(c["check_id"], c["check_name"], c["resource"]) for r in results for c in r["failed_checks"]]
    assert not failed, "\n".join(map(str, sorted(set(failed))))
    assert result.returncode == 0, result.stderr[-3000:]
    assert sum(r["summary"]["passed"] for r in reports) > 500
    skipped = {
        (c["check_id"], c["check_result"].get("suppress_comment", "")) for r in results for c in r["skipped_checks"]
    }
    assert skipped, "the per-resource skips (infra.nag.skip_check) reach checkov"
    short = {check: reason for check, reason in skipped if len(reason) < 40}
    assert not short, f"skips without a real reason: {short}"
    # The checks skipped for every resource are each explained in the file.
    text = config.read_text()
    listed = re.search(r"^skip-check:\n((?:  - .*\n)+)", text, re.MULTILINE)
    assert listed is not None
    for check in re.findall(r"- (\S+)", listed.group(1)):
        assert re.search(rf"^#\s+{check}\s+\S.{{40,}}$", text, re.MULTILINE), f"{check} has no reason in {config.name}"


def test_two_grants_making_one_finding_keep_both_reasons() -> None:
    stack = cdk.Stack(cdk.App(), "S")
    role = iam.Role(stack, "Role", assumed_by=iam.AccountRootPrincipal())
    for reason in ("ENIs have no resource scope", "X-Ray has no resource scope", "ENIs have no resource scope"):
        acknowledge(role, "IAM5[Resource::*]", reason)
    (latest,) = [entry.data for entry in role.node.metadata if entry.type == "aws:cdk:acknowledged-rules"][-1:]
    assert latest == {
        "Annotation::AwsSolutions-IAM5[Resource::*]": "ENIs have no resource scope; X-Ray has no resource scope"
    }
