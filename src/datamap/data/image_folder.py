"""A folder of labelled images as a source: ``<root>/<split>/<class>/<image>``.

Pillow reads PNG and JPEG files and converts each to the configured mode (``L``: one grey
channel, ``RGB``: three) and size; pixels are scaled to [0, 1] and stored inline as ``x``
[C, H, W], so the prepared data is self-contained and models such as ``model=cnn`` read it
like the built-in digits.

A class folder's name is its class name by the label rule of :mod:`datamap.data.labels`, as a
label cell is: folders ``01`` and ``1`` are both the class ``1`` (and refused side by side),
``True`` is ``true``, and folders mixing numbers and other names are refused. Images must have
8 bits per channel (Pillow modes such as ``1``, ``L``, ``P``, ``RGB``, ``RGBA``): converting a
16-bit or float image (``I;16``, ``I``, ``F``) to ``L`` or ``RGB`` clips every value above 255,
so such files are refused, not silently saturated.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datamap.data.labels import canonical_labels, check_one_kind
from datamap.data.options import as_list, plain
from datamap.data.sources import RawData, SourceData, class_names_of, named_paths
from datamap.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: File extensions read as images (case-insensitive); other files are skipped and counted.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MODES = ("L", "RGB")


def image_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``data.source.size`` as (height, width): an int is a square, a pair is [height, width].
    Anything else -- a boolean (``true`` is no size), a float, text, a mapping -- is refused."""
    size = plain(size)
    if size is None:
        return None
    values = list(size) if isinstance(size, Sequence) and not isinstance(size, str) else [size]
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                   for v in values):
        raise ConfigError(f"data.source.size must be a positive int or [height, width], got "
                          f"{size!r}")
    return int(values[0]), int(values[1])


class ImageFolderSource:
    """Images in one folder per class.

    Args:
        root: holds ``train/<class>/<image>`` and optionally ``val/``, ``test/`` and
            ``control/`` laid out the same way (a missing val or test is split off train).
        mode: ``L`` or ``RGB``: every image is converted to it. ``null``: keep the images' own
            mode, which must then be the same for all and one of these.
        size: ``[height, width]`` (or one int for squares) to resize every image to
            (bilinear); ``null``: keep the images' size, which must then be the same for all.
        classes: the class names (folder names) in index order; default the sorted training
            class folders.
        control: the control set(s): a folder (relative to ``root``, named ``control``) or a
            mapping ``name -> folder``; default ``root/control`` when it exists.
    """

    def __init__(
        self,
        root: str,
        mode: str | None = "RGB",
        size: int | Sequence[int] | None = None,
        classes: Sequence[str] | None = None,
        control: str | Mapping[str, str] | None = None,
    ) -> None:
        if mode is not None and mode not in MODES:
            raise ConfigError(f"data.source.mode must be one of {', '.join(MODES)} or null, got "
                              f"{mode!r}")
        self.root = Path(root)
        self.mode = mode
        self.size = image_size(size)
        # a bare value is a list of one, and each is read by the label rule (as folder names)
        self.classes = (class_names_of([], classes) if as_list(classes, "data.source.classes")
                        is not None else None)
        self.controls = named_paths(control, "control")

    def load(self) -> SourceData:
        if not self.root.is_dir():
            raise DataError(f"{self.root}: image folder not found; set data.source.root to a "
                            "folder holding train/<class>/<image> files")
        train_dir = self.root / "train"
        if not train_dir.is_dir():
            raise DataError(f"{self.root}: no train/ folder; put the training images in "
                            f"{train_dir}/<class>/<image>.png")
        folders = {"train": train_dir}
        for split in ("val", "test"):
            if (self.root / split).is_dir():
                folders[split] = self.root / split
        controls = dict(self.controls)
        if not controls and (self.root / "control").is_dir():
            controls = {"control": "control"}
        for name, folder in controls.items():
            folders[f"control/{name}"] = self.root / folder  # an absolute folder stays absolute

        images = {split: self._listing(folder) for split, folder in folders.items()}
        train_classes = sorted({c for c, _ in images["train"]})
        class_names = class_names_of(train_classes, self.classes)
        unknown = sorted(set(train_classes) - set(class_names))
        if unknown:
            raise DataError(f"{train_dir}: class folder(s) {unknown} are not in "
                            f"data.source.classes {class_names}; fix the list or the folders")
        arrays = self._read_all(images)
        raws = {
            split: RawData(
                labels=np.asarray([class_names.index(c) if c in class_names else -1
                                   for c, _ in images[split]], dtype=np.int64),
                ids=np.arange(len(images[split]), dtype=np.int64),
                class_names=class_names, x=arrays[split], input_kind="image",
                origin=str(folders[split]),
                files=np.asarray([str(p.relative_to(self.root)) if p.is_relative_to(self.root)
                                  else str(p) for _, p in images[split]], dtype=object),
            )
            for split in images
        }
        for split, raw in raws.items():
            if (raw.labels < 0).any():
                missing = sorted({c for c, _ in images[split] if c not in class_names})
                raise DataError(
                    f"{folders[split]}: class folder(s) {missing} never occur in {train_dir}; a "
                    "model cannot learn a class it never sees: add training images of it or "
                    "remove the folder"
                )
        shape = arrays["train"].shape[1:]
        description = (f"image folder {self.root.name}: {len(class_names)} classes, "
                       f"{shape[0]}x{shape[1]}x{shape[2]} ({self.mode or 'own mode'})")
        return SourceData(
            train=raws["train"], val=raws.get("val"), test=raws.get("test"),
            controls={name: raws[f"control/{name}"] for name in controls},
            control_descriptions={name: f"images in {folders[f'control/{name}']}"
                                  for name in controls},
            description=description,
        )

    # ------------------------------------------------------------------------------------

    def _listing(self, folder: Path) -> list[tuple[str, Path]]:
        """``(class, file)`` of every image under ``folder``, sorted by class then file name
        (the order gives the stable ids)."""
        if not folder.is_dir():
            raise DataError(f"{folder}: image folder not found; check data.source.control")
        entries: list[tuple[str, Path]] = []
        skipped = 0
        class_dirs = sorted(p for p in folder.iterdir() if p.is_dir()
                            and not p.name.startswith("."))
        classes = self._class_names(folder, [p.name for p in class_dirs])
        # an image outside a class folder has no label: refused, never silently left out
        loose = sorted(p.name for p in folder.iterdir() if p.is_file()
                       and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
        if loose:
            raise DataError(f"{folder}: {len(loose)} image(s) directly in it (first "
                            f"{loose[0]!r}) have no class; move each into {folder}/<class>/ "
                            "or remove it")
        for class_dir in class_dirs:
            nested = sorted(p.name for p in class_dir.iterdir() if p.is_dir()
                            and not p.name.startswith(".") and any(
                                q.suffix.lower() in IMAGE_SUFFIXES for q in p.rglob("*")))
            if nested:
                raise DataError(f"{class_dir}: folder {nested[0]!r} inside this class folder "
                                "holds images, which are not read (classes are one level "
                                "deep); move them up into the class folder or remove it")
            files = sorted(p for p in class_dir.iterdir() if p.is_file()
                           and not p.name.startswith("."))
            found = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
            skipped += len(files) - len(found)
            if not found:
                raise DataError(f"{class_dir}: no images (.png, .jpg, .jpeg) in this class "
                                "folder; add some or remove the folder")
            entries += [(classes[class_dir.name], p) for p in found]
        if not entries:
            raise DataError(f"{folder}: no images; expected {folder}/<class>/<image>.png "
                            "(one folder per class)")
        if skipped:
            log.warning("%s: skipped %d file(s) that are not %s", folder, skipped,
                        "/".join(IMAGE_SUFFIXES))
        return entries

    @staticmethod
    def _class_names(folder: Path, names: list[str]) -> dict[str, str]:
        """Folder name -> class name by the label rule, refusing a folder that names no
        class, two folders of one class and folders that mix numbers and other names."""
        classes = dict(zip(names, canonical_labels(
            names, lambda i: f"{folder}: class folder {names[i]!r}",
            "rename the folder").tolist(), strict=True))
        by_class: dict[str, list[str]] = {}
        for name, label in classes.items():
            by_class.setdefault(label, []).append(name)
        for label, same in by_class.items():
            if label == "":
                raise DataError(f"{folder}: class folder {same[0]!r} names no class; rename it")
            if len(same) > 1:
                raise DataError(
                    f"{folder}: class folders {', '.join(map(repr, same))} are all the class "
                    f"{label!r} (the label rule of docs/own-data.md reads 1, 01 and 1.0 as the "
                    "class 1); merge them into one folder or rename them apart"
                )
        check_one_kind(classes.values(), f"{folder}: class folders", "rename the stray folders")
        return classes

    def _read_all(self, images: dict[str, list[tuple[str, Path]]]) -> dict[str, np.ndarray]:
        """Every split's images as float32 [N, C, H, W] in [0, 1], in one shared mode and
        size (checked across all splits: a model takes one input shape)."""
        from PIL import Image, ImageMode, UnidentifiedImageError

        loaded: dict[str, list[np.ndarray]] = {}
        first: dict[str, tuple[Path, Any]] = {}
        for split, entries in images.items():
            loaded[split] = []
            for _, path in entries:
                try:
                    with Image.open(path) as opened:
                        opened.load()
                        image = opened.copy()
                # DecompressionBombError: a header claiming a huge size (more than twice
                # Pillow's MAX_IMAGE_PIXELS), which would not fit in memory
                except (UnidentifiedImageError, OSError, ValueError,
                        Image.DecompressionBombError) as exc:
                    raise DataError(f"{path}: unreadable image ({exc}); replace or remove "
                                    "the file") from exc
                sample = np.dtype(ImageMode.getmode(image.mode).typestr)
                if sample.itemsize != 1:
                    raise DataError(
                        f"{path}: image mode {image.mode} has {8 * sample.itemsize}-bit "
                        f"{'float ' if sample.kind == 'f' else ''}samples, which cannot be "
                        "converted to 8 bits per channel without clipping; convert the images to "
                        "8 bits (rescaled to 0..255) before preparing them"
                    )
                if self.mode is None:
                    self._check_same("mode", image.mode, path, first,
                                     "set data.source.mode to L or RGB to convert them")
                    if image.mode not in MODES:
                        raise DataError(f"{path}: image mode {image.mode}; set "
                                        "data.source.mode to L or RGB to convert it")
                else:
                    image = image.convert(self.mode)
                if self.size is None:
                    self._check_same("size", image.size, path, first,
                                     "set data.source.size=[height,width] to resize them")
                else:
                    height, width = self.size
                    image = image.resize((width, height), Image.Resampling.BILINEAR)
                pixels = np.asarray(image, dtype=np.float32) / 255.0  # [H, W] or [H, W, 3]
                loaded[split].append(pixels[None] if pixels.ndim == 2 else
                                     pixels.transpose(2, 0, 1))
        return {split: np.stack(arrays) for split, arrays in loaded.items()}

    @staticmethod
    def _check_same(what: str, value: Any, path: Path, first: dict[str, tuple[Path, Any]],
                    fix: str) -> None:
        seen = first.setdefault(what, (path, value))
        if seen[1] != value:
            shown = (lambda v: f"{v[0]}x{v[1]}") if what == "size" else str
            raise DataError(
                f"{path}: image {what} {shown(value)} differs from {shown(seen[1])} of "
                f"{seen[0]}; the images have mixed {what}s: {fix}"
            )
