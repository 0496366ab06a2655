"""How many workers, and what each gets: its share of the memory budget and of the CPUs."""

from __future__ import annotations

from sagegate.server.config import ServerConfig
from sagegate.server.workers import available_cpus, resolve_workers, worker_config


def test_workers_default_to_the_cpus_the_container_may_use() -> None:
    assert resolve_workers(ServerConfig(workers=0)) == available_cpus()
    assert resolve_workers(ServerConfig(workers=3)) == 3
    assert resolve_workers(ServerConfig.from_env({"SAGEGATE_WORKERS": "4"})) == 4


def test_a_multi_model_server_runs_one_worker() -> None:
    assert resolve_workers(ServerConfig(multi_model=True, workers=4)) == 1


def test_each_worker_gets_its_share_of_the_memory_budget_and_of_the_cpus() -> None:
    share = worker_config(ServerConfig(memory_budget_mb=1000, workers=4), 4)
    assert share.memory_budget_mb == 250
    assert share.workers == 1
    assert share.intra_op_threads == max(1, available_cpus() // 4)
    pinned = worker_config(ServerConfig(memory_budget_mb=1000, intra_op_threads=2), 4)
    assert pinned.intra_op_threads == 2  # a setting given is kept
