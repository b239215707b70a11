from node.broker_memory import MemoryBroker
from node.envelope import UNSEQUENCED, Publication
from tests.broker_events import Recorder


async def _started(capacity: int = 3) -> tuple[MemoryBroker, list[Publication]]:
    events = Recorder()
    broker = MemoryBroker(capacity=capacity)
    await broker.start(events)
    return broker, events.received


async def test_messages_get_consecutive_seqs_per_room() -> None:
    broker, _ = await _started()
    assert [await broker.publish_message("a", b'{"seq":', ()) for _ in range(3)] == [1, 2, 3]
    assert await broker.publish_message("b", b'{"seq":', ()) == 1


async def test_only_subscribed_rooms_are_delivered() -> None:
    broker, received = await _started()
    await broker.publish_message("a", b'{"seq":', ())
    await broker.subscribe("a")
    await broker.publish_message("a", b'{"seq":', ())
    broker.deliver(Publication("a", UNSEQUENCED, b"{}", "me", 7))
    await broker.unsubscribe("a")
    await broker.publish_message("a", b'{"seq":', ())
    assert received == [Publication("a", 2, b'{"seq":2}'), Publication("a", UNSEQUENCED, b"{}", "me", 7)]


async def test_history_keeps_the_newest_up_to_capacity() -> None:
    broker, _ = await _started(capacity=3)
    for _ in range(5):
        await broker.publish_message("a", b'{"seq":', ())
    window = await broker.history("a", 2)
    assert (window.messages, window.seq) == ([b'{"seq":4}', b'{"seq":5}'], 5)
    assert len((await broker.history("a", 10)).messages) == 3
    assert (await broker.history("none", 10)).seq == 0
