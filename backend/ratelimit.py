"""One limiter for all of a run's requests: requests per minute, tokens per minute, an adaptive cap on requests in
flight and an adaptive request rate.

Requests are paced: at most one per window / (requests per window), on a grid, so a window's quota is
spread over the window instead of leaving in one burst. A burst would expire all at once one window
later, and the server counts a request when it *arrives*, some milliseconds (more on a cold connection)
after the limiter counted it: then a whole burst of the next window lands while the server's window
still holds the last one, and only the headroom's few slots absorb that. Paced, each slot is reused
alone, and the headroom absorbs that many intervals of skew.

Adaptation, as TCP does it (AIMD):
- In flight: a 429 cuts the cap to `CUT` of itself, at most once per round trip (unless a server rate limit is
  held: then the rate answers it). Every request carries the sequence number it was sent with (its ticket); a
  429 of a request sent before the last cut says nothing new (it was in flight when the cap was cut), so it does
  not cut again. Successes add one slot per cap's worth of answers. A request
  silent for `LOST_RTTS` typical round trips (at least `LOST_MIN_S`) is presumed lost and no longer counts
  against the cap, as TCP leaves a lost segment out of its pipe: a few hung requests cannot hold every slot of a
  cut cap while their stall timeout runs (`backend/llm_request.py` closes them).
- Rate: a 429 on its own can be the provider's bad minute, so it only slows the request that got it (that
  request waits its `Retry-After`). When 429s become a large share of the answers (`LIMIT_SHARE` of a moving
  average), the server's limit is below ours: the rate drops to what the server admitted in the last window
  (a sliding-window server refuses exactly when its window is full, so that count *is* its limit), and every
  sender waits out that 429's `Retry-After`. The rate then grows back slowly while 429s stay rare (past the
  limit found, slower still); 429s above `GROW_SHARE` take it back to that limit: a limit found is held.

Pure asyncio; the run shares one instance through an async Ray actor (`actors/llm_pool.py`).
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

    SHARE_WEIGHT = 1 / 50
    """Weight of one answer in the moving 429 share: random 10 % 429s stay far below LIMIT_SHARE."""
    LIMIT_SHARE = 0.3
    """429 share above which the server's limit is taken to be below ours."""
    GROW_SHARE = 0.02
    """429 share below which the rate grows back."""
    GROWTH = 0.05
    """Rate regained per window of answers, as a share of the configured rate."""
    CUT = 0.7
    """The in-flight cap kept after a 429 (TCP CUBIC's 0.7, not Reno's half: at 10 % random 429s a halved cap
    spends most of its time too small to carry the rate)."""
    PROBE = 0.2
    """Above a limit found, the rate grows this much slower: it probes whether the server allows more now."""
    MAX_PAUSE_WINDOWS = 1.0
    """A `Retry-After` longer than this many windows is not believed."""
    LOST_RTTS = 10.0
    LOST_MIN_S = 2.0
    """A request in flight this many round trips (a moving average of answered ones), and at least this many
    seconds, is presumed lost: it leaves the cap's count."""

    def __init__(self, rpm: int, tpm: int, concurrency: int, window_s: float = 60.0, headroom: float = 0.97,
                 clock=time.monotonic, pace: bool = True):
        self.headroom = headroom
        self.max_rate = max(1, int(rpm * headroom))
        self.rate = float(self.max_rate)
        self.max_tokens = max(1, int(tpm * headroom))
        self.max_concurrency = concurrency
        self.limit = concurrency
        self.window_s = window_s
        self.pace = pace
        self.next_slot = float("-inf")
        self.clock = clock
        self.sent: deque[tuple[float, int]] = deque()
        self.refused: deque[float] = deque()  # send times of the window's 429s
        self.open: dict[int, float] = {}  # ticket -> send time, of requests in flight
        self.window_tokens = 0
        self.paused_until = 0.0
        self.seq = 0
        self.cut_seq = 0  # tickets up to this one were sent before the last cut of the cap
        self.share429 = 0.0
        self.rtt: float | None = None  # moving average of answered requests' round trips
        self.found_rate: float | None = None  # the rate of the last server limit found
        self.successes = 0
        self.counts = {"ok": 0, "rate_limited": 0, "error": 0, "stall": 0, "limit_found": 0}
        self._changed = asyncio.Condition()

    @property
    def in_flight(self) -> int:
        return len(self.open)

    def _lost_after(self) -> float:
        return max(self.LOST_MIN_S, self.LOST_RTTS * (self.rtt or 0.0))

    def _pipe(self, now: float) -> tuple[int, float]:
        """(requests in flight not presumed lost, seconds until the next one would be)."""
        lost_after, live, next_loss = self._lost_after(), 0, float("inf")
        for sent_at in self.open.values():
            if now - sent_at < lost_after:
                live += 1
                next_loss = min(next_loss, sent_at + lost_after - now)
        return live, next_loss

    @property
    def max_requests(self) -> int:
        """Requests admitted per window now (the adaptive rate)."""
        return max(1, int(self.rate))

    @property
    def interval(self) -> float:
        return self.window_s / self.rate if self.pace else 0.0

    def _prune(self, now: float) -> None:
        while self.sent and self.sent[0][0] <= now - self.window_s:
            self.window_tokens -= self.sent.popleft()[1]
        while self.refused and self.refused[0] <= now - self.window_s:
            self.refused.popleft()

    def _wait_needed(self, tokens: int, now: float) -> float:
        """Seconds until a request of `tokens` may go, 0 if now."""
        self._prune(now)
        wait = self.paused_until - now
        if len(self.sent) >= self.max_requests:
            wait = self.sent[-self.max_requests][0] + self.window_s - now
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

    async def acquire(self, tokens: int) -> int:
        """Wait for a slot in flight and room in both windows; returns the request's ticket for `release`."""
        async with self._changed:
            while True:
                live, next_loss = self._pipe(self.clock())
                wait = self._wait_needed(tokens, self.clock()) if live < self.limit else next_loss
                if wait == 0:
                    break
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=None if wait == float("inf") else wait)
                except asyncio.TimeoutError:
                    pass
            now = self.clock()
            self.sent.append((now, tokens))
            # on a grid: a late wake-up is made up by the next interval, idle time is not saved up
            self.next_slot = max(self.next_slot, now - self.interval / 2) + self.interval
            self.window_tokens += tokens
            self.seq += 1
            self.open[self.seq] = now
            return self.seq

    async def release(self, outcome: str, retry_after: float | None = None, ticket: int | None = None) -> None:
        """End a request: `ok`, `rate_limited` (a 429), `error` or `stall` (cancelled for silence).

        Args:
            ticket: what `acquire` returned; None stands for the newest request in flight.
        """
        async with self._changed:
            now = self.clock()
            ticket, sent_at = self.open.popitem() if ticket is None else (ticket, self.open.pop(ticket))
            self.counts[outcome] = self.counts.get(outcome, 0) + 1
            self.share429 += self.SHARE_WEIGHT * ((outcome == "rate_limited") - self.share429)
            if outcome == "rate_limited":
                self.refused.append(sent_at)
                if ticket > self.cut_seq:  # sent after the last cut: news, not an echo of it
                    self.cut_seq = self.seq
                    if self.share429 >= self.LIMIT_SHARE:
                        self._hold_server_limit(now, retry_after)
                    elif self.found_rate is not None:  # a rate limit is held: the rate answers its 429s
                        if self.rate > self.found_rate and self.share429 >= self.GROW_SHARE:
                            self.rate = self.found_rate  # grown past the limit found: back to it
                    else:
                        self.limit = max(1, int(self.limit * self.CUT))
                        self.successes = 0
            elif outcome == "ok":
                rtt = now - sent_at
                self.rtt = rtt if self.rtt is None else self.rtt + 0.1 * (rtt - self.rtt)
                self.successes += 1
                if self.limit < self.max_concurrency and self.successes >= self.limit:
                    self.limit += 1
                    self.successes = 0
                if self.share429 < self.GROW_SHARE and self.rate < self.max_rate:
                    probing = self.found_rate is not None and self.rate >= self.found_rate
                    growth = self.GROWTH * (self.PROBE if probing else 1.0)
                    self.rate = min(self.max_rate, self.rate + growth * self.max_rate / self.rate)
            self._changed.notify_all()

    def _hold_server_limit(self, now: float, retry_after: float | None) -> None:
        """The server refuses a large share: take the rate down to what it admitted in the last window."""
        self._prune(now)
        admitted = len(self.sent) - len(self.refused)
        self.rate = max(1.0, min(self.rate, admitted * self.headroom))
        self.found_rate = self.rate
        self.counts["limit_found"] += 1
        if retry_after is not None:
            self.paused_until = max(self.paused_until, now + min(retry_after, self.MAX_PAUSE_WINDOWS * self.window_s))
        self.share429 = 0.0  # judge the new rate by its own answers

    def snapshot(self) -> dict:
        now = self.clock()
        self._prune(now)
        return {"limit": self.limit, "in_flight": self.in_flight, "presumed_lost": self.in_flight - self._pipe(now)[0],
                "sent_in_window": len(self.sent),
                "tokens_in_window": self.window_tokens, "paused_for_s": round(max(0.0, self.paused_until - now), 3),
                "rate_per_window": round(self.rate, 2), "share429": round(self.share429, 4),
                "ok": self.counts["ok"], "rate_limited": self.counts["rate_limited"],
                "errors": self.counts["error"], "stalls": self.counts["stall"],
                "limit_found": self.counts["limit_found"]}
