"""The review queue through Label Studio and back into ``data/corrections.csv``.

Export (:func:`export_labelstudio`): one Label Studio task per queued example, in its JSON task
import format -- ``data`` holds the example's ``id``, ``rank``, ``given_label``,
``model_label``, ``confidence``, a ``header`` line saying them, and the input itself (``text``,
plus ``text_pair`` for sentence pairs; ``image`` as a PNG data URI, with the source ``file``
for image folders; ``features`` as text for tables); ``predictions`` pre-annotates the model's
label as a ``choices`` result. The labeling config to paste into the project's settings
(:func:`labeling_config`) has three controls: ``label`` (one choice per class), ``drop`` (a
check box: the example is no valid example of any class) and ``note`` (free text).

Import (:func:`decisions_from_export`, :func:`import_labelstudio`) reads Label Studio's JSON
export (a list of tasks, each with ``annotations[].result[]``) of such a project:

* an annotation choosing the given label is a ``keep``, another class a ``relabel``, a ticked
  ``drop`` a ``drop`` (whatever the label says: the pre-annotated label stays selected);
* cancelled (skipped) annotations, tasks without annotations and annotations without a choice
  are ignored and counted;
* several annotations of one example (one task annotated twice, or its task imported twice):
  an annotation marked ground truth wins, then the latest (``updated_at``, else
  ``created_at``; ties: the higher annotation id); disagreeing annotations are counted and
  their ids listed;
* the reviewer is the annotator's e-mail when the export expands ``completed_by``, else
  ``label-studio user <id>``; the note is the ``note`` text.

The decisions are merged into the corrections file: a new decision replaces an earlier one for
the same id, in its place; decisions on other ids are appended.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from datamap.data.corrections import (
    INTEGER,
    Decision,
    merge_decisions,
    read_corrections,
    write_corrections,
)
from datamap.data.labels import canonical_label
from datamap.data.splits import read_meta, read_split
from datamap.errors import DataError
from datamap.io import unguard_cell, write_json, write_text

#: The control tags of the labeling config (the ``from_name`` of their results).
LABEL = "label"
DROP = "drop"
NOTE = "note"
#: The value of the ``drop`` check box.
DROP_CHOICE = "drop"
#: ``model_version`` of the pre-annotations.
MODEL_VERSION = "datamap"
#: Images smaller than this on their longer side are scaled up (nearest neighbour) for display.
MIN_IMAGE_PX = 128
#: Columns the review queue must have for an export.
QUEUE_COLUMNS = ("id", "given_label", "model_label")


# --------------------------------------------------------------------------------------------
# export


def object_name(meta: Mapping[str, Any]) -> str:
    """The object tag the controls label: ``text``, ``image`` or ``features``."""
    kind = meta.get("input_kind")
    return {"text": "text", "image": "image"}.get(kind, "features")


def labeling_config(meta: Mapping[str, Any]) -> str:
    """The Label Studio labeling config (XML) for tasks of :func:`queue_tasks` on this prepared
    data: the header, the input (both texts of a pair), and the ``label``, ``drop`` and
    ``note`` controls."""
    names = [str(n) for n in meta["class_names"]]
    for name in names:
        if name.startswith("$"):
            raise DataError(f"class name {name!r} starts with '$', which Label Studio reads as "
                            "a task field; rename the class to export to Label Studio")
    target = object_name(meta)
    view = ET.Element("View")
    ET.SubElement(view, "Header", value="$header")
    if target == "text":
        pair = list(meta.get("input_shape", [1])) == [2]
        if pair:
            ET.SubElement(view, "Header", value="First text", size="6")
        ET.SubElement(view, "Text", name="text", value="$text")
        if pair:
            ET.SubElement(view, "Header", value="Second text", size="6")
            ET.SubElement(view, "Text", name="text_pair", value="$text_pair")
    elif target == "image":
        ET.SubElement(view, "Image", name="image", value="$image")
    else:
        ET.SubElement(view, "Text", name="features", value="$features")
    ET.SubElement(view, "Header", value="The right class", size="5")
    choices = ET.SubElement(view, "Choices", name=LABEL, toName=target,
                            choice="single-radio", showInline="true")
    for name in names:
        ET.SubElement(choices, "Choice", value=name)
    drop = ET.SubElement(view, "Choices", name=DROP, toName=target, choice="multiple")
    ET.SubElement(drop, "Choice", value=DROP_CHOICE,
                  hint="no valid example of any class: remove it from the data")
    ET.SubElement(view, "TextArea", name=NOTE, toName=target, placeholder="note (optional)",
                  rows="2", maxSubmissions="1")
    ET.indent(view, space="  ")
    return ET.tostring(view, encoding="unicode") + "\n"


def _png_data_uri(image: np.ndarray) -> str:
    """An image [C, H, W] with values in [0, 1] as a PNG data URI, scaled up (nearest
    neighbour) when small."""
    from PIL import Image

    pixels = np.round(np.clip(np.nan_to_num(image), 0.0, 1.0) * 255).astype(np.uint8)
    channels, height, width = pixels.shape
    if channels == 1:
        pil = Image.fromarray(pixels[0], mode="L")
    else:
        pil = Image.fromarray(np.ascontiguousarray(np.moveaxis(pixels[:3], 0, -1)), mode="RGB")
    scale = math.ceil(MIN_IMAGE_PX / max(height, width))
    if scale > 1:
        pil = pil.resize((width * scale, height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")  # Pillow writes no time chunk: same image, same bytes
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def read_queue(path: str | os.PathLike) -> Any:
    """The review queue CSV (``hard_to_learn.csv``) with every cell as a string, exactly as
    written (a label ``01`` stays ``01``), and ``id`` as an integer."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: review queue not found; run the cartography stage first "
                        "(dvc repro cartography)")
    try:
        queue = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable review queue ({exc}); rerun the cartography "
                        "stage") from exc
    missing = [c for c in QUEUE_COLUMNS if c not in queue.columns]
    if missing:
        raise DataError(f"{path}: the review queue lacks column(s) {', '.join(missing)}; "
                        "rerun the cartography stage")
    # the writer guarded every text cell against spreadsheets (datamap.io.write_csv)
    queue = queue.rename(columns=unguard_cell)
    queue = queue.assign(**{c: queue[c].map(unguard_cell) for c in queue.columns})
    bad = [v for v in queue["id"] if not INTEGER.fullmatch(v)]
    if bad:
        raise DataError(f"{path}: id {bad[0]!r} is not an integer; rerun the cartography stage")
    return queue.assign(id=queue["id"].astype("int64"))


def queue_tasks(queue: Any, train: Any, meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Label Studio tasks of the queued examples (see the module docstring).

    Parameters
    ----------
    queue : pandas.DataFrame
        The review queue (:func:`read_queue`): ``id``, ``given_label``, ``model_label`` and
        optionally ``rank``, ``confidence``, ``flag``.
    train : datamap.data.splits.PreparedSplit
        The prepared train split: the examples' inputs.
    meta : mapping
        The prepared data's ``meta.json``.

    Returns
    -------
    list of dict
        One task per queued example, in queue order.
    """
    names = set(str(n) for n in meta["class_names"])
    position = {int(i): p for p, i in enumerate(train.ids)}
    stale = [int(i) for i in queue["id"] if int(i) not in position]
    if stale:
        raise DataError(f"the review queue lists id {stale[0]}, which the prepared train split "
                        "does not hold; the queue is stale: rerun the cartography stage")
    target = object_name(meta)
    tasks = []
    for row in queue.to_dict("records"):
        example, given, model = int(row["id"]), row["given_label"], row["model_label"]
        for label in (given, model):
            if label not in names:
                raise DataError(f"the review queue's label {label!r} (id {example}) is not a "
                                "class of meta.json; the queue is stale: rerun the cartography "
                                "stage")
        p = position[example]
        header = f"id {example}: given label {given!r}, the model says {model!r}"
        if row.get("flag"):
            header += f" (kept before; {row['flag']})"
        data: dict[str, Any] = {"id": example, "given_label": given, "model_label": model,
                                "header": header}
        if row.get("rank", "") != "":
            data["rank"] = int(row["rank"])
        if row.get("confidence", "") != "":
            data["confidence"] = float(row["confidence"])
        if target == "text":
            data["text"] = str(train.text[p])
            if train.text_pair is not None:
                data["text_pair"] = str(train.text_pair[p])
        elif target == "image":
            data["image"] = _png_data_uri(np.asarray(train.x[p]))
            if train.files is not None:
                data["file"] = str(train.files[p])
        else:
            flat = np.asarray(train.x[p]).ravel()
            data["features"] = ", ".join(f"x{j}={v:.6g}" for j, v in enumerate(flat))
        prediction = {"id": f"{MODEL_VERSION}-{example}", "from_name": LABEL,
                      "to_name": target, "type": "choices", "value": {"choices": [model]}}
        tasks.append({"data": data, "predictions": [{"model_version": MODEL_VERSION,
                                                     "result": [prediction]}]})
    return tasks


def export_labelstudio(queue_path: str | os.PathLike, prepared_dir: str | os.PathLike,
                       tasks_path: str | os.PathLike,
                       config_path: str | os.PathLike) -> int:
    """Write the review queue as Label Studio tasks (JSON) and the labeling config (XML).

    Parameters
    ----------
    queue_path : str or os.PathLike
        The review queue, ``data/cartography/review/hard_to_learn.csv``.
    prepared_dir : str or os.PathLike
        The prepared data (class names, the examples' inputs).
    tasks_path : str or os.PathLike
        The tasks file to write (import it in Label Studio).
    config_path : str or os.PathLike
        The labeling config file to write (paste it in the project's Labeling Interface).

    Returns
    -------
    int
        The number of tasks written.
    """
    meta = read_meta(prepared_dir)
    config = labeling_config(meta)
    tasks = queue_tasks(read_queue(queue_path), read_split(prepared_dir, "train", meta), meta)
    write_json(tasks_path, tasks)
    write_text(config_path, config)
    return len(tasks)


# --------------------------------------------------------------------------------------------
# import


@dataclass
class ImportReport:
    """What an import found: the ``decisions`` (one per example), and what it ignored."""

    decisions: list[Decision] = field(default_factory=list)
    tasks: int = 0
    cancelled: int = 0
    without_annotations: int = 0
    without_choice: int = 0
    #: ids whose non-cancelled annotations disagree (the rule picked one)
    disagreements: list[int] = field(default_factory=list)
    replaced: int = 0
    unchanged: int = 0

    def describe(self, target: str) -> str:
        counts = {a: sum(d.action == a for d in self.decisions) for a in ("relabel", "keep",
                                                                           "drop")}
        text = (f"{len(self.decisions)} decision(s) from {self.tasks} task(s) into {target} "
                f"({', '.join(f'{n} {a}' for a, n in counts.items())}; {self.replaced} replaced "
                f"an earlier decision, {self.unchanged} unchanged); ignored: {self.cancelled} "
                f"cancelled/skipped annotation(s), {self.without_annotations} task(s) without "
                f"annotations, {self.without_choice} annotation(s) without a choice")
        if self.disagreements:
            shown = ", ".join(map(str, self.disagreements[:10]))
            more = ", ..." if len(self.disagreements) > 10 else ""
            text += (f"; {len(self.disagreements)} example(s) with disagreeing annotations "
                     f"(ground truth, else the latest, counts): ids {shown}{more}")
        return text


def read_export(path: str | os.PathLike) -> list[dict[str, Any]]:
    """A Label Studio JSON export: the list of tasks."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: Label Studio export not found; export the project as JSON "
                        "(Export > JSON) and give that file")
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a JSON file ({exc}); export the project as JSON") from exc
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise DataError(f"{path}: not a Label Studio JSON export (a list of tasks); export "
                        "the project as JSON")
    if tasks and not any("annotations" in t or "data" in t for t in tasks):
        raise DataError(f"{path}: tasks without 'data' or 'annotations' (a JSON-MIN or CSV "
                        "export?); export the project as JSON")
    return tasks


def _timestamp(annotation: Mapping[str, Any], where: str) -> datetime:
    stamp = annotation.get("updated_at") or annotation.get("created_at")
    if stamp is None:
        return datetime.min.replace(tzinfo=timezone.utc)
    try:
        parsed = datetime.fromisoformat(str(stamp))
    except ValueError as exc:
        raise DataError(f"{where}: updated_at {stamp!r} is not an ISO 8601 time; export the "
                        "project as JSON again") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _reviewer(completed_by: Any) -> str:
    if isinstance(completed_by, dict):
        email = completed_by.get("email")
        if isinstance(email, str) and email:
            return email
        completed_by = completed_by.get("id")
    if completed_by is None or completed_by == "":
        return ""
    return f"label-studio user {completed_by}"


def _outcome(annotation: Mapping[str, Any], where: str
             ) -> tuple[str | None, bool, str]:
    """(the chosen class or None, drop ticked, note) of one annotation's result."""
    label: str | None = None
    drop = False
    notes: list[str] = []
    result = annotation.get("result") or []
    if not isinstance(result, list):
        raise DataError(f"{where}: 'result' is not a list; export the project as JSON again")
    for item in result:
        name = item.get("from_name") if isinstance(item, dict) else None
        value = item.get("value") if isinstance(item, dict) else None
        if name not in (LABEL, DROP, NOTE) or not isinstance(value, dict):
            raise DataError(f"{where}: a result of control {name!r}; the labeling config must "
                            f"be the exported labeling_config.xml (controls {LABEL}, {DROP}, "
                            f"{NOTE})")
        if name == NOTE:
            texts = value.get("text") or []
            texts = [texts] if isinstance(texts, str) else texts
            notes.extend(str(t) for t in texts)
            continue
        chosen = value.get("choices")
        if not isinstance(chosen, list) or not all(isinstance(c, str) for c in chosen):
            raise DataError(f"{where}: control {name!r} has no list of choices; export the "
                            "project as JSON again")
        if name == DROP:
            if any(c != DROP_CHOICE for c in chosen):
                raise DataError(f"{where}: control {DROP!r} chose {chosen!r}; its only choice "
                                f"is {DROP_CHOICE!r} (labeling_config.xml)")
            drop = drop or bool(chosen)
        elif len(chosen) > 1:
            raise DataError(f"{where}: {len(chosen)} classes chosen ({chosen!r}); choose one "
                            "class per example")
        elif chosen:
            label = chosen[0]
    return label, drop, "\n".join(notes)


def _class_name(chosen: str, names: set[str], at: str) -> str:
    """The class a chosen label names, read by the rule of every label
    (:func:`datamap.data.labels.canonical_label`: ``1.0`` is the class ``1``)."""
    try:
        label = canonical_label(chosen)
    except ValueError as error:
        raise DataError(f"{at}: class {chosen!r} {error}; the labeling config must list the "
                        "prepared data's classes") from None
    if label not in names:
        raise DataError(f"{at}: class {chosen!r} is not a class name of meta.json; the "
                        "labeling config must list the prepared data's classes")
    return label


def decisions_from_export(tasks: Sequence[Mapping[str, Any]], class_names: Sequence[str],
                          origin: str = "the export") -> ImportReport:
    """The decisions of a Label Studio JSON export's annotations (rules: module docstring).

    Parameters
    ----------
    tasks : sequence of mapping
        The exported tasks (:func:`read_export`), made from :func:`queue_tasks`' tasks.
    class_names : sequence of str
        The classes; a chosen class, read by the label rule of
        :func:`datamap.data.labels.canonical_label`, must be one of them.
    origin : str
        How messages name the export.

    Returns
    -------
    ImportReport
        One decision per example, sorted by id, and the counts of what was ignored.
    """
    names = set(class_names)
    report = ImportReport(tasks=len(tasks))
    candidates: dict[int, list[tuple[tuple, Decision]]] = {}
    for number, task in enumerate(tasks):
        data = task.get("data")
        where = f"{origin}: task {task.get('id', f'#{number + 1}')}"
        example = data.get("id") if isinstance(data, dict) else None
        given = data.get("given_label") if isinstance(data, dict) else None
        if isinstance(example, bool) or not isinstance(example, int) or not isinstance(given,
                                                                                       str):
            raise DataError(f"{where} has no integer data.id and data.given_label; import "
                            "tasks made by `datamap corrections export-labelstudio`")
        annotations = task.get("annotations") or []
        if not isinstance(annotations, list):
            raise DataError(f"{where}: 'annotations' is not a list; export the project as JSON")
        if not annotations:
            report.without_annotations += 1
        for annotation in annotations:
            if not isinstance(annotation, dict):
                raise DataError(f"{where}: an annotation is not an object; export the project "
                                "as JSON")
            at = f"{where}, annotation {annotation.get('id')} (id {example})"
            if annotation.get("was_cancelled"):
                report.cancelled += 1
                continue
            label, drop, note = _outcome(annotation, at)
            if label is None and not drop:
                report.without_choice += 1
                continue
            if label is not None:
                label = _class_name(label, names, at)
            reviewer = _reviewer(annotation.get("completed_by"))
            if drop:
                decision = Decision(example, "drop", "", note, reviewer)
            elif label == given:
                decision = Decision(example, "keep", "", note, reviewer)
            else:
                decision = Decision(example, "relabel", str(label), note, reviewer)
            annotation_id = annotation.get("id")
            order = (bool(annotation.get("ground_truth")), _timestamp(annotation, at),
                     (0, annotation_id, "") if isinstance(annotation_id, int)
                     and not isinstance(annotation_id, bool) else (1, 0, str(annotation_id)))
            candidates.setdefault(example, []).append((order, decision))
    for example in sorted(candidates):
        found = sorted(candidates[example], key=lambda pair: pair[0])
        if len({(d.action, d.label) for _, d in found}) > 1:
            report.disagreements.append(example)
        report.decisions.append(found[-1][1])
    return report


def import_labelstudio(export_path: str | os.PathLike, corrections_path: str | os.PathLike,
                       prepared_dir: str | os.PathLike) -> ImportReport:
    """Merge a Label Studio JSON export's decisions into a corrections file.

    Parameters
    ----------
    export_path : str or os.PathLike
        Label Studio's JSON export of a project made from the exported tasks.
    corrections_path : str or os.PathLike
        The corrections file (``data/corrections.csv``); created when missing.
    prepared_dir : str or os.PathLike
        The prepared data (its class names).

    Returns
    -------
    ImportReport
        The decisions merged and what was ignored; :meth:`ImportReport.describe` says it.
    """
    meta = read_meta(prepared_dir)
    report = decisions_from_export(read_export(export_path),
                                   [str(n) for n in meta["class_names"]], str(export_path))
    corrections_path = Path(corrections_path)
    existing = read_corrections(corrections_path, key="--corrections") \
        if corrections_path.exists() else None
    old = list(existing.decisions) if existing is not None else []
    before = {d.id: d for d in old}
    report.unchanged = sum(before.get(d.id) == d for d in report.decisions)
    report.replaced = sum(d.id in before and before[d.id] != d for d in report.decisions)
    merged, _ = merge_decisions(old, report.decisions)
    write_corrections(corrections_path, merged, crlf=existing.crlf if existing else False)
    return report
