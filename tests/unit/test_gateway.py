import os
import resource
from pathlib import Path

import pytest

from gateway.cluster import Cluster
from gateway.nginx import MAX_CONN_LIMIT, MAX_FILES, GatewayConfig, max_files
from gateway.processes import MissingBinary, find_binary


def test_a_missing_binary_names_the_package_to_install() -> None:
    with pytest.raises(MissingBinary, match="apt-get install some-package"):
        find_binary("no-such-binary-here", "some-package")


def test_the_config_balances_least_conn_with_passive_health(tmp_path) -> None:
    text = GatewayConfig("127.0.0.1:8080", ["127.0.0.1:1", "127.0.0.1:2"], tmp_path).render()
    assert "least_conn;" in text
    assert "worker_processes auto;" in text
    assert "zone chat_ws 64k;" in text and "zone chat_api 64k;" in text
    assert "server 127.0.0.1:1 max_fails=3 fail_timeout=5s;" in text  # HTTP
    assert "server 127.0.0.1:1 max_fails=0;" in text  # WebSockets
    assert "proxy_next_upstream error timeout http_502 http_503;" in text
    assert "map $http_upgrade $connection_upgrade" in text
    assert "{{" not in text


def test_each_worker_holds_as_many_connections_as_it_may_open_files(tmp_path) -> None:
    hard_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    text = GatewayConfig("127.0.0.1:8080", ["127.0.0.1:1"], tmp_path).render()
    files = min(MAX_FILES, hard_limit)
    assert f"worker_rlimit_nofile {files};" in text
    assert f"worker_connections {files};" in text
    assert "listen 127.0.0.1:8080 reuseport;" in text, "the kernel spreads the connections"


@pytest.mark.parametrize("limit", [0, MAX_CONN_LIMIT + 1])
def test_a_per_address_limit_nginx_would_refuse_is_refused_first(tmp_path, limit: int) -> None:
    with pytest.raises(ValueError, match="ws_per_address must be 1 to 65535"):
        GatewayConfig("127.0.0.1:8080", ["127.0.0.1:1"], tmp_path, ws_per_address=limit)


def _workers(tmp_path: Path, websockets: int, **options: object) -> str:
    return GatewayConfig("127.0.0.1:8080", ["127.0.0.1:1"], tmp_path, max_files=1000,
                         websockets=websockets, **options).worker_processes  # type: ignore[arg-type]


def test_workers_are_one_per_core_while_that_carries_what_the_nodes_may_hold(tmp_path) -> None:
    cores = len(os.sched_getaffinity(0))
    assert _workers(tmp_path, 0) == "auto"
    assert _workers(tmp_path, cores * 450) == "auto"  # 900 files a worker, a tenth spare


def test_more_workers_start_when_their_files_could_not_carry_the_nodes_websockets(
    tmp_path,
) -> None:
    cores = len(os.sched_getaffinity(0))
    websockets = cores * 5000  # 10,000 files a core's worker: ten workers' worth, plus spare
    assert _workers(tmp_path, websockets) == str(cores * 11)
    config = GatewayConfig("127.0.0.1:8080", ["127.0.0.1:1"], tmp_path, max_files=1000,
                           websockets=websockets)
    assert f"worker_processes {cores * 11};" in config.render()
    assert _workers(tmp_path, websockets, workers="3") == "3"  # asked for: as asked


def test_the_launcher_sizes_nginx_for_what_its_nodes_may_hold(tmp_path) -> None:
    assert Cluster(tmp_path, 3).node_capacity() == min(10_000, max_files())  # the default
    assert Cluster(tmp_path, 3, node_args=["--max-connections=50"]).node_capacity() == 50
    from_env = Cluster(tmp_path, 3, node_env={"CHAT_MAX_CONNECTIONS": "70"})
    assert from_env.node_capacity() == 70
    assert Cluster(tmp_path, 1, node_args=["--max-connections=10000000"]).node_capacity() == (
        max_files())  # its open-files limit holds it first
