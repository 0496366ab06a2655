"""The deployment workflow's code (stepfunctions/deploy_model.asl.json): its plan, the new variant's
alarms, the smoke test's verdict, the shadow comparison, the autoscaling hand-over, and the Lambda
handler that serves them."""

from sagegate.workflows.deploy.alarms import ALARM_KINDS, alarm_name, variant_alarms
from sagegate.workflows.deploy.handler import handle
from sagegate.workflows.deploy.plan import (
    DeploymentRefused,
    DeployRequest,
    Plan,
    PlannedRollout,
    RampPlan,
    ReplacePlan,
    ShadowPlan,
    make_plan,
    plan,
)
from sagegate.workflows.deploy.shadow import compare_shadow
from sagegate.workflows.deploy.smoke import SmokeTestFailed, check_smoke

__all__ = [
    "ALARM_KINDS",
    "DeployRequest",
    "DeploymentRefused",
    "Plan",
    "PlannedRollout",
    "RampPlan",
    "ReplacePlan",
    "ShadowPlan",
    "SmokeTestFailed",
    "alarm_name",
    "check_smoke",
    "compare_shadow",
    "handle",
    "make_plan",
    "plan",
    "variant_alarms",
]
