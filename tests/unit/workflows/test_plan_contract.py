"""The contract between the deploy plan (sagegate.workflows.deploy.plan) and the state machine that
reads it: every `$.plan.<path>` in stepfunctions/deploy_model.asl.json is a field of the plan of each
strategy whose execution can reach that state. The reachable states are found by walking the
definition with the strategy known: Choice rules on `$.plan.strategy` and `$.plan.after_shadow`
follow only the branch that strategy takes; every other branch, Catch and Default is followed."""

from __future__ import annotations

import json
import re
import types
import typing
from typing import Any, Union

import pytest
from pydantic import BaseModel

from sagegate.workflows.definitions import DEFINITIONS
from sagegate.workflows.deploy.plan import FirstPlan, RampPlan, ReplacePlan, ShadowPlan

_PLAN_PATH = re.compile(r"\$\.plan((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
_PATH_KEYS = ("ItemsPath", "SecondsPath", "InputPath", "OutputPath", "Variable", "TimestampPath")

SCENARIOS: dict[str, tuple[type[BaseModel], dict[str, str]]] = {
    "canary": (RampPlan, {"strategy": "canary"}),
    "linear": (RampPlan, {"strategy": "linear"}),
    "ab": (RampPlan, {"strategy": "ab"}),
    "shadow then stop": (ShadowPlan, {"strategy": "shadow", "after_shadow": "stop"}),
    "shadow then canary": (ShadowPlan, {"strategy": "shadow", "after_shadow": "canary"}),
    "replace": (ReplacePlan, {"strategy": "replace"}),
    "first": (FirstPlan, {"strategy": "first"}),
}


def _strings(value: Any, key: str = "") -> list[str]:
    """JSONPath strings of a state: `*.$` parameters, *Path fields, Choice variables (nested too)."""
    found: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k in ("ItemProcessor", "Iterator", "Branches"):
                continue
            found.extend(_strings(v, k))
    elif isinstance(value, list):
        for v in value:
            found.extend(_strings(v, key))
    elif isinstance(value, str) and (key.endswith(".$") or key in _PATH_KEYS or key.endswith("Path")):
        found.append(value)
    return found


def _field_type(model: type[BaseModel], name: str) -> Any:
    field = model.model_fields.get(name)
    if field is None:
        raise KeyError(name)
    annotation = field.annotation
    while typing.get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def resolves(model: type[BaseModel], path: list[str]) -> bool:
    current: Any = model
    for part in path:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return typing.get_origin(current) is dict  # free-form below this point (a request body)
        try:
            current = _field_type(current, part)
        except KeyError:
            return False
    return True


def _facts_set_by(state: dict[str, Any], known: dict[str, str]) -> dict[str, str]:
    """A Pass state that writes constants under its ResultPath (`"phase": "ramp"` at $.update) makes
    them known; a path it copies from itself (`"phase.$": "$.update.phase"`) stays as it was."""
    result = state.get("ResultPath", "$")
    if state["Type"] != "Pass" or not isinstance(result, str) or result == "$" or "Parameters" not in state:
        return known
    where = result.removeprefix("$.")
    kept = {k: v for k, v in known.items() if not k.startswith(f"{where}.")}
    for key, value in state["Parameters"].items():
        if isinstance(value, str) and not key.endswith(".$"):
            kept[f"{where}.{key}"] = value
        elif key.endswith(".$") and value == f"$.{where}.{key[:-2]}" and f"{where}.{key[:-2]}" in known:
            kept[f"{where}.{key[:-2]}"] = known[f"{where}.{key[:-2]}"]
    return kept


def _reachable(definition: dict[str, Any], model: type[BaseModel], facts: dict[str, str]) -> list[tuple[str, Any]]:
    """(state name, plan model in force there, or None before the plan exists) pairs."""
    states = definition["States"]
    seen: set[tuple[str, Any, tuple[tuple[str, str], ...]]] = set()
    todo: list[tuple[str, Any, dict[str, str]]] = [(definition["StartAt"], None, {})]
    order = []
    while todo:
        name, current, known = todo.pop()
        key = (name, current, tuple(sorted(known.items())))
        if key in seen:
            continue
        seen.add(key)
        order.append((name, current))
        state = states[name]
        if name == "Plan":
            current, known = model, {f"plan.{k}": v for k, v in facts.items()}
        if state["Type"] == "Pass" and state.get("Parameters", {}).get("plan.$") == "$.plan.next":
            current = RampPlan
            known = {k: v for k, v in known.items() if not k.startswith("plan.")} | {"plan.strategy": "canary"}
        known = _facts_set_by(state, known)
        nexts: list[str] = []
        if state["Type"] == "Choice":
            for rule in state["Choices"]:
                fact = rule.get("Variable", "").removeprefix("$.")
                if fact in known and "StringEquals" in rule:
                    if rule["StringEquals"] != known[fact]:
                        continue
                    nexts.append(rule["Next"])
                    break  # this branch is taken: later rules and the default are not
                nexts.append(rule["Next"])
            else:
                nexts.extend([state["Default"]] if "Default" in state else [])
        else:
            nexts.extend([state["Next"]] if "Next" in state else [])
            nexts.extend(c["Next"] for c in state.get("Catch", []))
        todo.extend((n, current, known) for n in nexts)
    return order


def _definition() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DEFINITIONS / "deploy_model.asl.json").read_text())
    return loaded


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_plan_path_is_a_field_of_the_plan_that_reaches_it(scenario: str) -> None:
    model, facts = SCENARIOS[scenario]
    definition = _definition()
    problems = []
    for name, current in _reachable(definition, model, facts):
        for text in _strings(definition["States"][name]):
            for match in _PLAN_PATH.finditer(text):
                path = match.group(1).lstrip(".").split(".")
                if current is None:
                    problems.append(f"{name}: $.plan.{'.'.join(path)} before the plan exists")
                elif not resolves(current, path):
                    problems.append(f"{name}: $.plan.{'.'.join(path)} is not a field of {current.__name__}")
    assert not problems, "\n".join(problems)


def test_each_strategy_reaches_its_own_end() -> None:
    definition = _definition()
    ends = {
        "canary": "Live",
        "ab": "Live",
        "shadow then stop": "ShadowDone",
        "shadow then canary": "Live",
        "replace": "Live",
    }
    for scenario, end in ends.items():
        model, facts = SCENARIOS[scenario]
        reached = {name for name, _ in _reachable(definition, model, facts)}
        assert {end, "RolledBack"} <= reached, scenario
    shadow_only = {name for name, _ in _reachable(definition, *SCENARIOS["shadow then stop"])}
    assert "CreateReplaceConfig" not in shadow_only and "ApplyScaling" not in shadow_only


def test_the_check_can_fail() -> None:
    assert resolves(RampPlan, ["final_config", "EndpointConfigName"])
    assert not resolves(ReplacePlan, ["final_config"])
    assert not resolves(ShadowPlan, ["config", "Nope"])
    assert resolves(ShadowPlan, ["config", "ShadowProductionVariants"])
    assert not resolves(RampPlan, ["config", "ShadowProductionVariants"])
