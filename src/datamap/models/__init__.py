"""Models: the LightningModule classifier and its backbones.

Names are loaded from their modules on first use (see ``datamap.data``), so a stage that needs
only the classifier does not depend on every backbone's code.
"""

from __future__ import annotations

from datamap import lazy_attributes

#: Public name -> the module that defines it.
_EXPORTS = {
    "Classifier": "datamap.models.classifier",
    "MLP": "datamap.models.backbones",
    "SmallCNN": "datamap.models.backbones",
    "TextBagOfNgrams": "datamap.models.text",
    "RowAdagrad": "datamap.models.text",
    "HFTransformer": "datamap.models.hf",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_attributes(__name__, _EXPORTS)
