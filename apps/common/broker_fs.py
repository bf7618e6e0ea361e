"""kombu's file-system broker transport (the embedded ``make run``) with whole-message writes.

kombu writes a message straight into the queue folder under its final ``*.msg`` name, so
a worker polling the folder (every 0.1 s) can pick it up before it is written and dies on
the empty JSON ("Expecting value: line 1 column 1", celery/kombu#1551); honcho then stops
web and beat too. Here a message is written under a name the reader skips and renamed
into place, which is atomic on POSIX: a reader sees the whole message or nothing.

Registered for the ``filesystem://`` URL by ``bsn.celery``; imports nothing of Django.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        """Put ``payload`` on ``queue``: written aside, then renamed to the name ``_get`` looks for."""
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # A leading dot: ``_get`` matches "<anything>.<queue>.msg" on the text after the first
        # dot, which here is "tmp-…", so the half-written file is never taken.
        partial = os.path.join(self.data_folder_out, f".tmp-{uuid.uuid4().hex}")
        try:
            with open(partial, "wb", buffering=0) as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            try:
                os.unlink(partial)
            except OSError:
                pass
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
