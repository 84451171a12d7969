"""Tokens of a prepared split, kept on disk so that every fit on that split reuses them.

``model=hf`` tokenises a split's texts once per fit (:class:`~datamap.models.hf.TokenizerEncoder`
keeps them by id). The train stage, every retrain (their subsets are subsets of the train split)
and the evaluate stage would each tokenise the same texts again; :class:`TokenStore` keeps one
Parquet file per (tokenizer, ``max_length``, pair or single, split), named by a SHA-256 of
all four -- the tokenizer by the bytes ``save_pretrained`` writes, the split by its ids and
texts -- so a file can only ever be read for the inputs it was made from.

The store lives in the working directory's ``.datamap/tokens`` (git-ignored; not a DVC output:
deleting it costs one tokenisation). It is created private (mode 0700) and used only while it is
a directory owned by this account that no other account can write; otherwise it is ignored
(with a warning) and the split is tokenised afresh. A file read back is checked: the key in its
metadata, the split's ids in order, and the first examples against a fresh tokenisation; a file
that fails any check is replaced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datamap.errors import DataError
from datamap.io import write_parquet

log = logging.getLogger(__name__)

#: Where the stages keep tokens (relative to the working directory: the repository's root).
TOKENS_DIR = Path(".datamap") / "tokens"
#: Examples re-tokenised to check a file read back.
SPOT_CHECK = 32
#: Bump when the file's layout changes: older files then simply miss.
_FORMAT = 1
_KEY_FIELD = b"datamap_tokens"

Tokens = dict[str, np.ndarray]


def tokenizer_digest(tokenizer: Any) -> str:
    """SHA-256 of every file ``tokenizer.save_pretrained`` writes (names and bytes): two
    tokenizers with one digest split every text the same way.

    ``tokenizer.json``'s ``truncation`` and ``padding`` are left out: a fast tokenizer keeps
    there the settings of its last call, which every call here sets anew (``padding=False``,
    ``truncation=True``, ``max_length``, which is part of the key)."""
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory(prefix="datamap-tokenizer-") as where:
        tokenizer.save_pretrained(where)
        for path in sorted(Path(where).rglob("*")):
            if not path.is_file():
                continue
            data = path.read_bytes()
            if path.name == "tokenizer.json":
                state = json.loads(data)
                state.pop("truncation", None)
                state.pop("padding", None)
                data = json.dumps(state, sort_keys=True).encode()
            digest.update(str(path.relative_to(where)).encode() + b"\0")
            digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()


def examples_digest(ids: np.ndarray, texts: Sequence[str],
                    pairs: Sequence[str] | None) -> str:
    """SHA-256 of the ids and texts (and pairs) in order: the very inputs tokenised, so a file
    changed after it was read cannot be mistaken for the one read."""
    digest = hashlib.sha256(np.asarray(ids, dtype="<i8").tobytes())
    for column in (texts, pairs) if pairs is not None else (texts,):
        strings = pa.array(list(column), type=pa.large_string())  # built here: offset 0
        _, offsets, data = strings.buffers()
        ends = np.frombuffer(offsets, dtype="<i8")[: len(strings) + 1]
        digest.update(ends.tobytes())  # the boundaries: no separator to forge
        digest.update(memoryview(data)[: int(ends[-1])] if data is not None else b"")
    return digest.hexdigest()


class TokenStore:
    """Token files in ``directory`` (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike = TOKENS_DIR) -> None:
        self.directory = Path(directory)
        self._tokenizer: Any = None
        self._tokenizer_sha = ""

    def key(self, tokenizer: Any, max_length: int, pair: bool, ids: np.ndarray,
            texts: Sequence[str], pairs: Sequence[str] | None) -> str:
        """The name of the tokens of exactly these examples under this tokenizer (whose digest
        is taken once per store: every encoder of a model shares its tokenizer and store)."""
        if self._tokenizer is not tokenizer:
            self._tokenizer, self._tokenizer_sha = tokenizer, tokenizer_digest(tokenizer)
        spec = {"format": _FORMAT, "tokenizer": self._tokenizer_sha,
                "max_length": int(max_length),
                "pair": bool(pair), "examples": examples_digest(ids, texts, pairs)}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    def usable(self) -> bool:
        """Create the directory (private) if needed; True when it is safe to read and write:
        a real directory of this account's, writable by no other account."""
        try:
            for where in (self.directory.parent, self.directory):
                # each level checked before anything is made inside it (never through a link)
                where.mkdir(mode=0o700, parents=True, exist_ok=True)
                info = os.lstat(where)
                if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or \
                        info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                    log.warning("%s: not a private directory of this account's; tokens are "
                                "not stored (make it yours with mode 0700 or delete it)", where)
                    return False
        except OSError as exc:
            log.warning("%s: tokens are not stored (%s)", self.directory, exc)
            return False
        return True

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.parquet"

    def load(self, key: str, ids: np.ndarray) -> dict[int, Tokens] | None:
        """The tokens stored under ``key``, by id, when the file holds exactly ``ids`` in this
        order; None when there is no such file or it does not check out."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            log.warning("%s: unreadable (%s); tokenising again", path, exc)
            return None
        stored = (table.schema.metadata or {}).get(_KEY_FIELD, b"").decode()
        if stored != key or "id" not in table.column_names or \
                not np.array_equal(table.column("id").to_numpy(), ids):
            log.warning("%s: does not hold these examples' tokens; tokenising again", path)
            return None
        columns = {}
        for name in table.column_names:
            if name == "id":
                continue
            column = table.column(name).combine_chunks()
            if not pa.types.is_list(column.type) or column.null_count:
                log.warning("%s: column %r is not lists of tokens; tokenising again", path, name)
                return None
            values = column.flatten().to_numpy().astype(np.int32, copy=False)
            offsets = column.offsets.to_numpy()
            columns[name] = np.split(values, offsets[1:-1]) if len(ids) else []
        return {int(i): {name: columns[name][k] for name in columns}
                for k, i in enumerate(ids.tolist())}

    def save(self, key: str, ids: np.ndarray, tokens: Mapping[int, Tokens],
             names: Sequence[str]) -> None:
        """Store the tokens of ``ids`` under ``key`` (atomically; a failure only means the next
        fit tokenises again)."""
        arrays = [pa.array(ids, type=pa.int64())]
        for name in names:
            arrays.append(pa.array([tokens[int(i)][name] for i in ids.tolist()],
                                   type=pa.list_(pa.int32())))
        table = pa.Table.from_arrays(arrays, names=["id", *names]).replace_schema_metadata(
            {_KEY_FIELD: key.encode()})
        try:
            write_parquet(self.path(key), table)
        except (OSError, DataError) as exc:
            log.warning("%s: tokens not stored (%s)", self.path(key), exc)
