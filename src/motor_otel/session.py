"""Instrumented sessions for Motor, PyMongo async and PyMongo sync.

Each class wires :class:`~motor_otel.transaction.TransactionTracer` (where the transaction
story lives) around its driver's ``start_transaction``/``commit_transaction``/
``abort_transaction``/``with_transaction`` and session end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from motor.motor_asyncio import AsyncIOMotorClientSession
from opentelemetry import context as otel_context
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import PyMongoError
from pymongo.synchronous.client_session import ClientSession

from motor_otel.correlation import Telemetry
from motor_otel.transaction import Clock, Sleep, TransactionTracer, spec_loop

T = TypeVar("T")

# -- Motor -----------------------------------------------------------------------------------


class InstrumentedAsyncIOMotorClientSession(TransactionTracer, AsyncIOMotorClientSession):
    """A Motor session whose transactions are traced.

    A subclass, so ``isinstance(s, AsyncIOMotorClientSession)`` and type hints keep working; the
    name ends in ``MotorClientSession`` because Motor unwraps ``session=`` by that suffix.
    """

    _motor_loop = True

    def __init__(self, delegate: Any, motor_client: Any, telemetry: Telemetry | None = None):
        super().__init__(delegate, motor_client)
        self._otel_init(telemetry, delegate)
        self.clock: Clock = time.monotonic
        self.sleep: Sleep = asyncio.sleep

    def start_transaction(
        self,
        read_concern: Any = None,
        write_concern: Any = None,
        read_preference: Any = None,
        max_commit_time_ms: Any = None,
    ) -> Any:
        context = super().start_transaction(
            read_concern, write_concern, read_preference, max_commit_time_ms
        )
        self._transaction_started(read_concern, write_concern, read_preference, max_commit_time_ms)
        return context

    async def commit_transaction(self) -> None:
        t, attempt = self._tracing(), self._otel.attempt
        if t is None or attempt is None:
            await super().commit_transaction()
            return
        with self._committing(t, attempt):
            await super().commit_transaction()

    async def abort_transaction(self) -> None:
        t = self._tracing()
        if t is None or self._otel.attempt is None:
            await super().abort_transaction()
            return
        with self._aborting(t):
            await super().abort_transaction()

    async def end_session(self) -> None:
        await self._before_end()
        await super().end_session()

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        # Motor's own __aexit__ ends the session on the event loop's thread, with no executor
        # round trip (end_session takes one): keep it that way, as the application expects.
        await self._before_end()
        await super().__aexit__(exc_type, exc_val, exc_tb)

    async def _before_end(self) -> None:
        """Motor ends a session through PyMongo directly, which aborts an open transaction there:
        abort through self first, so that abort is traced."""
        if self._otel.attempt is not None and self.delegate.in_transaction:
            with contextlib.suppress(PyMongoError):  # as PyMongo's own end_session does
                await self.abort_transaction()
        self._session_ending()

    async def with_transaction(
        self,
        coro: Callable[[Any], Coroutine[Any, Any, T]],
        read_concern: Any = None,
        write_concern: Any = None,
        read_preference: Any = None,
        max_commit_time_ms: Any = None,
    ) -> T:
        t = self._tracing()
        if t is None or self._otel.wt is not None:
            return await super().with_transaction(
                coro, read_concern, write_concern, read_preference, max_commit_time_ms
            )
        wt, token = self._with_transaction_starting(t)

        async def callback(session: Any) -> T:
            attempt_token = self._enter_attempt()
            try:
                return await coro(session)
            finally:
                if attempt_token is not None:
                    otel_context.detach(attempt_token)

        run = coro if wt.silent else callback  # its attempts' stand-ins are current already
        try:
            if t.settings.with_transaction == "spec":
                result = await spec_loop(
                    self, run, read_concern, write_concern, read_preference, max_commit_time_ms
                )
            else:
                result = await super().with_transaction(
                    run, read_concern, write_concern, read_preference, max_commit_time_ms
                )
        except BaseException as exc:
            self._with_transaction_ended(t, wt, token, exc)
            raise
        self._with_transaction_ended(t, wt, token, None)
        return result


# -- PyMongo (async and sync) ----------------------------------------------------------------


class InstrumentedAsyncClientSession(AsyncClientSession, TransactionTracer):
    """PyMongo's ``AsyncClientSession`` with traced transactions.

    PyMongo's ``with_transaction`` already follows the documented contract, so both modes run
    PyMongo's own loop; it calls this class's ``start_transaction``/``commit_transaction``, which
    is how its attempts and commit retries are observed.
    """

    __slots__ = ()

    async def start_transaction(
        self,
        read_concern: Any = None,
        write_concern: Any = None,
        read_preference: Any = None,
        max_commit_time_ms: Any = None,
    ) -> Any:
        context = await super().start_transaction(
            read_concern, write_concern, read_preference, max_commit_time_ms
        )
        self._transaction_started(read_concern, write_concern, read_preference, max_commit_time_ms)
        return context

    async def commit_transaction(self) -> None:
        t, attempt = self._tracing(), self._otel.attempt
        if t is None or attempt is None:
            await super().commit_transaction()
            return
        with self._committing(t, attempt):
            await super().commit_transaction()

    async def abort_transaction(self) -> None:
        t = self._tracing()
        if t is None or self._otel.attempt is None:
            await super().abort_transaction()
            return
        with self._aborting(t):
            await super().abort_transaction()

    async def end_session(self) -> None:
        await super().end_session()  # aborts an open transaction through self.abort_transaction
        self._session_ending()

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        await super().__aexit__(exc_type, exc_val, exc_tb)
        self._session_ending()

    async def with_transaction(
        self,
        callback: Callable[[Any], Awaitable[T]],
        read_concern: Any = None,
        write_concern: Any = None,
        read_preference: Any = None,
        max_commit_time_ms: Any = None,
    ) -> T:
        t = self._tracing()
        if t is None or self._otel.wt is not None:
            return await super().with_transaction(
                callback, read_concern, write_concern, read_preference, max_commit_time_ms
            )
        wt, token = self._with_transaction_starting(t)

        async def traced(session: Any) -> T:
            attempt_token = self._enter_attempt()
            try:
                return await callback(session)
            finally:
                if attempt_token is not None:
                    otel_context.detach(attempt_token)

        run = callback if wt.silent else traced  # its attempts' stand-ins are current already
        try:
            result = await super().with_transaction(
                run, read_concern, write_concern, read_preference, max_commit_time_ms
            )
        except BaseException as exc:
            self._with_transaction_ended(t, wt, token, exc)
            raise
        self._with_transaction_ended(t, wt, token, None)
        return result


class InstrumentedClientSession(ClientSession, TransactionTracer):
    """PyMongo's sync ``ClientSession`` with traced transactions (see the async twin)."""

    __slots__ = ()

    def start_transaction(
        self,
        read_concern: Any = None,
        write_concern: Any = None,
        read_preference: Any = None,
        max_commit_time_ms: Any = None,
    ) -> Any:
        context = super().start_transaction(
            read_concern, write_concern, read_preference, max_commit_time_ms
        )
        self._transaction_started(read_concern, write_concern, read_preference, max_commit_time_ms)
        return context

    def commit_transaction(self) -> None:
        t, attempt = self._tracing(), self._otel.attempt
        if t is None or attempt is None:
            super().commit_transaction()
            return
        with self._committing(t, attempt):
            super().commit_transaction()

    def abort_transaction(self) -> None:
        t = self._tracing()
        if t is None or self._otel.attempt is None:
            super().abort_transaction()
            return
        with self._aborting(t):
            super().abort_transaction()

    def end_session(self) -> None:
        super().end_session()
        self._session_ending()

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        super().__exit__(exc_type, exc_val, exc_tb)
        self._session_ending()

    def with_transaction(
        self,
        callback: Callable[[Any], T],
        read_concern: Any = None,
        write_concern: Any = None,
        read_preference: Any = None,
        max_commit_time_ms: Any = None,
    ) -> T:
        t = self._tracing()
        if t is None or self._otel.wt is not None:
            return super().with_transaction(
                callback, read_concern, write_concern, read_preference, max_commit_time_ms
            )
        wt, token = self._with_transaction_starting(t)

        def traced(session: Any) -> T:
            attempt_token = self._enter_attempt()
            try:
                return callback(session)
            finally:
                if attempt_token is not None:
                    otel_context.detach(attempt_token)

        run = callback if wt.silent else traced  # its attempts' stand-ins are current already
        try:
            result = super().with_transaction(
                run, read_concern, write_concern, read_preference, max_commit_time_ms
            )
        except BaseException as exc:
            self._with_transaction_ended(t, wt, token, exc)
            raise
        self._with_transaction_ended(t, wt, token, None)
        return result


def instrument_pymongo_session(session: Any, telemetry: Telemetry) -> Any:
    """Turn a PyMongo session just created by its client into its instrumented twin."""
    if isinstance(session, AsyncClientSession):
        session.__class__ = InstrumentedAsyncClientSession
    elif isinstance(session, ClientSession):
        session.__class__ = InstrumentedClientSession
    else:
        return session
    session._otel_init(telemetry, session)
    return session
