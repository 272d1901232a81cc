"""One limiter for all of a run's requests: requests per minute, tokens per minute, and an adaptive cap on
requests in flight (halved on a 429, grown back by one after a window of successes). A 429's
`Retry-After` pauses every sender, not just the one that got it.

Requests are paced: at most one per window / (requests per window), on a grid, so a window's quota is
spread over the window instead of leaving in one burst. A burst would expire all at once one window
later, and the server counts a request when it *arrives*, some milliseconds (more on a cold connection)
after the limiter counted it: then a whole burst of the next window lands while the server's window
still holds the last one, and only the headroom's few slots absorb that. Paced, each slot is reused
alone, and the headroom absorbs that many intervals of skew.

Pure asyncio; the run shares one instance through an async Ray actor (`actors/synth_run.py`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque


class RateLimiter:
    """Args:
        rpm: requests allowed per window.
        tpm: tokens (prompt + expected completion) allowed per window.
        concurrency: the most requests in flight; the adaptive cap never exceeds it.
        window_s: the provider's accounting window (60 s for per-minute limits).
        headroom: the share of each limit used, so clock skew between us and the server never tips it over.
        pace: spread the requests evenly over the window (see the module docstring).
    """

    def __init__(self, rpm: int, tpm: int, concurrency: int, window_s: float = 60.0, headroom: float = 0.97,
                 clock=time.monotonic, pace: bool = True):
        self.max_requests = max(1, int(rpm * headroom))
        self.max_tokens = max(1, int(tpm * headroom))
        self.max_concurrency = concurrency
        self.limit = concurrency
        self.window_s = window_s
        self.interval = window_s / self.max_requests if pace else 0.0
        self.next_slot = float("-inf")
        self.clock = clock
        self.sent: deque[tuple[float, int]] = deque()
        self.window_tokens = 0
        self.in_flight = 0
        self.paused_until = 0.0
        self.successes = 0
        self.rate_limited = 0
        self._changed = asyncio.Condition()

    def _prune(self, now: float) -> None:
        while self.sent and self.sent[0][0] <= now - self.window_s:
            self.window_tokens -= self.sent.popleft()[1]

    def _wait_needed(self, tokens: int, now: float) -> float:
        """Seconds until a request of `tokens` may go, 0 if now."""
        if now < self.paused_until:
            return self.paused_until - now
        self._prune(now)
        wait = 0.0
        if len(self.sent) >= self.max_requests:
            wait = self.sent[0][0] + self.window_s - now
        wait = max(wait, self.next_slot - now)
        if self.sent and self.window_tokens + tokens > self.max_tokens:
            # free tokens in send order until this request fits
            freed, need = 0, self.window_tokens + tokens - self.max_tokens
            for t, n in self.sent:
                freed += n
                if freed >= need:
                    wait = max(wait, t + self.window_s - now)
                    break
        return max(0.0, wait)

    async def acquire(self, tokens: int) -> float:
        """Wait for a slot in flight and room in both windows; returns the seconds waited."""
        start = self.clock()
        async with self._changed:
            while True:
                if self.in_flight < self.limit:
                    wait = self._wait_needed(tokens, self.clock())
                    if wait == 0:
                        break
                    try:
                        await asyncio.wait_for(self._changed.wait(), timeout=wait)
                    except asyncio.TimeoutError:
                        pass
                else:
                    await self._changed.wait()
            now = self.clock()
            self.sent.append((now, tokens))
            # on a grid: a late wake-up is made up by the next interval, idle time is not saved up
            self.next_slot = max(self.next_slot, now - self.interval / 2) + self.interval
            self.window_tokens += tokens
            self.in_flight += 1
        return self.clock() - start

    async def release(self, outcome: str, retry_after: float | None = None) -> None:
        """End a request: `ok`, `rate_limited` (a 429; pauses everyone for `retry_after`) or `error`."""
        async with self._changed:
            self.in_flight -= 1
            if outcome == "rate_limited":
                self.rate_limited += 1
                self.limit = max(1, self.limit // 2)
                self.successes = 0
                pause = retry_after if retry_after is not None else 1.0
                self.paused_until = max(self.paused_until, self.clock() + pause)
            elif outcome == "ok":
                self.successes += 1
                if self.limit < self.max_concurrency and self.successes >= self.limit:
                    self.limit += 1
                    self.successes = 0
            self._changed.notify_all()

    def snapshot(self) -> dict:
        now = self.clock()
        self._prune(now)
        return {"limit": self.limit, "in_flight": self.in_flight, "sent_in_window": len(self.sent),
                "tokens_in_window": self.window_tokens, "paused_for_s": round(max(0.0, self.paused_until - now), 3),
                "rate_limited": self.rate_limited}
