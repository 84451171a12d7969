"""The rows of one record of one split, accumulated on the device without host synchronisation.

``add`` only checks shapes (metadata) and keeps references to the batch's detached logits, ids
and labels. Every :data:`REDUCE_ELEMENTS` logits, and at ``finish``, the pending batches are
reduced to the stored values (:func:`~datamap.dynamics.values.batch_values`) in one vectorised
step on their device, together with a per-row *finite* flag that the recorder checks once the
record is complete (so non-finite logits are refused without a per-batch sync). Stored logits
(``store_logits``) are copied to the host asynchronously chunk by chunk, so device memory stays
bounded.

On the CPU, given a ``background`` executor, chunks of :data:`BACKGROUND_ELEMENTS` are reduced
on a worker thread while training goes on (torch kernels release the GIL), so the end of a
record only reduces its last chunk. On accelerators kernels are asynchronous anyway and
everything stays on the calling thread.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from datamap.dynamics.contract import batch_ids_labels, check_not_probabilities, check_shapes
from datamap.dynamics.values import VALUE_COLUMNS, batch_values

#: Pending logits (elements) after which a chunk is reduced to the stored values on the device.
REDUCE_ELEMENTS = 1 << 24
#: On the CPU: logits per chunk reduced on a background thread while the epoch goes on.
BACKGROUND_ELEMENTS = 1 << 18
#: ``dynamics.logits_dtype`` -> the dtype stored logits are kept in.
LOGITS_DTYPES = {"float32": torch.float32, "float16": torch.float16}


class RecordAccumulator:
    """One record of one split: batches in, one column dict out (see the module docstring).

    Args:
        num_classes: the width every batch's logits must have.
        store_logits: keep the logits too (as ``logits_dtype``, on the host).
        logits_dtype: a key of :data:`LOGITS_DTYPES`.
        source: what produced the logits (``"training_step"``, ...), for error messages.
        background: a worker for reducing chunks while the epoch goes on (used on the CPU).
    """

    def __init__(self, num_classes: int, store_logits: bool, logits_dtype: str, source: str,
                 background: ThreadPoolExecutor | None = None) -> None:
        self.num_classes = num_classes
        self.store_logits = store_logits
        self.logits_dtype = LOGITS_DTYPES[logits_dtype]
        self.source = source
        self._background = background
        self._limit = REDUCE_ELEMENTS
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._pending_elements = 0
        self._chunks: list[dict[str, torch.Tensor] | Future] = []
        self._async_copies = False
        self._first = True

    def add(self, logits: Any, batch: Any) -> None:
        """Keep a batch's logits [batch, num_classes] with the ids and labels ``batch`` carries.

        The first batch's logits are checked not to be probabilities (one host sync per record).
        """
        ids, gold = batch_ids_labels(batch)
        check_shapes(logits, ids, self.num_classes, self.source)
        if logits.requires_grad:
            logits = logits.detach()  # do not keep the autograd graph alive
        if self._first:
            self._first = False
            check_not_probabilities(logits, self.source)
            if self._background is None or logits.device.type != "cpu":
                self._background = None
            else:
                self._limit = BACKGROUND_ELEMENTS
        self._pending.append((logits, ids, gold))
        self._pending_elements += logits.numel()  # shape metadata: no sync
        if self._pending_elements >= self._limit:
            pending, self._pending, self._pending_elements = self._pending, [], 0
            if self._background is not None:
                self._chunks.append(self._background.submit(self._reduce, pending))
            else:
                self._chunks.append(self._reduce(pending))

    def _reduce(self, pending: list[tuple[torch.Tensor, ...]]) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            logits = torch.cat([p[0] for p in pending])
            ids = torch.cat([p[1] for p in pending])
            gold = torch.cat([p[2] for p in pending])
            chunk = batch_values(logits, gold)
            # min and max propagate NaN: two row reductions rather than an [N, K] mask
            low, high = torch.aminmax(logits, dim=1)
            chunk["finite"] = torch.isfinite(low) & torch.isfinite(high)
            chunk["id"] = ids.to(torch.int64)
            chunk["gold"] = gold.to(torch.int32)
            if self.store_logits:
                stored = logits.to(self.logits_dtype)
                if stored.is_cuda:  # into pinned host memory, overlapping the training
                    stored = stored.to("cpu", non_blocking=True)
                    self._async_copies = True
                chunk["logits"] = stored
        return chunk

    def finish(self, device: torch.device) -> dict[str, torch.Tensor]:
        """All rows, in the order they were added (columns other than logits on ``device``):
        the :data:`~datamap.dynamics.values.VALUE_COLUMNS`, ``id``, ``gold`` and ``finite``."""
        if self._pending:
            self._chunks.append(self._reduce(self._pending))
            self._pending, self._pending_elements = [], 0
        chunks = [c.result() if isinstance(c, Future) else c for c in self._chunks]
        self._chunks = []
        if self._async_copies:
            torch.cuda.synchronize(device)
        if not chunks:
            return self._empty(device)
        if len(chunks) == 1:
            return chunks[0]
        return {key: torch.cat([c[key] for c in chunks]) for key in chunks[0]}

    def _empty(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The columns of a record this rank saw no batch of (possible under DDP)."""
        columns = {name: torch.empty(0, dtype=torch.float32, device=device)
                   for name in VALUE_COLUMNS}
        columns["pred"] = torch.empty(0, dtype=torch.int32, device=device)
        columns["finite"] = torch.empty(0, dtype=torch.bool, device=device)
        columns["id"] = torch.empty(0, dtype=torch.int64, device=device)
        columns["gold"] = torch.empty(0, dtype=torch.int32, device=device)
        if self.store_logits:
            columns["logits"] = torch.empty(0, self.num_classes, dtype=self.logits_dtype)
        return columns
