"""The rollout policy, defined once: how a new version takes traffic and when it is rolled back.

The deployment workflow in AWS receives it as its input (`RolloutPolicy.workflow_input`) and
turns the thresholds into CloudWatch alarms on the new variant; `sagegate deploy` on the local
stack follows the same steps and bake time and evaluates the same thresholds against the new
server's own metrics (`sagegate.deploy.canary`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["AlarmThresholds", "RolloutPolicy", "Strategy"]

Strategy = Literal["canary", "linear", "ab", "shadow", "replace"]
_DEFAULT_STEPS: dict[str, list[float]] = {
    "canary": [5, 20, 50, 100],
    "linear": [25, 50, 75, 100],
    "replace": [10, 100],  # SageMaker's blue/green: a 10% canary fleet, then all
}


class AlarmThresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_error_rate: float = Field(default=0.01, ge=0, le=1, description="5XX answers / requests of the new variant")
    max_p99_latency_ms: float = Field(default=250.0, gt=0, description="the new variant's p99 model latency")
    min_requests: int = Field(default=20, ge=0, description="fewer requests in a bake: no verdict, keep baking")
    min_mean_confidence: float | None = Field(
        default=None, ge=0, le=1, description="model quality: the new variant's mean prediction confidence"
    )


class RolloutPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Strategy = "canary"
    steps: list[float] = Field(default_factory=list, description="traffic percentages of the new version, in order")
    bake_seconds: int = Field(default=600, ge=0)
    alarms: AlarmThresholds = Field(default_factory=AlarmThresholds)
    retention_seconds: int = Field(default=3600, ge=0, description="the old variant stays at weight 0 this long")
    shadow_seconds: int = Field(default=3600, ge=0, description="how long a shadow variant mirrors production")
    after_shadow: Literal["stop", "canary"] = Field(default="stop", description="what follows the shadow comparison")

    @model_validator(mode="after")
    def _steps(self) -> RolloutPolicy:
        if not self.steps:
            object.__setattr__(self, "steps", list(_DEFAULT_STEPS.get(self.strategy, [])))
        if any(not 0 < s <= 100 for s in self.steps):
            raise ValueError("steps are percentages above 0 and at most 100")
        if self.steps != sorted(self.steps):
            raise ValueError("steps must increase")
        if self.strategy in ("canary", "linear", "replace") and self.steps[-1] != 100:
            raise ValueError(f"a {self.strategy} rollout ends at 100")
        if self.strategy == "ab" and len(self.steps) != 1:
            raise ValueError("an A/B test has one step: the new version's share")
        return self

    def workflow_input(self, model: str, version: str) -> dict[str, Any]:
        """The deployment workflow's input (the contract of stepfunctions/deploy_model.asl.json)."""
        return {
            "model": model,
            "version": version,
            "strategy": self.strategy,
            "steps": self.steps,
            "bake_seconds": self.bake_seconds,
            "retention_seconds": self.retention_seconds,
            "alarms": self.alarms.model_dump(),
            "shadow_seconds": self.shadow_seconds,
            "after_shadow": self.after_shadow,
        }
