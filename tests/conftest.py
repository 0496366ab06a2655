"""Shared fixtures: real models trained and packaged once per test session."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sagegate.local.data import Transactions, generate_transactions
from sagegate.local.examples import build_fraud_package
from sagegate.packaging import BuiltPackage


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and a region: a test can sign requests but never reach a real account."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="session")
def transactions() -> Transactions:
    return generate_transactions(4000, seed=3)


@pytest.fixture(scope="session")
def packages_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("packages")


@pytest.fixture(scope="session")
def fraud_logreg(packages_dir: Path, transactions: Transactions) -> BuiltPackage:
    return build_fraud_package(packages_dir / "fraud-logreg", "logreg", data=transactions)


@pytest.fixture(scope="session")
def fraud_xgboost(packages_dir: Path, transactions: Transactions) -> BuiltPackage:
    return build_fraud_package(packages_dir / "fraud-xgboost", "xgboost", name="fraud-xgb", data=transactions)


@pytest.fixture(scope="session")
def fraud_mlp(packages_dir: Path, transactions: Transactions) -> BuiltPackage:
    return build_fraud_package(packages_dir / "fraud-mlp", "mlp", name="fraud-mlp", data=transactions)


@pytest.fixture
def model_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "models"
    path.mkdir()
    yield path


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections and never answers: a Redis that hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()
