"""The review queue (``review/``): what a user hands to annotators.

The hard-to-learn examples, lowest confidence first, with the given label and the label the
model settled on, the text itself for text data (and the source file for image folders), and a
grid for images. Examples already decided in ``data/corrections.csv`` (relabelled, or kept as
correct) leave the queue, except a kept one the model still disagrees with: it stays, with
``previously`` = ``keep`` and ``flag`` = :data:`KEEP_DISPUTED`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc


def last_predictions(dynamics_path: str | os.PathLike, epoch: int) -> pd.Series:
    """Each example's predicted class at the last record of ``epoch`` (what the model settled
    on), reading only that epoch's rows."""
    import pyarrow.parquet as pq

    table = pq.read_table(dynamics_path, columns=["id", "record", "pred"],
                          filters=[("epoch", "==", epoch)])
    last = table.filter(pc.equal(table["record"], pc.max(table["record"])))
    return pd.Series(last["pred"].to_numpy(), index=last["id"].to_numpy())


#: The ``flag`` of a queued example a reviewer kept while the model predicts another class.
KEEP_DISPUTED = "model disagrees with a keep"


def review_queue(scores: pd.DataFrame, predictions: pd.Series, class_names: list[str],
                 top_k: int, decided: pd.DataFrame | None = None) -> pd.DataFrame:
    """The ``top_k`` hardest-to-learn examples still to review: lowest confidence first (ties by
    id), over the whole training set -- the selection's ``hard_to_learn`` ranking, whatever the
    region rule. A label error the model memorised late has a high variability and may sit in
    the ambiguous region of a quantile map; its confidence stays low, so it is queued all the
    same (its ``region`` column says where the map put it).

    Parameters
    ----------
    scores : pandas.DataFrame
        The training examples' scores: ``id``, ``gold``, ``region``, ``confidence``,
        ``variability``, ``correctness``.
    predictions : pandas.Series
        id -> the class index the model settled on (:func:`last_predictions`).
    class_names : list of str
        The class names, by index.
    top_k : int
        The queue's length at most.
    decided : pandas.DataFrame, optional
        The applied decisions
        (:func:`datamap.data.corrections.read_applied_corrections`): ids of the train split
        relabelled or kept leave the queue, except a keep the model disagrees with (its
        prediction is not the kept label), which stays flagged.

    Returns
    -------
    pandas.DataFrame
        ``rank``, ``id``, ``given_label``, ``model_label``, ``region``, ``confidence``,
        ``variability``, ``correctness``, ``previously`` (``keep`` or "") and ``flag``
        (:data:`KEEP_DISPUTED` or "").
    """
    hard = scores.sort_values(["confidence", "id"], kind="stable")
    kept = np.zeros(len(hard), dtype=bool)
    if decided is not None and len(decided):
        train = decided[decided["split"] == "train"]
        ids = hard["id"].to_numpy()
        kept = np.isin(ids, train.loc[train["action"] == "keep", "id"].to_numpy())
        disputed = predictions.reindex(ids).to_numpy() != hard["gold"].to_numpy()
        leaves = np.isin(ids, train["id"].to_numpy()) & ~(kept & disputed)
        hard, kept = hard[~leaves], kept[~leaves]
    hard, kept = hard.head(top_k), kept[:top_k]
    suggested = predictions.reindex(hard["id"]).to_numpy()
    names = np.asarray(class_names)
    return pd.DataFrame({
        "rank": np.arange(1, len(hard) + 1),
        "id": hard["id"].to_numpy(),
        "given_label": names[hard["gold"].to_numpy()],
        "model_label": names[suggested],
        "region": np.asarray(hard["region"], dtype=object),
        "confidence": hard["confidence"].round(6).to_numpy(),
        "variability": hard["variability"].round(6).to_numpy(),
        "correctness": hard["correctness"].round(6).to_numpy(),
        "previously": np.where(kept, "keep", ""),
        "flag": np.where(kept, KEEP_DISPUTED, ""),
    })


#: Columns of the review queue that show the example itself (what annotators read).
SHOWN_INPUTS = {"text": "text", "text_pair": "text_pair", "file": "files"}


def with_inputs(queue: pd.DataFrame, train: Any) -> pd.DataFrame:
    """The queue with the examples' own text (and pair) or source file next to their labels,
    so annotators can judge them without looking the ids up."""
    queue = queue.copy()
    for column, attr in SHOWN_INPUTS.items():
        values = getattr(train, attr, None)
        if values is not None:
            queue[column] = pd.Series(values, index=train.ids).reindex(queue["id"]).to_numpy()
    return queue
