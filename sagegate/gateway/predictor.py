"""The prediction path, transport-free: validate, enrich, route, cache, invoke, degrade, log.

The FastAPI layer parses HTTP and hands a `PredictRequest` here; Lambda and uvicorn run the
same code. It is async end to end (Redis, the endpoint), so under uvicorn one process serves many
requests at once and a request waiting on a hung model holds no thread.

Time is bounded per request: the endpoint part (single-flight wait, the call, a retry) gets the
route's budget (`Route.timeout_ms`, else the gateway's `invoke_timeout_ms`), and when it is spent the
answer degrades (stale value, fallback model, default prediction) instead of waiting longer. Each
variant may have at most `max_in_flight` calls open (a bulkhead): a hung variant fills its own
slots and its next requests degrade at once, while every other variant keeps its connections.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from sagegate.endpoints import EndpointClientProtocol, EndpointRejected, EndpointUnavailable
from sagegate.gateway.cache import PredictionCache
from sagegate.gateway.catalog import CatalogProtocol
from sagegate.gateway.exceptions import ModelNotFound, NoPrediction, UnprocessableRequest
from sagegate.gateway.metrics import GatewayMetrics
from sagegate.gateway.online_features import OnlineFeatureStore
from sagegate.gateway.prediction_log import LoggedFeatures, PredictionLogProtocol
from sagegate.keys import hash_of, prediction_key
from sagegate.manifest import ModelManifest
from sagegate.routing import NoVariant, Route, Variant, choose_variant
from sagegate.validation import RecordValidator

__all__ = ["Budget", "Bulkhead", "PredictRequest", "PredictResult", "Predictor"]

log = logging.getLogger("sagegate.gateway")


@dataclass(frozen=True)
class PredictRequest:
    model: str
    features: dict[str, Any]
    user_id: str | None = None
    version: str | None = None
    explain: bool = False


class PredictResult(BaseModel):
    """The answer of POST /v1/predict (the API's response model too: one definition)."""

    model_config = ConfigDict(frozen=True)

    prediction_id: str
    prediction: Any
    label: str | None
    confidence: float | None
    probabilities: dict[str, float] | None = Field(default=None, description="per label (multiclass models)")
    latency_ms: float
    model_version: str
    variant: str | None
    cache_hit: bool
    degraded: bool = False
    degraded_reason: str | None = None
    explanation: dict[str, Any] | None = Field(
        default=None,
        description="asked for (explain): per raw feature its contribution, the base value, and the output"
        " space they add up to (margin, probability or value); none when a degraded answer has none",
    )
    features_defaulted: bool = Field(default=False, exclude=True)


@dataclass(frozen=True)
class Budget:
    """How long the endpoint part of one request may take, and how many attempts it may make."""

    timeout_ms: float = 100.0
    attempts: int = 2
    explain_timeout_ms: float = 1000.0

    def of(self, route: Route, *, explain: bool = False) -> Budget:
        """The route's budget; an explanation gets at least `explain_timeout_ms` (explaining costs
        the model many evaluations: a prediction's budget would turn every first one degraded)."""
        timeout = route.timeout_ms or self.timeout_ms
        if explain:
            timeout = max(timeout, self.explain_timeout_ms)
        return Budget(timeout, route.attempts or self.attempts, self.explain_timeout_ms)


class Bulkhead:
    """At most `limit` calls in flight per (endpoint, variant); past it, fail at once."""

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._in_flight: Counter[tuple[str, str]] = Counter()

    @contextmanager
    def slot(self, endpoint: str, variant: str) -> Iterator[None]:
        key = (endpoint, variant)
        if self._in_flight[key] >= self.limit:
            raise EndpointUnavailable(f"variant {variant!r} of {endpoint!r} has {self.limit} calls in flight")
        self._in_flight[key] += 1
        try:
            yield
        finally:
            self._in_flight[key] -= 1


class Predictor:
    def __init__(
        self,
        *,
        catalog: CatalogProtocol,
        endpoints: EndpointClientProtocol,
        cache: PredictionCache,
        features: OnlineFeatureStore,
        prediction_log: PredictionLogProtocol,
        metrics: GatewayMetrics,
        budget: Budget | None = None,
        bulkhead: Bulkhead | None = None,
        concurrency: int = 32,
    ) -> None:
        self.catalog = catalog
        self.endpoints = endpoints
        self.cache = cache
        self.features = features
        self.log = prediction_log
        self.metrics = metrics
        self.budget = budget or Budget()
        self.bulkhead = bulkhead or Bulkhead()
        # At most this many predictions at work at once; the rest wait their turn before starting.
        # Past the CPU's capacity, more at once only lengthens each turn of the event loop, until
        # Redis answers that came in time are read too late and count as timeouts.
        self._admission = asyncio.Semaphore(concurrency)
        self._validators: dict[tuple[str, str], RecordValidator] = {}
        self._logged: dict[tuple[str, str], LoggedFeatures] = {}

    def _validator(self, manifest: ModelManifest) -> RecordValidator:
        key = (manifest.name, manifest.version)
        validator = self._validators.get(key)
        if validator is None:
            validator = self._validators[key] = RecordValidator.for_manifest(manifest)
        return validator

    def _logged_features(self, manifest: ModelManifest) -> LoggedFeatures:
        key = (manifest.name, manifest.version)
        logged = self._logged.get(key)
        if logged is None:
            logged = self._logged[key] = LoggedFeatures(manifest)
        return logged

    async def warm_up(self) -> None:
        """Opens what the first request would otherwise open (a Redis connection each, the HTTP
        session), so it does not pay for them: a long-running server calls this at start."""
        await self.cache.read("sagegate:warm-up")
        await self.features.fetch("warm-up", "0", {"warm-up"})

    def _names(self, manifest: ModelManifest) -> frozenset[str]:
        return self._validator(manifest).names

    def _route(self, model: str) -> Route:
        route = self.catalog.route(model)
        if route is None:
            raise ModelNotFound(f"model {model!r} is not deployed", model=model)
        return route

    def _manifest(self, model: str, version: str) -> ModelManifest:
        manifest = self.catalog.manifest(model, version)
        if manifest is None:
            raise ModelNotFound(f"model {model!r} has no version {version!r} in the registry", model=model)
        return manifest

    async def predict(self, request: PredictRequest) -> PredictResult:
        started = time.perf_counter()
        async with self._admission:
            return await self._predict(request, started)

    async def _predict(self, request: PredictRequest, started: float) -> PredictResult:
        prediction_id = os.urandom(16).hex()  # what uuid4().hex gives (32 hex digits), at a fraction of the cost
        route = self._route(request.model)
        try:
            variant = choose_variant(route, user_id=request.user_id, version=request.version)
        except NoVariant as exc:
            raise UnprocessableRequest(str(exc), field="version") from None
        manifest = self._manifest(route.model, variant.model_version)
        if request.explain and manifest.explainer is None:
            raise UnprocessableRequest(
                f"model {route.model!r} v{manifest.version} has no explainer: it was packaged without explanations",
                model=route.model,
                field="explain",
            )
        try:
            clean, defaulted, given = await self._features(manifest, request)
        except UnprocessableRequest as exc:
            self._refused(route.model, manifest.version, variant.name, exc)
            raise
        key = prediction_key(manifest.name, manifest.version, clean, explained=request.explain)
        body = orjson.dumps({"features": clean})
        budget = self.budget.of(route, explain=request.explain)
        deadline = time.monotonic() + budget.timeout_ms / 1000

        async def call() -> dict[str, Any]:
            return await self._invoke(
                route.endpoint,
                variant,
                body,
                prediction_id,
                deadline=deadline,
                attempts=budget.attempts,
                explain=request.explain,
            )

        degraded_reason = None
        served_by: Variant | None
        try:
            outcome = await self.cache.get_or_compute(key, route.cache_ttl_s, call, wait=budget.timeout_ms / 1000)
            answer, hit, served_by = outcome.value, outcome.hit, variant
        except EndpointRejected as exc:
            self.metrics.add(route.model, variant.name, "errors")
            raise UnprocessableRequest(f"the model refused the features: {exc}", model=route.model) from None
        except EndpointUnavailable as exc:
            degraded_reason = str(exc)
            answer, hit, served_by = await self._degrade(
                route, manifest, key, variant, request, prediction_id=prediction_id, error=exc
            )
        result = PredictResult(
            prediction_id=prediction_id,
            prediction=answer.get("prediction"),
            label=answer.get("label"),
            confidence=answer.get("confidence"),
            probabilities=answer.get("probabilities"),
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            model_version=answer.get("_version", manifest.version),
            variant=served_by.name if served_by else None,
            cache_hit=hit,
            degraded=degraded_reason is not None,
            degraded_reason=degraded_reason,
            explanation=answer.get("explanation") if request.explain else None,
            features_defaulted=defaulted,
        )
        self._account(route.model, result, key, logged=self._logged_features(manifest), clean=clean, given=given)
        return result

    async def _features(
        self, manifest: ModelManifest, request: PredictRequest
    ) -> tuple[dict[str, Any], bool, dict[str, Any]]:
        """The request's features over the entity's online features, checked, whether the feature store
        was unavailable, and what was given before defaults; every bad field named at once."""
        merged = dict(request.features)
        defaulted = False
        entity = manifest.entity_key or "user_id"
        entity_id = request.features.get(entity) if manifest.entity_key else None
        entity_id = entity_id if entity_id is not None else request.user_id
        names = self._names(manifest)
        # Online values fill only what the request leaves out: with every feature given, nothing to ask.
        if entity_id is not None and not names <= merged.keys():
            lookup = await self.features.fetch(entity, str(entity_id), names)
            merged = {**lookup.values, **merged}
            defaulted = not lookup.available
            if defaulted:
                self.metrics.add(manifest.name, "", "feature_store_unavailable")
        clean, errors = self._validator(manifest).check(merged)
        if errors:
            raise UnprocessableRequest(
                "invalid features: " + "; ".join(f"{e.field} {e.reason}" for e in errors),
                fields=[{"field": e.field, "reason": e.reason} for e in errors],
            )
        return clean, defaulted, merged

    async def _invoke(
        self,
        endpoint: str,
        variant: Variant,
        body: bytes,
        prediction_id: str,
        *,
        deadline: float,
        attempts: int,
        explain: bool = False,
    ) -> dict[str, Any]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise EndpointUnavailable(f"endpoint {endpoint!r}: the request's time budget is spent")
        with self.bulkhead.slot(endpoint, variant.name):
            response = await self.endpoints.invoke(
                endpoint,
                body,
                target_variant=variant.name,
                inference_id=prediction_id,
                custom_attributes="explain=true" if explain else None,
                timeout=left,
                attempts=attempts,
            )
        try:
            answer = orjson.loads(response.body)["predictions"][0]
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise EndpointUnavailable(f"endpoint {endpoint!r} answered something that is not a prediction") from exc
        if not isinstance(answer, dict):
            raise EndpointUnavailable(f"endpoint {endpoint!r} answered something that is not a prediction")
        return {**answer, "_version": variant.model_version}

    async def _degrade(
        self,
        route: Route,
        manifest: ModelManifest,
        key: str,
        variant: Variant,
        request: PredictRequest,
        *,
        prediction_id: str,
        error: EndpointUnavailable,
    ) -> tuple[dict[str, Any], bool, Variant | None]:
        """Stale cache, then the fallback model, then the manifest's default prediction; else 503."""
        self.metrics.add(route.model, variant.name, "endpoint_errors")
        stale = await self.cache.read(key)
        if stale is not None:
            return stale.value, True, variant
        if route.fallback:
            answer = await self._ask_fallback(route, request, prediction_id)
            if answer is not None:
                return answer
        if manifest.default_prediction is not None:
            return {"prediction": manifest.default_prediction, "label": None, "confidence": None}, False, None
        self.metrics.add(route.model, variant.name, "errors")
        raise NoPrediction(
            f"model {route.model!r} is unavailable ({error}) and has no stale value, fallback or default prediction",
            model=route.model,
        )

    async def _ask_fallback(
        self, route: Route, request: PredictRequest, prediction_id: str
    ) -> tuple[dict[str, Any], bool, Variant] | None:
        """The fallback model's answer to the same features (within the fallback route's own
        budget), or None if it cannot give one."""
        assert route.fallback is not None
        try:
            fallback = self._route(route.fallback)
            variant = choose_variant(fallback, user_id=request.user_id)
            manifest = self._manifest(fallback.model, variant.model_version)
            asked = PredictRequest(fallback.model, request.features, request.user_id)
            clean, _, _ = await self._features(manifest, asked)
            budget = self.budget.of(fallback)
            answer = await self._invoke(
                fallback.endpoint,
                variant,
                orjson.dumps({"features": clean}),
                prediction_id,
                deadline=time.monotonic() + budget.timeout_ms / 1000,
                attempts=budget.attempts,
            )
        except (ModelNotFound, UnprocessableRequest, NoVariant, EndpointUnavailable, EndpointRejected) as exc:
            log.warning("fallback %s of %s gave no answer: %s", route.fallback, route.model, exc)
            return None
        return answer, False, variant

    def _refused(self, model: str, version: str, variant: str, error: UnprocessableRequest) -> None:
        """A request refused for its features: monitoring counts the type failures per feature."""
        fields = error.detail.get("fields") or []
        self.log.record(
            {
                "type": "rejected",
                "model": model,
                "version": version,
                "variant": variant,
                "rejected": {f["field"]: f["reason"] for f in fields if f.get("field")},
                "timestamp": datetime.now(UTC).isoformat(),
            }
        )

    def _account(
        self,
        model: str,
        result: PredictResult,
        key: str,
        *,
        logged: LoggedFeatures,
        clean: dict[str, Any],
        given: dict[str, Any],
    ) -> None:
        variant = result.variant or ""
        self.metrics.add(model, variant, "latency_ms", result.latency_ms)
        self.metrics.add(model, variant, "cache_hits" if result.cache_hit else "cache_misses")
        if result.degraded:
            self.metrics.add(model, variant, "degraded")
        elif result.confidence is not None:  # its mean per variant is the quality alarm's signal
            self.metrics.add(model, variant, "confidence", result.confidence)
        self.log.record(
            {
                "prediction_id": result.prediction_id,
                "model": model,
                "version": result.model_version,
                "variant": result.variant,
                "features_hash": hash_of(key),
                "features": logged(clean, given),
                "prediction": result.prediction,
                "label": result.label,
                "confidence": result.confidence,
                "score": result.confidence if logged.score_field == "confidence" else result.prediction,
                "latency_ms": result.latency_ms,
                "cache_hit": result.cache_hit,
                "degraded": result.degraded,
                "timestamp": datetime.now(UTC).isoformat(),
            }
        )
