"""The prediction API (FastAPI): thin routes over the Predictor; dependencies are the seams.

Runs in Lambda through Mangum (functions/gateway/handler.py) and locally under uvicorn. Clients
(Redis, sagemaker-runtime, Firehose, the catalog) are built once per process by the cached
`get_*` dependencies; tests swap any of them with `app.dependency_overrides`.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from sagegate.batch.jobs import BatchRequest, JobRefused, JobsProtocol
from sagegate.gateway.cache import PredictionCache
from sagegate.gateway.catalog import (
    CachedCatalog,
    CatalogProtocol,
    DirectoryCatalog,
    InMemoryCatalog,
    RegistryCatalog,
)
from sagegate.gateway.config import GatewaySettings
from sagegate.gateway.exceptions import GatewayError, ModelNotFound, NoPrediction, Unauthorized, UnprocessableRequest
from sagegate.gateway.metrics import GatewayMetrics
from sagegate.gateway.middleware import BodyGuard, FlushAfter, safe
from sagegate.gateway.online_features import OnlineFeatureStore
from sagegate.gateway.prediction_log import FirehoseLog, JsonLinesLog, NullLog, PredictionLogProtocol
from sagegate.gateway.predictor import Budget, Bulkhead, Predictor, PredictRequest, PredictResult
from sagegate.gateway.redis_support import Breaker, cache_store, redis_client
from sagegate.gateway.schemas import (
    ERRORS,
    FeedbackBody,
    PredictBody,
    features_schema,
    outcome_problem,
    with_model_schemas,
)
from sagegate.manifest import ModelManifest

__all__ = ["create_app", "current_predictor", "get_catalog", "get_predictor", "get_settings"]

T = TypeVar("T")


# -- dependencies (built once per process) ----------------------------------------------------


@lru_cache
def get_settings() -> GatewaySettings:
    return GatewaySettings.from_env()


@lru_cache
def _aws_session() -> Any:
    """One botocore session per execution environment for the gateway's AWS clients: each session
    loads its own service data and credential chain, which a cold start pays for."""
    from botocore.session import get_session

    return get_session()


@lru_cache
def get_catalog() -> CatalogProtocol:
    root = os.environ.get("SAGEGATE_GATEWAY_CATALOG_DIR")
    state = os.environ.get("SAGEGATE_GATEWAY_STATE_DIR")
    source: CatalogProtocol
    if state:  # the local stack: its registry and route store
        from sagegate.deploy.routes import SqliteRouteStore
        from sagegate.registry.local import LocalRegistry

        source = RegistryCatalog(
            LocalRegistry(Path(state) / "registry"), SqliteRouteStore(Path(state) / "routes.sqlite3")
        )
    elif os.environ.get("SAGEGATE_ROUTE_TABLE"):  # AWS: the Model Registry and the route table
        from botocore.config import Config

        from sagegate.deploy.routes import DynamoRouteStore
        from sagegate.registry.sagemaker import SageMakerRegistry

        session, region = _aws_session(), get_settings().region
        config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=2, read_timeout=5)
        registry = SageMakerRegistry(
            session.create_client("sagemaker", region_name=region, config=config),
            session.create_client("s3", region_name=region, config=config),
            bucket=os.environ.get("SAGEGATE_REGISTRY_BUCKET", ""),
            image_uri="",  # the gateway only reads
            # a registry in another account (registry_account): its account and the models read from it
            owner=os.environ.get("SAGEGATE_REGISTRY_ACCOUNT") or None,
            models=[m for m in os.environ.get("SAGEGATE_REGISTRY_MODELS", "").split(",") if m],
        )
        table = os.environ["SAGEGATE_ROUTE_TABLE"]
        routes = DynamoRouteStore(session.create_client("dynamodb", region_name=region, config=config), table)
        source = RegistryCatalog(registry, routes)
    elif root:
        source = DirectoryCatalog(Path(root))
    else:
        source = InMemoryCatalog()
    return CachedCatalog(source, get_settings().catalog_ttl_s)


def _redis_url(settings: GatewaySettings) -> str | None:
    """The Redis URL, with the AUTH token from Secrets Manager where one is named (ElastiCache):
    read once per execution environment, never kept in the function's configuration."""
    if not settings.redis_url or not settings.redis_auth_secret_arn:
        return settings.redis_url
    from urllib.parse import quote, urlsplit, urlunsplit

    secrets = _aws_session().create_client("secretsmanager", region_name=settings.region)
    token = secrets.get_secret_value(SecretId=settings.redis_auth_secret_arn, VersionStage="AWSCURRENT")["SecretString"]
    parts = urlsplit(settings.redis_url)
    return urlunsplit(parts._replace(netloc=f":{quote(token, safe='')}@{parts.hostname}:{parts.port or 6379}"))


@lru_cache
def get_predictor() -> Predictor:
    from sagegate.endpoints.runtime import AiohttpTransport, AsyncRuntimeClient, Transport, Urllib3Transport

    settings = get_settings()
    # Lambda serves one request per environment at a time: botocore's own urllib3, already imported,
    # carries the call; under uvicorn, aiohttp keeps many calls in flight on the event loop.
    transport: Transport = (
        Urllib3Transport(connect_timeout=settings.endpoint_connect_timeout_s)
        if os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        else AiohttpTransport(
            connect_timeout=settings.endpoint_connect_timeout_s, max_connections=settings.max_connections
        )
    )
    endpoints = AsyncRuntimeClient(
        region=settings.region,
        endpoint_url=settings.endpoint_url,
        session=_aws_session(),
        transport=transport,
        sign=settings.sign_requests,
    )
    breaker = Breaker()
    redis_url = _redis_url(settings)
    feature_client = redis_client(redis_url, settings.feature_budget_ms) if redis_url else None
    cache_client = redis_client(redis_url, settings.cache_budget_ms) if redis_url else None
    return Predictor(
        catalog=get_catalog(),
        endpoints=endpoints,
        cache=PredictionCache(
            cache_store(cache_client) if cache_client is not None else None,
            stale_for=settings.stale_for_s,
            lock_ms=settings.singleflight_lock_ms,
            wait=settings.singleflight_wait_ms / 1000,
            breaker=breaker,
        ),
        features=OnlineFeatureStore(feature_client, breaker),
        prediction_log=_prediction_log(settings),
        metrics=GatewayMetrics(emit=bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))),
        budget=Budget(settings.invoke_timeout_ms, settings.invoke_attempts, settings.explain_timeout_ms),
        bulkhead=Bulkhead(settings.max_in_flight),
        concurrency=settings.concurrency,
    )


def _prediction_log(settings: GatewaySettings) -> PredictionLogProtocol:
    if settings.prediction_log_stream:
        client = _aws_session().create_client("firehose", region_name=settings.region)
        return FirehoseLog(client, settings.prediction_log_stream)
    if settings.prediction_log_path:
        return JsonLinesLog(Path(settings.prediction_log_path))
    return NullLog()


async def current_predictor() -> Predictor:
    """The request's Predictor. Async on purpose: FastAPI runs a plain `def` dependency on its thread
    pool, a hand-off per request for what is a cached lookup."""
    return get_predictor()


PredictorDep = Annotated[Predictor, Depends(current_predictor)]


@lru_cache
def get_jobs() -> JobsProtocol | None:
    """Batch jobs: Step Functions in AWS, the engine on a thread locally, or none configured."""
    settings = get_settings()
    state = os.environ.get("SAGEGATE_GATEWAY_STATE_DIR")
    if settings.batch_state_machine_arn:
        from sagegate.batch.jobs import StepFunctionsJobs

        if not settings.batch_bucket or not settings.resource_prefix:
            raise RuntimeError("batch jobs in AWS need SAGEGATE_GATEWAY_BATCH_BUCKET and _RESOURCE_PREFIX")
        session = _aws_session()
        return StepFunctionsJobs(
            session.create_client("stepfunctions", region_name=settings.region),
            session.create_client("s3", region_name=settings.region),
            settings.batch_state_machine_arn,
            bucket=settings.batch_bucket,
            resource_prefix=settings.resource_prefix,
            instance_type=settings.batch_instance_type,
        )
    if state:
        from sagegate.batch.jobs import LocalJobs
        from sagegate.registry.local import LocalRegistry

        return LocalJobs(LocalRegistry(Path(state) / "registry"), Path(state) / "data")
    return None


async def current_jobs() -> JobsProtocol | None:
    return get_jobs()


JobsDep = Annotated[JobsProtocol | None, Depends(current_jobs)]
SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]


async def _blocking(function: Callable[..., T], *args: Any) -> T:
    """A call that may block on I/O (Step Functions, S3, SQLite) off the event loop."""
    return await asyncio.to_thread(function, *args)


def _plumbing(app: FastAPI, settings: GatewaySettings) -> None:
    """What wraps the routes: the body guard, the error format, the flush after each request, and
    the OpenAPI document with each deployed model's request shape."""
    json_routes = {
        ("POST", "/v1/predict"),
        ("POST", "/v1/explain"),
        ("POST", "/v1/feedback"),
        ("POST", "/v1/batch_predict"),
    }
    app.add_middleware(
        BodyGuard,
        limit=settings.max_body_bytes,
        json_paths=lambda method, path: (method, path) in json_routes or path.endswith("/deploy"),
    )

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        return JSONResponse(safe({"error": exc.message, **exc.detail}), exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "reason": e["msg"]} for e in exc.errors()
        ]
        summary = "; ".join(f"{f['field'] or 'body'}: {f['reason']}" for f in fields)
        return JSONResponse(safe({"error": f"invalid request: {summary}", "fields": fields}), 422)

    def serving() -> Predictor:
        predictor: Predictor = app.dependency_overrides.get(current_predictor, get_predictor)()
        return predictor

    def flush() -> None:
        predictor = serving()
        predictor.log.flush()
        predictor.metrics.flush()

    app.state.flush = flush
    app.state.serving = serving

    app.add_middleware(FlushAfter, flush=flush, every_s=settings.flush_every_s)
    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """The document with each deployed model's request shape (its live version's features)."""
        catalog = serving().catalog
        live: dict[str, ModelManifest] = {}
        for name in catalog.models():
            route = catalog.route(name)
            version = max(route.variants, key=lambda v: v.weight).model_version if route and route.variants else None
            manifest = catalog.manifest(name, version) if version else None
            if manifest is not None:
                live[name] = manifest
        return with_model_schemas(base_openapi(), live)

    app.openapi = openapi  # type: ignore[method-assign]


def _api_key_check(settings: GatewaySettings) -> list[Any]:
    """The local stack's optional API key (in AWS, API Gateway checks keys before the function runs)."""
    if not settings.api_key:
        return []
    expected = settings.api_key.encode()

    async def require_key(request: Request) -> None:
        given = request.headers.get("x-api-key", "").encode()
        if not hmac.compare_digest(given, expected):
            raise Unauthorized("a valid x-api-key header is required")

    return [Depends(require_key)]


def _lifespan(settings: GatewaySettings) -> Callable[[FastAPI], Any]:
    """Under uvicorn with `flush_every_s`: a background flush of the log and metrics, and a last one
    at shutdown. (Mangum runs no lifespan: in Lambda every invocation flushes.)"""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def every() -> None:
            while True:
                await asyncio.sleep(settings.flush_every_s)
                await asyncio.to_thread(app.state.flush)

        # A long-running server: what start-up made is never garbage, so the collector stops scanning
        # it, and collects the young objects of requests less often. Under load at 64 in flight this
        # took the local stack's p99 from ~110 to ~90 ms (benchmarks/stack_throughput.py).
        await app.state.serving().warm_up()  # the clients made and connected before the first request
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        task = asyncio.create_task(every()) if settings.flush_every_s > 0 else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
            app.state.flush()

    return lifespan


def _prediction_routes(app: FastAPI, keyed: list[Any]) -> None:
    @app.post("/v1/predict", response_model=PredictResult, responses=ERRORS, dependencies=keyed)
    async def predict(body: PredictBody, predictor: PredictorDep) -> Response:
        """Validate, enrich from the feature store, route to a variant, answer from cache or the endpoint."""
        request = PredictRequest(body.model, body.features, body.user_id, body.version, explain=body.explain)
        result = await predictor.predict(request)
        # Written here rather than by FastAPI, which would validate the model it was just given again.
        return Response(result.model_dump_json(), media_type="application/json")

    @app.post("/v1/explain", response_model=PredictResult, responses=ERRORS, dependencies=keyed)
    async def explain(body: PredictBody, predictor: PredictorDep) -> Response:
        """The prediction and, per raw feature, its contribution (the body of /v1/predict)."""
        result = await predictor.predict(PredictRequest(body.model, body.features, body.user_id, body.version, True))
        return Response(result.model_dump_json(), media_type="application/json")


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        lifespan=_lifespan(settings),
        title="sagegate prediction API",
        version="1",
        docs_url="/docs",
        openapi_url="/openapi.json",
        description="Validated, cached, A/B-routed predictions from SageMaker endpoints.",
    )
    _plumbing(app, settings)
    keyed = _api_key_check(settings)

    _prediction_routes(app, keyed)

    @app.get("/v1/models", dependencies=keyed)
    async def list_models(predictor: PredictorDep) -> dict[str, Any]:
        catalog = predictor.catalog
        return {
            "models": [
                {"name": m, "versions": catalog.versions(m), "route": _dump(catalog.route(m))} for m in catalog.models()
            ]
        }

    @app.get("/v1/models/{name}", responses=ERRORS, dependencies=keyed)
    async def describe_model(name: str, predictor: PredictorDep) -> dict[str, Any]:
        catalog = predictor.catalog
        versions = catalog.versions(name)
        if not versions and catalog.route(name) is None:
            raise ModelNotFound(f"model {name!r} is not in the registry", model=name)
        found = {v: catalog.manifest(name, v) for v in versions}
        manifests = {v: _dump(m) for v, m in found.items()}
        schemas = {v: features_schema(m) for v, m in found.items() if m is not None}
        return {
            "name": name,
            "versions": versions,
            "route": _dump(catalog.route(name)),
            "manifests": manifests,
            "schemas": schemas,
            # mean |contribution| per feature over the package's background (its explainer)
            "feature_importance": {
                v: m.explainer.importance for v, m in found.items() if m is not None and m.explainer is not None
            },
        }

    @app.post("/v1/feedback", status_code=202, responses=ERRORS, dependencies=keyed)
    async def feedback(body: FeedbackBody, predictor: PredictorDep) -> dict[str, str]:
        """Ground truth for a prediction, for A/B analysis and accuracy monitoring."""
        from datetime import UTC, datetime

        if body.model is not None:
            catalog = predictor.catalog
            manifests = [m for v in catalog.versions(body.model) if (m := catalog.manifest(body.model, v)) is not None]
            if not manifests:
                raise ModelNotFound(f"unknown model {body.model!r}", model=body.model)
            reasons = {outcome_problem(body.outcome, m.outputs) for m in manifests}
            if None not in reasons:  # no version of the model could have predicted this outcome
                raise UnprocessableRequest(f"outcome {sorted(map(str, reasons))[0]}", field="outcome", model=body.model)
        predictor.log.record(
            {
                "type": "feedback",
                "prediction_id": body.prediction_id,
                "outcome": body.outcome,
                "model": body.model,
                "timestamp": datetime.now(UTC).isoformat(),
            }
        )
        return {"status": "accepted", "prediction_id": body.prediction_id}

    @app.post("/v1/batch_predict", status_code=202, responses=ERRORS, dependencies=keyed)
    async def batch_predict(body: BatchRequest, predictor: PredictorDep, jobs: JobsDep) -> dict[str, Any]:
        """Start a batch job over `input_uri`; poll GET /v1/jobs/{job_id}."""
        if jobs is None:
            raise NoPrediction("batch jobs are not configured on this gateway")
        catalog = predictor.catalog
        version = body.version or catalog.latest_approved(body.model)  # as `sagegate batch` chooses
        manifest = catalog.manifest(body.model, version) if version is not None else None
        if version is None or manifest is None:
            wanted = f"version {body.version}" if body.version else "approved version (name a version to run another)"
            raise ModelNotFound(f"model {body.model!r} has no {wanted} to run", model=body.model)
        try:
            status = await _blocking(jobs.start, body, manifest)
        except JobRefused as exc:
            raise UnprocessableRequest(
                f"invalid request: {exc}", fields=[{"field": exc.field, "reason": str(exc)}]
            ) from None
        return {"job_id": status.job_id, "status": status.status}

    @app.get("/v1/jobs/{job_id}", responses=ERRORS, dependencies=keyed)
    async def job(job_id: str, jobs: JobsDep) -> dict[str, Any]:
        """A batch job's status, progress (%) and ETA."""
        found = await _blocking(jobs.get, job_id) if jobs is not None else None
        if found is None:
            raise ModelNotFound(f"no batch job {job_id!r}", job_id=job_id)
        return found.as_dict()

    @app.get("/health")
    async def health(predictor: PredictorDep) -> dict[str, Any]:
        return {
            "status": "ok",
            "cache": "on" if predictor.cache.enabled else "off",
            "cache_unavailable": predictor.cache.unavailable,
            "models": len(predictor.catalog.models()),
        }

    return app


def _dump(model: BaseModel | None) -> dict[str, Any] | None:
    return None if model is None else model.model_dump(mode="json", exclude_none=True)
