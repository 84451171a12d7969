"""Data: raw sources, the prepare stage (splits, label noise, control shift), and loaders."""

from datamap.data.prepare import PreparedSplit, prepare, read_meta, read_split
from datamap.data.shift import FeatureNoise, ImageShift
from datamap.data.sources import DigitsSource, RawData, TabularFileSource

__all__ = [
    "DigitsSource",
    "FeatureNoise",
    "ImageShift",
    "PreparedDataModule",
    "PreparedSplit",
    "RawData",
    "TabularFileSource",
    "prepare",
    "read_meta",
    "read_split",
]


def __getattr__(name: str):
    # The DataModule imports Lightning; load it only when asked for.
    if name == "PreparedDataModule":
        from datamap.data.module import PreparedDataModule

        return PreparedDataModule
    raise AttributeError(name)
