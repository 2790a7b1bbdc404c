import asyncio
import threading

import pytest

from mmsa.monitor.channels import Channel, ChannelClosed


async def test_offer_drops_the_oldest_and_counts():
    ch = Channel("frames", 3)
    for i in range(10):
        assert ch.offer(i)
    assert len(ch) == 3 and ch.dropped == 7 and ch.high_water == 3
    assert [await ch.get() for _ in range(3)] == [7, 8, 9]


async def test_capacity_in_units():
    ch = Channel("audio", 100, size_of=len)
    for n in (40, 40, 40):
        ch.offer([0] * n)
    assert ch.size == 80 and ch.dropped == 1


async def test_put_waits_for_room_and_never_drops():
    ch = Channel("windows", 2)
    got = []

    async def producer():
        for i in range(20):
            await ch.put(i)
        ch.close()

    async def consumer():
        while True:
            try:
                got.append(await ch.get())
            except ChannelClosed:
                return
            assert len(ch) <= 2

    await asyncio.gather(producer(), consumer())
    assert got == list(range(20)) and ch.dropped == 0 and ch.high_water <= 2


async def test_offer_from_threads_wakes_the_consumer():
    ch = Channel("audio", 1000)

    def produce():
        for i in range(100):
            ch.offer(i)
        ch.close()

    t = threading.Thread(target=produce)
    t.start()
    got = []
    while True:
        try:
            got.append(await ch.get())
        except ChannelClosed:
            break
    t.join()
    assert got == list(range(100))


async def test_closed_channel_drains_then_raises():
    ch = Channel("x", 5)
    ch.offer("a")
    ch.close()
    assert not ch.offer("b")
    assert await ch.get() == "a"
    with pytest.raises(ChannelClosed):
        await ch.get()
    with pytest.raises(ChannelClosed):
        await ch.put("c")
