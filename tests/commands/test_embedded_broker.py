"""The embedded broker (``filesystem://``) never hands a worker a half-written message."""

from __future__ import annotations

import os
from queue import Empty

import pytest
from kombu import Connection

from apps.common import broker_fs


@pytest.fixture
def channel(tmp_path):
    folder = tmp_path / "queue"
    folder.mkdir()
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder), "control_folder": str(tmp_path / "c")}
    with Connection("filesystem://", transport_options=options) as conn:
        yield conn.default_channel


def test_filesystem_urls_use_the_whole_message_transport(channel):
    assert isinstance(channel, broker_fs.Channel)  # bsn.celery registered it for filesystem://


def test_a_message_is_invisible_until_it_is_whole(channel, monkeypatch):
    renames = []
    real_replace = os.replace

    def replace(src, dst):
        # The message is written, not yet renamed in: a polling worker must not see it.
        with pytest.raises(Empty):
            channel._get("default")
        renames.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(broker_fs.os, "replace", replace)
    channel._put("default", {"body": "hello"})
    assert len(renames) == 1 and renames[0].endswith(".default.msg")
    assert channel._get("default") == {"body": "hello"}
    assert os.listdir(os.path.dirname(renames[0])) == [], "nothing left behind"
