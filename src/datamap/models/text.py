"""A fast text classifier trained from scratch: hashed word and character n-grams, fastText style.

Each text becomes a bag of hashed features -- its words, word n-grams and the character
n-grams of each word with ``<``/``>`` boundary marks (as fastText does: character n-grams are
what let it generalise to unseen words, typos and names) -- averaged by an ``EmbeddingBag``
and classified by a linear or one-hidden-layer head. Nothing is downloaded and there is no
vocabulary to build: a feature's row is its hash modulo ``buckets``.

Hashing is vectorised over a whole batch in NumPy (polynomial rolling hashes over the UTF-8
bytes, then a 64-bit finaliser), because it runs once per example per epoch: scikit-learn's
``HashingVectorizer`` computes the same kind of features string by string in Python, about
15x slower for character n-grams, which would dominate an epoch.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from datamap.errors import ConfigError

_U64 = np.uint64
#: Multiplier of the rolling hash (odd, so invertible modulo 2**64) and its inverse.
_BASE = 0x100000001B3
_BASE_INV = pow(_BASE, -1, 2**64)
_GOLDEN = 0x9E3779B97F4A7C15

# byte classes: 0 separates tokens, 1 is part of a word, 2 is a one-byte punctuation token
_CLASSES = np.zeros(256, dtype=np.uint8)
_CLASSES[[c for c in range(256) if chr(c).isalnum() or c >= 0x80 or chr(c) in "_'"]] = 1
_CLASSES[[c for c in range(33, 127) if not chr(c).isalnum() and chr(c) not in "_'"]] = 2


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over the 64-bit hash."""
    z = values.astype(_U64, copy=True)
    z ^= z >> _U64(30)
    z *= _U64(0xBF58476D1CE4E5B9)
    z ^= z >> _U64(27)
    z *= _U64(0x94D049BB133111EB)
    z ^= z >> _U64(31)
    return z


def _powers(base: int, n: int) -> np.ndarray:
    powers = np.full(n, base, dtype=_U64)
    powers[0] = 1
    return np.cumprod(powers, dtype=_U64)  # wraps modulo 2**64, as intended


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(start, start + length)`` for each pair, without a Python loop."""
    total = int(lengths.sum())
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    return offsets + np.arange(total, dtype=np.int64)


class _WindowHasher:
    """Polynomial hashes of byte windows [a, b) of one buffer in O(1) each, via prefix sums:
    sum_j v_j B^(j-a) = (S[b] - S[a]) * B^-a (mod 2**64)."""

    def __init__(self, data: np.ndarray) -> None:
        n = len(data)
        values = data.astype(_U64) + _U64(1)  # a zero byte must still count
        with np.errstate(over="ignore"):
            self.prefix = np.concatenate([[_U64(0)], np.cumsum(values * _powers(_BASE, n),
                                                               dtype=_U64)])
        self.inverse = _powers(_BASE_INV, n + 1)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return (self.prefix[b] - self.prefix[a]) * self.inverse[a]


class NgramHasher:
    """Texts -> bags of hashed n-gram ids in ``EmbeddingBag`` form (ids, offsets).

    Args:
        word_ngrams: [min, max] lengths of word n-grams (1 = the words themselves); null: none.
        char_ngrams: [min, max] lengths of character n-grams of each word, counted in UTF-8
            bytes of ``<word>``; null: none.
        buckets: the number of hash buckets (rows of the embedding table).
        lowercase: lower-case texts first.

    Words are runs of letters, digits, ``_`` and ``'``; every other visible character is a
    token of its own. Deterministic across processes and machines (no Python ``hash``).
    """

    def __init__(self, word_ngrams: Sequence[int] | None = (1, 2),
                 char_ngrams: Sequence[int] | None = (3, 5), buckets: int = 2**18,
                 lowercase: bool = True) -> None:
        self.word_ngrams = _span("word_ngrams", word_ngrams)
        self.char_ngrams = _span("char_ngrams", char_ngrams)
        if self.word_ngrams is None and self.char_ngrams is None:
            raise ConfigError("model.net: word_ngrams and char_ngrams are both null; a text "
                              "needs some features")
        if int(buckets) < 1:
            raise ConfigError(f"model.net.buckets must be >= 1, got {buckets}")
        self.buckets = int(buckets)
        self.lowercase = bool(lowercase)

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64 [total], offsets int64 [len(texts)]): text i's features are
        ``ids[offsets[i]:offsets[i+1]]``."""
        encoded = [(t.lower() if self.lowercase else t).encode("utf-8") for t in texts]
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        text_of = np.repeat(np.arange(len(encoded)), lengths)
        hashes, owners = [], []

        kind = _CLASSES[data]
        first = np.zeros(len(data), dtype=bool)
        first[(np.cumsum(lengths) - lengths)[lengths > 0]] = True
        last = np.zeros(len(data), dtype=bool)
        last[(np.cumsum(lengths) - 1)[lengths > 0]] = True
        word = kind == 1
        previous = np.concatenate([[False], word[:-1]]) & ~first
        following = np.concatenate([word[1:], [False]]) & ~last
        punct = np.flatnonzero(kind == 2)
        word_starts = np.flatnonzero(word & ~previous)
        word_ends = np.flatnonzero(word & ~following) + 1
        starts = np.concatenate([word_starts, punct])
        order = np.argsort(starts, kind="stable")
        starts = starts[order]
        ends = np.concatenate([word_ends, punct + 1])[order]
        token_text = text_of[starts] if len(starts) else np.zeros(0, dtype=np.int64)

        if self.word_ngrams is not None and len(starts):
            tokens = _mix(_WindowHasher(data)(starts, ends))
            low, high = self.word_ngrams
            for n in range(low, high + 1):
                if n > len(tokens):
                    break
                combined = np.zeros(len(tokens) - n + 1, dtype=_U64)
                with np.errstate(over="ignore"):
                    for m in range(n):
                        combined = combined * _U64(_GOLDEN) + tokens[m:len(tokens) - n + 1 + m]
                same_text = token_text[:len(combined)] == token_text[n - 1:]
                hashes.append(_mix(combined[same_text] ^ _U64(0x1000 + n)))
                owners.append(token_text[:len(combined)][same_text])

        if self.char_ngrams is not None and len(word_starts):
            # "<word>" for every word, back to back, then every window of each length
            word_lengths = word_ends - word_starts
            padded_lengths = word_lengths + 2
            padded_starts = np.cumsum(padded_lengths) - padded_lengths
            padded = np.empty(int(padded_lengths.sum()), dtype=np.uint8)
            padded[padded_starts] = ord("<")
            padded[padded_starts + padded_lengths - 1] = ord(">")
            padded[_ranges(padded_starts + 1, word_lengths)] = data[_ranges(word_starts,
                                                                          word_lengths)]
            window = _WindowHasher(padded)
            word_text = text_of[word_starts]
            low, high = self.char_ngrams
            for n in range(low, high + 1):
                counts = np.maximum(padded_lengths - n + 1, 0)
                begin = _ranges(padded_starts, counts)
                hashes.append(_mix(window(begin, begin + n) ^ _U64(0x2000 + n)))
                owners.append(np.repeat(word_text, counts))

        if hashes:
            ids = (np.concatenate(hashes) % _U64(self.buckets)).astype(np.int64)
            owner = np.concatenate(owners)
            order = np.argsort(owner, kind="stable")
            ids, owner = ids[order], owner[order]
        else:
            ids, owner = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        counts = np.bincount(owner, minlength=len(encoded))
        return ids, (np.cumsum(counts) - counts).astype(np.int64)


def _span(key: str, value: Sequence[int] | None) -> tuple[int, int] | None:
    if value is None:
        return None
    values = [int(v) for v in value]
    if len(values) != 2 or not 1 <= values[0] <= values[1]:
        raise ConfigError(f"model.net.{key} must be [min, max] with 1 <= min <= max, or null; "
                          f"got {list(value)}")
    return values[0], values[1]


class RowAdagrad(torch.optim.Optimizer):
    """Adagrad with one accumulator per embedding row for sparse gradients ("row-wise
    Adagrad", how large embedding tables are trained in recommender systems), and ordinary
    per-element Adagrad for dense parameters.

    ``torch.optim.Adagrad`` takes sparse gradients too, but coalesces them (a sort and a
    reduction over every n-gram occurrence of the batch, ~30,000 for 256 short texts) and keeps
    a dense accumulator the size of the table: its step costs twice the rest of a training step.
    Here each occurrence's gradient is applied as it comes, scaled by its row's accumulated mean
    squared gradient (each occurrence counts as one observation of its row, as if the batch were
    seen one text at a time): one ``index_add_``, one gather and one ``scatter_add_``, and one
    float of state per row.

    Args:
        params: the parameters (or parameter groups).
        lr: the learning rate.
        eps: added to the root of the accumulated squares.
    """

    takes_sparse_gradients: ClassVar[bool] = True

    def __init__(self, params: Any, lr: float = 0.2, eps: float = 1e-10) -> None:
        if lr <= 0 or eps < 0:
            raise ConfigError(f"model.optimizer: RowAdagrad needs lr > 0 and eps >= 0, got "
                              f"lr={lr}, eps={eps}")
        super().__init__(params, {"lr": float(lr), "eps": float(eps)})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, eps = group["lr"], group["eps"]
            for param in group["params"]:
                grad = param.grad
                if grad is None:
                    continue
                state = self.state[param]
                if grad.is_sparse:
                    if "row_sum" not in state:
                        state["row_sum"] = torch.zeros(param.shape[0], dtype=param.dtype,
                                                       device=param.device)
                    # one entry per occurrence of a row in the batch: no sort, no coalescing
                    rows = grad._indices()[0]
                    values = grad._values().reshape(len(rows), -1)
                    squares = torch.linalg.vector_norm(values, dim=1).square_()
                    state["row_sum"].index_add_(0, rows, squares / values.shape[1])
                    step = state["row_sum"][rows].sqrt_().add_(eps).reciprocal_().mul_(-lr)
                    # one pass over the values; scatter_add_ over elements is ~4x faster than a
                    # row-wise index_add_ on CPU
                    update = values * step[:, None]
                    param.view(param.shape[0], -1).scatter_add_(
                        0, rows[:, None].expand_as(update), update)
                else:
                    if "sum" not in state:
                        state["sum"] = torch.zeros_like(param)
                    state["sum"].addcmul_(grad, grad)
                    param.addcdiv_(grad, state["sum"].sqrt().add_(eps), value=-lr)
        return loss


PAIR_MODES = ("bags", "separator")
#: Joins a sentence pair into one text when ``pair: separator``.
SEPARATOR = " [SEP] "


class NgramEncoder:
    """The batch encoder of :class:`TextBagOfNgrams` (picklable: runs in DataLoader workers).

    Adds ``ngrams``/``offsets`` (and ``ngrams_pair``/``offsets_pair`` for pairs encoded as two
    bags) and drops the raw strings.
    """

    def __init__(self, hasher: NgramHasher, pair: str | None) -> None:
        self.hasher = hasher
        self.pair = pair

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in batch.items() if k not in ("text", "text_pair")}
        texts = list(batch["text"])
        if self.pair == "separator":
            texts = [a + SEPARATOR + b for a, b in zip(texts, batch["text_pair"], strict=True)]
        ids, offsets = self.hasher(texts)
        out["ngrams"], out["offsets"] = torch.from_numpy(ids), torch.from_numpy(offsets)
        if self.pair == "bags":
            ids, offsets = self.hasher(list(batch["text_pair"]))
            out["ngrams_pair"] = torch.from_numpy(ids)
            out["offsets_pair"] = torch.from_numpy(offsets)
        return out


class TextBagOfNgrams(nn.Module):
    """Mean of hashed n-gram embeddings, then a linear or one-hidden-layer head.

    Args:
        input_shape: [1] for single texts, [2] for sentence pairs (from ``meta.json``).
        num_classes: the number of classes.
        word_ngrams, char_ngrams, buckets, lowercase: the features (see :class:`NgramHasher`).
        dim: embedding size.
        hidden: 0 for a linear head, else the width of one hidden ReLU layer.
        dropout: dropout before the head's last layer.
        pair: sentence pairs as two ``bags`` (shared embeddings; the head sees
            [u, v, |u - v|, u * v]) or one bag of the texts joined by a ``separator``.
        sparse: sparse embedding gradients (fast: an optimizer step touches only the rows of
            the batch). Needs an optimizer that takes them (:class:`RowAdagrad`, torch's
            ``Adagrad``, ``SGD``, ``SparseAdam``); set false for others such as ``AdamW``.
    """

    input_kinds: ClassVar[tuple[str, ...]] = ("text",)

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        word_ngrams: Sequence[int] | None = (1, 2),
        char_ngrams: Sequence[int] | None = (3, 5),
        buckets: int = 2**18,
        dim: int = 32,
        hidden: int = 0,
        dropout: float = 0.0,
        pair: str = "bags",
        lowercase: bool = True,
        sparse: bool = True,
    ) -> None:
        super().__init__()
        if pair not in PAIR_MODES:
            raise ConfigError(f"model.net.pair must be one of {', '.join(PAIR_MODES)}, got "
                              f"{pair!r}")
        fields = int(input_shape[0]) if len(input_shape) else 1
        self.pair = pair if fields == 2 else None
        self.hasher = NgramHasher(word_ngrams, char_ngrams, buckets, lowercase)
        self.embedding = nn.EmbeddingBag(self.hasher.buckets, int(dim), mode="mean",
                                         sparse=bool(sparse))
        # Adagrad builds sparse updates from our well-formed gradients; torch warns on each
        warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly")
        # fastText's initialisation: small uniform embeddings
        nn.init.uniform_(self.embedding.weight, -1.0 / int(dim), 1.0 / int(dim))
        width = int(dim) * (4 if self.pair == "bags" else 1)
        layers: list[nn.Module] = []
        if int(hidden) > 0:
            layers += [nn.Linear(width, int(hidden)), nn.ReLU()]
            width = int(hidden)
        layers += [nn.Dropout(float(dropout)), nn.Linear(width, int(num_classes))]
        self.head = nn.Sequential(*layers)

    def batch_encoder(self) -> NgramEncoder:
        return NgramEncoder(self.hasher, self.pair)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        if "ngrams" not in batch:  # raw texts (e.g. called from a notebook): encode here
            batch = {k: v.to(self.embedding.weight.device) if isinstance(v, torch.Tensor)
                     else v for k, v in self.batch_encoder()(batch).items()}
        u = self.embedding(batch["ngrams"], batch["offsets"])
        if self.pair == "bags":
            v = self.embedding(batch["ngrams_pair"], batch["offsets_pair"])
            u = torch.cat([u, v, (u - v).abs(), u * v], dim=1)
        return self.head(u)
