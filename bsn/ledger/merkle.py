"""RFC 6962 Merkle tree hash, inclusion proofs and their verification.

Leaf hash = SHA-256(0x00 || leaf); node hash = SHA-256(0x01 || left || right); a tree of
n > 1 leaves splits at the largest power of two smaller than n; the root of no leaves is
SHA-256 of the empty string.
"""

from __future__ import annotations

from hashlib import sha256

EMPTY_ROOT = sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    return sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of_hashes(hashes: list[bytes]) -> bytes:
    """Tree hash over already computed leaf hashes."""
    if not hashes:
        return EMPTY_ROOT
    # Bottom-up pairing gives the same tree as the recursive split: a left-complete tree
    # whose unpaired last node is promoted unchanged to the next level.
    level = hashes
    while len(level) > 1:
        paired = [sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def root(leaves: list[bytes]) -> bytes:
    """Merkle tree hash of the leaves (raw leaf data)."""
    return root_of_hashes([leaf_hash(leaf) for leaf in leaves])


def _subtree(hashes: list[bytes], lo: int, hi: int) -> bytes:
    return root_of_hashes(hashes[lo:hi])


def inclusion_proof(leaves: list[bytes], index: int) -> list[bytes]:
    """Audit path for leaf ``index`` (RFC 6962 section 2.1.1), bottom-up."""
    return inclusion_proof_of_hashes([leaf_hash(leaf) for leaf in leaves], index)


def inclusion_proof_of_hashes(hashes: list[bytes], index: int) -> list[bytes]:
    """Audit path for leaf ``index`` given the leaf hashes (callers that keep hashes, not leaves)."""
    n = len(hashes)
    if not 0 <= index < n:
        raise IndexError(f"leaf index {index} out of range for {n} leaves")
    path: list[bytes] = []
    lo, hi = 0, n
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(_subtree(hashes, lo + k, hi))
            hi = lo + k
        else:
            path.append(_subtree(hashes, lo, lo + k))
            lo = lo + k
    path.reverse()
    return path


def verify_inclusion(leaf: bytes, index: int, size: int, proof: list[bytes], expected_root: bytes) -> bool:
    """True when ``proof`` shows ``leaf`` at ``index`` in a tree of ``size`` leaves with that root.

    The verification algorithm of RFC 9162 section 2.1.3.2.
    """
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf_hash(leaf)
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root
