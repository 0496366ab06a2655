from __future__ import annotations

import pytest
from pydantic import ValidationError

from sagegate.deploy.aws import rollout_input
from sagegate.deploy.canary import ServerWindow
from sagegate.deploy.policy import AlarmThresholds, RolloutPolicy


def test_the_policy_fills_and_checks_its_steps() -> None:
    assert RolloutPolicy().steps == [5, 20, 50, 100]
    assert RolloutPolicy(strategy="linear").steps == [25, 50, 75, 100]
    for steps, message in (([20, 5, 100], "increase"), ([5, 20], "ends at 100"), ([0, 100], "above 0")):
        with pytest.raises(ValidationError, match=message):
            RolloutPolicy(steps=steps)


def test_aws_and_local_read_the_same_policy() -> None:
    policy = RolloutPolicy(steps=[10, 100], bake_seconds=30, alarms=AlarmThresholds(max_error_rate=0.02))
    assert rollout_input("fraud", "2", strategy="canary", steps=[10, 100], bake_seconds=30)["steps"] == policy.steps
    assert policy.workflow_input("fraud", "2")["alarms"]["max_error_rate"] == 0.02


def test_a_window_of_server_metrics() -> None:
    start = ServerWindow(100, 1, ((0.005, 90.0), (0.01, 99.0), (0.1, 100.0), (float("inf"), 100.0)))
    now = ServerWindow(300, 5, ((0.005, 180.0), (0.01, 250.0), (0.1, 299.0), (float("inf"), 300.0)))
    requests, error_rate, p99 = now.since(start)
    assert (requests, error_rate) == (200, 0.02)
    assert p99 == 100.0  # 99% of the 200 new requests (198) are only reached by the 100 ms bucket
    assert now.since(now) == (0.0, 0.0, None)
