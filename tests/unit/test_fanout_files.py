"""The fan-out spreads every room size evenly over the nodes, and refuses up front a run a node
could not hold under the open-files limit."""

from __future__ import annotations

import argparse

import pytest

from loadtest.fanout import SPARE_FILES, _placement, check_files

ROOMS_OF_4 = 1000  # 4,000 connections


def _args(nodes: int, gateway: bool) -> argparse.Namespace:
    return argparse.Namespace(members=4, nodes=nodes, gateway=gateway)


def test_direct_rooms_of_4_on_3_nodes_rotate_so_that_no_node_holds_half() -> None:
    # member i of room r on node (r + i) % 3: node1 gets 2 of a room's 4 one room in three
    files = 1334 + SPARE_FILES
    check_files(_args(nodes=3, gateway=False), ROOMS_OF_4, files)
    with pytest.raises(SystemExit, match="1334 sockets a node"):
        check_files(_args(nodes=3, gateway=False), ROOMS_OF_4, files - 1)


def test_each_node_holds_its_share_of_members_and_spread_senders() -> None:
    shares = _placement(argparse.Namespace(system="chat", nodes=3, members=4, senders=1,
                                           rooms=ROOMS_OF_4, spread=True))
    assert [round(s["members"], 3) for s in shares.values()] == [0.334, 0.333, 0.333]
    assert [round(s["senders"], 3) for s in shares.values()] == [0.334, 0.333, 0.333]
    concentrated = _placement(argparse.Namespace(system="chat", nodes=3, members=4, senders=1,
                                                 rooms=ROOMS_OF_4, spread=False))
    assert [s["senders"] for s in concentrated.values()] == [1.0, 0.0, 0.0]


def test_through_the_gateway_the_nodes_share_the_connections_evenly() -> None:
    with pytest.raises(SystemExit, match="1334 sockets a node"):  # 4,000 over 3 nodes
        check_files(_args(nodes=3, gateway=True), ROOMS_OF_4, 1333 + SPARE_FILES)
    # nginx's two files a WebSocket do not count: it starts as many workers as they need
    check_files(_args(nodes=3, gateway=True), ROOMS_OF_4, 1334 + SPARE_FILES)
