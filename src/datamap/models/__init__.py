"""Models: the LightningModule classifier and its backbones."""

from datamap.models.backbones import MLP, SmallCNN
from datamap.models.classifier import Classifier

__all__ = ["MLP", "Classifier", "SmallCNN"]
