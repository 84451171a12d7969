"""A pretrained Hugging Face transformer as a backbone (``model=hf``; extra ``datamap[hf]``).

``AutoModelForSequenceClassification`` and its tokenizer come from ``pretrained``: a hub name
or a local directory written by ``save_pretrained``. Sentence pairs go to the tokenizer as two
sequences (``[CLS] a [SEP] b [SEP]`` for BERT). ``transformers`` is imported only when this
backbone is built; without it the stage stops with one line naming the extra.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from datamap.errors import ConfigError

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
    test loaders each get their own encoder, so ids never meet across splits. Picklable (fast
    tokenizers pickle), so it runs in DataLoader workers, where each worker keeps its own cache
    (``num_workers`` > 0 without persistent workers tokenises once per epoch again).
    """

    def __init__(self, tokenizer: Any, max_length: int, pair: bool) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pair = pair
        # padding token arrays is what this encoder is for: no advice to tokenise instead
        getattr(tokenizer, "deprecation_warnings", {})["Asking-to-pad-a-fast-tokenizer"] = True
        self._cache: dict[int, dict[str, Any]] = {}
        #: how many examples were tokenised (not taken from the cache), for tests and logs
        self.tokenised = 0

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        out = {k: v for k, v in batch.items() if k not in ("text", "text_pair")}
        ids = [int(i) for i in batch["id"]]
        missing = [k for k, example in enumerate(ids) if example not in self._cache]
        if missing:
            texts = [batch["text"][k] for k in missing]
            pairs = [batch["text_pair"][k] for k in missing] if self.pair else None
            encoded = self.tokenizer(texts, pairs, padding=False, truncation=True,
                                     max_length=self.max_length)
            for j, k in enumerate(missing):
                self._cache[ids[k]] = {key: np.asarray(values[j], dtype=np.int32)
                                       for key, values in encoded.items()}
            self.tokenised += len(missing)
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
    """

    input_kinds: ClassVar[tuple[str, ...]] = ("text",)

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        pretrained: str,
        max_length: int = 128,
        local_files_only: bool = False,
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
        return TokenizerEncoder(self.tokenizer, self.max_length, self.pair)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        if "tokens.input_ids" not in batch:  # raw texts: tokenise here
            device = next(self.model.parameters()).device
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                     for k, v in self.batch_encoder()(batch).items()}
        inputs = {key.split(".", 1)[1]: value for key, value in batch.items()
                  if key.startswith("tokens.")}
        return self.model(**inputs).logits
