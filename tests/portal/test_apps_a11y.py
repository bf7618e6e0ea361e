"""Every input of the chain-app pages has a label, and every page is one document with one
<h1>; the viewport is set for phones (375 px) and no page loads a script from elsewhere."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from apps.chainapps.models import ChainApp, Operation
from tests.api.conftest import finish_open_operations, make_app
from tests.gateway.conftest import attach_sim

pytestmark = pytest.mark.django_db


class _Form(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.label_for: set[str] = set()
        self.in_label = 0
        self.fields: list[tuple[str, str | None, bool]] = []  # (tag, id, inside a label)
        self.h1 = 0
        self.scripts: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "label":
            self.in_label += 1
            if a.get("for"):
                self.label_for.add(a["for"])
        elif tag in ("input", "select", "textarea") and a.get("type") not in ("hidden", "submit"):
            self.fields.append((tag, a.get("id"), self.in_label > 0))
        elif tag == "h1":
            self.h1 += 1
        elif tag == "script":
            self.scripts.append(a.get("src") or "")

    def handle_endtag(self, tag):
        if tag == "label":
            self.in_label -= 1


@pytest.fixture
def app(owner, regions) -> ChainApp:
    app = make_app(owner, "ledger-a", regions=("cn-beijing",))
    finish_open_operations(app.pk)
    return ChainApp.objects.get(pk=app.pk)


def test_every_input_is_labelled(member_portal, app, monkeypatch):
    monkeypatch.setattr("apps.chainapps.tasks.node_refresh_later", lambda node, facts=False: None)
    sim = attach_sim(app.nodes.get())
    op = Operation.objects.filter(app=app).first()
    try:
        urls = [
            "/portal/apps/",
            "/portal/apps/new/",
            f"/portal/apps/{app.pk}/",
            f"/portal/apps/{app.pk}/blocks/1/",
            f"/portal/apps/{app.pk}/state/?contract=kv&key=x",
            f"/portal/apps/{app.pk}/stop/",
            f"/portal/apps/{app.pk}/delete/",
            f"/portal/apps/{app.pk}/operations/",
            f"/portal/operations/{op.pk}/",
        ]
        for url in urls:
            resp = member_portal.get(url)
            assert resp.status_code in (200, 404), (url, resp.status_code)  # block 1: an empty sim chain
            page = _Form()
            page.feed(resp.content.decode())
            unlabelled = [f for f in page.fields if not f[2] and f[1] not in page.label_for]
            assert not unlabelled, (url, unlabelled)
            assert page.h1 == 1, url
            assert all(src.startswith("/static/") for src in page.scripts), (url, page.scripts)
            assert b'name="viewport" content="width=device-width' in resp.content
    finally:
        sim.close()
