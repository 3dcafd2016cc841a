"""Read the next batches in a background thread while the model works on this one.

Slicing the memory-mapped uint8 cache (page-cache reads, a gather in shuffled order) and, on a
GPU, copying into pinned memory take time the accelerator would otherwise spend idle. Torch and
NumPy release the GIL for those copies, so one thread is enough to overlap them with compute;
worker processes (a DataLoader's) would only add pickling of arrays that are already decoded.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

import torch

T = TypeVar("T")
_DONE = object()


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` in order, producing up to ``depth`` ahead in a daemon thread.

    ``depth=0`` iterates in the caller's thread. An exception in the producer is raised in the
    consumer at the point it would have happened; a consumer that stops early (``break``, an
    error) stops the producer at its next item.
    """
    if depth <= 0:
        yield from items
        return
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                slots.put(item)
            slots.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            slots.put(exc)

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                slots.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


def pinned(tensors: tuple[torch.Tensor, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Page-locked copies when the batch is bound for a CUDA device, so ``.to(device,
    non_blocking=True)`` really is asynchronous; unchanged otherwise."""
    if device.type != "cuda":
        return tensors
    return tuple(t.pin_memory() for t in tensors)


def decoded_batches(
    images, image_ids: list[str], batch_size: int, device: torch.device, depth: int = 2
) -> Iterator[torch.Tensor]:
    """uint8 NHWC batches of ``images.take(ids)`` in order, read ahead and already on ``device``."""
    stream = (
        pinned((torch.from_numpy(images.take(image_ids[start : start + batch_size])),), device)
        for start in range(0, len(image_ids), batch_size)
    )
    for (batch,) in prefetch(stream, depth):
        yield batch.to(device, non_blocking=True)


def input_batches(
    images,
    image_ids: list[str],
    batch_size: int,
    device: torch.device,
    prep,
    desc: str,
    network: str = "network",
) -> Iterator[torch.Tensor]:
    """Normalised float32 centre crops (channels_last) of ``image_ids`` by batch, read ahead,
    with a progress bar: the one input stream of every pass over the photos (features,
    evaluation), each recorded as ``network`` over ``desc`` (:mod:`petsml.data.passes`)."""
    import math

    from tqdm import tqdm

    from petsml.data.passes import record
    from petsml.data.tensors import to_input

    record(network, desc, len(image_ids))
    steps = math.ceil(len(image_ids) / batch_size)
    stream = decoded_batches(images, image_ids, batch_size, device)
    bar = tqdm(stream, total=steps, desc=desc, unit="batch", mininterval=2, disable=steps < 5)
    for batch in bar:
        yield to_input(batch, prep.mean, prep.std, size=int(prep.input_size), channels_last=True)
