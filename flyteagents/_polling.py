"""Poll schedules: when the next call to an external system is due, from a job's start and the clock.

A schedule is a pure function of what a job carries in its resource_meta (its start time, a
key, the policy) and the wall clock, so every service replica computes the same due times and
the same next due time, without sharing any state.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_BACKOFF_INTERVAL", "PollPolicy", "PollSchedule"]

#: The cap on one wait when a policy backs off and names no ``max_interval``, in seconds.
DEFAULT_MAX_BACKOFF_INTERVAL = 3600.0
#: The index ``PollSchedule.slot`` reports once a job's deadline has passed.
DEADLINE_SLOT = -1
# Waits at the cap repeat their jitter every _PERIOD slots, which keeps finding the slot of a
# job polled for days a few steps of arithmetic instead of one step per slot since it started.
_PERIOD = 16
_MAX_GROWTH_STEPS = 1000
_MASK = (1 << 64) - 1
#: Shortest nonzero interval between calls, in seconds.
_MIN_INTERVAL = 1e-3
#: Longest nominal wait between calls, in seconds (about 30 years).
_MAX_WAIT = 1e9
#: Farthest start or deadline from 1970 a schedule takes, in seconds (about the year 5000).
_MAX_EPOCH = 1e11


@dataclass(frozen=True)
class PollPolicy:
    """How often a job's external system may be asked about it.

    Args:
        interval: least seconds between two calls; the first wait.
        backoff: each wait is this many times the one before (1: a steady interval;
            2: exponential backoff, doubling), up to ``max_interval``.
        max_interval: the cap on one wait, in seconds; with backoff and no cap,
            ``DEFAULT_MAX_BACKOFF_INTERVAL`` (an hour), or ``interval`` if larger.
        jitter: each wait is lengthened by a fraction between 0 and ``jitter`` of
            itself, drawn from the job's identity (the same on every replica), so jobs
            started together do not poll together. A wait is never shorter than its
            nominal length.

    Raises:
        ValueError: a negative interval or one under a millisecond, a backoff below 1 or
            so close to 1 that the cap takes over 1,000 waits to reach, a jitter outside
            [0, 1], a cap below the interval or above 1e9 seconds.
    """

    interval: float
    backoff: float = 1.0
    max_interval: float | None = None
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if not (self.interval >= 0 and math.isfinite(self.interval)):
            raise ValueError(f"poll interval must be a finite number of seconds >= 0, got {self.interval!r}")
        if 0 < self.interval < _MIN_INTERVAL:
            # Finding the slot of a moment steps through waits shorter than a float's precision at that
            # moment without end (the policy may come from a resource_meta).
            raise ValueError(f"poll interval must be 0 or at least {_MIN_INTERVAL}s, got {self.interval!r}")
        if not (1.0 <= self.backoff <= 100.0):
            raise ValueError(f"backoff must be between 1 (no backoff) and 100, got {self.backoff!r}")
        if not (0.0 <= self.jitter <= 1.0):
            raise ValueError(f"jitter must be a fraction between 0 and 1, got {self.jitter!r}")
        if self.max_interval is not None and not (self.max_interval >= self.interval):
            raise ValueError(f"max_interval ({self.max_interval!r}) must be at least the interval ({self.interval!r})")
        if self.cap > _MAX_WAIT:
            raise ValueError(f"a wait between calls must be at most {_MAX_WAIT:g}s, got {self.cap!r}")
        if self.backoff > 1.0 and self.interval > 0:
            steps = math.log(self.cap / self.interval) / math.log(self.backoff)
            if steps > _MAX_GROWTH_STEPS:
                raise ValueError(
                    f"backoff {self.backoff} takes {steps:.0f} waits to grow from {self.interval}s to "
                    f"{self.cap}s: use a larger backoff or a lower max_interval"
                )

    @property
    def cap(self) -> float:
        """The longest nominal wait."""
        if self.backoff == 1.0:
            return self.interval
        if self.max_interval is not None:
            return self.max_interval
        return max(self.interval, DEFAULT_MAX_BACKOFF_INTERVAL)

    def schedule(self, key: str, start: float | None = None, deadline: float | None = None) -> PollSchedule | None:
        """This policy applied to one job; None when the interval is 0 (every poll calls out)."""
        if self.interval <= 0:
            return None
        return PollSchedule(self, key, start, deadline)


def _mix(x: int) -> int:
    """splitmix64's finalizer: a well-spread 64-bit value from any 64-bit value."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


@dataclass(frozen=True)
class PollSchedule:
    """The due times of one job's calls: slot 0 at ``start``, then one wait after another.

    Wait ``k`` (between slot ``k`` and ``k+1``) is ``min(interval * backoff**k, cap)``,
    lengthened by up to ``jitter`` of itself. A caller polling at any rate makes at most
    one call per slot. Without a ``start`` the waits are steady (backoff needs a start to
    count from) and the slots' phase follows from ``key``.

    Args:
        policy: the intervals.
        key: the job's identity (seeds the jitter and, without a start, the phase).
        start: when the job started, in epoch seconds.
        deadline: epoch seconds from which a call is always due (to report a timeout).
    """

    policy: PollPolicy
    key: str
    start: float | None = None
    deadline: float | None = None

    def __post_init__(self) -> None:
        # Epoch seconds; far-off or non-finite ones (from a tampered resource_meta) would send _slot's
        # arithmetic past a float's precision, and its loop with it.
        for name, value in (("start", self.start), ("deadline", self.deadline)):
            if value is not None and not (-_MAX_EPOCH <= value <= _MAX_EPOCH):
                raise ValueError(f"poll schedule {name} must be epoch seconds within +-{_MAX_EPOCH:g}, got {value!r}")

    def slot(self, now: float) -> tuple[int, float, float]:
        """The slot ``now`` falls in: its index, when it became due, and when the next one is due.

        Past the deadline the index is DEADLINE_SLOT and both times are the deadline.
        """
        deadline = self.deadline
        if deadline is not None and now >= deadline:
            return DEADLINE_SLOT, deadline, deadline
        index, due, next_due = self._slot(now)
        if deadline is not None and next_due > deadline:
            next_due = deadline
        return index, due, next_due

    def next_due(self, now: float) -> float:
        """When the next call after ``now`` is due, in epoch seconds."""
        return self.slot(now)[2]

    def _slot(self, now: float) -> tuple[int, float, float]:
        policy = self.policy
        if self.start is None and policy.backoff != 1.0:
            policy = _steady(policy)  # backoff counts from a start; without one the interval stays put
        growth, lengths, period, phase = _plan(policy, self.key)
        index = 0
        if self.start is None:
            # A steady interval, its phase drawn from the key: slots fall at the same instants everywhere.
            due = phase
        else:
            due = self.start
            if now < due:  # a clock behind the one that started the job: the first slot still holds
                return 0, due, due + (growth[0] if growth else lengths[0])
            for length in growth:
                if now < due + length:
                    return index, due, due + length
                due += length
                index += 1
        # Waits at the cap, their jitter repeating every _PERIOD slots.
        if now >= due + period:
            rounds = math.floor((now - due) / period)
            due += rounds * period
            index += rounds * _PERIOD
        while True:
            for length in lengths:
                if now < due + length:
                    return index, due, due + length
                due += length
                index += 1


@functools.lru_cache(maxsize=256)
def _steady(policy: PollPolicy) -> PollPolicy:
    return PollPolicy(interval=policy.interval, jitter=policy.jitter)


@functools.lru_cache(maxsize=4096)
def _plan(policy: PollPolicy, key: str) -> tuple[tuple[float, ...], tuple[float, ...], float, float]:
    """A job's waits, worked out once per (policy, key): those while backing off, those at the cap
    (one _PERIOD of them), the period's length, and the phase of a schedule without a start."""
    seed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    jitter = policy.jitter

    def fraction(i: int) -> float:  # a number in [0, 1) from the key and i: the jitter of one wait
        return _mix(seed ^ (i & _MASK)) / 2.0**64

    growth: list[float] = []
    wait, cap = policy.interval, policy.cap
    if policy.backoff > 1.0:
        while wait < cap:
            growth.append(wait * (1 + jitter * fraction(len(growth))))
            wait = min(wait * policy.backoff, cap)
    lengths = tuple(cap * (1 + jitter * fraction((1 << 32) + m)) for m in range(_PERIOD))
    return tuple(growth), lengths, math.fsum(lengths), fraction(-1) * policy.interval
