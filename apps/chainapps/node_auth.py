"""Each ledger node's API credential (docs/ledger-protocol.md, "Node authentication").

The credential is random, made when the node row is made, kept only encrypted
(``LedgerNode.api_credential_encrypted``) and handed to the node as a file. Callers in
the control plane never send it: ``node_auth(node)`` gives the ``NodeAuth`` that
``apps.runtime.nodeapi`` signs requests and checks replies with.
"""

from __future__ import annotations

from functools import lru_cache

from apps.chainapps.models import LedgerNode
from apps.common.crypto import decrypt_secret, encrypt_secret
from apps.runtime.nodeapi import NodeAuth
from bsn.ledger.auth import generate_credential


def credential_generate() -> str:
    """A new node API credential, encrypted for storage."""
    return encrypt_secret(generate_credential())


@lru_cache(maxsize=4096)
def _credential(encrypted: str) -> bytes:
    # The gateway signs every call with it: decrypting (Fernet + HKDF) once per stored
    # ciphertext, not per request. A rotated credential is a new ciphertext.
    return decrypt_secret(encrypted).encode("utf-8")


def node_auth(node: LedgerNode) -> NodeAuth | None:
    """How to call ``node`` and recognise its answers; None when it has no credential yet
    (a node made before credentials existed, until its next start)."""
    if not node.api_credential_encrypted or not node.public_key:
        return None
    try:
        key = _credential(node.api_credential_encrypted)
    except ValueError:  # SECRET_KEY changed without a fallback: the node cannot be trusted
        return None
    return NodeAuth(key=key, app_id=str(node.app_id), node_id=str(node.pk), public_key=node.public_key)


def node_credential(node: LedgerNode) -> str:
    """The node's credential in clear, made first if the node has none (worker only: it
    goes straight into the secret files of the node's spec)."""
    if not node.api_credential_encrypted:
        LedgerNode.objects.filter(pk=node.pk, api_credential_encrypted="").update(
            api_credential_encrypted=credential_generate()
        )
        node.api_credential_encrypted = LedgerNode.objects.values_list("api_credential_encrypted", flat=True).get(
            pk=node.pk
        )
    return decrypt_secret(node.api_credential_encrypted)
