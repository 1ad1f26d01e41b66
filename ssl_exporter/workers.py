"""``--web.workers N``: TLS probes run in N worker processes, so the exporter uses every core.

This process stays the exporter's only face: it serves HTTP, keeps the recent-probes history,
``/metrics``, the coalescing of identical concurrent probes (:func:`probers.base.run_probe`),
the configuration and the logs. The workers only execute probes: the parent sends each one
(config generation, module name, parsed target, name, timeout) over a Unix socket to the
worker with the fewest probes in flight, which runs it on its own event loop, with its own
SSL contexts built from the same configuration text, and sends the :class:`ProbeResult` back.
So every piece of state users see lives in one process and needs no aggregation.

Workers are forked by a *zygote*: a process forked from this one at start-up, after the
imports and before any thread or event loop exists. The workers, restarts included, are
forked from that single-threaded zygote, never from the threaded server, and share the
imported pages with it and with this process.

A reload reads the configuration file once here (it may be a FIFO) and sends its text to
every worker; the new generation is used only when every worker has loaded it; otherwise
the previous one stays in use everywhere and the first worker's error is the reload's error.
A worker that dies is logged and forked again; the probes it was running answer an
``internal_error`` at once. Only the ``tcp`` prober is dispatched: the at-rest probers (file,
Kubernetes) and ``rdap`` keep their caches and threads in this process, as without workers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import selectors
import signal
import socket
import struct
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from ssl_exporter import config, lru, prepare, yamlrules
from ssl_exporter.access import TargetRefused
from ssl_exporter.errors import OutOfResources
from ssl_exporter.probers import PROBERS, base
from ssl_exporter.result import ProbeResult

log = logging.getLogger(__name__)

# Probers whose probes go to the workers; the others run here, with their caches and threads.
DISPATCHED = frozenset({"tcp"})
# How long a worker may take to load a configuration before the load counts as failed (and
# the worker is replaced): the parent already read every file once, so this is generous.
LOAD_TIMEOUT = 30.0
# At shutdown, after the in-flight probes are done or cancelled: how long a worker may take to exit.
EXIT_TIMEOUT = 5.0
# Committed generations a worker keeps: a probe that began just before a reload still finds its own.
KEPT_GENERATIONS = 3
# A worker that has not answered a probe this long after its timeout is stuck (stopped,
# its loop blocked): the probe fails rather than hang.
ANSWER_GRACE = 1.0
# How long forking a worker may block the event loop before the zygote counts as gone.
SPAWN_TIMEOUT = 5.0
# A worker that keeps dying is forked again after a delay doubling up to this.
MAX_RESTART_DELAY = 10.0
_LENGTH = struct.Struct("!I")


def usable_cpus() -> int:
    """The CPUs this process may run on: the default of ``--web.workers``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ConfigText:
    """A configuration as read once by the parent: what every worker loads."""

    text: str
    source: str
    base_dir: str | None


def read_config(config_file: str | None) -> ConfigText:
    if config_file is None:
        return ConfigText(config.DEFAULT_CONFIG_YAML, "embedded default", None)
    return ConfigText(yamlrules.read_text(config_file), config_file,
                      os.path.dirname(os.path.abspath(config_file)))


def load(source: ConfigText) -> prepare.PreparedConfig:
    return prepare.load_text(source.text, source=source.source, base_dir=source.base_dir)


# --- framing: a length, then a pickle -----------------------------------------------------


def _frame(message: tuple[Any, ...]) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


async def _read(reader: asyncio.StreamReader) -> tuple[Any, ...] | None:
    """The next message, or None at the end of the stream."""
    try:
        head = await reader.readexactly(_LENGTH.size)
        data = await reader.readexactly(_LENGTH.unpack(head)[0])
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    message: tuple[Any, ...] = pickle.loads(data)  # noqa: S301 - our own process's pickles
    return message


# --- the zygote -------------------------------------------------------------------------


class Zygote:
    """A single-threaded process forked at start-up that forks the workers on request.

    ``spawn`` hands it one end of a socket pair (SCM_RIGHTS) and gets the worker's pid back;
    it reaps its children and reports each exit (pid, wait status) on ``exits``.
    """

    def __init__(self) -> None:
        if threading.active_count() > 1:
            raise RuntimeError("the zygote must be forked before any thread starts")
        control, their_control = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        exits, their_exits = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # the zygote
            code = 1
            try:
                control.close()
                exits.close()
                _zygote_main(their_control, their_exits)
                code = 0
            finally:
                os._exit(code)
        their_control.close()
        their_exits.close()
        self.pid = pid
        control.settimeout(SPAWN_TIMEOUT)  # a stopped zygote must not freeze the event loop
        self.control = control
        self.exits = exits

    def spawn(self, index: int, budget: int) -> tuple[int, socket.socket]:
        """Fork worker ``index``: its pid and this end of its socket. Blocks a few ms."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            socket.send_fds(self.control, [struct.pack("!IQ", index, budget)], [theirs.fileno()])
        finally:
            theirs.close()
        answer = self.control.recv(16)
        if len(answer) != 8:
            ours.close()
            raise OSError("the worker zygote is gone")
        return struct.unpack("!q", answer)[0], ours

    def close(self) -> None:
        self.control.close()  # the zygote exits at the end of its control stream
        self.exits.close()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _zygote_main(control: socket.socket, exits: socket.socket) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the parent decides; its workers go when it says so
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj is control:
                try:
                    data, fds, _, _ = socket.recv_fds(control, 64, 1)
                except OSError:
                    data, fds = b"", []
                if not data:
                    return  # the parent is gone or stopping: the workers see their own sockets close
                index, budget = struct.unpack("!IQ", data)
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        selector.close()
                        control.close()
                        exits.close()
                        os.close(wake_r)
                        os.close(wake_w)
                        signal.set_wakeup_fd(-1)
                        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                        _worker_process(socket.socket(fileno=fds[0]), index, budget)
                        code = 0
                    finally:
                        os._exit(code)
                os.close(fds[0])
                control.send(struct.pack("!q", pid))
            else:
                try:
                    os.read(wake_r, 512)
                except BlockingIOError:
                    pass
                while True:
                    try:
                        pid, status = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    try:
                        exits.sendall(struct.pack("!qq", pid, status))
                    except OSError:
                        pass


# --- a worker ---------------------------------------------------------------------------


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed (less CPU per probe, docs/performance.md), else
    None: asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _worker_process(sock: socket.socket, index: int, budget: int) -> None:
    lru.set_budget(budget)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:  # the parent's loop kind
        runner.run(_serve_parent(sock, index))


async def _serve_parent(sock: socket.socket, index: int) -> None:
    reader, writer = await asyncio.open_connection(sock=sock)
    configs: dict[int, prepare.PreparedConfig] = {}
    running: dict[int, asyncio.Task[None]] = {}

    def send(message: tuple[Any, ...]) -> None:
        if writer.is_closing():
            return
        try:
            frame = _frame(message)
        except Exception as exc:  # an answer that cannot be sent is still an answer: the error
            frame = _frame(("error", message[1], f"cannot send the answer: {type(exc).__name__}: "
                                                 f"{yamlrules.clip(str(exc))}"))
        writer.write(frame)

    async def probe(probe_id: int, module: prepare.PreparedModule, target: Any, server_name: str,
                    timeout: float) -> None:
        try:
            result = await base._run_probe(PROBERS[module.prober], module, target, server_name, timeout)
        except TargetRefused as exc:
            send(("refused", probe_id, exc.reason, exc.message, exc.detail))
        except OutOfResources as exc:
            send(("out_of_resources", probe_id, str(exc)))
        except asyncio.CancelledError:
            send(("cancelled", probe_id))
        except Exception as exc:  # a bug must cost one probe, not the worker
            log.exception("probe crashed in a worker", extra={"fields": {"worker": index}})
            send(("error", probe_id, f"{type(exc).__name__}: {exc}"))
        else:
            send(("result", probe_id, result))
        finally:
            running.pop(probe_id, None)

    async def load_config(generation: int, source: ConfigText, keep: tuple[int, ...]) -> None:
        try:
            cfg = await asyncio.to_thread(load, source)
        except config.ConfigError as exc:
            send(("loaded", generation, str(exc)))
            return
        except Exception as exc:
            send(("loaded", generation, f"internal error: {type(exc).__name__}: {yamlrules.clip(str(exc))}"))
            return
        configs[generation] = cfg
        for old in list(configs):  # the parent says which are still in use (committed)
            if old != generation and old not in keep:
                del configs[old]
        send(("loaded", generation, None))

    loads: set[asyncio.Task[None]] = set()
    while (message := await _read(reader)) is not None:
        kind = message[0]
        if kind == "probe":
            _, probe_id, generation, module_name, target, server_name, timeout = message
            cfg = configs.get(generation)
            module = cfg.modules.get(module_name) if cfg is not None else None
            if module is None:
                send(("unknown", probe_id))
                continue
            running[probe_id] = asyncio.create_task(probe(probe_id, module, target, server_name, timeout))
        elif kind == "cancel":
            task = running.get(message[1])
            if task is not None:
                task.cancel()
        elif kind == "load":
            load_task = asyncio.create_task(load_config(message[1], message[2], message[3]))
            loads.add(load_task)
            load_task.add_done_callback(loads.discard)
        elif kind == "stop":
            break
        await writer.drain()
    for task in list(running.values()):
        task.cancel()
    await asyncio.gather(*running.values(), return_exceptions=True)
    try:
        await writer.drain()
        writer.close()
    except ConnectionError:
        pass


# --- the parent's side ------------------------------------------------------------------


class WorkerGone(Exception):
    """The worker running a probe exited before answering."""


class _Worker:
    """The parent's view of one worker process."""

    def __init__(self, index: int, pid: int, sock: socket.socket) -> None:
        self.index = index
        self.pid = pid
        self.sock = sock
        self.loaded = 0  # the newest generation it acknowledged
        self.ready = False  # loaded the current generation: probes may go to it
        self.gone = False
        self.pending: dict[int, asyncio.Future[tuple[Any, ...]]] = {}
        self.loads: dict[int, asyncio.Future[str | None]] = {}
        self.writer: asyncio.StreamWriter | None = None
        self.reader_task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        reader, self.writer = await asyncio.open_connection(sock=self.sock)
        self.reader_task = asyncio.create_task(self._read_answers(reader))

    def send(self, message: tuple[Any, ...]) -> None:
        if self.gone or self.writer is None:
            raise WorkerGone(f"worker {self.index} (pid {self.pid}) is gone")
        self.writer.write(_frame(message))

    async def load(self, generation: int, source: ConfigText, keep: tuple[int, ...]) -> str | None:
        """Have it load ``generation`` and keep only ``keep`` (the committed ones) besides."""
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self.loads[generation] = future
        try:
            self.send(("load", generation, source, keep))
            return await asyncio.wait_for(asyncio.shield(future), LOAD_TIMEOUT)
        except TimeoutError:
            self.kill()  # stuck: replaced by a fresh worker that loads the config in use
            return f"worker {self.index} did not load the configuration within {LOAD_TIMEOUT:g}s"
        except WorkerGone as exc:
            return str(exc)
        finally:
            self.loads.pop(generation, None)

    async def _read_answers(self, reader: asyncio.StreamReader) -> None:
        try:
            while (message := await _read(reader)) is not None:
                if message[0] == "loaded":
                    future = self.loads.get(message[1])
                    if message[2] is None:
                        self.loaded = max(self.loaded, message[1])
                    if future is not None and not future.done():
                        future.set_result(message[2])
                    continue
                waiter = self.pending.pop(message[1], None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message)
        except Exception:  # an answer we cannot read: the worker is no use any more
            log.exception("unreadable answer from a worker", extra={"fields": {"worker": self.index}})
            self.kill()  # reported by the zygote, then forked again
        finally:
            self.lost()

    def lost(self) -> None:
        """Its socket ended: every probe and load waiting on it gets an answer now."""
        self.gone = True
        self.ready = False
        for waiter in self.pending.values():
            if not waiter.done():
                waiter.set_exception(WorkerGone(f"worker {self.index} (pid {self.pid}) exited during the probe"))
        self.pending.clear()
        for future in self.loads.values():
            if not future.done():
                future.set_result(f"worker {self.index} (pid {self.pid}) exited during the load")
        if self.writer is not None:
            self.writer.close()

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


ProbeRunner = Callable[[base.Prober, prepare.PreparedModule, Any, str, float], Coroutine[Any, Any, ProbeResult]]


class Pool:
    """The worker processes and the configuration generations they share with this process."""

    def __init__(self, size: int, cache_budget: int) -> None:
        self.size = size
        # Each worker's caches get an equal part of --cache.max-bytes; this process keeps it
        # whole for what it holds (history, rendered lines, the at-rest probers' files).
        self.worker_budget = cache_budget // size
        self.zygote: Zygote | None = None
        self.workers: list[_Worker | None] = [None] * size
        self._staged: dict[int, ConfigText] = {}  # by id() of a Config loaded, not yet committed
        self._generations: list[tuple[int, prepare.PreparedConfig, ConfigText]] = []  # committed, oldest first
        self._next_generation = 1
        self._next_probe = 0
        self._stopping = False
        self._restart_delay: list[float] = [0.0] * size
        self._local: ProbeRunner = base._run_probe
        self._tasks: set[asyncio.Task[Any]] = set()
        self._restarts: Counter | None = None
        self._exits_writer: asyncio.StreamWriter | None = None

    # configuration ------------------------------------------------------------------

    def load(self, config_file: str | None) -> prepare.PreparedConfig:
        """Read the file once and build the config here (a thread of the exporter's reload)."""
        source = read_config(config_file)
        cfg = load(source)
        self._staged = {id(cfg): source}  # loads run one at a time (Exporter.reload)
        return cfg

    async def commit(self, cfg: prepare.PreparedConfig) -> None:
        """Have every worker load ``cfg``'s text; ConfigError (old config kept) if one cannot."""
        source = self._staged.pop(id(cfg))
        generation = self._next_generation
        self._next_generation += 1
        live = [w for w in self.workers if w is not None and not w.gone and w.writer is not None]
        keep = self._committed()
        errors = await asyncio.gather(*(w.load(generation, source, keep) for w in live))
        for worker, error in zip(live, errors, strict=True):
            if error is not None:
                raise config.ConfigError(f"worker {worker.index}: {error}")
        self._generations.append((generation, cfg, source))
        del self._generations[:-KEPT_GENERATIONS]
        for each in self.workers:
            if each is None or each.gone:
                continue
            each.ready = each.loaded >= generation
            if each not in live and not each.ready:  # started during this load: catch up
                self._spawn(self._load_latest(each))

    def _committed(self) -> tuple[int, ...]:
        return tuple(generation for generation, _, _ in self._generations)

    # life ---------------------------------------------------------------------------

    def fork_zygote(self) -> None:
        """In the main thread, after the imports and before any thread or event loop."""
        self.zygote = Zygote()

    async def start(self, cfg: prepare.PreparedConfig, registry: CollectorRegistry | None = None) -> None:
        """Fork the workers, each loading ``cfg`` (the config in use, loaded through :meth:`load`)."""
        assert self.zygote is not None, "fork_zygote() first"
        await self.commit(cfg)  # no worker yet: generation 1, loaded by each as it starts
        self._restarts = Counter("ssl_exporter_worker_restarts",
                                 "Worker processes forked again after one exited (--web.workers).",
                                 registry=registry)
        workers_gauge = Gauge("ssl_exporter_workers", "Worker processes ready to run probes (--web.workers).",
                              registry=registry)
        workers_gauge.set_function(lambda: sum(1 for w in self.workers if w is not None and w.ready))
        # The writer is kept: a StreamWriter that goes away closes its transport.
        exits_reader, self._exits_writer = await asyncio.open_connection(sock=self.zygote.exits)
        self._spawn(self._watch_exits(exits_reader))
        base.runner = self.execute  # probes run here until a worker is ready
        # Forked now, so that their sockets count among the descriptors in use; they load the
        # config in the background: the exporter is ready before its workers are.
        forked = [self._fork(index) for index in range(self.size)]
        self._spawn(self._start_all(forked))

    async def _start_all(self, forked: list[tuple[int, socket.socket] | None]) -> None:
        await asyncio.gather(*(self._start_worker(index, fork) for index, fork in enumerate(forked)))
        log.info("workers started", extra={"fields": {
            "workers": self.size, "pids": ",".join(str(w.pid) for w in self.workers if w is not None)}})

    async def stop(self) -> None:
        """After the probes in flight ended or were cancelled: every worker exits."""
        self._stopping = True
        base.runner = self._local
        live = [w for w in self.workers if w is not None and not w.gone]
        for worker in live:
            try:
                worker.send(("stop",))
            except WorkerGone:
                pass
        readers = [w.reader_task for w in live if w.reader_task is not None]
        if readers:
            _, late = await asyncio.wait(readers, timeout=EXIT_TIMEOUT)
            for worker in live:
                if worker.reader_task in late:
                    worker.kill()
        for task in self._tasks:
            task.cancel()
        if self.zygote is not None:
            await asyncio.to_thread(self.zygote.close)

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fork(self, index: int) -> tuple[int, socket.socket] | None:
        assert self.zygote is not None
        try:
            return self.zygote.spawn(index, self.worker_budget)
        except OSError as exc:  # the zygote is gone (killed): probes run in this process from now on
            log.error("cannot start a worker; its probes run in the main process", extra={"fields": {
                "worker": index, "err": exc.strerror or str(exc)}, "rate_limited": True})
            return None

    async def _start_worker(self, index: int, forked: tuple[int, socket.socket] | None = None) -> None:
        forked = forked or self._fork(index)
        if forked is None:
            return
        worker = _Worker(index, *forked)
        await worker.connect()
        self.workers[index] = worker  # connected: a reload from now on includes it
        await self._load_latest(worker)

    async def _load_latest(self, worker: _Worker) -> None:
        """Load the generation in use, and again if a reload committed another meanwhile."""
        while self._generations and not worker.gone:
            generation, _, source = self._generations[-1]
            error = await worker.load(generation, source, self._committed())
            if error is not None:
                log.error("worker cannot load the configuration", extra={"fields": {
                    "worker": worker.index, "pid": worker.pid, "err": error}})
                worker.kill()  # reported by the zygote, then forked again after a delay
                return
            if self._generations[-1][0] == generation:
                worker.ready = True
                return

    async def _watch_exits(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                pid, status = struct.unpack("!qq", await reader.readexactly(16))
            except (asyncio.IncompleteReadError, ConnectionError):
                if not self._stopping:
                    log.error("the worker zygote exited: workers that exit are not started again, "
                              "their probes run in the main process")
                return
            worker = next((w for w in self.workers if w is not None and w.pid == pid), None)
            if worker is None or self._stopping:
                continue
            worker.lost()
            how = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                   else f"exit code {os.waitstatus_to_exitcode(status)}")
            delay = self._restart_delay[worker.index]
            log.error("worker exited, starting it again", extra={"fields": {
                "worker": worker.index, "pid": pid, "status": how, "restart_in_seconds": delay}})
            self._restart_delay[worker.index] = min(max(delay * 2, 0.1), MAX_RESTART_DELAY)
            self._spawn(self._restart(worker.index, delay))

    async def _restart(self, index: int, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        if self._stopping:
            return
        if self._restarts is not None:
            self._restarts.inc()
        await self._start_worker(index)
        worker = self.workers[index]
        if worker is not None and worker.ready:
            log.info("worker started again", extra={"fields": {"worker": index, "pid": worker.pid}})
            self._spawn(self._forget_restarts(index, worker))

    async def _forget_restarts(self, index: int, worker: _Worker) -> None:
        await asyncio.sleep(MAX_RESTART_DELAY)  # alive that long: the next exit restarts at once
        if not worker.gone:
            self._restart_delay[index] = 0.0

    # probes -------------------------------------------------------------------------

    def _generation_of(self, module: prepare.PreparedModule) -> int | None:
        for generation, cfg, _ in reversed(self._generations):
            if cfg.modules.get(module.name) is module:
                return generation
        return None

    def _pick(self) -> _Worker | None:
        ready = [w for w in self.workers if w is not None and w.ready and not w.gone]
        return min(ready, key=lambda w: len(w.pending)) if ready else None

    async def execute(self, prober: base.Prober, module: prepare.PreparedModule, target: Any, server_name: str,
                      timeout: float) -> ProbeResult:
        """base.runner while the pool runs: a tcp probe in a worker, anything else here."""
        generation = self._generation_of(module) if module.prober in DISPATCHED else None
        worker = self._pick() if generation is not None else None
        if worker is None:  # another prober, or no worker ready (starting, restarting)
            return await self._local(prober, module, target, server_name, timeout)
        self._next_probe += 1
        probe_id = self._next_probe
        waiter: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()
        worker.pending[probe_id] = waiter
        try:
            worker.send(("probe", probe_id, generation, module.name, target, server_name, timeout))
            answer = await asyncio.wait_for(waiter, timeout + ANSWER_GRACE)
        except WorkerGone as exc:
            worker.pending.pop(probe_id, None)
            return _lost(module, target, server_name, timeout, str(exc))
        except TimeoutError:
            # Its own deadline fires inside the worker at ``timeout``: a worker a second late
            # is stuck (stopped, its loop blocked). This probe ends now, and the worker is
            # replaced (the zygote reports the exit; it is forked again).
            worker.pending.pop(probe_id, None)
            log.error("worker missed a probe's deadline, replacing it", extra={"fields": {
                "worker": worker.index, "pid": worker.pid, "timeout": timeout}})
            worker.ready = False
            worker.kill()
            return _lost(module, target, server_name, timeout,
                         f"worker {worker.index} (pid {worker.pid}) did not answer within {timeout + ANSWER_GRACE:g}s")
        except asyncio.CancelledError:
            worker.pending.pop(probe_id, None)
            if not worker.gone:
                worker.send(("cancel", probe_id))
            raise
        kind = answer[0]
        if kind == "result":
            result: ProbeResult = answer[2]
            return result
        if kind == "unknown":  # a generation the worker no longer keeps
            return await self._local(prober, module, target, server_name, timeout)
        if kind == "refused":
            raise TargetRefused(answer[2], answer[3], answer[4])
        if kind == "out_of_resources":
            raise OutOfResources(answer[2])
        if kind == "cancelled":
            raise asyncio.CancelledError()
        return _lost(module, target, server_name, timeout, f"worker {worker.index}: {answer[2]}")


def _lost(module: prepare.PreparedModule, target: Any, server_name: str, timeout: float, why: str) -> ProbeResult:
    """The answer of a probe whose worker went away: failed, with the reason, at once."""
    recorder = base.ProbeRecorder()
    recorder.note(f"probe module={module.name} target={target} name={server_name} timeout={timeout:g}s")
    recorder.fail(recorder.stage, "internal_error", why)
    return recorder.result()
