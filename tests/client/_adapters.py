"""Run the asyncio clients through the blocking interface, so one contract test
covers all four clients (and the embedded Store).

``Blocking(async_client)`` owns an event loop in a thread; coroutine methods
become calls that wait for their result, async iterators become iterators.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Self


class BlockingIterator:
    def __init__(self, runner: Blocking, it: AsyncIterator[Any]) -> None:
        self._runner = runner
        self._it = it

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return self._runner.run(anext(self._it))
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        closer = getattr(self._it, "aclose", None)
        if closer is not None:
            self._runner.run(closer())

    @property
    def reconnects(self) -> int:
        return self._it.reconnects  # type: ignore[attr-defined]

    @property
    def last(self) -> int | None:
        return self._it.last  # type: ignore[attr-defined]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Blocking:
    """A blocking facade over an asyncio client made by ``factory`` in its loop."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

        async def make() -> Any:
            return factory()

        self.inner = self.run(make())

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if inspect.iscoroutinefunction(attr):
                return self.run(attr(*args, **kwargs))

            async def make() -> Any:
                return attr(*args, **kwargs)

            result = self.run(make())
            if hasattr(result, "__anext__"):
                return BlockingIterator(self, result)
            return result

        return call

    def close(self) -> None:
        self.run(self.inner.close())

    def shutdown(self) -> None:
        """Close the client, then stop the loop (close alone leaves it running)."""
        if self._loop.is_closed():
            return
        try:
            self.close()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
