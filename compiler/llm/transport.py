"""Where a teacher request meets litellm: in this process, or in forked worker processes.

Why workers: litellm spends 3-6 ms of CPU on every call (the openai SDK's request transform,
pydantic response objects, cost and logging hooks). At a few hundred requests a second that fills
one core, and requests then wait on the client instead of the teacher. Workers are forked after
litellm is imported (no import cost, no re-registration) and each runs its own event loop. They
do one thing: one attempt per message (compiler/llm/backend.py), answered with a plain `Outcome`.
Retries, backoff, the breaker, endpoint choice, the cache and the gates stay in the parent, so a
run behaves the same with one worker or eight.

When they pay: only above ~300 requests/s. A hosted model (GPT-4o class, a 70B model on vLLM)
answers at tens of requests a second, where one process has CPU to spare and workers only add a
fork, pipes and a copy of the heap. Requests per second are concurrency / latency (Little's law),
and kdc cannot know the latency before it asks, so the automatic rule (teacher.py) goes by the
concurrency alone: in this process below 128 in flight (at >= 0.5 s an answer, under ~250
requests/s), then one worker per 64 in flight, up to the cores. `teacher_workers` /
`--teacher-workers N` forces a count, e.g. for a fast local server at high request rates.

On the direct path (compiler/llm/httpclient.py) a request costs ~1 ms of client CPU instead of
~11, so one process keeps up with several hundred requests a second and workers only add pipes:
measured with benchmarks/bench_client_cpu.py (2 cores, 200 ms, 32 in flight) 1.3 ms and 100 req/s
in process against 2.1 ms and 92 req/s with 2 workers. So `auto` forks none there; the workers
still carry the direct client when a count is forced.

Messages are length-prefixed pickles over pipes read by the event loops (no threads, no
blocking writes). A worker exits when its request pipe closes, so `kill -9` of the parent leaves
no orphan behind; a worker that dies fails its requests as transport errors (retried elsewhere).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import pickle
import signal
import struct
import sys
import threading
from dataclasses import dataclass
from typing import Any

from compiler.llm.backend import Outcome, attempt
from compiler.llm.perprocess import PerProcess

__all__ = ["InProcess", "Outcome", "WorkerPool", "can_fork"]

log = logging.getLogger("kdc.teacher")

_HEADER = struct.Struct("!I")


def _start_io_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="kdc-llm-io", daemon=True).start()
    return loop


_IO = PerProcess(_start_io_loop)


def io_loop() -> asyncio.AbstractEventLoop:
    """The process's one I/O event loop for litellm calls, on a daemon thread started on first use.
    One for every client (teacher, judge, eval judge): litellm keeps loop-bound globals (its
    logging worker, cached HTTP clients), which two loops would fight over. It lives as long as the
    process; a forked child starts its own."""
    return _IO.get()


class InProcess:
    """litellm (or the direct HTTP client, `direct`) in this process: the default, and the only way
    for the embedded model.

    The calls run on the I/O event loop (`io_loop`), not on the caller's: the main loop also runs
    the gates, and while it is busy an answer that has arrived would wait there to be read (the
    server sees its slot free, kdc does not, and the next request waits too). The I/O loop does
    nothing else, so it reads an answer within a GIL switch (5 ms)."""

    def __init__(self, lt: Any = None, direct: Any = None):
        self.lt, self.direct = lt, direct

    async def call(self, kwargs: dict[str, Any], deadline: float) -> Outcome:
        future = asyncio.run_coroutine_threadsafe(_attempt(self.lt, self.direct, kwargs, deadline), io_loop())
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise

    def close(self) -> None:
        if self.direct is not None:  # its session lives on the I/O loop; the loop lives on
            self.direct.close()


def _attempt(lt: Any, direct: Any, kwargs: dict[str, Any], deadline: float):
    """One attempt on the direct HTTP client when there is one, else through litellm."""
    return direct.attempt(kwargs, deadline) if direct is not None else attempt(lt, kwargs, deadline)


# ------------------------------------------------------------------------------- framing
class _Channel:
    """Length-prefixed pickles both ways over two non-blocking pipe fds, driven by an event loop's
    reader and writer callbacks: no threads, a send never blocks, and nothing stays bound to a
    closed loop (a Teacher may serve several `asyncio.run`s)."""

    def __init__(self, read_fd: int, write_fd: int, on_frame, on_lost):
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        self.rfd, self.wfd = read_fd, write_fd
        self.on_frame, self.on_lost = on_frame, on_lost
        self.inbox, self.outbox = bytearray(), bytearray()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.lost = False

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.detach()
        self.loop = loop
        loop.add_reader(self.rfd, self._readable)
        if self.outbox:
            loop.add_writer(self.wfd, self._writable)

    def detach(self) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.remove_reader(self.rfd)
            self.loop.remove_writer(self.wfd)
        self.loop = None

    def send(self, obj: Any) -> None:
        body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        self.outbox += _HEADER.pack(len(body)) + body
        self._writable()

    def _writable(self) -> None:
        try:
            n = os.write(self.wfd, self.outbox)
        except BlockingIOError:
            n = 0
        except OSError:  # the other end is gone
            self.outbox.clear()
            return self._lost()
        del self.outbox[:n]
        if self.loop is not None:
            if self.outbox:
                self.loop.add_writer(self.wfd, self._writable)
            else:
                self.loop.remove_writer(self.wfd)

    def _readable(self) -> None:
        try:
            data = os.read(self.rfd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            return self._lost()
        self.inbox += data
        while len(self.inbox) >= _HEADER.size:
            (n,) = _HEADER.unpack_from(self.inbox)
            if len(self.inbox) < _HEADER.size + n:
                return
            body = bytes(self.inbox[_HEADER.size:_HEADER.size + n])
            del self.inbox[:_HEADER.size + n]
            self.on_frame(pickle.loads(body))

    def _lost(self) -> None:
        self.detach()
        if not self.lost:
            self.lost = True
            self.on_lost()

    def close(self) -> None:
        self.detach()
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass


# ------------------------------------------------------------------------------- the worker
def _worker_main(read_fd: int, write_fd: int, close_fds: list[int], lt: Any, direct: Any = None) -> None:
    """Body of a forked worker: answer requests until the parent closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # Everything inherited (litellm and its ~400k objects) lives as long as the worker: out of the
    # collector's sight, a full collection takes microseconds instead of ~200 ms that would stall
    # every request in flight here.
    gc.freeze()
    for fd in close_fds:  # the other workers' pipes: holding them would keep those workers alive
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        asyncio.run(_serve(read_fd, write_fd, lt, direct))
    finally:
        os._exit(0)


async def _serve(read_fd: int, write_fd: int, lt: Any, direct: Any = None) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    tasks: set[asyncio.Task] = set()

    async def answer(rid: int, kwargs: dict[str, Any], deadline: float) -> None:
        outcome = await _attempt(lt, direct, kwargs, deadline)
        if not channel.lost:
            channel.send((rid, outcome))

    def on_frame(msg) -> None:
        task = asyncio.ensure_future(answer(*msg))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def on_lost() -> None:
        if not done.done():
            done.set_result(None)

    channel = _Channel(read_fd, write_fd, on_frame, on_lost)
    channel.attach(loop)
    await done
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    channel.close()


# ------------------------------------------------------------------------------- the pool
@dataclass
class _Worker:
    process: Any
    channel: _Channel
    outstanding: int = 0
    alive: bool = True


class WorkerPool:
    """N forked workers; each request goes to the live worker with the fewest outstanding."""

    def __init__(self, lt: Any, n: int, direct: Any = None):
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        self.workers: list[_Worker] = []
        self._fallback = InProcess(lt, direct)
        self._pending: dict[int, tuple[int, asyncio.Future]] = {}
        self._next_id = 0
        parent_fds: list[int] = []
        for i in range(n):
            req_r, req_w = os.pipe()
            res_r, res_w = os.pipe()
            proc = ctx.Process(target=_worker_main, args=(req_r, res_w, [*parent_fds, req_w, res_r], lt, direct),
                               daemon=True, name=f"kdc-teacher-{i}")
            proc.start()
            os.close(req_r)
            os.close(res_w)
            parent_fds += [req_w, res_r]
            channel = _Channel(res_r, req_w, self._on_frame, lambda i=i: self._on_lost(i))
            self.workers.append(_Worker(proc, channel))
        log.debug("teacher workers: %s", [w.process.pid for w in self.workers])

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self.workers]

    def _on_frame(self, msg) -> None:
        rid, outcome = msg
        entry = self._pending.get(rid)
        if entry is not None and not entry[1].done():
            entry[1].set_result(outcome)

    def _on_lost(self, i: int) -> None:
        w = self.workers[i]
        if not w.alive:
            return
        w.alive = False
        log.warning("teacher worker %d exited; its requests are retried", w.process.pid)
        for wi, fut in list(self._pending.values()):
            if wi == i and not fut.done():
                fut.set_result(Outcome("error", message="the teacher worker process exited",
                                       error_type="WorkerExited"))

    async def call(self, kwargs: dict[str, Any], deadline: float) -> Outcome:
        loop = asyncio.get_running_loop()
        live = [i for i, w in enumerate(self.workers) if w.alive]
        if not live:
            return await self._fallback.call(kwargs, deadline)
        i = min(live, key=lambda k: self.workers[k].outstanding)
        w = self.workers[i]
        if w.channel.loop is not loop:
            w.channel.attach(loop)
        self._next_id += 1
        rid = self._next_id
        fut = loop.create_future()
        self._pending[rid] = (i, fut)
        w.outstanding += 1
        try:
            w.channel.send((rid, kwargs, deadline))
            return await asyncio.wait_for(fut, deadline + 5)
        except asyncio.TimeoutError:
            return Outcome("timeout", message=f"the teacher worker gave no answer within {deadline + 5:g}s")
        finally:
            del self._pending[rid]
            w.outstanding -= 1

    def close(self) -> None:
        """Close the pipes (the workers see EOF and exit) and reap the processes."""
        for w in self.workers:
            w.channel.close()
        for w in self.workers:
            w.process.join(timeout=5)
            if w.process.is_alive():
                w.process.kill()
                w.process.join(timeout=5)
        self.workers = []


def can_fork() -> bool:
    """Workers need fork (Linux; not macOS/Windows, where fork is unsafe or absent)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")
