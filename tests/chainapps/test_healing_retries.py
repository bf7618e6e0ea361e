"""A heal from an engine event that fails is tried again with growing pauses, then left to
the periodic pass: a restart loop backs off and ends (issue 9)."""

from __future__ import annotations

import threading

from apps.chainapps import healing


def _script(monkeypatch, results):
    calls = []

    def fake(name, action):
        calls.append(action)
        return results[min(len(calls), len(results)) - 1]

    monkeypatch.setattr(healing, "_heal_by_name", fake)
    monkeypatch.setattr(healing, "RETRY_DELAYS", (0.01, 0.02, 0.03, 0.04))
    return calls


def test_a_failed_heal_is_tried_again_until_it_heals(monkeypatch):
    calls = _script(monkeypatch, ["failed: not healthy", "failed: not healthy", "healed"])
    healing._heal_with_retries("bsn-x-0", "die")
    assert calls == ["die", "die (retry)", "die (retry)"]


def test_a_heal_that_keeps_failing_ends_after_the_last_pause(monkeypatch, caplog):
    calls = _script(monkeypatch, ["failed: not healthy"])
    healing._heal_with_retries("bsn-x-0", "destroy")
    assert len(calls) == 1 + len(healing.RETRY_DELAYS)
    assert "gave up after 5 attempts" in caplog.text


def test_skipped_or_gone_is_not_retried_and_a_stopping_worker_stops_retrying(monkeypatch):
    calls = _script(monkeypatch, ["skipped: another worker is on it"])
    healing._heal_with_retries("bsn-x-0", "die")
    assert calls == ["die"]
    calls = _script(monkeypatch, ["failed: x"])
    stop = threading.Event()
    stop.set()
    healing._heal_with_retries("bsn-x-0", "die", stop)
    assert calls == ["die"]
