"""datamap: dataset cartography as a reproducible DVC + Hydra + Lightning pipeline."""

from datamap.io import ConfigError, DataError, DatamapError

__all__ = ["ConfigError", "DataError", "DatamapError"]
__version__ = "0.1.0"
