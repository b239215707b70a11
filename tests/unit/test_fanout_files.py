"""The fan-out refuses up front a run a node could not hold under the open-files limit."""

from __future__ import annotations

import argparse

import pytest

from loadtest.fanout import SPARE_FILES, check_files

ROOMS_OF_4 = 1000  # 4,000 connections


def _args(nodes: int, gateway: bool) -> argparse.Namespace:
    return argparse.Namespace(members=4, nodes=nodes, gateway=gateway)


def test_direct_rooms_of_4_on_3_nodes_put_half_of_every_room_on_node1() -> None:
    files = 2000 + SPARE_FILES  # members 0 and 3 of 1,000 rooms: 2,000 sockets on node1
    check_files(_args(nodes=3, gateway=False), ROOMS_OF_4, files)
    with pytest.raises(SystemExit, match="2000 sockets a node"):
        check_files(_args(nodes=3, gateway=False), ROOMS_OF_4, files - 1)


def test_through_the_gateway_the_nodes_share_the_connections_evenly() -> None:
    with pytest.raises(SystemExit, match="1334 sockets a node"):  # 4,000 over 3 nodes
        check_files(_args(nodes=3, gateway=True), ROOMS_OF_4, 1333 + SPARE_FILES)
    # nginx's two files a WebSocket do not count: it starts as many workers as they need
    check_files(_args(nodes=3, gateway=True), ROOMS_OF_4, 1334 + SPARE_FILES)
