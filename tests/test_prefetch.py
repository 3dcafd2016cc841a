"""The read-ahead thread: same items, same order, errors where they happened, no leaked thread."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from petsml.data.prefetch import decoded_batches, pinned, prefetch


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_prefetch_yields_every_item_in_order(depth):
    assert list(prefetch(iter(range(50)), depth)) == list(range(50))


def test_prefetch_reads_ahead_while_the_consumer_works():
    produced: list[int] = []

    def slow_source():
        for i in range(4):
            produced.append(i)
            yield i

    stream = prefetch(slow_source(), depth=2)
    assert next(stream) == 0
    deadline = time.monotonic() + 5
    while len(produced) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(produced) >= 3  # items 1 and 2 are ready before they are asked for
    assert list(stream) == [1, 2, 3]


def test_prefetch_raises_the_producers_error_in_the_consumer():
    def broken():
        yield 1
        raise OSError("disk gone")

    stream = prefetch(broken(), depth=2)
    assert next(stream) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(stream)


def test_stopping_early_stops_the_producer_thread():
    before = {t.ident for t in threading.enumerate()}
    produced = []

    def many():
        for i in range(10_000):
            produced.append(i)
            yield i

    stream = prefetch(many(), depth=2)
    assert next(stream) == 0
    stream.close()  # returns once the producer thread has ended
    leaked = [t for t in threading.enumerate() if t.ident not in before and t.name == "prefetch"]
    assert not leaked
    assert len(produced) < 10  # the producer stopped at the next item, not at the source's end


class _Images:
    def __init__(self, n: int) -> None:
        self.array = np.arange(n * 2 * 2 * 3, dtype=np.uint8).reshape(n, 2, 2, 3)
        self.ids = [f"img_{i}" for i in range(n)]

    def take(self, ids):
        return self.array[[self.ids.index(i) for i in ids]]


def test_decoded_batches_cover_the_ids_in_order_on_the_device():
    images = _Images(7)
    ids = images.ids[::-1]
    got = list(decoded_batches(images, ids, 3, torch.device("cpu")))
    assert [len(b) for b in got] == [3, 3, 1]
    torch.testing.assert_close(torch.cat(got), torch.from_numpy(images.array[::-1].copy()))


def test_pinned_leaves_cpu_batches_alone():
    t = torch.zeros(2)
    assert pinned((t,), torch.device("cpu"))[0] is t
