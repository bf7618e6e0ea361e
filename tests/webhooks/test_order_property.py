"""Property: whatever the receiver answers, and whenever, a webhook's deliveries go out in
chain order, one at a time, each retry is planned inside its 24 h window, and each ends
succeeded or failed (a worker that comes late still makes the attempt that was due)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from apps.chainapps.builtin import ensure_builtin_framework
from apps.chainapps.models import Framework
from apps.webhooks.models import WebhookDelivery
from apps.webhooks.sender import Outcome
from apps.webhooks.services import webhook_create, webhook_deliver
from tests.api.conftest import make_app

pytestmark = pytest.mark.django_db

ANSWERS = st.sampled_from(
    [
        Outcome(200, 5),
        Outcome(204, 5),
        Outcome(500, 5, "HTTP 500"),
        Outcome(302, 5, "redirect not followed"),
        Outcome(None, 3000, "timeout: ReadTimeoutError"),
        Outcome(None, 1, "connect: NewConnectionError"),
    ]
)


@pytest.fixture
def app(owner, regions):
    ensure_builtin_framework(Framework)
    return make_app(owner, "prop", regions=("cn-beijing",))


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=st.lists(
        st.tuples(st.integers(1, 5), st.integers(0, 2), st.integers(0, 1)), min_size=1, max_size=6, unique=True
    ),
    answers=st.lists(ANSWERS, max_size=60),
    pause_s=st.lists(st.floats(0, 30000), max_size=20),
)
def test_any_pattern_of_answers_keeps_chain_order(app, owner, events, answers, pause_s):
    hook, _ = webhook_create(app=app, actor=owner.user, url="https://hooks.example.com/p", events=["*"])
    for height, index, seq in events:
        WebhookDelivery.objects.create(
            webhook=hook,
            event_key=f"{app.pk}:{height}:{index}:{seq}",
            height=height,
            tx_index=index,
            seq=seq,
            event={"name": "e", "position": [height, index, seq]},
        )
    chain_order = sorted(events)
    clock = [timezone.now()]
    sent: list[tuple[int, int, int]] = []
    queue = list(answers)

    def send(url, body, headers, **kw):
        import json

        sent.append(tuple(json.loads(body)["event"]["position"]))
        return queue.pop(0) if queue else Outcome(200, 5)

    pauses = list(pause_s)
    for _ in range(500):
        _, again = webhook_deliver(str(hook.pk), now=lambda: clock[0], send=send)
        if again is None:
            break
        head = WebhookDelivery.objects.filter(webhook=hook, status="pending").order_by("height", "tx_index", "seq")[0]
        if head.first_attempt_at is not None:  # a retry is never planned past the 24 h window
            assert head.next_attempt_at == again <= head.first_attempt_at + timedelta(hours=24)
        # The next run comes when it is due, or later (a slow beat, a worker restart).
        clock[0] = max(clock[0], again) + timedelta(seconds=pauses.pop(0) if pauses else 0)
    rows = {(d.height, d.tx_index, d.seq): d for d in WebhookDelivery.objects.filter(webhook=hook)}
    assert all(d.status in ("succeeded", "failed") for d in rows.values())
    # In order: once a later event was attempted, no earlier one is attempted again.
    positions = [chain_order.index(p) for p in sent]
    assert positions == sorted(positions)
    for position, row in rows.items():
        assert row.attempts == sent.count(position) >= 1
    hook.delete()
