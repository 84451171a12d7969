"""A pretrained Hugging Face transformer as a backbone (``model=hf``; extra ``datamap[hf]``).

``AutoModelForSequenceClassification`` and its tokenizer come from ``pretrained``: a hub name
or a local directory written by ``save_pretrained``. Sentence pairs go to the tokenizer as two
sequences (``[CLS] a [SEP] b [SEP]`` for BERT). ``transformers`` is imported only when this
backbone is built; without it the stage stops with one line naming the extra.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from datamap.errors import ConfigError
from datamap.models.tokens import SPOT_CHECK, TOKENS_DIR, TokenStore

log = logging.getLogger(__name__)

EXTRA = "pip install 'datamap[hf]'"


def import_transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise ConfigError(f"model=hf needs the optional dependency transformers: {EXTRA}") \
            from exc
    return transformers


def _is_local(name: str) -> bool:
    """A path rather than a hub name: exists, or is spelled as a path (absolute, ./, ../, ~)."""
    return Path(name).expanduser().exists() or name.startswith(("/", "./", "../", "~")) or (
        os.sep != "/" and os.sep in name)


class TokenizerEncoder:
    """The batch encoder of :class:`HFTransformer`: texts (and pairs) -> padded token tensors.

    Each example is tokenised once, the first time its id passes (truncated to ``max_length``
    tokens, kept as int32 arrays by id); every later epoch only pads the batch, to its longest
    example, with the tokenizer's own ``pad`` -- the tensors are those of tokenising the batch
    afresh. Examples are keyed by id (unique within a prepared split); the train, validation and
    test loaders each get their own encoder, so ids never meet across splits. The loaders call
    :meth:`preload` with their whole split first: its tokens then come from ``store`` (a
    :class:`~datamap.models.tokens.TokenStore`, shared by every fit on the same texts) or from
    one call to the tokenizer. Picklable (fast tokenizers pickle), so it runs in DataLoader
    workers, which receive the preloaded tokens.
    """

    def __init__(self, tokenizer: Any, max_length: int, pair: bool,
                 store: TokenStore | None = None) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pair = pair
        self.store = store
        # padding token arrays is what this encoder is for: no advice to tokenise instead
        getattr(tokenizer, "deprecation_warnings", {})["Asking-to-pad-a-fast-tokenizer"] = True
        self._cache: dict[int, dict[str, Any]] = {}
        #: how many examples were tokenised (not taken from the cache), for tests and logs
        self.tokenised = 0
        #: how many were tokenised only to check tokens read from the store
        self.checked = 0

    def _tokenise(self, texts: list[str], pairs: list[str] | None,
                  check: bool = False) -> list[dict[str, Any]]:
        """Each example's tokens (int32 arrays), truncated to ``max_length``, unpadded."""
        encoded = self.tokenizer(texts, pairs, padding=False, truncation=True,
                                 max_length=self.max_length)
        if check:
            self.checked += len(texts)
        else:
            self.tokenised += len(texts)
        return [{key: np.asarray(values[j], dtype=np.int32) for key, values in encoded.items()}
                for j in range(len(texts))]

    def preload(self, ids: Any, texts: Any, pairs: Any = None) -> None:
        """Take the tokens of a whole split now: from the token store when it holds exactly
        these examples under this tokenizer (:mod:`datamap.models.tokens`), else by tokenising
        them in one call (then stored for the next fit)."""
        ids = np.asarray(ids, dtype=np.int64)
        texts = [str(t) for t in texts]
        pairs = [str(t) for t in pairs] if self.pair and pairs is not None else None
        if self.pair and pairs is None:
            raise ValueError("a pair encoder needs the second texts")
        store = self.store if self.store is not None and self.store.usable() else None
        key = None
        if store is not None:
            key = store.key(self.tokenizer, self.max_length, self.pair, ids, texts, pairs)
            stored = store.load(key, ids)
            if stored is not None and self._agrees(stored, ids, texts, pairs):
                self._cache.update(stored)
                log.info("tokens of %d examples read from %s", len(ids), store.path(key))
                return
        tokens = self._tokenise(texts, pairs)
        self._cache.update(zip(ids.tolist(), tokens, strict=True))
        if store is not None and key is not None:
            store.save(key, ids, self._cache, list(tokens[0]) if tokens else [])

    def _agrees(self, stored: dict[int, dict[str, Any]], ids: Any, texts: list[str],
                pairs: list[str] | None) -> bool:
        """The first examples of a stored file tokenise now as stored (a damaged or forged
        file is caught here, whatever its key says)."""
        k = min(SPOT_CHECK, len(ids))
        fresh = self._tokenise(texts[:k], pairs[:k] if pairs is not None else None, check=True)
        for example, tokens in zip(ids[:k].tolist(), fresh, strict=True):
            kept = stored[example]
            if kept.keys() != tokens.keys() or not all(np.array_equal(kept[name], tokens[name])
                                                      for name in tokens):
                log.warning("stored tokens of example %d differ from tokenising it now; "
                            "tokenising the split again", example)
                return False
        return True

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in batch.items() if k not in ("text", "text_pair")}
        ids = [int(i) for i in batch["id"]]
        missing = [k for k, example in enumerate(ids) if example not in self._cache]
        if missing:
            texts = [batch["text"][k] for k in missing]
            pairs = [batch["text_pair"][k] for k in missing] if self.pair else None
            for k, tokens in zip(missing, self._tokenise(texts, pairs), strict=True):
                self._cache[ids[k]] = tokens
        padded = self.tokenizer.pad([{key: value.tolist() for key, value in
                                      self._cache[example].items()} for example in ids],
                                    padding=True, return_tensors="pt")
        out.update({f"tokens.{key}": value for key, value in padded.items()})
        return out


class HFTransformer(nn.Module):
    """``AutoModelForSequenceClassification.from_pretrained(pretrained)`` with a fresh head of
    ``num_classes`` outputs, and its tokenizer.

    Args:
        input_shape: [1] for single texts, [2] for sentence pairs (from ``meta.json``).
        num_classes: the number of classes (the pretrained head is replaced when it differs).
        pretrained: a hub name (downloaded into the Hugging Face cache by ``transformers``) or
            a local directory holding a model and its tokenizer (``save_pretrained``).
        max_length: tokens per example (pair) after truncation.
        local_files_only: never contact the hub (only the local cache or directory).
        token_cache: the directory of the token store (:mod:`datamap.models.tokens`): each
            split is tokenised once for every fit on it; null: once per fit.
    """

    input_kinds: ClassVar[tuple[str, ...]] = ("text",)

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        pretrained: str,
        max_length: int = 128,
        local_files_only: bool = False,
        token_cache: str | os.PathLike | None = TOKENS_DIR,
    ) -> None:
        super().__init__()
        transformers = import_transformers()
        name = str(pretrained)
        if _is_local(name) and not Path(name).expanduser().is_dir():
            raise ConfigError(f"model.net.pretrained={name!r}: no such directory; give a folder "
                              "written by save_pretrained, or a hub name")
        if Path(name).expanduser().is_dir() and not (Path(name).expanduser() /
                                                     "config.json").is_file():
            raise ConfigError(f"model.net.pretrained={name!r}: no model in this directory (no "
                              "config.json); save one there with save_pretrained (model and "
                              "tokenizer) or give a hub name")
        if int(max_length) < 2:
            raise ConfigError(f"model.net.max_length must be >= 2, got {max_length}")
        self.pair = len(input_shape) > 0 and int(input_shape[0]) == 2
        self.max_length = int(max_length)
        self.store = TokenStore(token_cache) if token_cache is not None else None
        options = {"local_files_only": bool(local_files_only)}
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(name, **options)
            self.model = transformers.AutoModelForSequenceClassification.from_pretrained(
                name, num_labels=int(num_classes), ignore_mismatched_sizes=True, **options)
        except (OSError, ValueError, KeyError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(
                f"model.net.pretrained={name!r}: cannot load a model and tokenizer there "
                f"({reason}); give a directory written by save_pretrained or a hub name"
            ) from exc
        # from_pretrained returns the model in eval mode (dropout off); Lightning keeps each
        # module's mode as it finds it at the start of fit, so fine-tuning would run without
        # dropout. A freshly built nn.Module is in train mode: make this one so too.
        self.model.train()

    def batch_encoder(self) -> TokenizerEncoder:
        return TokenizerEncoder(self.tokenizer, self.max_length, self.pair, self.store)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        if "tokens.input_ids" not in batch:  # raw texts: tokenise here
            device = next(self.model.parameters()).device
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                     for k, v in self.batch_encoder()(batch).items()}
        inputs = {key.split(".", 1)[1]: value for key, value in batch.items()
                  if key.startswith("tokens.")}
        return self.model(**inputs).logits
