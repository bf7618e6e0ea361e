"""kombu's file-system broker transport (the embedded ``make run``), made safe for several processes.

kombu's own transport (celery/kombu#1551 and relatives) has three races between the web,
worker and beat processes that share the folder, each of which crashed the worker with
``JSONDecodeError('Expecting value: line 1 column 1 (char 0)')`` — and took the stack
down:

- a message is written straight under its final ``*.msg`` name, so a worker polling every
  0.1 s can read it before it is whole;
- a reader moves a message to the system temp folder before reading it; across file
  systems that move is a copy, which another reader can see half-done;
- the exchange tables (which queue a routing key goes to, read on every publish) are
  created with a truncating ``open`` before their lock is taken, and rewritten in place.

Here every file is written aside and renamed into place (atomic on POSIX: a reader sees
the whole file or nothing), a message is claimed by an atomic ``unlink``/``rename`` after
it was read and parsed, and a file that cannot be parsed is left where it is for a later
read (and set aside after ``UNREADABLE_GRACE`` seconds, logged, so that one corrupt file
cannot be read forever). Nothing in here raises on a file another process is working on.

Registered for the ``filesystem://`` URL by ``bsn.celery``; imports nothing of Django.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
import uuid
from contextlib import contextmanager
from queue import Empty
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem, virtual
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

logger = logging.getLogger(__name__)

# A message file that still does not parse this long after it was last written is not a
# write in progress (writes are renamed in whole): it is set aside as ``*.unreadable``.
UNREADABLE_GRACE = 60.0
# Reading an exchange table: tries before giving up on a file that does not parse.
TABLE_READ_TRIES = 20


def _write_atomically(folder: str, final: str, data: bytes) -> None:
    # A leading dot: ``_get`` matches "<anything>.<queue>.msg" on the text after the first
    # dot, which here is "tmp-…", so a half-written file is never taken.
    partial = os.path.join(folder, f".tmp-{uuid.uuid4().hex}")
    try:
        with open(partial, "wb", buffering=0) as f:
            f.write(data)
        os.replace(partial, final)
    except OSError:
        try:
            os.unlink(partial)
        except OSError:
            pass
        raise


class Channel(filesystem.Channel):
    # -- messages ---------------------------------------------------------------------
    def _put(self, queue, payload, **kwargs):
        """Put ``payload`` on ``queue``: written aside, then renamed to the name ``_get`` looks for."""
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        try:
            _write_atomically(self.data_folder_out, final, str_to_bytes(dumps(payload)))
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue):
        """The oldest whole message of ``queue``, claimed by this reader alone.

        Read first, claim second: a file is parsed where it lies, then taken with one atomic
        ``unlink`` (or ``rename`` into the processed folder); of two readers of the same
        file only one claim succeeds, the other moves on. A file that cannot be read or
        parsed is not claimed: it stays for a later read.
        """
        queue_find = f"{queue}.msg"
        try:
            names = sorted(os.listdir(self.data_folder_in))
        except OSError as exc:
            raise ChannelError(f"Cannot list {self.data_folder_in!r}") from exc
        for name in names:
            if name.partition(".")[2] != queue_find:
                continue
            path = os.path.join(self.data_folder_in, name)
            try:
                with open(path, "rb") as f:
                    raw = f.read()
            except OSError:
                continue  # taken by another reader meanwhile
            try:
                payload = loads(bytes_to_str(raw))
            except ValueError:
                self._unreadable(path)
                continue
            if self._claim(path, name):
                return payload
        raise Empty()

    def _claim(self, path: str, name: str) -> bool:
        try:
            if self.store_processed:
                os.rename(path, os.path.join(self.processed_folder, name))
            else:
                os.unlink(path)
        except OSError:
            return False  # another reader claimed it first
        return True

    def _unreadable(self, path: str) -> None:
        try:
            age = time.time() - os.stat(path).st_mtime
        except OSError:
            return
        if age < UNREADABLE_GRACE:
            return  # left for a later read
        aside = path + ".unreadable"
        try:
            os.rename(path, aside)
        except OSError:
            return
        logger.error("broker message %s does not parse after %.0f s: set aside as %s", path, age, aside)

    # -- exchange tables --------------------------------------------------------------
    @contextmanager
    def _table_lock(self, exchange):
        """Serialises writers of one exchange table (readers need no lock: writes are renames)."""
        file = self._exchange_file(exchange)
        self.control_folder.mkdir(parents=True, exist_ok=True)
        with open(file.with_name(f".{file.name}.lock"), "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield file
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _read_table(self, file) -> list:
        for attempt in range(TABLE_READ_TRIES):
            try:
                raw = file.read_bytes()
            except FileNotFoundError:
                return []
            except OSError as exc:
                raise ChannelError(f"Cannot open {file}") from exc
            try:
                return [filesystem.exchange_queue_t(*q) for q in loads(bytes_to_str(raw))]
            except (ValueError, TypeError):
                # Only a table written by kombu's own in-place code can be caught half-way
                # (an older process during an upgrade): it is whole a moment later.
                time.sleep(0.05 * (attempt + 1))
        raise ChannelError(f"Exchange table {file} does not parse")

    def get_table(self, exchange):
        return self._read_table(self._exchange_file(exchange))

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        value = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        with self._table_lock(exchange) as file:
            queues = self._read_table(file)
            if value in queues:
                return
            queues.insert(0, value)
            try:
                _write_atomically(str(file.parent), str(file), str_to_bytes(dumps(queues)))
            except OSError as exc:
                raise ChannelError(f"Cannot open {file}") from exc

    def _delete(self, queue, exchange, routing_key, pattern, *args, **kwargs):
        virtual.Channel._delete(self, queue, exchange, routing_key, pattern, *args, **kwargs)
        value = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        with self._table_lock(exchange) as file:
            if not file.exists():
                return
            queues = self._read_table(file)
            if value not in queues:
                return
            queues.remove(value)
            try:
                _write_atomically(str(file.parent), str(file), str_to_bytes(dumps(queues)))
            except OSError as exc:
                raise ChannelError(f"Cannot open {file}") from exc


class Transport(filesystem.Transport):
    Channel = Channel

    @property
    def default_connection_params(self) -> dict:
        # A folder has no host: the virtual transports' default ("localhost") made kombu warn
        # "No hostname was supplied" on every connection of a ``filesystem://`` URL (each
        # manage.py command that sends a task, in the embedded setup).
        return {}
