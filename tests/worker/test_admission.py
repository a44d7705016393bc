import threading

import pytest

from corral.errors import OverloadedError
from corral.worker.admission import BoundedFifo


def test_items_come_out_in_arrival_order() -> None:
    fifo: BoundedFifo[int] = BoundedFifo(3)
    for i in range(3):
        fifo.put(i)
    assert [fifo.get(), fifo.get(), fifo.get()] == [0, 1, 2]


def test_full_queue_refuses_with_503_and_retry_after() -> None:
    fifo: BoundedFifo[int] = BoundedFifo(2, retry_after_s=3)
    fifo.put(1)
    fifo.put(2)
    with pytest.raises(OverloadedError) as caught:
        fifo.put(3)
    assert caught.value.status == 503
    assert caught.value.headers == {"Retry-After": "3"}
    assert "2 requests waiting" in caught.value.message
    fifo.get()
    fifo.put(3)  # room again once the engine took one
    assert len(fifo) == 2


def test_removed_items_free_their_place() -> None:
    fifo: BoundedFifo[str] = BoundedFifo(1)
    fifo.put("a")
    assert fifo.remove("a")
    assert not fifo.remove("a")
    fifo.put("b")
    assert fifo.get() == "b"


def test_get_blocks_until_an_item_arrives() -> None:
    fifo: BoundedFifo[int] = BoundedFifo(1)
    got: list[int | None] = []
    taker = threading.Thread(target=lambda: got.append(fifo.get()))
    taker.start()
    fifo.put(7)
    taker.join(5)
    assert got == [7]


def test_close_wakes_the_taker_and_returns_what_waited() -> None:
    fifo: BoundedFifo[int] = BoundedFifo(4)
    fifo.put(1)
    assert fifo.close() == [1]
    assert fifo.get() is None
    with pytest.raises(OverloadedError, match="shutting down"):
        fifo.put(2)


def test_close_wakes_a_blocked_taker() -> None:
    fifo: BoundedFifo[int] = BoundedFifo(1)
    got: list[int | None] = []
    taker = threading.Thread(target=lambda: got.append(fifo.get()))
    taker.start()
    fifo.close()
    taker.join(5)
    assert got == [None]


def test_get_many_takes_what_fits_in_the_limit() -> None:
    fifo: BoundedFifo[list[str]] = BoundedFifo(8)
    for batch in (["a", "b"], ["c"], ["d", "e", "f"], ["g"]):
        fifo.put(batch)
    assert fifo.get_many(4, len) == [["a", "b"], ["c"]]
    assert fifo.get_many(4, len) == [["d", "e", "f"], ["g"]]


def test_get_many_always_takes_the_head_even_if_it_is_too_big() -> None:
    fifo: BoundedFifo[list[int]] = BoundedFifo(8)
    fifo.put(list(range(10)))
    fifo.put([1])
    assert fifo.get_many(4, len) == [list(range(10))]
