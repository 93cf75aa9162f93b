"""LISTEN/NOTIFY between engine processes sharing a PostgreSQL database.

Two channels carry a workflow id: *wake* (work was committed for a workflow
whose shard another process owns: a submit, an outside command) and *done* (a
workflow finished: wake its waiters anywhere). A group commit sends them with
one ``pg_notify`` statement per channel (the named query ``notify``) inside its
transaction, so they are delivered at COMMIT and never for a rolled-back group. A third, *members*,
carries a lease owner: an engine joined, left or released shards (sent by the
membership statements themselves), and every engine runs a membership step.
Channels are named per schema, so schemas of one database never hear each other.

A :class:`Listener` holds one dedicated connection and replaces it when the
server drops it or when it stops answering a periodic ping (a half-open TCP
connection never reports itself), whatever error the driver gives (a connection
cut while the event loop was blocked can fail its ping before it reports closed). Notifications sent while it is being
replaced are lost: callers poll as a safety net. Those sent by the process's
own writer connection are not delivered: they announce its own commits, which
it acts on once it has applied them (a notification can overtake that).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import tenacity

from ..protocol import NewWorkflow, Op
from ..queries import queries

log = logging.getLogger("stabilize_aio.store")

SQL = queries("stabilize_aio.store.postgres")

#: Longest channel name PostgreSQL keeps (NAMEDATALEN - 1).
CHANNEL_MAX = 63


def channel(name: str, schema: str | None) -> str:
    """The channel ``stabilize_<name>``, per schema ``stabilize_<name>_<schema>``; cut to 63 bytes with a hash."""
    full = f"stabilize_{name}" if schema is None else f"stabilize_{name}_{schema}"
    if len(full) <= CHANNEL_MAX:
        return full
    digest = f"_{zlib.crc32(full.encode()):08x}"
    return full[: CHANNEL_MAX - len(digest)] + digest


def notifications(ops: Sequence[Op]) -> tuple[list[str], list[str]]:
    """The workflow ids a group wakes the owners of, and those it finishes (each once, in order)."""
    wake: dict[str, None] = {}
    done: dict[str, None] = {}
    for op in ops:
        if isinstance(op, NewWorkflow):
            wid, turn = op.record.id, op.begin
            if op.notify:
                wake[wid] = None
        else:
            wid, turn = op.workflow_id, op
        if turn is not None and turn.notify:
            wake[wid] = None
        if turn is not None and turn.finished:
            done[wid] = None
    return list(wake), list(done)


class Listener:
    """One connection LISTENing on some channels, kept up by :meth:`keep`.

    Args:
        connect: opens a new ``asyncpg.Connection``.
        callbacks: ``{channel: function(payload)}``, called in the event loop.
        check: seconds between pings of the idle connection.
        display: the database, for log messages.
        own: the server process id whose notifications are skipped (the writer's), if any.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        callbacks: dict[str, Callable[[str], None]],
        *,
        check: float,
        display: str,
        own: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.callbacks = callbacks
        self.check = check
        self.reconnects = 0
        self._connect = connect
        self._display = display
        self._own = own
        self._conn: Any = None
        self._lost = anyio.Event()
        self._closed = False

    def replace_callbacks(self, callbacks: dict[str, Callable[[str], None]]) -> None:
        """A second ``listen()``: notifications go to these callbacks from now on (same channels)."""
        self.callbacks = callbacks

    def __repr__(self) -> str:
        return f"<Listener {self._display!r} channels={sorted(self.callbacks)} pid={self.pid}>"

    @property
    def pid(self) -> int | None:
        """The server process id of the connection, if connected."""
        if self._conn is None or self._conn.is_closed():
            return None
        return int(self._conn.get_server_pid())

    async def open(self) -> None:
        """Connect and LISTEN (driver errors propagate: the store maps them)."""
        self._conn = await self._listen()

    async def close(self) -> None:
        """Stop listening and close the connection (idempotent); :meth:`keep` returns."""
        self._closed = True
        conn, self._conn = self._conn, None
        self._lost.set()
        if conn is not None and not conn.is_closed():
            try:
                with anyio.fail_after(10):
                    await conn.close()
            except Exception:  # a broken connection cannot say goodbye
                conn.terminate()

    async def keep(self) -> None:
        """Replace the connection when it drops, or when a ping every ``check`` seconds fails; until closed."""
        while not self._closed:
            with anyio.move_on_after(self.check):
                await self._lost.wait()
            if self._lost.is_set():
                self._lost = anyio.Event()
            if self._closed:
                return
            conn = self._conn
            if conn is not None and not conn.is_closed():
                try:
                    with anyio.fail_after(min(10.0, self.check)):
                        await conn.execute(SQL["ping"])
                    continue
                except Exception as exc:  # whatever state the driver reports (a cut seen before its EOF): replace it
                    log.warning("the LISTEN connection to %s stopped answering: %r", self._display, exc)
            await self._replace(conn)

    async def _replace(self, old: Any) -> None:
        self._conn = None  # its termination is expected now
        if old is not None:
            old.terminate()
        retrying = tenacity.AsyncRetrying(  # until it works: the engine polls meanwhile
            retry=tenacity.retry_if_exception_type(Exception),
            wait=tenacity.wait_exponential(multiplier=0.1, max=5.0),
            sleep=anyio.sleep,
            before_sleep=_log_retry,
        )
        conn: Any = await retrying(self._listen)
        if self._closed:
            conn.terminate()
            return
        self._conn = conn
        self.reconnects += 1
        log.info("LISTEN connection to %s replaced", self._display)

    async def _listen(self) -> Any:
        conn = await self._connect()
        try:
            for name in self.callbacks:
                await conn.add_listener(name, self._deliver)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._terminated)
        return conn

    def _deliver(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if not self._closed and pid != self._own():
            self.callbacks[channel](payload)

    def _terminated(self, conn: Any) -> None:
        if conn is self._conn:
            self._lost.set()


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    log.warning("cannot LISTEN again (%r); attempt %d, retrying", exc, state.attempt_number)
