"""Scoring: the score registry, per-example scores from training dynamics, the map's regions and
noise detection.

The notebook-facing API, loaded from its modules on first use (see ``datamap.data``)::

    from datamap.scoring import compute_scores, scores_from_logits, register_score, Score
    from datamap.scoring import write_scores_of  # any size, memory independent of it
"""

from __future__ import annotations

from datamap import lazy_attributes

_SCORES = "datamap.scoring.scores"
_REGIONS = "datamap.scoring.regions"
_REGISTRY = "datamap.scoring.registry"

#: Public name -> the module that defines it.
_EXPORTS = {
    "compute_scores": _SCORES,
    "scores_from_arrays": _SCORES,
    "scores_from_logits": _SCORES,
    "score_columns": _SCORES,
    "scores_schema": _SCORES,
    "scores_table": _SCORES,
    "read_scores": _SCORES,
    "write_scores": _SCORES,
    "ScoringPass": _SCORES,
    "write_scores_of": "datamap.scoring.streaming",
    "EASY": _REGIONS,
    "AMBIGUOUS": _REGIONS,
    "HARD": _REGIONS,
    "REGIONS": _REGIONS,
    "REGION_KEYS": _REGIONS,
    "DEFAULT_REGIONS": _REGIONS,
    "assign_regions": _REGIONS,
    "describe_regions": _REGIONS,
    "region_cutoffs": _REGIONS,
    "regions_rule": _REGIONS,
    "noise_detection": "datamap.scoring.noise",
    "Score": _REGISTRY,
    "ScoreInputs": _REGISTRY,
    "register_score": _REGISTRY,
    "unregister_score": _REGISTRY,
    "all_scores": _REGISTRY,
    "get_score": _REGISTRY,
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_attributes(__name__, _EXPORTS)
