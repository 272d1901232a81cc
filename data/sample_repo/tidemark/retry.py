"""Retry policies with exponential back-off and jitter.

Carrier endpoints are flaky (Kestrel's EDI bridge in particular, see
INC-2291), so every outbound carrier call goes through a
:class:`RetryPolicy`.  The delay before attempt ``n + 1`` is::

    min(base_delay_s * multiplier ** (n - 1), max_delay_s) * (1 +/- jitter)

and is capped at ``max_delay_s`` again after jitter.  Only errors whose
code is in ``retry_on`` (default: ``TM-7002`` and ``TM-7004``) and the
built-in :class:`TimeoutError` / :class:`ConnectionError` are retried;
anything else propagates immediately.
"""

from __future__ import annotations

import functools
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, TypeVar

from .errors import RETRYABLE_CODES, ConfigError, RetryExhaustedError, TidemarkError

if TYPE_CHECKING:  # pragma: no cover
    from .config import TidemarkConfig

__all__ = ["Attempt", "RetryPolicy", "NO_RETRY", "retrying"]

T = TypeVar("T")


@dataclass(frozen=True)
class Attempt:
    """Record of one failed attempt.

    Attributes:
        number: 1-based attempt number.
        error_code: ``TM-`` code of the failure, or the exception class name.
        delay_s: Seconds slept before the next attempt (0.0 after the last).
    """

    number: int
    error_code: str
    delay_s: float


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry.

    Args:
        max_attempts: Total attempts including the first (>= 1), default 4.
        base_delay_s: Delay after the first failure, default 0.5 s.
        max_delay_s: Cap for a single delay, default 30 s.
        multiplier: Growth factor between delays, default 2.0.
        jitter: Relative jitter in ``[0, 1]``, default 0.1 (+/-10 %).
        retry_on: Error codes that are retried, default :data:`~tidemark.errors.RETRYABLE_CODES`.

    Raises:
        ConfigError: ``TM-1002`` if a parameter is out of range.

    Examples:
        >>> RetryPolicy(jitter=0).schedule()
        [0.5, 1.0, 2.0]
    """

    max_attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.1
    retry_on: frozenset[str] = field(default=RETRYABLE_CODES)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("max_attempts must be >= 1", code="TM-1002")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.multiplier < 1:
            raise ConfigError("delays must be >= 0 and multiplier >= 1", code="TM-1002")
        if not 0 <= self.jitter <= 1:
            raise ConfigError("jitter must be within [0, 1]", code="TM-1002")

    @classmethod
    def from_config(cls, config: "TidemarkConfig") -> "RetryPolicy":
        """Build a policy from the ``retry.*`` configuration keys."""
        return cls(
            max_attempts=config.retry_max_attempts,
            base_delay_s=config.retry_base_delay_s,
            max_delay_s=config.retry_max_delay_s,
            jitter=config.retry_jitter,
        )

    def delay_for(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if attempt < 1:
            raise ValueError("attempt numbers start at 1")
        delay = min(self.base_delay_s * self.multiplier ** (attempt - 1), self.max_delay_s)
        if self.jitter:
            source = rng or random
            delay *= 1 + source.uniform(-self.jitter, self.jitter)
        return min(delay, self.max_delay_s)

    def schedule(self) -> list[float]:
        """Delays between attempts without jitter (``max_attempts - 1`` values)."""
        return [min(self.base_delay_s * self.multiplier ** (n - 1), self.max_delay_s)
                for n in range(1, self.max_attempts)]

    def should_retry(self, exc: BaseException) -> bool:
        """Whether ``exc`` is worth another attempt under this policy."""
        if isinstance(exc, TidemarkError):
            return exc.code in self.retry_on
        return isinstance(exc, (TimeoutError, ConnectionError))

    def call(
        self,
        fn: Callable[[], T],
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        on_retry: Callable[[Attempt], None] | None = None,
    ) -> T:
        """Call ``fn`` until it succeeds or attempts run out.

        Args:
            fn: Zero-argument callable (use ``functools.partial`` or a lambda).
            sleep: Sleep function; pass a no-op in tests.
            rng: Random source for jitter (``random.Random(seed)`` for
                reproducible delays).
            on_retry: Called with an :class:`Attempt` before each sleep.

        Returns:
            Whatever ``fn`` returns.

        Raises:
            RetryExhaustedError: ``TM-9001`` after ``max_attempts`` retryable
                failures; the last error is chained as ``__cause__``.
            Exception: Any non-retryable error from ``fn``, unchanged.
        """
        attempts: list[Attempt] = []
        for number in range(1, self.max_attempts + 1):
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - filtered below
                if not self.should_retry(exc):
                    raise
                code = getattr(exc, "code", type(exc).__name__)
                if number == self.max_attempts:
                    attempts.append(Attempt(number, code, 0.0))
                    raise RetryExhaustedError(
                        f"gave up after {number} attempts (last error {code})",
                        attempts=attempts,
                        last_code=code,
                    ) from exc
                delay = self.delay_for(number, rng)
                attempt = Attempt(number, code, delay)
                attempts.append(attempt)
                if on_retry is not None:
                    on_retry(attempt)
                sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


#: A policy that never retries (one attempt).
NO_RETRY = RetryPolicy(max_attempts=1)


def retrying(policy: RetryPolicy | None = None, *, sleep: Callable[[float], None] = time.sleep
             ) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator form of :meth:`RetryPolicy.call`.

    Examples:
        >>> calls = []
        >>> @retrying(RetryPolicy(max_attempts=3, jitter=0), sleep=lambda s: None)
        ... def flaky():
        ...     calls.append(1)
        ...     if len(calls) < 3:
        ...         raise TimeoutError
        ...     return "ok"
        >>> flaky(), len(calls)
        ('ok', 3)
    """
    active = policy or RetryPolicy()

    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def wrapper(*args: object, **kwargs: object) -> T:
            return active.call(lambda: fn(*args, **kwargs), sleep=sleep)

        return wrapper

    return decorate
