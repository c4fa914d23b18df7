"""Slow down password guessing: failed logins are counted per user name and per client address.

Gradio's ``auth`` callable only sees the name and password, so the per-user count lives in the
callable (``RateLimitedAuth``) and the per-address count in a small ASGI middleware on the
``/login`` route (``LoginLimitMiddleware``), which answers 429 while an address is locked out.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from typing import Any

MAX_FAILURES = 5
WINDOW_S = 300.0


class FailureCounter:
    """Failures per key in a sliding window; a key with ``max_failures`` inside it is blocked."""

    def __init__(self, max_failures: int = MAX_FAILURES, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures, self.window_s, self.clock = max_failures, window_s, clock
        self._failures: dict[Any, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, key: Any) -> deque[float]:
        times, now = self._failures[key], self.clock()
        while times and now - times[0] > self.window_s:
            times.popleft()
        return times

    def blocked_for(self, key: Any) -> float:
        """Seconds until ``key`` may try again (0 when it may now)."""
        with self._lock:
            times = self._recent(key)
            if len(times) < self.max_failures:
                return 0.0
            return max(0.0, self.window_s - (self.clock() - times[0]))

    def fail(self, key: Any) -> None:
        with self._lock:
            self._recent(key).append(self.clock())


class RateLimitedAuth:
    """``launch(auth=...)`` callable: the accounts' passwords, compared in constant time, and no
    password is even checked for a name with too many recent failures."""

    def __init__(self, accounts: Sequence[tuple[str, str]], counter: FailureCounter) -> None:
        self.accounts = dict(accounts)
        self.counter = counter

    def __call__(self, username: str, password: str) -> bool:
        key = ("user", username)
        if self.counter.blocked_for(key):
            return False
        expected = self.accounts.get(username)
        ok = expected is not None and hmac.compare_digest(str(password).encode(), expected.encode())
        if not ok:
            self.counter.fail(key)
        return ok


def client_address(scope: dict, trust_forwarded: bool = False) -> str:
    """The peer's address; behind a trusted proxy (a Space's), the last X-Forwarded-For hop, which
    that proxy adds (earlier hops are whatever the client sent)."""
    for name, value in (scope.get("headers") or []) if trust_forwarded else []:
        if name == b"x-forwarded-for":
            hops = [hop.strip() for hop in value.decode("latin-1").split(",") if hop.strip()]
            if hops:
                return hops[-1]
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class LoginLimitMiddleware:
    """Refuse ``POST /login`` with 429 while the client's address has too many recent failures."""

    def __init__(self, app: Any, counter: FailureCounter, trust_forwarded: bool = False) -> None:
        self.app, self.counter, self.trust_forwarded = app, counter, trust_forwarded

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST" or \
                not scope.get("path", "").rstrip("/").endswith("/login"):
            await self.app(scope, receive, send)
            return
        key = ("address", client_address(scope, self.trust_forwarded))
        wait = self.counter.blocked_for(key)
        if wait:
            body = json.dumps({"detail": f"Too many failed logins from your address; try again in {wait:.0f} s."})
            await send({"type": "http.response.start", "status": 429,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after", str(int(wait) + 1).encode())]})
            await send({"type": "http.response.body", "body": body.encode()})
            return

        async def watch(message: dict) -> None:
            if message["type"] == "http.response.start" and message["status"] in (400, 401, 403):
                self.counter.fail(key)
            await send(message)

        await self.app(scope, receive, watch)
