"""Training dynamics: the recording callback, its per-record values, and the on-disk table.

Modules, one concept each: ``values`` (the stored values of a row of logits, torch and NumPy
twins), ``contract`` (what the recorder reads from a LightningModule's steps and batches, and
its checks), ``accumulate`` (a record's rows on the device), ``distributed`` (gathering a record
across ranks), ``eval_pass`` (running the model over a split without gradients), ``resume``
(part files, checkpoint state, RNG states), ``recorder`` (the callback), ``schema`` (the table's
schema, construction and validation), ``storage`` (writing and chunked reading) and
``reference`` (the paper code's jsonl format).

Names are loaded from their modules on first use, so importing the table half (NumPy/Arrow only)
does not import torch or Lightning, and a stage depends only on the modules it really runs.
"""

from __future__ import annotations

from datamap import lazy_attributes

#: Public name -> the module that defines it.
_EXPORTS = {
    "VALUE_COLUMNS": "datamap.dynamics.values",
    "batch_values": "datamap.dynamics.values",
    "per_example_values": "datamap.dynamics.values",
    "SCHEMA": "datamap.dynamics.schema",
    "DynamicsMeta": "datamap.dynamics.schema",
    "build_dynamics": "datamap.dynamics.schema",
    "validate_dynamics": "datamap.dynamics.schema",
    "DynamicsChunk": "datamap.dynamics.storage",
    "DynamicsSource": "datamap.dynamics.storage",
    "DynamicsWriter": "datamap.dynamics.storage",
    "open_dynamics": "datamap.dynamics.storage",
    "read_dynamics": "datamap.dynamics.storage",
    "write_dynamics": "datamap.dynamics.storage",
    "batch_ids_labels": "datamap.dynamics.contract",
    "merge_ranks": "datamap.dynamics.distributed",
    "DynamicsRecorder": "datamap.dynamics.recorder",
    "export_reference_dynamics": "datamap.dynamics.reference",
    "import_reference_dynamics": "datamap.dynamics.reference",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_attributes(__name__, _EXPORTS)
