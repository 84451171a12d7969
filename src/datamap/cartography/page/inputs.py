"""The page's inputs from the pipeline's files: what the cartography stage hands to
:func:`datamap.cartography.page.builder.build_page`.

Every scored example is on the page (``cartography.max_points`` only subsamples the PNG map):
its scores, its most-predicted class over the epochs scored (:func:`most_predicted`), its input
from the prepared train split (:func:`input_preview`: texts and pairs, images with their file
names when they came from an image folder, or the first feature values with the names of
``meta.json``), whether injected noise flipped its label, and the decisions the prepare stage
applied from ``data/corrections.csv`` (:func:`decisions_frame`), so that the page's corrections
download starts from them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from datamap.cartography.page.builder import (
    TEXT_CHARS,
    THUMBNAIL_PX,
    Features,
    Images,
    Texts,
    build_page,
    to_uint8,
)
from datamap.data.splits import PreparedSplit
from datamap.errors import ConfigError, DataError
from datamap.io import write_text

#: The page's file name in the cartography stage's output directory.
PAGE_NAME = "data_map.html"


@dataclass(frozen=True)
class PageInfo:
    """What :func:`write_data_map_html` wrote: the page's ``path``, its ``n_examples`` (every
    scored example) and its size in ``bytes``."""

    path: str
    n_examples: int
    bytes: int


def html_options(options: Mapping[str, Any] | None) -> dict[str, int]:
    """``cartography.html`` checked.

    Parameters
    ----------
    options : Mapping or None
        ``thumbnail_px`` and ``text_chars`` (positive integers; missing ones get their
        defaults).

    Returns
    -------
    dict
        Both options.
    """
    known = {"thumbnail_px": THUMBNAIL_PX, "text_chars": TEXT_CHARS}
    given = dict(options or {})
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ConfigError(f"cartography.html.{unknown[0]} is not an option (known: "
                          f"{', '.join(known)})")
    for key, value in given.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"cartography.html.{key} must be a positive integer, got {value!r}")
    return {**known, **given}


def most_predicted(dynamics: Any, epochs: int | None = None) -> pd.Series:
    """Each example's most often predicted class.

    Parameters
    ----------
    dynamics : DynamicsTable or path
        A dynamics table or the path of its Parquet file (read a chunk of ids at a time, as
        :func:`datamap.scoring.scores.compute_scores` does).
    epochs : int or None
        Count the records of the first ``epochs`` epochs (None: every epoch).

    Returns
    -------
    pandas.Series
        The class index, ties to the lowest class, indexed by id (ascending).
    """
    from datamap.dynamics.storage import open_dynamics

    source = open_dynamics(dynamics)
    k = source.meta.num_classes
    ids, modes = [], []
    for chunk in source.chunks(("pred",), epochs=epochs):
        pred = chunk.values["pred"].astype(np.int64)  # [slots, n]
        n = pred.shape[1]
        # one bincount over (example, class) keys counts every example's votes at once
        keys = pred + k * np.arange(n, dtype=np.int64)
        counts = np.bincount(keys.ravel(), minlength=n * k).reshape(n, k)
        ids.append(chunk.ids)
        modes.append(counts.argmax(axis=1))  # argmax takes the first maximum: lowest class
    return pd.Series(np.concatenate(modes), index=np.concatenate(ids), name="most_predicted")


def split_rows(train: PreparedSplit, ids: np.ndarray, origin: str = "train split") -> np.ndarray:
    """Row positions in ``train`` of the examples ``ids``; refuses ids the split lacks."""
    rows = pd.Index(train.ids).get_indexer(ids)
    if (rows < 0).any():
        missing = np.asarray(ids)[rows < 0]
        raise DataError(f"{origin}: {len(missing)} scored id(s) are not in the prepared train "
                        f"split (e.g. {missing[:5].tolist()}); rerun the train and cartography "
                        "stages")
    return rows


def input_preview(train: PreparedSplit, rows: np.ndarray,
                  meta: Mapping[str, Any]) -> Images | Texts | Features:
    """The inputs the page shows for the examples at ``rows`` of ``train``, in that order.

    Parameters
    ----------
    train : PreparedSplit
        The prepared train split.
    rows : numpy.ndarray
        Row positions in ``train`` (:func:`split_rows`).
    meta : Mapping
        The prepared data's ``meta.json``: ``input_kind``, ``input_shape`` and, for tables,
        ``feature_names``.

    Returns
    -------
    Images, Texts or Features
        Texts (and pairs) for text data; images on one grey scale (:func:`to_uint8`) with
        their source file names when the split has them; otherwise the feature values with
        the names of ``meta.json`` (``x0``, ``x1``, ... when it names another number).
    """
    if train.text is not None:
        pairs = train.text_pair[rows] if train.text_pair is not None else None
        return Texts(train.text[rows], pairs)
    if train.x is None:
        raise DataError("prepared train split: no input (x or text) to show on the data map; "
                        "rerun the prepare stage")
    x = train.x[rows]
    if meta.get("input_kind") == "image" and x.ndim == 4:
        files = train.files[rows] if train.files is not None else None
        return Images(to_uint8(x), files)
    flat = x.reshape(len(x), -1)
    names = meta.get("feature_names")
    if names is not None and len(names) != flat.shape[1]:
        names = None  # written for another layout of x: number them instead
    return Features(flat, names)


def decisions_frame(applied: pd.DataFrame | None) -> pd.DataFrame | None:
    """The decisions the prepare stage applied, as the page's prior decisions.

    Parameters
    ----------
    applied : pandas.DataFrame or None
        :func:`datamap.data.read_applied_corrections` (columns ``id``, ``split``, ``action``,
        ``label_before``, ``label_after``, ``note``, ``reviewer``), or None.

    Returns
    -------
    pandas.DataFrame or None
        ``id``, ``action``, ``label`` (the class name after a relabel, else ""), ``note`` and
        ``reviewer``, one row per decided example of every split (the page shows those of the
        train split and keeps the others, and the dropped ones, in its download); None when
        nothing was decided.
    """
    if applied is None or len(applied) == 0:
        return None
    label = np.where(applied["action"].to_numpy() == "relabel",
                     applied["label_after"].fillna("").to_numpy(dtype=object), "")
    return pd.DataFrame({
        "id": applied["id"].to_numpy(dtype=np.int64),
        "action": applied["action"].astype(str).to_numpy(),
        "label": label.astype(str),
        "note": applied["note"].fillna("").astype(str).to_numpy(),
        "reviewer": applied["reviewer"].fillna("").astype(str).to_numpy(),
    })


def write_data_map_html(
    scores: pd.DataFrame,
    dynamics: Any,
    train: PreparedSplit,
    path: str | os.PathLike,
    *,
    meta: Mapping[str, Any],
    region_rule: str,
    decisions: pd.DataFrame | None = None,
    epochs: int | None = None,
    thumbnail_px: int = THUMBNAIL_PX,
    text_chars: int = TEXT_CHARS,
    title: str = "Data map of the training set",
) -> PageInfo:
    """Write the interactive data map of every example of ``scores`` to ``path`` (atomically).

    Parameters
    ----------
    scores : pandas.DataFrame
        :func:`datamap.scoring.scores.compute_scores` (``id``, ``gold``, ``confidence``,
        ``variability``, ``correctness``, ``forgetfulness``, ``never_learned``, ``region``).
    dynamics : DynamicsTable or path
        Gives each example's most-predicted class over its first ``epochs`` epochs.
    train : PreparedSplit
        The prepared train split: the inputs shown, and ``clean_labels`` (when noise was
        injected) for the "label flipped" colouring.
    path : str or os.PathLike
        Where the page goes.
    meta : Mapping
        The prepared data's ``meta.json`` (class names, input kind and shape, feature names).
    region_rule : str
        The region rule as one sentence (:func:`datamap.scoring.regions.describe_rule`).
    decisions : pandas.DataFrame or None
        Prior review decisions (:func:`decisions_frame`).
    epochs : int or None
        Epochs the scores used (None: all).
    thumbnail_px, text_chars : int
        ``cartography.html`` (:func:`html_options`).
    title : str
        The page's heading.

    Returns
    -------
    PageInfo
        The path, the number of examples and the size of the page.
    """
    ids = scores["id"].to_numpy(dtype=np.int64)
    predicted = most_predicted(dynamics, epochs).reindex(ids)
    if predicted.isna().any():
        raise DataError(f"{dynamics}: the dynamics lack some scored examples; rerun the train "
                        "stage")
    rows = split_rows(train, ids)
    points = pd.DataFrame({
        "id": ids,
        "gold": scores["gold"].to_numpy(dtype=np.int64),
        "most_predicted": predicted.to_numpy().astype(np.int64),
        "confidence": scores["confidence"].to_numpy(),
        "variability": scores["variability"].to_numpy(),
        "correctness": scores["correctness"].to_numpy(),
        "forgetfulness": scores["forgetfulness"].to_numpy(),
        "never_learned": scores["never_learned"].to_numpy(dtype=bool),
        "region": np.asarray(scores["region"], dtype=object),
    })
    if train.clean_labels is not None:
        points["flipped"] = train.labels[rows] != train.clean_labels[rows]
    page = build_page(points, meta["class_names"], input_preview(train, rows, meta), decisions,
                      title=title, region_rule=region_rule, text_chars=text_chars,
                      thumbnail_px=thumbnail_px)
    data = page.encode("utf-8")
    write_text(path, page)
    return PageInfo(path=str(path), n_examples=len(points), bytes=len(data))
