"""Who gets which variant of a model: sticky hash buckets per user, random per request, or a pin.

User mode hashes (experiment, user id) into 10,000 buckets and lays the variants' weights out as
consecutive bucket ranges in a fixed order. A user keeps their variant while the weights stay,
and a ramp moves only the buckets that change hands: taking the last variant from 5% to 20% moves
15% of users (from the variant before it), and nobody else.
"""

from __future__ import annotations

import hashlib
import random
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["BUCKETS", "NoVariant", "Route", "SplitMode", "Variant", "bucket", "choose_variant"]

BUCKETS = 10_000


class SplitMode(StrEnum):
    USER = "user"
    REQUEST = "request"


class Variant(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9](-*[A-Za-z0-9]){0,62}$")  # a SageMaker variant name
    model_version: str
    weight: float = Field(ge=0)


class Route(BaseModel):
    """How one model's requests reach SageMaker: endpoint, variants, split, shadow and fallback."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    endpoint: str
    variants: list[Variant] = Field(min_length=1)
    split: SplitMode = SplitMode.USER
    experiment: str | None = Field(default=None, description="hash salt; defaults to the model name")
    shadow: str | None = Field(default=None, description="variant that also gets a copy of each request")
    fallback: str | None = Field(default=None, description="model to ask when this one cannot answer")
    cache_ttl_s: int = Field(default=3600, ge=0)
    timeout_ms: int | None = Field(
        default=None, ge=1, le=60_000, description="time for the endpoint call, retries included (default: gateway's)"
    )
    attempts: int | None = Field(default=None, ge=1, le=5, description="endpoint attempts at most (default: gateway's)")

    @model_validator(mode="after")
    def _consistent(self) -> Route:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        if not any(v.weight > 0 for v in self.variants):
            raise ValueError("at least one variant needs a weight above 0")
        if self.shadow is not None and self.shadow not in names:
            raise ValueError(f"shadow variant {self.shadow!r} is not one of the variants")
        return self

    @property
    def salt(self) -> str:
        return self.experiment or self.model

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def upper_bounds(self) -> list[int]:
        """Each serving variant's exclusive upper bucket, in variant order."""
        serving = [v for v in self.variants if v.name != self.shadow]
        total = sum(v.weight for v in serving)
        bounds, running = [], 0.0
        for v in serving:
            running += v.weight
            bounds.append(round(running / total * BUCKETS))
        return bounds


class NoVariant(LookupError):
    """A pinned version that no variant of the route serves."""


def bucket(salt: str, user_id: str) -> int:
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def choose_variant(
    route: Route, *, user_id: str | None = None, version: str | None = None, rng: random.Random | None = None
) -> Variant:
    """The variant for this request: the pinned version's, else by user bucket or at random."""
    if version is not None:
        for v in route.variants:
            if v.model_version == version and v.name != route.shadow:
                return v
        raise NoVariant(f"no variant of {route.model!r} serves version {version!r}")
    serving = [v for v in route.variants if v.name != route.shadow]
    if route.split is SplitMode.USER and user_id is not None:
        slot = bucket(route.salt, user_id)
    else:
        slot = (rng or random).randrange(BUCKETS)
    for variant, upper in zip(serving, route.upper_bounds(), strict=True):
        if slot < upper and variant.weight > 0:
            return variant
    return next(v for v in reversed(serving) if v.weight > 0)
