"""AWS WAF in front of the API stage: AWS's managed rule groups for common exploits, known bad
inputs and IPs with a bad reputation, plus an optional per-IP rate limit, each with its metric."""

from __future__ import annotations

from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

# Group -> rules switched to COUNT. The common set blocks bodies over 8 KB; a prediction request
# with many features, or a batch request, can be larger, and the gateway enforces its own limit (413).
MANAGED_GROUPS = {
    "AWSManagedRulesCommonRuleSet": ["SizeRestrictions_BODY"],
    "AWSManagedRulesKnownBadInputsRuleSet": [],
    "AWSManagedRulesAmazonIpReputationList": [],
}


def _visibility(name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
    return wafv2.CfnWebACL.VisibilityConfigProperty(
        cloud_watch_metrics_enabled=True, metric_name=name, sampled_requests_enabled=True
    )


class Firewall(Construct):
    def __init__(self, scope: Construct, id: str, *, prefix: str, stage: apigw.Stage, rate_limit: int | None) -> None:
        super().__init__(scope, id)
        rules = [
            wafv2.CfnWebACL.RuleProperty(
                name=group,
                priority=priority,
                override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
                statement=wafv2.CfnWebACL.StatementProperty(
                    managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                        vendor_name="AWS",
                        name=group,
                        rule_action_overrides=[
                            wafv2.CfnWebACL.RuleActionOverrideProperty(
                                name=rule, action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={})
                            )
                            for rule in counted
                        ]
                        or None,
                    )
                ),
                visibility_config=_visibility(f"{prefix}-{group}"),
            )
            for priority, (group, counted) in enumerate(MANAGED_GROUPS.items())
        ]
        if rate_limit:
            rules.append(
                wafv2.CfnWebACL.RuleProperty(
                    name="RatePerIp",
                    priority=len(rules),
                    action=wafv2.CfnWebACL.RuleActionProperty(block={}),
                    statement=wafv2.CfnWebACL.StatementProperty(
                        rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                            limit=rate_limit, aggregate_key_type="IP", evaluation_window_sec=300
                        )
                    ),
                    visibility_config=_visibility(f"{prefix}-rate-per-ip"),
                )
            )
        self.acl = wafv2.CfnWebACL(
            self,
            "Acl",
            name=f"{prefix}-api",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            rules=rules,
            visibility_config=_visibility(f"{prefix}-api"),
        )
        wafv2.CfnWebACLAssociation(self, "Association", resource_arn=stage.stage_arn, web_acl_arn=self.acl.attr_arn)
