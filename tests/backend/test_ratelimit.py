"""The adaptive limiter on a simulated clock: the in-flight cap is cut once per round trip, and a server limit
below the configured rate is found and held; random 429s do not slow the run down."""

from __future__ import annotations

import asyncio
import heapq
import random
from collections import deque

from backend.ratelimit import RateLimiter


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_429s_of_requests_in_flight_at_a_cut_cut_the_cap_once():
    async def scenario():
        lim = RateLimiter(rpm=10_000, tpm=10**9, concurrency=16, window_s=60, clock=Clock(), pace=False)
        tickets = [await lim.acquire(1) for _ in range(8)]
        for t in tickets:  # all eight come back 429 together: one round trip, one cut
            await lim.release("rate_limited", 1.0, t)
        assert lim.limit == 11 and lim.in_flight == 0
        late = await lim.acquire(1)  # sent after the cut: its 429 is news
        await lim.release("rate_limited", 1.0, late)
        assert lim.limit == 7
        for _ in range(7 + 8):  # additive increase: one slot per cap's worth of successes (7, then 8)
            await lim.release("ok", None, await lim.acquire(1))
        assert lim.limit == 9

    asyncio.run(scenario())


def test_a_lone_429_slows_only_its_request_not_everyone():
    async def scenario():
        clock = Clock()
        lim = RateLimiter(rpm=600, tpm=10**9, concurrency=4, window_s=60, clock=clock)
        await lim.release("rate_limited", 30.0, await lim.acquire(1))
        assert lim.snapshot()["paused_for_s"] == 0 and lim.rate == lim.max_rate

    asyncio.run(scenario())


def simulate(lim: RateLimiter, clock: Clock, *, seconds: float, latency: float, server_cap: int | None,
             p429: float = 0.0, seed: int = 0) -> list[tuple[float, str]]:
    """Send as fast as the limiter allows to a sliding-window server (cap per 60 s) for `seconds` of simulated time;
    returns (send time, outcome) per request."""
    rng = random.Random(seed)
    window: deque[float] = deque()
    pending: list = []
    log = []

    async def run():
        while clock.t < seconds:
            wait = lim._wait_needed(1, clock.t) if lim.in_flight < lim.limit else float("inf")
            if pending and pending[0][0] <= clock.t + wait:
                clock.t, ticket, outcome, retry_after = heapq.heappop(pending)
                await lim.release(outcome, retry_after, ticket)
                continue
            clock.t += wait + 1e-9  # past float rounding, or acquire would wait on the real clock
            ticket = await lim.acquire(1)
            while window and window[0] <= clock.t - 60:
                window.popleft()
            if server_cap is not None and len(window) >= server_cap:
                outcome, retry_after = "rate_limited", window[0] + 60 - clock.t
            elif rng.random() < p429:
                outcome, retry_after = "rate_limited", 1.0
            else:
                window.append(clock.t)
                outcome, retry_after = "ok", None
            log.append((clock.t, outcome))
            heapq.heappush(pending, (clock.t + latency, ticket, outcome, retry_after))

    asyncio.run(run())
    return log


def test_a_server_limit_below_the_configured_rate_is_found_and_held():
    clock = Clock()
    lim = RateLimiter(rpm=600, tpm=10**9, concurrency=16, window_s=60, clock=clock)
    log = simulate(lim, clock, seconds=300, latency=0.3, server_cap=300)
    after = [o for t, o in log if t >= 60]
    share429 = sum(o == "rate_limited" for o in after) / len(after)
    goodput = sum(o == "ok" for o in after) / (300 - 60) * 60
    assert share429 <= 0.05, share429
    assert goodput >= 0.9 * 300, goodput
    assert lim.counts["limit_found"] >= 1


def test_random_429s_do_not_collapse_the_rate_or_the_cap():
    clock = Clock()
    lim = RateLimiter(rpm=600, tpm=10**9, concurrency=16, window_s=60, clock=clock)
    log = simulate(lim, clock, seconds=300, latency=0.3, server_cap=None, p429=0.1)
    sent_per_minute = len([t for t, _ in log if t >= 60]) / (300 - 60) * 60
    assert sent_per_minute >= 0.9 * lim.max_rate, sent_per_minute
    assert lim.counts["limit_found"] == 0 and lim.limit >= 2


def test_a_hung_request_leaves_the_cap_once_presumed_lost():
    async def scenario():
        clock = Clock()
        lim = RateLimiter(rpm=10_000, tpm=10**9, concurrency=2, window_s=60, clock=clock, pace=False)
        for _ in range(3):  # answered in 0.1 s: the typical round trip
            t = await lim.acquire(1)
            clock.t += 0.1
            await lim.release("ok", None, t)
        hung = [await lim.acquire(1) for _ in range(2)]  # both slots, and no answer
        waiter = asyncio.ensure_future(lim.acquire(1))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        clock.t += lim.LOST_MIN_S + 0.01  # 10 round trips are 1 s: the 2 s floor decides
        ticket = await asyncio.wait_for(waiter, 5)  # presumed lost: the slot is free again
        assert lim.snapshot()["presumed_lost"] == 2 and lim.in_flight == 3
        for t in hung + [ticket]:
            await lim.release("stall", None, t)
        assert lim.in_flight == 0

    asyncio.run(scenario())
