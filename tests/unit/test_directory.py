"""The room directory is served from a copy at most a second old."""

from __future__ import annotations

from node.backends.presence import RoomCount, RoomPage
from node.chat import directory
from node.chat.directory import Directory


class CountingPresence:
    def __init__(self) -> None:
        self.calls = 0

    async def rooms(self, offset: int, limit: int) -> RoomPage:
        self.calls += 1
        return RoomPage([RoomCount(f"r{offset}", self.calls)], 1)


async def test_a_page_asked_again_within_a_second_costs_no_backend_call() -> None:
    presence = CountingPresence()
    clock = [100.0]
    rooms = Directory(presence, lambda: clock[0])  # type: ignore[arg-type]
    first = await rooms.page(0, 10)
    assert await rooms.page(0, 10) is first and presence.calls == 1
    await rooms.page(10, 10)  # another page is another copy
    assert presence.calls == 2
    clock[0] += directory.FRESH
    assert (await rooms.page(0, 10)).rooms[0].user_count == 3  # stale: asked again


async def test_the_copies_are_bounded() -> None:
    presence = CountingPresence()
    rooms = Directory(presence, lambda: 5.0)  # type: ignore[arg-type]
    for offset in range(directory.PAGES * 3):
        await rooms.page(offset, 1)
    assert len(rooms._pages) <= directory.PAGES
