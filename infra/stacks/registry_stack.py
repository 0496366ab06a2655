"""The registry of environments in other accounts (`registry_account`): its bucket, key, model
package groups and images, with the resource policies that let the environments read them."""

from __future__ import annotations

from aws_cdk import Aspects, CfnOutput, RemovalPolicy, Stack
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import REGISTRY, RegistryConfig
from infra.constructs.bundling import lambda_code
from infra.constructs.data import LogGroupsUseKey
from infra.constructs.images import BATCH, INFERENCE, INFERENCE_GPU, Images, publish
from infra.constructs.registry import Registry
from infra.stacks.sagegate_stack import RETENTION


class RegistryStack(Stack):
    def __init__(self, scope: Construct, id: str, *, config: RegistryConfig, **kwargs: object) -> None:
        super().__init__(scope, id, **kwargs)  # type: ignore[arg-type]
        removal = RemovalPolicy.RETAIN  # what is registered outlives the stack
        retention = logs.RetentionDays(logs.RetentionDays[RETENTION[config.log_retention_days]])
        self.registry = Registry(self, "Registry", config=config, removal=removal)
        Aspects.of(self).add(LogGroupsUseKey(self.registry.key))
        # Built once, here: every environment's endpoints and jobs pull these.
        self.images = Images(
            self,
            "Images",
            prefix=config.prefix,
            images=[INFERENCE, *([INFERENCE_GPU] if config.gpu_image else []), BATCH],
            key=self.registry.key,
            code=lambda_code(),
            log_retention=retention,
            removal=removal,
        )
        self.registry.allow_pull(self.images.repositories.values())
        for name, uri in self.images.uris.items():  # where `sagegate register` finds the image here
            publish(self, REGISTRY, name, uri)
        CfnOutput(
            self,
            "RegistryBucket",
            value=self.registry.artifacts.bucket_name,
            description="where `sagegate register --target aws` uploads packages (SAGEGATE_AWS_BUCKET)",
        )
