"""How many workers, and what each gets: its share of the memory budget and of the CPUs."""

from __future__ import annotations

from pathlib import Path

from sagegate.server.config import ServerConfig
from sagegate.server.workers import available_cpus, models_memory_mb, resolve_workers, worker_config


def test_workers_default_to_the_cpus_the_container_may_use(tmp_path: Path) -> None:
    assert resolve_workers(ServerConfig(workers=0, model_dir=tmp_path)) == available_cpus()
    assert resolve_workers(ServerConfig(workers=3)) == 3
    assert resolve_workers(ServerConfig.from_env({"SAGEGATE_WORKERS": "4"})) == 4
    assert ServerConfig.from_env({"SAGEMAKER_MODEL_SERVER_WORKERS": "3"}).workers == 3
    assert ServerConfig.from_env({"SAGEMAKER_MODEL_SERVER_WORKERS": "3", "SAGEGATE_WORKERS": "2"}).workers == 2


def test_a_multi_model_server_runs_one_worker() -> None:
    assert resolve_workers(ServerConfig(multi_model=True, workers=4)) == 1


def test_each_worker_gets_its_share_of_the_memory_budget_and_of_the_cpus() -> None:
    share = worker_config(ServerConfig(memory_budget_mb=1000, workers=4), 4)
    assert share.memory_budget_mb == 250
    assert share.workers == 1
    assert share.intra_op_threads == max(1, available_cpus() // 4)
    pinned = worker_config(ServerConfig(memory_budget_mb=1000, intra_op_threads=2), 4)
    assert pinned.intra_op_threads == 2  # a setting given is kept


def test_no_more_workers_by_default_than_copies_of_the_models_the_budget_holds(tmp_path: Path) -> None:
    package = tmp_path / "big"
    package.mkdir()
    (package / "manifest.json").write_text("{}")
    (package / "model.onnx").write_bytes(b"\0" * (4 * 1024 * 1024))  # about 9 MB to load
    need = models_memory_mb(tmp_path)
    assert 8 < need < 10
    assert resolve_workers(ServerConfig(model_dir=tmp_path, memory_budget_mb=int(need) + 1)) == 1
    assert resolve_workers(ServerConfig(model_dir=tmp_path, memory_budget_mb=int(need) + 1, workers=2)) == 2
    assert resolve_workers(ServerConfig(model_dir=tmp_path, memory_budget_mb=10_000)) == available_cpus()
