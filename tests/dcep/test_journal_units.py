"""Small pure parts of the journal."""

from __future__ import annotations

import uuid

from apps.dcep.journal import uuid4_strings


def test_uuid4_strings_are_random_version_4_uuids_as_uuid_writes_them():
    ids = uuid4_strings(5000)
    assert len(set(ids)) == 5000
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
    assert uuid4_strings(1) != uuid4_strings(1)
