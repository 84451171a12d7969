"""The prepare stage: a source -> seeded stratified splits, label noise, control sets, Parquet.

Writes the prepared directory (see :mod:`datamap.data.splits` for the contract), built in a
temporary sibling and swapped in whole, so a failure leaves no artifact.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from datamap.data.corrections import (
    APPLIED_FILE,
    Corrections,
    apply_corrections,
    read_corrections,
)
from datamap.data.options import SEED_LIMIT, seed_value
from datamap.data.sources import RawData, SourceData
from datamap.data.splits import CONTROL_INDEX, CONTROL_NAME, CONTROLS, split_table
from datamap.errors import ConfigError, DataError
from datamap.io import atomic_path, write_json, write_parquet

log = logging.getLogger(__name__)


def check_fraction(key: str, value: Any, low: float, high: float, high_open: bool = True) -> float:
    """Validate a config fraction ``low <= value < high`` (or ``<= high``) and return it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    ok = low <= value < high if high_open else low <= value <= high
    if not ok:
        bracket = ")" if high_open else "]"
        raise ConfigError(f"{key} must be in [{low:g}, {high:g}{bracket}, got {value}")
    return float(value)


def _train_test_split(positions: np.ndarray, labels: np.ndarray, size: float, seed: int,
                      what: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(positions, test_size=size, stratify=labels, random_state=seed)
    except ValueError as exc:
        raise DataError(
            f"cannot split {len(positions)} examples stratified into {what}: {exc}; use more "
            "data, larger split fractions (data.split), or give the split as its own file"
        ) from exc


def stratified_split(
    labels: np.ndarray, val: float | None, test: float | None, seed: int
) -> dict[str, np.ndarray]:
    """Positions of a seeded stratified split into train (the rest), val and test (sorted
    within each split). ``val``/``test`` are fractions of all ``labels``; None: no such split
    is cut (the source has it as a file)."""
    positions = np.arange(len(labels))
    out = {}
    rest = positions
    if test is not None:
        rest, out["test"] = _train_test_split(positions, labels, test, seed,
                                              f"test={test} (data.split.test)")
    if val is not None:
        share = val / (1.0 - test) if test is not None else val
        # modulo: the largest seed, 2**32 - 1, would step outside scikit-learn's range
        rest, out["val"] = _train_test_split(rest, labels[rest], share, (seed + 1) % SEED_LIMIT,
                                             f"val={val} (data.split.val)")
    out["train"] = rest
    return {name: np.sort(pos) for name, pos in out.items()}


def inject_label_noise(
    labels: np.ndarray, rate: float, num_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Uniform label noise: exactly round(rate * N) examples get a different, uniformly drawn label.

    Returns (noisy_labels, flipped_mask). Each flipped example's new label is drawn uniformly
    from the other num_classes - 1 classes, so every flip really changes the label.
    """
    rng = np.random.default_rng(seed)
    n = len(labels)
    n_flip = int(round(rate * n))
    if n_flip and num_classes < 2:
        raise ConfigError("data.label_noise needs at least two classes to flip labels")
    flipped = np.zeros(n, dtype=bool)
    flipped[rng.choice(n, size=n_flip, replace=False)] = True
    offsets = rng.integers(1, max(num_classes, 2), size=n_flip)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + offsets) % num_classes
    return noisy, flipped


def _split_fractions(source: SourceData, val: Any, test: Any) -> dict[str, float]:
    """The fractions of the training data to cut off as val/test (only for the splits the
    source does not give as files)."""
    cut = {}
    if source.test is None:
        cut["test"] = check_fraction("data.split.test", test, 0.0, 1.0)
    if source.val is None:
        cut["val"] = check_fraction("data.split.val", val, 0.0, 1.0)
    if any(v <= 0 for v in cut.values()) or sum(cut.values()) >= 1:
        raise ConfigError(
            f"data.split.val ({val}) and data.split.test ({test}) must be > 0 and sum to < 1 "
            "(the rest is the training split)"
        )
    return cut


def _check_labels_seen(split: RawData, train_labels: np.ndarray, names: list[str]) -> None:
    unseen = np.setdiff1d(np.unique(split.labels), train_labels)
    if len(unseen):
        shown = ", ".join(repr(names[i]) for i in unseen[:5])
        raise DataError(
            f"{split.origin}: label(s) {shown} never occur in the training data; a model cannot "
            "learn a class it never sees: add training examples of it or remove these rows"
        )


def build_controls(source: SourceData, builders: Mapping[str, Any], test: RawData,
                   seed: int) -> tuple[dict[str, RawData], dict[str, str]]:
    """The control sets: the source's own (files) then each ``data.controls`` builder's."""
    controls = dict(source.controls)
    descriptions = dict(source.control_descriptions)
    for name, builder in builders.items():
        if name in controls:
            raise ConfigError(f"data.controls.{name}: the source already has a control set "
                              f"named {name!r}; rename one of them")
        if builder is None:
            continue  # switched off with data.controls.<name>=null
        if not callable(getattr(builder, "build", None)) or not callable(
                getattr(builder, "describe", None)):
            raise ConfigError(f"data.controls.{name} must build an object with build(test, rng) "
                              "and describe() (e.g. datamap.data.MnistDigits)")
        # each control gets its own stream, independent of the others and of their order
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        controls[name] = builder.build(test, rng)
        descriptions[name] = builder.describe()
    for name in controls:
        if not CONTROL_NAME.fullmatch(name):
            raise ConfigError(f"control set name {name!r}: use letters, digits, _ and - only "
                              "(it becomes a file name and a metrics key)")
    return controls, descriptions


def prepare(
    source: SourceData | RawData,
    out_dir: str | os.PathLike,
    *,
    val: float | None,
    test: float | None,
    label_noise: float,
    controls: Mapping[str, Any] | None = None,
    seed: int,
    corrections: Corrections | None = None,
) -> dict[str, Any]:
    """Split the source, inject train label noise, build the control sets, write ``out_dir``.

    Args:
        source: a source's data (a bare :class:`RawData` is a source with only ``train``).
        val, test: fractions of the training data cut off as val/test, stratified and seeded,
            when the source has no such split of its own.
        label_noise: the share of training labels flipped to another class (``clean_label``
            keeps the truth).
        controls: name -> control builder (``data.controls``), added to the source's own.
        corrections: reviewers' decisions (``data.corrections``, see
            :mod:`datamap.data.corrections`), applied after the label noise, before the
            control sets are built from the test split.
    Returns the ``meta.json`` written.
    """
    if isinstance(source, RawData):
        source = SourceData(train=source, description=source.description)
    seed = seed_value(seed)
    label_noise = check_fraction("data.label_noise", label_noise, 0.0, 1.0)
    cut = _split_fractions(source, val, test)
    raw = source.train
    raw.validate()
    class_names = raw.class_names
    num_classes = len(class_names)

    positions = stratified_split(raw.labels, cut.get("val"), cut.get("test"), seed)
    splits = {name: source.train.take(pos) for name, pos in positions.items()}
    for name in ("val", "test"):
        given = getattr(source, name)
        if given is not None:
            splits[name] = given.relabel(class_names, f"the training data ({raw.origin})")
    train_labels = np.unique(splits["train"].labels)
    if len(train_labels) < 2:
        raise DataError(
            f"{raw.origin}: every training example has the label "
            f"{class_names[int(train_labels[0])]!r}; classification needs at least two classes: "
            "check data.source.label_column"
        )
    # noise first, then the reviewers' decisions: the same examples are flipped with and
    # without corrections; control sets built from the test split see its corrected labels
    clean = splits["train"].labels
    noisy, flipped = inject_label_noise(clean, label_noise, num_classes, seed + 2)
    applied = apply_corrections(corrections, {**splits, "train": replace(splits["train"],
                                labels=noisy)}, class_names, clean_labels=clean)
    splits, clean, train = applied.splits, applied.clean_labels, applied.splits["train"]
    control_sets, descriptions = build_controls(source, controls or {}, splits["test"], seed)
    control_sets = {name: data.relabel(class_names, f"the training data ({raw.origin})")
                    for name, data in control_sets.items()}
    for data in [splits["val"], splits["test"], *control_sets.values()]:
        data.validate()
        _check_labels_seen(data, train_labels, class_names)

    # meta.json (a dependency of training) says nothing about the test set either: a new test
    # file reruns evaluation, not training; its own metadata keeps its details
    dropped = {name: source.dropped.get(name, 0) for name in ("train", "val", "test")}
    tables = {
        "train": split_table(train, "train", clean if label_noise > 0 else None),
        "val": split_table(splits["val"], "val"),
        "test": split_table(splits["test"], "test", dropped=dropped["test"],
                            origin=splits["test"].origin, **applied.metadata(("test",))),
    }
    # Control sets are described in their own files' metadata, never in meta.json: changing
    # one must rerun evaluation only (meta.json is a dependency of training).
    control_tables = {name: split_table(data, "control", name=name,
                                        description=descriptions[name])
                      for name, data in control_sets.items()}
    meta = {
        "class_names": class_names,
        "num_classes": num_classes,
        "input_kind": raw.input_kind,
        "input_shape": list(raw.input_shape),
        "source": source.description or raw.description,
        "source_fingerprint": raw.fingerprint(),
        "seed": seed,
        "split_fractions": cut,
        "sizes": {name: tables[name].num_rows for name in ("train", "val")},
        "dropped": {name: dropped[name] for name in ("train", "val")},
        "label_noise": label_noise,
        "flipped": int(flipped.sum()),
        **applied.metadata(),
    }
    index = {name: {"description": descriptions[name], "examples": table.num_rows}
             for name, table in control_tables.items()}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for name, table in tables.items():
            write_parquet(tmp / f"{name}.parquet", table)
        for name, table in control_tables.items():
            write_parquet(tmp / CONTROLS / f"{name}.parquet", table)
        write_json(tmp / CONTROLS / CONTROL_INDEX, index)
        write_json(tmp / "meta.json", meta)
        write_parquet(tmp / APPLIED_FILE, applied.table)
    log.info("prepared %s: %s, test %d; %d of %d training labels flipped; corrections: %s; "
             "control sets: %s", out_dir, meta["sizes"], tables["test"].num_rows,
             meta["flipped"], len(train), applied.describe(),
             ", ".join(f"{k} ({v['examples']})" for k, v in index.items()) or "none")
    return meta


def prepare_from_config(data: Mapping[str, Any], out_dir: str | os.PathLike,
                        seed: int) -> dict[str, Any]:
    """The prepare stage on the ``data`` config group: instantiate ``data.source`` and each
    ``data.controls`` builder, then :func:`prepare`."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    seed = seed_value(seed)  # before the source is read: a config mistake costs no reading
    if OmegaConf.is_config(data):
        missing = sorted(OmegaConf.missing_keys(data.source))
        if missing:
            raise ConfigError(f"data.source.{missing[0]} is not set; give it on the command "
                              f"line (data.source.{missing[0]}=...) or in conf/data/")
    source = instantiate(data.source).load()
    builders = {name: instantiate(conf) if conf is not None else None
                for name, conf in (data.get("controls") or {}).items()}
    split = data.get("split") or {}
    corrections_file = data.get("corrections")
    if corrections_file is not None and (not isinstance(corrections_file, str)
                                         or not corrections_file):
        raise ConfigError(f"data.corrections must be a file path or null, got "
                          f"{corrections_file!r}")
    corrections = read_corrections(corrections_file) if corrections_file is not None else None
    return prepare(source, Path(out_dir), val=split.get("val"), test=split.get("test"),
                   label_noise=data.get("label_noise", 0.0), controls=builders, seed=seed,
                   corrections=corrections)

