"""The SageMaker container contract, against `sagegate serve` running as a process."""

from __future__ import annotations

import contextlib
import csv
import io
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from sagegate.local.data import Transactions
from sagegate.packaging import BuiltPackage
from tests.integration.conftest import StartServer
from tests.integration.helpers import expected_positive, metric

pytestmark = pytest.mark.integration


def test_ping_is_503_until_models_are_loaded_and_warmed_up(
    start_server: StartServer, heavy: BuiltPackage, client: httpx.Client
) -> None:
    server = start_server(heavy, args=("--max-batch-size", "1024"), wait=False)
    seen: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not seen or seen[-1] != 200):
        with contextlib.suppress(httpx.TransportError):  # not listening yet
            seen.append(client.get(f"{server.url}/ping").status_code)
        time.sleep(0.01)
    assert seen[0] == 503
    assert seen[-1] == 200
    assert set(seen) == {503, 200}
    answer = client.post(f"{server.url}/invocations", json={"features": {f"f{i}": 0.5 for i in range(30)}})
    assert answer.status_code == 200


def test_every_content_type_answers_per_record_in_input_order(
    start_server: StartServer, fraud_logreg: BuiltPackage, transactions: Transactions, client: httpx.Client
) -> None:
    server = start_server(fraud_logreg)
    records = transactions.records[:50]
    expected = expected_positive(fraud_logreg, records)
    url = f"{server.url}/invocations"

    def check(predictions: list[dict]) -> None:  # type: ignore[type-arg]
        got = np.array([p["prediction"] for p in predictions])
        np.testing.assert_allclose(got, expected[: len(got)], atol=1e-6)
        for p in predictions:
            assert p["label"] == ("fraud" if p["prediction"] >= 0.5 else "legit")
            assert p["confidence"] == pytest.approx(max(p["prediction"], 1 - p["prediction"]))

    check(client.post(url, json={"instances": records}).json()["predictions"])
    check(client.post(url, json={"features": records[0]}).json()["predictions"])
    lines = client.post(
        url, content=b"\n".join(orjson.dumps(r) for r in records), headers={"Content-Type": "application/jsonlines"}
    )
    assert lines.headers["content-type"] == "application/jsonlines"
    check([orjson.loads(line) for line in lines.content.splitlines()])

    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows({k: str(v).lower() if isinstance(v, bool) else v for k, v in r.items()} for r in records)
    with_header = client.post(
        url, content=table.getvalue(), headers={"Content-Type": "text/csv", "Accept": "application/json"}
    )
    check(with_header.json()["predictions"])
    headerless = table.getvalue().split("\n", 1)[1]  # columns in manifest order
    as_csv = client.post(url, content=headerless, headers={"Content-Type": "text/csv"})
    assert as_csv.headers["content-type"] == "text/csv"
    rows = list(csv.reader(io.StringIO(as_csv.text)))
    check([{"prediction": float(p), "label": label, "confidence": float(c)} for p, label, c in rows])


def test_multi_model_api(
    start_server: StartServer,
    fraud_logreg: BuiltPackage,
    fraud_xgboost: BuiltPackage,
    transactions: Transactions,
    client: httpx.Client,
    tmp_path: Path,
) -> None:
    root = fraud_xgboost.path.parent  # the models root: packages may be loaded from under it only
    server = start_server(fraud_logreg, env={"SAGEGATE_MULTI_MODEL": "true", "SAGEGATE_MODELS_ROOT": str(root)})
    record = {"instances": transactions.records[:3]}
    assert client.post(f"{server.url}/invocations", json=record).status_code == 200

    loaded = client.post(f"{server.url}/models", json={"model_name": "xgb", "url": str(fraud_xgboost.path)})
    assert loaded.status_code == 200, loaded.text
    assert (
        client.post(f"{server.url}/models", json={"model_name": "xgb", "url": str(fraud_xgboost.path)}).status_code
        == 409
    )
    names = [m["modelName"] for m in client.get(f"{server.url}/models").json()["models"]]
    assert names == ["fraud-logreg", "xgb"]
    page = client.get(f"{server.url}/models", params={"page_size": 1}).json()
    assert [m["modelName"] for m in page["models"]] == ["fraud-logreg"] and page["nextPageToken"] == "1"
    described = client.get(f"{server.url}/models/xgb").json()
    assert (described["name"], described["sha256"]) == ("fraud-xgb", fraud_xgboost.manifest.sha256)

    via_invoke = client.post(f"{server.url}/models/xgb/invoke", json=record).json()["predictions"]
    np.testing.assert_allclose(
        [p["prediction"] for p in via_invoke], expected_positive(fraud_xgboost, record["instances"]), atol=1e-6
    )
    ambiguous = client.post(f"{server.url}/invocations", json=record)
    assert ambiguous.status_code == 400 and "2 models are loaded" in ambiguous.json()["error"]
    named = client.post(
        f"{server.url}/invocations", json=record, headers={"X-Amzn-SageMaker-Custom-Attributes": "trace=1;model=xgb"}
    )
    assert named.json()["predictions"] == via_invoke

    assert client.delete(f"{server.url}/models/xgb").status_code == 200
    assert client.get(f"{server.url}/models/xgb").status_code == 404
    assert client.post(f"{server.url}/models/xgb/invoke", json=record).status_code == 404
    assert client.delete(f"{server.url}/models/xgb").status_code == 404
    missing = client.post(f"{server.url}/models", json={"model_name": "nope", "url": str(root / "absent")})
    assert missing.status_code == 404
    assert client.post(f"{server.url}/models", json={"url": "/x"}).json()["field"] == "model_name"


def test_the_multi_model_api_is_off_unless_asked_and_confined_to_its_root(
    start_server: StartServer,
    fraud_logreg: BuiltPackage,
    fraud_xgboost: BuiltPackage,
    client: httpx.Client,
    tmp_path: Path,
) -> None:
    single = start_server(fraud_logreg)
    for method, path in (("POST", "/models"), ("DELETE", "/models/fraud-logreg")):
        refused = client.request(
            method, f"{single.url}{path}", json={"model_name": "x", "url": str(fraud_xgboost.path)}
        )
        assert refused.status_code == 404 and "multi-model API" in refused.json()["error"]
    assert client.get(f"{single.url}/ping").status_code == 200  # the model is still there

    root = tmp_path / "models"
    root.mkdir()
    (root / "link").symlink_to(fraud_xgboost.path.parent)
    multi = start_server(fraud_logreg, env={"SAGEGATE_MULTI_MODEL": "true", "SAGEGATE_MODELS_ROOT": str(root)})
    answers = {}
    for url in (
        str(fraud_xgboost.path),  # a real package, outside the root
        str(tmp_path / "absent"),  # nothing there
        f"{root}/../{fraud_xgboost.path.name}",
        "link/fraud-xgboost",  # a symbolic link out of the root
        "/etc",
    ):
        answer = client.post(f"{multi.url}/models", json={"model_name": "x", "url": url})
        answers[url] = (answer.status_code, answer.json()["error"])
    assert set(answers.values()) == {(400, f"url must name a model package folder under {root.resolve()}")}, answers
    # a package copied under the root loads; unloading every model leaves a multi-model server healthy
    import shutil

    shutil.copytree(fraud_xgboost.path, root / "xgb")
    assert client.post(f"{multi.url}/models", json={"model_name": "xgb", "url": "xgb"}).status_code == 200
    assert client.delete(f"{multi.url}/models/xgb").status_code == 200
    assert client.delete(f"{multi.url}/models/fraud-logreg").status_code == 200
    assert client.get(f"{multi.url}/ping").status_code == 200


def test_a_modified_artifact_is_refused(
    start_server: StartServer, fraud_logreg: BuiltPackage, client: httpx.Client, tmp_path: Path
) -> None:
    import shutil

    tampered = tmp_path / "tampered"
    shutil.copytree(fraud_logreg.path, tampered)
    with (tampered / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    server = start_server(fraud_logreg, env={"SAGEGATE_MULTI_MODEL": "true", "SAGEGATE_MODELS_ROOT": str(tmp_path)})
    refused = client.post(f"{server.url}/models", json={"model_name": "t", "url": str(tampered)})
    assert refused.status_code == 400 and "refusing to serve a modified artifact" in refused.json()["error"]
    assert [m["modelName"] for m in client.get(f"{server.url}/models").json()["models"]] == ["fraud-logreg"]

    at_start = start_server(tampered, wait=False)
    assert at_start.process.wait(60) == 1  # the container fails fast rather than serving a modified model
    assert "refusing to serve a modified artifact" in at_start.log_path.read_text()


def test_memory_budget_gives_507(
    start_server: StartServer, heavy: BuiltPackage, fraud_logreg: BuiltPackage, client: httpx.Client
) -> None:
    root = {"SAGEGATE_MULTI_MODEL": "true", "SAGEGATE_MODELS_ROOT": str(heavy.path.parent)}
    assert fraud_logreg.path.parent == heavy.path.parent
    server = start_server(args=("--memory-budget-mb", "100"), env=root)
    full = client.post(f"{server.url}/models", json={"model_name": "heavy", "url": str(heavy.path)})
    assert full.status_code == 507 and "needs about" in full.json()["error"]
    small = client.post(f"{server.url}/models", json={"model_name": "fraud", "url": str(fraud_logreg.path)})
    assert small.status_code == 200
    assert metric(client, server.url, "sagegate_models_loaded") == 1


def test_execution_parameters_and_batch_transform_payloads(
    start_server: StartServer, fraud_logreg: BuiltPackage, transactions: Transactions, client: httpx.Client
) -> None:
    batch = start_server(fraud_logreg, env={"SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "100"})
    params = client.get(f"{batch.url}/execution-parameters").json()
    assert params["BatchStrategy"] == "MULTI_RECORD" and params["MaxPayloadInMB"] == 100
    assert params["MaxConcurrentTransforms"] >= 1

    # A MULTI_RECORD JSON Lines payload above the 6 MB real-time limit.
    lines = b"\n".join(orjson.dumps(r) for r in transactions.records)
    body = b"\n".join([lines] * (7 * 1024 * 1024 // len(lines) + 1))
    count = body.count(b"\n") + 1
    answer = client.post(f"{batch.url}/invocations", content=body, headers={"Content-Type": "application/jsonlines"})
    assert answer.status_code == 200
    assert len(answer.content.splitlines()) == count

    realtime = start_server(fraud_logreg)
    too_big = client.post(
        f"{realtime.url}/invocations", content=body, headers={"Content-Type": "application/jsonlines"}
    )
    assert too_big.status_code == 413


def test_sigterm_drains_in_flight_requests(
    start_server: StartServer, heavy: BuiltPackage, client: httpx.Client
) -> None:
    server = start_server(heavy, args=("--max-batch-size", "1"))
    rng = np.random.default_rng(0)
    records = [{f"f{i}": float(v) for i, v in enumerate(row)} for row in rng.normal(size=(1000, 30))]
    result: dict[str, object] = {}

    def send() -> None:
        result["answer"] = client.post(f"{server.url}/invocations", json={"instances": records})
        result["done"] = time.monotonic()

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(0.2)  # the request is being predicted, one record per batch
    terminated = time.monotonic()
    assert server.stop() == 0
    sender.join(30)
    answer = result["answer"]
    assert isinstance(answer, httpx.Response) and answer.status_code == 200
    assert len(answer.json()["predictions"]) == 1000
    assert result["done"] > terminated  # it was still in flight when SIGTERM arrived


def test_explanations_on_invocations_as_clarify_asks_for_them(
    start_server: StartServer, fraud_mlp: BuiltPackage, transactions: Transactions, client: httpx.Client
) -> None:
    """CustomAttributes explain=true (what the gateway sends through InvokeEndpoint) or the header
    X-Sagegate-Explain: each prediction comes with its explanation, adding up to its probability."""
    server = start_server(fraud_mlp)
    url = f"{server.url}/invocations"
    records = transactions.records[:3]
    plain = client.post(url, json={"instances": records}).json()["predictions"]
    assert all("explanation" not in p for p in plain)
    for headers in ({"X-Amzn-SageMaker-Custom-Attributes": "explain=true"}, {"X-Sagegate-Explain": "true"}):
        answered = client.post(url, json={"instances": records}, headers=headers)
        assert answered.status_code == 200, answered.text
        for p, before in zip(answered.json()["predictions"], plain, strict=True):
            explanation = p["explanation"]
            assert (explanation["method"], explanation["output_space"]) == ("permutation", "probability")
            assert set(explanation["contributions"]) == set(records[0])
            total = explanation["base_value"] + sum(explanation["contributions"].values())
            assert total == pytest.approx(p["prediction"], abs=1e-4)  # the positive class's probability
            assert p["prediction"] == pytest.approx(before["prediction"])
    refused = client.post(url, json={"instances": records}, headers={"X-Sagegate-Explain": "yes"})
    assert refused.status_code == 400 and "explain must be true or false" in refused.json()["error"]
    as_csv = client.post(url, json={"instances": records}, headers={"X-Sagegate-Explain": "true", "Accept": "text/csv"})
    assert as_csv.status_code == 406


def test_explaining_a_model_packaged_without_an_explainer_is_a_400(
    start_server: StartServer,
    fraud_logreg: BuiltPackage,
    transactions: Transactions,
    client: httpx.Client,
    tmp_path: Path,
) -> None:
    import shutil

    copy = tmp_path / "without"
    shutil.copytree(fraud_logreg.path, copy)
    manifest = fraud_logreg.manifest.model_copy(update={"explainer": None})
    (copy / "manifest.json").write_text(manifest.dumps())
    (copy / "explainer.npz").unlink()
    server = start_server(copy)
    answered = client.post(
        f"{server.url}/invocations",
        json={"instances": transactions.records[:1]},
        headers={"X-Sagegate-Explain": "true"},
    )
    assert answered.status_code == 400
    assert "has no explainer" in answered.json()["error"]
