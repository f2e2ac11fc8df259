"""Batches prepared on a reader thread, ahead of the consumer: file reads and demuxing off the training thread.

    reader = Prefetcher(prepare, iter(batches), depth=4)   # prepare(batch) runs on the thread, in order
    item = reader.get()                                     # the next prepared item; StopIteration at the end
    rest = reader.stop()                                    # batches taken but not consumed, in order

DALI's `external_source` callback runs inside `pipe.run()` on the caller's thread, so reading ~15 files per
step there serialises I/O with the accelerator step. Here the callback only takes a prepared batch from the
queue. Order is kept (one thread prepares the batches one after another), so the clips, substitutions and
warnings are those of the serial code; an exception raised by `prepare` is re-raised by `get` at its place.
`stop` hands back the batches that were prepared but never consumed, so a caller that must re-plan (a file
that failed to decode changes the substitutions) prepares them again with what it knows now.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator

_END = object()


class Prefetcher:
    def __init__(self, prepare: Callable[[Any], Any], batches: Iterator[Any], *, depth: int = 4):
        self._prepare, self._batches = prepare, batches
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stopping = threading.Event()
        self._unqueued: list[Any] = []  # taken from `batches` by the thread but never queued (stopped meanwhile)
        self._done = False
        self._thread = threading.Thread(target=self._work, name="c3dhash-reader", daemon=True)
        self._thread.start()

    def _put(self, item: tuple) -> bool:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        for batch in self._batches:
            if self._stopping.is_set():
                self._unqueued.append(batch)
                return
            try:
                item: tuple = (batch, self._prepare(batch), None)
            except BaseException as exc:  # noqa: BLE001 - re-raised by get() in the consumer's thread
                item = (batch, None, exc)
            if not self._put(item):
                self._unqueued.append(batch)
                return
            if item[2] is not None:
                return
        self._put((_END, None, None))

    def get(self) -> Any:
        """The next prepared item, in order; StopIteration after the last; `prepare`'s exception at its place."""
        if self._done:
            raise StopIteration
        batch, prepared, exc = self._queue.get()
        if batch is _END or exc is not None:
            self._done = True
        if exc is not None:
            raise exc
        if batch is _END:
            raise StopIteration
        return prepared

    def stop(self) -> list[Any]:
        """Stop the thread; the batches it took but that were never consumed by get(), in order."""
        self._stopping.set()
        self._thread.join()
        rest = []
        while True:
            try:
                batch, _, _ = self._queue.get_nowait()
            except queue.Empty:
                break
            if batch is not _END:
                rest.append(batch)
        rest += self._unqueued
        self._unqueued = []
        self._done = True
        return rest
