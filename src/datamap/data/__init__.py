"""Data: sources, the prepare stage (splits, label noise, control sets, corrections), and
loaders.

Names are loaded from their modules on first use, so importing one submodule (say
``datamap.data.prepare``) does not import the others: a stage depends only on the modules it
really runs, which keeps DVC's code dependencies exact.
"""

from __future__ import annotations

from datamap import lazy_attributes

#: Public name -> the module that defines it.
_EXPORTS = {
    "DigitsSource": "datamap.data.sources",
    "RawData": "datamap.data.sources",
    "SourceData": "datamap.data.sources",
    "TableSource": "datamap.data.table",
    "ImageFolderSource": "datamap.data.image_folder",
    "MnistDigits": "datamap.data.mnist",
    "FeatureNoise": "datamap.data.shift",
    "ImageShift": "datamap.data.shift",
    "PreparedSplit": "datamap.data.splits",
    "read_meta": "datamap.data.splits",
    "read_split": "datamap.data.splits",
    "PreparedDataModule": "datamap.data.datamodule",
    "read_corrections": "datamap.data.corrections",
    "read_applied_corrections": "datamap.data.corrections",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_attributes(__name__, _EXPORTS)
