"""The embedded broker (``filesystem://``) never hands a worker a half-written message."""

from __future__ import annotations

import multiprocessing
import os
import time
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


def test_a_half_written_message_is_left_for_a_later_read(channel):
    folder = channel.data_folder_in
    # What kombu's own writer (or a crash mid-write) leaves: the final name, half a body.
    path = os.path.join(folder, "1_half.default.msg")
    whole = b'{"body": "late"}'
    with open(path, "wb") as f:
        f.write(whole[:5])
    with pytest.raises(Empty):
        channel._get("default")  # no JSONDecodeError: the worker lives on
    assert os.path.exists(path), "left where it was"
    with open(path, "wb") as f:
        f.write(whole)
    assert channel._get("default") == {"body": "late"}
    assert not os.path.exists(path)


def test_a_file_that_never_parses_is_set_aside_not_read_forever(channel):
    path = os.path.join(channel.data_folder_in, "0_bad.default.msg")  # sorts before any real message
    with open(path, "wb") as f:
        f.write(b"{not json")
    old = os.stat(path).st_mtime - broker_fs.UNREADABLE_GRACE - 1
    os.utime(path, (old, old))
    channel._put("default", {"body": "next"})
    assert channel._get("default") == {"body": "next"}
    assert os.path.exists(path + ".unreadable") and not os.path.exists(path)


def test_an_exchange_table_is_never_seen_half_written(channel, monkeypatch):
    channel._queue_bind("bsn.fanout", "", "", "q1")
    real_replace = os.replace

    def replace(src, dst):
        assert channel.get_table("bsn.fanout") == [("", "", "q1")]  # the old table, whole
        real_replace(src, dst)

    monkeypatch.setattr(broker_fs.os, "replace", replace)
    channel._queue_bind("bsn.fanout", "", "", "q2")
    assert {q.queue for q in channel.get_table("bsn.fanout")} == {"q1", "q2"}


# -- several processes at once -----------------------------------------------------------
WRITERS, READERS, PER_WRITER = 3, 3, 1500


def _connection(base: str) -> Connection:
    options = {
        "data_folder_in": os.path.join(base, "queue"),
        "data_folder_out": os.path.join(base, "queue"),
        "control_folder": os.path.join(base, "control"),
    }
    return Connection(transport=broker_fs.Transport, transport_options=options)


def _writer(base: str, writer: int) -> None:
    with _connection(base) as conn:
        channel = conn.default_channel
        for i in range(PER_WRITER):
            channel._put("hammer", {"id": f"{writer}-{i}", "pad": "x" * (i * 37 % 4000)})
            # Fan-out tables churn while messages flow: every publish reads one.
            if i % 25 == 0:
                channel._queue_bind("hammer.fanout", "", "", f"w{writer}-{i}")


def _reader(base: str, reader: int, done: str, results) -> None:
    got: list[str] = []
    with _connection(base) as conn:
        channel = conn.default_channel
        deadline = time.monotonic() + 120  # bounded: the test fails rather than hangs
        while time.monotonic() < deadline:
            try:
                got.append(channel._get("hammer")["id"])
            except Empty:
                if os.path.exists(done) and not channel._size("hammer"):
                    break
                time.sleep(0.001)
            if len(got) % 50 == 0:
                channel.get_table("hammer.fanout")
    results.put((reader, got))


def test_many_processes_each_message_exactly_once(tmp_path):
    """3 writers and 3 readers (separate processes) on one folder: no error, nothing lost, nothing twice."""
    base = str(tmp_path)
    os.makedirs(os.path.join(base, "queue"))
    done = os.path.join(base, "writers-done")
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    readers = [ctx.Process(target=_reader, args=(base, r, done, results)) for r in range(READERS)]
    writers = [ctx.Process(target=_writer, args=(base, w)) for w in range(WRITERS)]
    for p in readers + writers:
        p.start()
    for p in writers:
        p.join(120)
        assert p.exitcode == 0, "a writer crashed"
    open(done, "w").close()
    got = [results.get(timeout=150) for _ in readers]
    for p in readers:
        p.join(30)
        assert p.exitcode == 0, "a reader crashed"
    ids = [i for _, ids in got for i in ids]
    expected = {f"{w}-{i}" for w in range(WRITERS) for i in range(PER_WRITER)}
    assert len(ids) == len(set(ids)), "a message was delivered twice"
    assert set(ids) == expected, f"{len(expected - set(ids))} messages lost"
    assert sum(1 for _, ids in got if ids) >= 2, "the readers competed"
    assert not [n for n in os.listdir(os.path.join(base, "queue")) if not n.startswith(".")]
    table = _connection(base).default_channel.get_table("hammer.fanout")
    assert len(table) == WRITERS * (PER_WRITER // 25)


def test_a_filesystem_url_needs_no_hostname_and_says_nothing_about_one(tmp_path, caplog):
    """kombu warned "No hostname was supplied" on every connection of ``filesystem://``."""
    import logging

    from kombu import Connection

    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path), "processed_folder": str(tmp_path)}
    with (
        caplog.at_level(logging.WARNING, logger="kombu.connection"),
        Connection("filesystem://", transport_options=options) as conn,
    ):
        conn.default_channel  # noqa: B018 - connects
        conn.clone().release()  # what sending a task does (the producer pool's connection)
    assert "hostname" not in caplog.text
