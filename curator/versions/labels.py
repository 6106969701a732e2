"""Labeled sets as arrays, their deltas, codec and checksum: pure, arrays in, arrays out.

Why its own module: this is the compute of versioning (what an executor may
run anywhere), with no database and no files. A set is sorted sample ids
and codes into a small vocabulary (``_Labels``); a version stores only its
changes against its parent (``_delta_of``, applied back by ``_apply``) as
zlib-compressed chunks (``_encode`` / ``_decode``; at a million labels,
arrays take about a second where row-by-row took tens); ``checksum_of``
defines a set's checksum from content hashes and labels, and ``_checksum``
computes the same value over arrays.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zlib
from typing import Iterable, Sequence

import numpy as np


def checksum_of(pairs: Iterable[tuple[str, str]]) -> str:
    """sha256 over the sorted lines ``"<sample sha256>\\t<label>\\n"`` of a labeled set.

    Depends only on content and labels, never on ids, so the same set
    re-imported into another database has the same checksum. (The reference
    definition; versions compute the same value with ``_checksum``.)
    """
    h = hashlib.sha256()
    lines = sorted(f"{sha}\t{label}\n" for sha, label in pairs)
    for start in range(0, len(lines), 65536):
        h.update("".join(lines[start : start + 65536]).encode())
    return h.hexdigest()


def _checksum(shas: Sequence[str] | np.ndarray, codes: np.ndarray, vocab: Sequence[str]) -> str:
    """``checksum_of`` for arrays: the sort runs in NumPy over 64-byte keys (a million pairs in about a second)."""
    suffix = [f"\t{v}\n".encode() for v in vocab]
    rank = np.empty(len(vocab), dtype=np.int64)
    rank[sorted(range(len(vocab)), key=lambda i: suffix[i])] = np.arange(len(vocab))
    sha = np.array(shas, dtype="S64")  # hex digests: ASCII, so bytes order = str order
    order = np.lexsort((rank[codes], sha)) if len(sha) else np.zeros(0, dtype=np.int64)
    h = hashlib.sha256()
    for start in range(0, len(order), 1 << 18):
        part = order[start : start + (1 << 18)]
        h.update(b"".join(map(bytes.__add__, sha[part].tolist(), map(suffix.__getitem__, codes[part].tolist()))))
    return h.hexdigest()


def match_hashes(known: np.ndarray, shas: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sha256 (``S64``) of each of ``ids`` (sorted) among samples ``known`` with hashes ``shas``
    (any order), with b"" where unknown, and the ids that are not among ``known``."""
    shas = np.append(shas, np.array([b""], dtype="S64"))  # the last entry stands for "missing"
    order = np.argsort(known, kind="stable")
    known, shas = known[order], np.append(shas[order], shas[-1:])
    pos = np.searchsorted(known, ids)
    clipped = np.minimum(pos, max(len(known) - 1, 0))
    ok = (pos < len(known)) & (known[clipped] == ids) if len(known) else np.zeros(len(ids), bool)
    return shas[np.where(ok, clipped, len(known))], ids[~ok]


@dataclasses.dataclass(frozen=True)
class _Labels:
    """A labeled set as arrays: sorted unique sample ids, codes into ``vocab``.

    In a delta, a vocabulary entry ``None`` marks a removed sample.
    """

    ids: np.ndarray
    codes: np.ndarray
    vocab: tuple

    @classmethod
    def empty(cls) -> "_Labels":
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), ())

    @classmethod
    def from_dict(cls, labels: dict[int, str | None]) -> "_Labels":
        vocab = tuple(dict.fromkeys(labels.values()))
        index = {v: i for i, v in enumerate(vocab)}
        ids = np.fromiter(labels.keys(), dtype=np.int64, count=len(labels))
        codes = np.fromiter(map(index.__getitem__, labels.values()), dtype=np.int64, count=len(labels))
        order = np.argsort(ids, kind="stable")
        return cls(ids[order], codes[order], vocab)

    def __len__(self) -> int:
        return len(self.ids)

    def labels(self) -> list:
        return [self.vocab[c] for c in self.codes.tolist()]

    def to_dict(self) -> dict[int, str]:
        return dict(zip(self.ids.tolist(), self.labels()))

    def counts(self) -> dict[str, int]:
        n = np.bincount(self.codes, minlength=len(self.vocab)) if len(self.codes) else np.zeros(len(self.vocab), int)
        return {v: int(k) for v, k in zip(self.vocab, n) if k and v is not None}

    def recode(self, vocab: tuple) -> np.ndarray:
        """Codes of this set in a larger vocabulary holding all of ours."""
        pos = {v: i for i, v in enumerate(vocab)}
        table = np.array([pos[v] for v in self.vocab], dtype=np.int64)
        return table[self.codes] if len(self.codes) else self.codes


def _shared_vocab(*sets: _Labels) -> tuple:
    return tuple(dict.fromkeys(v for s in sets for v in s.vocab))


def _apply(base: _Labels, delta: _Labels) -> _Labels:
    """``base`` with the changes of ``delta`` applied (vectorised: a million labels in well under a second)."""
    if not len(delta):
        return base
    vocab = _shared_vocab(base, delta)
    keep = ~np.isin(base.ids, delta.ids, assume_unique=True)
    dcodes = delta.recode(vocab)
    live = dcodes != vocab.index(None) if None in vocab else np.ones(len(dcodes), dtype=bool)
    ids = np.concatenate([base.ids[keep], delta.ids[live]])
    codes = np.concatenate([base.recode(vocab)[keep], dcodes[live]])
    order = np.argsort(ids, kind="stable")
    return _Labels(ids[order], codes[order], vocab)


def _compare(old: _Labels, new: _Labels) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple, np.ndarray, np.ndarray]:
    """(added, removed, relabeled) sample ids from ``old`` to ``new``, the shared
    vocabulary, and the codes of both sets in it."""
    vocab = _shared_vocab(old, new)
    co, cn = old.recode(vocab), new.recode(vocab)
    pos = np.searchsorted(old.ids, new.ids)
    clipped = np.minimum(pos, max(len(old.ids) - 1, 0))
    found = (pos < len(old.ids)) & (old.ids[clipped] == new.ids) if len(old.ids) else np.zeros(len(new.ids), bool)
    relabeled = found.copy()
    relabeled[found] = co[clipped[found]] != cn[found]
    removed = old.ids[~np.isin(old.ids, new.ids, assume_unique=True)]
    return new.ids[~found], removed, new.ids[relabeled], vocab, co, cn


def _delta_of(old: _Labels, new: _Labels) -> tuple[_Labels, dict[str, int]]:
    added, removed, relabeled, vocab, _, cn = _compare(old, new)
    vocab = vocab + ((None,) if None not in vocab else ())
    changed = np.isin(new.ids, np.concatenate([added, relabeled]), assume_unique=True)
    ids = np.concatenate([new.ids[changed], removed])
    codes = np.concatenate([cn[changed], np.full(len(removed), vocab.index(None), dtype=np.int64)])
    order = np.argsort(ids, kind="stable")
    changes = {"added": len(added), "relabeled": len(relabeled), "removed": len(removed)}
    return _Labels(ids[order], codes[order], vocab), changes


CHUNK = 1 << 20


def _encode(labels: _Labels) -> list[tuple[int, int, bytes, bytes, list]]:
    """(chunk, count, zlib(int64 id gaps), zlib(uint32 codes), vocabulary) per 2^20 entries."""
    out = []
    for k, start in enumerate(range(0, len(labels), CHUNK)):
        ids = labels.ids[start : start + CHUNK]
        gaps = np.diff(ids, prepend=np.int64(0)).astype("<i8")
        codes = labels.codes[start : start + CHUNK].astype("<u4")
        out.append((k, len(ids), zlib.compress(gaps.tobytes()), zlib.compress(codes.tobytes()), list(labels.vocab)))
    return out


def _decode(chunks: Iterable[tuple[bytes, bytes, list]]) -> _Labels:
    parts = [
        _Labels(
            np.cumsum(np.frombuffer(zlib.decompress(ids), dtype="<i8")).astype(np.int64),
            np.frombuffer(zlib.decompress(codes), dtype="<u4").astype(np.int64),
            tuple(vocab),
        )
        for ids, codes, vocab in chunks
    ]
    if not parts:
        return _Labels.empty()
    if len(parts) == 1:
        return parts[0]
    vocab = _shared_vocab(*parts)
    return _Labels(np.concatenate([p.ids for p in parts]), np.concatenate([p.recode(vocab) for p in parts]), vocab)
