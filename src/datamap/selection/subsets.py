"""The select stage's output contract: one directory per selected subset.

``ids.parquet`` (``id`` int64 sorted, ``group`` the criterion that drew it, ``rank`` its position
within that group) and ``summary.json`` (counts by group, region and class; label-noise share).
Written by :mod:`datamap.selection.ranking`, read by the retrain and report stages. Kept apart from
the selection logic so that the stages that only read subsets do not depend on how they are chosen.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from datamap.io import atomic_path, read_parquet, write_json, write_parquet

IDS_FILE = "ids.parquet"
SUMMARY_FILE = "summary.json"


def write_subset_dir(out_dir: str | os.PathLike, subset: pd.DataFrame,
                     summary: dict[str, Any]) -> None:
    """Write one subset's ids and summary into ``out_dir``, replacing it whole (atomically)."""
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        table = pa.Table.from_pandas(subset, preserve_index=False).replace_schema_metadata(None)
        write_parquet(tmp / IDS_FILE, table)
        write_json(tmp / SUMMARY_FILE, summary)


def read_subset_ids(subset_dir: str | os.PathLike) -> np.ndarray:
    """The selected ids of one subset directory."""
    table = read_parquet(Path(subset_dir) / IDS_FILE, required=("id",), what="subset ids",
                         hint="run the select stage first")
    return table.column("id").to_numpy()
