"""The engine-events watcher of a region (apps/chainapps/healing.py) while its engine is
away: it keeps reconnecting, never waits more than RECONNECT_MAX between attempts, and
follows the engine's events again once it answers."""

from __future__ import annotations

import pytest

from apps.chainapps import healing
from apps.runtime.base import NodeEvents, RuntimeUnavailable
from tests.factories import RegionFactory


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


class Stop:
    """A stop event whose waits only advance the fake clock and are recorded."""

    def __init__(self, clock: Clock) -> None:
        self.clock, self.waits, self._set = clock, [], False

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True

    def wait(self, delay: float) -> bool:
        self.waits.append(delay)
        self.clock.now += delay
        return self._set


class Engine:
    """Down for ``down`` attempts, then streams that stay open ``open_for`` seconds with
    no event and break; the last of ``attempts`` connections reports one death."""

    CAPABILITIES = (NodeEvents,)

    def __init__(self, clock: Clock, stop: Stop, *, down: int, open_for: float, attempts: int) -> None:
        self.clock, self.stop, self.down, self.open_for, self.attempts = clock, stop, down, open_for, attempts
        self.calls = 0

    def node_events(self, *, installation_id: str, stop):
        self.calls += 1
        if self.calls >= self.attempts:
            self.stop.set()
        if self.calls <= self.down:
            raise RuntimeUnavailable("engine does not answer")
        self.clock.now += self.open_for  # an idle stream, open for that long
        if self.calls >= self.attempts:
            yield f"node-{self.calls}", "die"


@pytest.fixture
def watcher(transactional_db, monkeypatch):
    clock = Clock()
    stop = Stop(clock)
    healed = []
    monkeypatch.setattr(healing.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(healing, "_heal_with_retries", lambda name, action, stop=None: healed.append((name, action)))
    region = RegionFactory(code="cn-watched", driver="docker")

    def run(engine_kwargs) -> tuple[Engine, list[float], list]:
        engine = Engine(clock, stop, **engine_kwargs)
        monkeypatch.setattr("apps.runtime.drivers.driver_for_region", lambda r: engine)
        w = healing.RegionWatcher(region.code, stop)  # type: ignore[arg-type]
        w.run()  # in this thread: returns once stop is set
        w.pool.shutdown(wait=True)
        return engine, stop.waits, healed

    return run


def test_an_engine_down_for_long_is_retried_at_most_reconnect_max_apart_and_followed_again(watcher):
    engine, waits, healed = watcher({"down": 12, "open_for": 0.0, "attempts": 13})
    assert engine.calls == 13
    assert max(waits) == healing.RECONNECT_MAX  # doubled up to the cap, never beyond (was 30 s)
    assert waits[:4] == [0.5, 1.0, 2.0, 4.0]
    assert healed == [("node-13", "die")]  # the events are followed again once it answers


def test_a_stream_that_was_open_breaks_and_is_reopened_at_once(watcher):
    # Down 6 times (the backoff reaches its cap), then open and quiet for a minute, then
    # broken: the next attempt comes after RECONNECT_MIN, not after the cap (the engine
    # went away just now, or restarts).
    engine, waits, _ = watcher({"down": 6, "open_for": 60.0, "attempts": 8})
    assert engine.calls == 8
    assert waits[5] == healing.RECONNECT_MAX
    assert waits[6] == healing.RECONNECT_MIN
