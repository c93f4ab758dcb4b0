"""Request limits: one byte limit for plain and compressed bodies (inflated step by step, so a
decompression bomb stops at the limit), refused encodings, and a deadline for each request.
"""

from __future__ import annotations

import asyncio
import zlib
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi.responses import JSONResponse

from modelport.serve.protocol import ProtocolError

DEFAULT_MAX_BODY = 64 << 20
DEFAULT_TIMEOUT_S = 60.0
# Inflate at most this much per step: one 64 KB read of a bomb would otherwise expand to 64 MB at once.
INFLATE_STEP = 1 << 20
# zlib window bits per Content-Encoding; "deflate" in HTTP is the zlib format (RFC 9110), as tritonclient sends.
ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_DROPPED = (b"content-encoding", b"content-length")  # no longer true of the inflated body


class BodyTooLarge(ProtocolError):
    def __init__(self, limit: int, inflated: bool = False) -> None:
        what = "inflated request body" if inflated else "request body"
        super().__init__(f"{what} exceeds the limit of {limit} bytes", 413)


class RequestTimeout(ProtocolError):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"the request did not finish within {seconds:g} s; the server is busy or the model slow", 504)


@asynccontextmanager
async def deadline(seconds: float | None) -> AsyncIterator[None]:
    """Raise ``RequestTimeout`` when the block runs past ``seconds`` (None: no deadline).

    A request cancelled while queued is skipped by the batcher; one already running on a model finishes
    there, and its result is dropped.
    """
    if seconds is None:
        yield
        return
    timer = asyncio.timeout(seconds)
    try:
        async with timer:
            yield
    except TimeoutError:
        if not timer.expired():  # a TimeoutError of the block's own
            raise
        raise RequestTimeout(seconds) from None


def _reply(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class BodyLimit:
    """ASGI middleware: bodies over ``limit`` bytes fail with 413, plain or after inflating gzip/deflate.

    Compressed bodies reach the app inflated, without Content-Encoding; other encodings get 415.
    """

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _reply(413, f"request body of {int(length)} bytes exceeds the limit of {self.limit} bytes"
                                )(scope, receive, send)
        encoding = headers.get(b"content-encoding", b"").decode("latin-1").strip().lower()
        if encoding in ("", "identity"):
            return await self.app(scope, _Counted(receive, self.limit), send)
        if encoding not in ENCODINGS:
            return await _reply(415, f"unsupported Content-Encoding {encoding!r}; accepted: identity, "
                                     f"{', '.join(ENCODINGS)}")(scope, receive, send)
        scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k not in _DROPPED]}
        await self.app(scope, _Inflated(receive, encoding, self.limit), send)


class _Counted:
    """``receive`` that raises ``BodyTooLarge`` once more than ``limit`` body bytes have arrived."""

    def __init__(self, receive, limit: int) -> None:
        self.receive = receive
        self.limit = limit
        self.seen = 0

    async def __call__(self) -> dict:
        message = await self.receive()
        self.seen += len(message.get("body", b""))
        if self.seen > self.limit:
            raise BodyTooLarge(self.limit)
        return message


class _Inflated:
    """``receive`` that hands the app the inflated body at most ``INFLATE_STEP`` bytes at a time and raises
    ``BodyTooLarge`` as soon as the inflated total passes ``limit``: nothing past it is ever produced."""

    def __init__(self, receive, encoding: str, limit: int) -> None:
        self.receive = receive
        self.encoding = encoding
        self.limit = limit
        self.zlib = zlib.decompressobj(ENCODINGS[encoding])
        self.pending = b""  # compressed input zlib has not taken yet
        self.full = False  # the last step filled its output: zlib may hold more without new input
        self.more = True  # the client has more body to send
        self.fed = 0
        self.seen = 0

    async def __call__(self) -> dict:
        while True:
            if self.pending or self.full or not self.more:
                data, self.pending = self.pending, b""
            else:
                message = await self.receive()
                if message["type"] != "http.request":
                    return message  # http.disconnect
                self.more = message.get("more_body", False)
                data = message.get("body", b"")
                self.fed += len(data)
            out = self._step(data)
            done = not (self.more or self.pending or self.full)
            if done and self.fed and not self.zlib.eof:
                raise ProtocolError(f"body is not valid {self.encoding} data (it ends before the stream does)")
            if out or done:
                return {"type": "http.request", "body": out, "more_body": not done}

    def _step(self, data: bytes) -> bytes:
        try:
            out = self.zlib.decompress(data, INFLATE_STEP)
        except zlib.error as exc:
            raise ProtocolError(f"body is not valid {self.encoding} data ({exc})") from None
        self.pending = self.zlib.unconsumed_tail
        self.full = len(out) == INFLATE_STEP
        if self.zlib.eof and self.zlib.unused_data:
            if "gzip" not in self.encoding:
                raise ProtocolError(f"{len(self.zlib.unused_data)} bytes follow the end of the {self.encoding} data")
            # gzip members may follow one another (RFC 1952); each starts a fresh stream
            self.pending = self.zlib.unused_data + self.pending
            self.zlib = zlib.decompressobj(ENCODINGS[self.encoding])
        self.seen += len(out)
        if self.seen > self.limit:
            raise BodyTooLarge(self.limit, inflated=True)
        return out
