"""Deployments in AWS: `sagegate deploy --target ENV` starts the deployment workflow (Step Functions)
and follows it. The workflow itself (stepfunctions/deploy_model.asl.json) does the rollout."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from sagegate.registry import RegistryError

__all__ = ["STRATEGIES", "follow_rollout", "rollout_input", "start_rollout"]

STRATEGIES = ("canary", "linear", "ab", "shadow", "replace")


def rollout_input(
    model: str,
    version: str,
    *,
    strategy: str,
    traffic: float | None = None,
    steps: list[float] | None = None,
    bake_seconds: int = 600,
    alarms: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The workflow's input, from the one rollout policy (sagegate.deploy.policy)."""
    from pydantic import ValidationError

    from sagegate.deploy.policy import RolloutPolicy

    if strategy not in STRATEGIES:
        raise RegistryError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    if strategy == "ab":
        if traffic is None or not 0 < traffic < 100:
            raise RegistryError("an A/B rollout needs --traffic between 0 and 100")
        steps = [traffic]
    try:
        policy = RolloutPolicy(strategy=strategy, steps=steps or [], bake_seconds=bake_seconds, alarms=alarms or {})
    except ValidationError as exc:
        raise RegistryError(f"rollout policy: {exc.errors()[0]['msg']}") from None
    # Asked for by a person: a version that was rolled back may be tried again (a registry event never does).
    return {**policy.workflow_input(model, version), "trigger": "manual"}


_ATTEMPTS = 20


def start_rollout(sfn: Any, state_machine_arn: str, payload: dict[str, Any]) -> str:
    """Starts the rollout; one execution per (model, version, strategy) while one runs or has
    succeeded, so a repeated request finds it instead of starting a second rollout. After a rollout
    that failed (rolled back) the next attempt is a new execution, `<name>-2`, `-3`, ..."""
    base = f"deploy-{payload['model']}-v{payload['version']}-{payload['strategy']}"[:76]
    for attempt in range(1, _ATTEMPTS + 1):
        name = base if attempt == 1 else f"{base}-{attempt}"
        try:
            answer = sfn.start_execution(stateMachineArn=state_machine_arn, name=name, input=json.dumps(payload))
        except sfn.exceptions.ExecutionAlreadyExists:
            arn = state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"
            status = sfn.describe_execution(executionArn=arn)["status"]
            if status in ("RUNNING", "SUCCEEDED"):
                raise RegistryError(
                    f"a rollout of {payload['model']} v{payload['version']} ({payload['strategy']}) already "
                    f"exists: {arn} ({status})"
                ) from None
            continue
        return str(answer["executionArn"])
    raise RegistryError(f"{_ATTEMPTS} rollouts of {payload['model']} v{payload['version']} failed: look at why first")


def follow_rollout(
    sfn: Any, execution_arn: str, *, on_step: Callable[[str], None], poll: float = 2.0, timeout: float = 6 * 3600
) -> str:
    """Reports each state the workflow enters until it ends; returns its final status."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        history = sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
        for event in history:
            details = event.get("stateEnteredEventDetails")
            if details and event["id"] not in seen:
                seen.add(event["id"])
                on_step(details["name"])
        status = str(sfn.describe_execution(executionArn=execution_arn)["status"])
        if status != "RUNNING" or time.monotonic() > deadline:
            return status
        time.sleep(poll)
