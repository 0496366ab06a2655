"""Per-environment settings, read from cdk.json's context ("sagegate:environments") into typed
models: a typo or a missing field fails the synth with the environment and the field named."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sagegate.deploy.policy import AlarmThresholds, RolloutPolicy

__all__ = [
    "ConfigError",
    "EnvConfig",
    "ModelConfig",
    "RegistryConfig",
    "VariantConfig",
    "load_environments",
    "registry_of",
]

CONTEXT_KEY = "sagegate:environments"
REGISTRY = "registry"  # the registry stack's name in `-c env=...`, and its resource prefix's suffix


class ConfigError(Exception):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Autoscaling(_Strict):
    min_instances: int = Field(default=1, ge=1)
    max_instances: int = Field(default=4, ge=1)
    invocations_per_instance: int = Field(default=1000, ge=1, description="target of the tracking policy, per minute")
    gpu_utilization_percent: float = Field(
        default=70, gt=0, le=100, description="per GPU; the metric goes to 100 x GPU count"
    )

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.max_instances < self.min_instances:
            raise ValueError("max_instances is below min_instances")
        return self


class VariantConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9](-*[A-Za-z0-9]){0,62}$")
    model_package_arn: str = Field(pattern=r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:model-package/.+/\d+$")
    instance_type: str = Field(pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
    instance_count: int = Field(default=1, ge=1)
    weight: float = Field(default=100, gt=0)
    gpus: int = Field(default=0, ge=0, description="GPUs per instance (GPU instance types get a utilization policy)")

    @property
    def on_gpu(self) -> bool:
        return _on_gpu(self.instance_type, self.gpus)


def _on_gpu(instance_type: str, gpus: int) -> bool:
    """Served by the GPU inference image: GPUs declared, or a GPU instance family (ml.g*, ml.p*)."""
    return gpus > 0 or instance_type.split(".")[1].startswith(("g", "p"))


class ModelConfig(_Strict):
    """A model the environment serves. Its endpoint is made one of two ways:
    - `instance_type` (+ `instance_count`, `gpus`): nothing is pinned; the first version Approved in
      the registry goes live on it (the deployment workflow creates the endpoint), and so does one
      approved before the stack existed (at its first deploy);
    - `variants`: the stack creates the endpoint itself from these packages (adopting versions
      registered before the environment had sagegate)."""

    name: str = Field(pattern=r"^[a-z0-9](-*[a-z0-9]){0,40}$")
    variants: list[VariantConfig] = Field(default_factory=list)
    instance_type: str | None = Field(default=None, pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
    instance_count: int = Field(default=1, ge=1)
    gpus: int = Field(default=0, ge=0, description="GPUs per instance (GPU instance types get a utilization policy)")
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    data_capture_percent: int = Field(default=20, ge=0, le=100)

    @model_validator(mode="after")
    def _one_way(self) -> ModelConfig:
        if self.variants and self.instance_type is not None:
            raise ValueError("give instance_type (the first approved version goes live on it) or variants, not both")
        if not self.variants and self.instance_type is None:
            raise ValueError("instance_type is required: the first approved version goes live on it")
        if self.variants and self.model_fields_set & {"instance_count", "gpus"}:
            raise ValueError("instance_count and gpus belong to each variant when variants are given")
        return self

    @property
    def pinned(self) -> bool:
        """Whether the stack creates the endpoint from configured packages (else the first approval)."""
        return bool(self.variants)

    @property
    def first_instance_type(self) -> str:
        return self.variants[0].instance_type if self.variants else str(self.instance_type)

    @property
    def first_instance_count(self) -> int:
        return self.variants[0].instance_count if self.variants else self.instance_count

    @property
    def first_gpus(self) -> int:
        return self.variants[0].gpus if self.variants else self.gpus

    @property
    def on_gpu(self) -> bool:
        return any(v.on_gpu for v in self.variants) or (
            self.instance_type is not None and _on_gpu(self.instance_type, self.gpus)
        )


class EnvConfig(_Strict):
    name: str
    account: str = Field(pattern=r"^\d{12}$")
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    models: list[ModelConfig] = Field(default_factory=list)
    cache_node_type: str = "cache.t4g.small"
    cache_replicas: int = Field(default=1, ge=1, le=5, description="replicas per shard; >= 1 gives Multi-AZ failover")
    cache_token_rotation_days: int = Field(default=30, ge=1, le=365, description="AUTH token rotation period")
    alarms: AlarmThresholds = Field(default_factory=AlarmThresholds)
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)
    log_retention_days: Literal[7, 14, 30, 60, 90, 180, 365, 731, 1827, 3653] = 30
    removal: Literal["destroy", "retain"] = "retain"
    api_auth: Literal["api_key", "iam"] = "api_key"
    throttle_rate: float = Field(default=100, gt=0, description="requests per second, steady")
    throttle_burst: int = Field(default=200, ge=1)
    provisioned_concurrency: int = Field(default=0, ge=0)
    lambda_memory_mb: int = Field(default=1024, ge=128, le=10240)
    tracing: bool = False
    waf: bool = Field(default=True, description="AWS WAF with managed rules in front of the API stage")
    waf_rate_limit: int | None = Field(default=None, ge=10, description="requests per IP per 5 minutes, blocked above")
    alarm_email: str | None = None
    max_azs: int = Field(default=2, ge=2, le=3)
    availability_zones: list[str] | None = Field(
        default=None, description="pinned, so a synth needs no AWS lookup; default: the region's a, b (, c)"
    )
    vpc_cidr: str = Field(default="10.40.0.0/16", pattern=r"^10\.\d{1,3}\.0\.0/16$", description="private, /16")
    gpu_image: bool = Field(default=False, description="build the GPU inference image before any variant needs it")
    registry_account: str | None = Field(
        default=None,
        pattern=r"^\d{12}$",
        description="the account of the registry (sagegate-registry stack) this environment deploys from;"
        " default: its own account holds its registry",
    )

    @property
    def rollout_policy(self) -> RolloutPolicy:
        """The rollout policy with the environment's alarm thresholds: what its rollouts are judged by."""
        return self.rollout.model_copy(update={"alarms": self.alarms})

    @property
    def prefix(self) -> str:
        return f"sagegate-{self.name}"

    @property
    def on_gpu(self) -> bool:
        """Whether the environment builds the GPU image too: asked for, or a variant serves on a GPU."""
        return self.gpu_image or any(m.on_gpu for m in self.models)

    @property
    def zones(self) -> list[str]:
        return self.availability_zones or [f"{self.region}{letter}" for letter in "abc"[: self.max_azs]]

    @property
    def cross_account(self) -> bool:
        return self.registry_account is not None

    @model_validator(mode="after")
    def _registry_elsewhere(self) -> EnvConfig:
        if self.registry_account is None:
            return self
        if self.registry_account == self.account:
            raise ValueError("registry_account is this environment's own account: leave it out (the default)")
        for model in self.models:
            for variant in model.variants:
                if variant.model_package_arn.split(":")[3:5] != [self.region, self.registry_account]:
                    raise ValueError(
                        f"models.{model.name}.{variant.name}: the package must be in the registry"
                        f" ({self.registry_account}, {self.region})"
                    )
        return self

    @model_validator(mode="after")
    def _one_set_of_thresholds(self) -> EnvConfig:
        if "alarms" in self.rollout.model_fields_set:
            raise ValueError("rollout.alarms: set the thresholds once, as the environment's alarms")
        return self

    @model_validator(mode="after")
    def _zones_in_region(self) -> EnvConfig:
        if self.availability_zones is not None:
            if len(self.availability_zones) != self.max_azs:
                raise ValueError(f"availability_zones names {len(self.availability_zones)}, max_azs is {self.max_azs}")
            if any(not zone.startswith(self.region) for zone in self.availability_zones):
                raise ValueError(f"availability_zones must be zones of {self.region}")
        return self


class RegistryConfig(_Strict):
    """The registry stack of environments in other accounts, derived from the environments that name
    its account: one registry, in their region; it keeps what is registered (removal: retain)."""

    account: str
    region: str
    environments: dict[str, str] = Field(description="environment name -> its account")
    models: list[str]
    gpu_image: bool
    log_retention_days: int

    @property
    def prefix(self) -> str:
        return f"sagegate-{REGISTRY}"


def registry_of(environments: dict[str, EnvConfig]) -> RegistryConfig | None:
    """The registry that the cross-account environments share, or None where every one holds its own."""
    users = [e for e in environments.values() if e.registry_account is not None]
    if not users:
        return None
    places = {(e.registry_account, e.region) for e in users}
    if len(places) > 1:
        raise ConfigError(f"environments name more than one registry (account, region): {sorted(map(str, places))}")
    ((account, region),) = places
    assert account is not None
    if any(e.account == account for e in environments.values()):
        raise ConfigError(f"registry_account {account} is also an environment's account: keep the registry apart")
    return RegistryConfig(
        account=account,
        region=region,
        environments={e.name: e.account for e in users},
        models=sorted({m.name for e in users for m in e.models}),
        gpu_image=any(e.on_gpu for e in users),
        log_retention_days=max(e.log_retention_days for e in users),
    )


def load_environments(context: dict[str, Any] | None) -> dict[str, EnvConfig]:
    if not context:
        raise ConfigError(f"cdk.json has no context {CONTEXT_KEY!r}")
    found: dict[str, EnvConfig] = {}
    for name, values in context.items():
        if name == REGISTRY:
            raise ConfigError(f"{REGISTRY!r} names the registry stack: choose another environment name")
        try:
            found[name] = EnvConfig.model_validate({"name": name, **values})
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(f"environment {name!r}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    return found
