"""The score registry: one entry makes a score computed, stored (typed by name), rankable and
evaluated; orientations are stated and published in docs/scores.md."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from datamap import scoring as S
from datamap.errors import ConfigError
from datamap.io import write_parquet
from datamap.scoring import registry as R
from datamap.selection.ranking import parse_spec, select

from .helpers import ROOT, make_table


def n_confident(x: R.ScoreInputs) -> np.ndarray:
    """Records in which the given label got at least half the probability."""
    return (x.p_gold >= 0.5).sum(axis=1, dtype=np.int64)


N_CONFIDENT = R.Score("n_confident", n_confident, "int64", "records with p_gold ≥ 0.5",
                      suspicious="low", why="a wrong label rarely gets half the probability")


def test_one_entry_adds_an_integer_score_everywhere(tmp_path):
    table = make_table(n=40, epochs=5, seed=2)
    with R.registered(N_CONFIDENT):
        df = S.compute_scores(table)
        assert df.columns[-2:].tolist() == ["n_confident", "region"]
        assert df["n_confident"].dtype == np.int64
        p_gold = table.to_pandas().pivot(index="id", columns="epoch", values="p_gold")
        np.testing.assert_array_equal(df["n_confident"], (p_gold.to_numpy() >= 0.5).sum(axis=1))

        arrow = S.scores_table(df)
        assert arrow.schema.field("n_confident").type == pa.int64()  # typed by name
        write_parquet(tmp_path / "scores.parquet", arrow)
        back = S.read_scores(tmp_path / "scores.parquet")
        assert back["n_confident"].dtype == np.int64
        np.testing.assert_array_equal(back["n_confident"], df["n_confident"])

        # rankable: highest first by name, lowest first with low_, ties by id
        by_key = np.lexsort((back["id"], -back["n_confident"]))
        top = select(back, "s", {"n_confident": 0.25}, seed=0)
        assert sorted(top["id"]) == sorted(back["id"].to_numpy()[by_key[:10]])
        low = select(back, "s", {"low_n_confident": 0.25}, seed=0)
        by_low = np.lexsort((back["id"], back["n_confident"]))
        assert sorted(low["id"]) == sorted(back["id"].to_numpy()[by_low[:10]])

        # and evaluated as a label-error score
        result = S.noise_detection(back, np.arange(40) % 4 == 0)
        assert "n_confident" in result["scores"]
    assert "n_confident" not in S.score_columns()
    with pytest.raises(ConfigError, match="unknown criterion"):
        parse_spec("s", {"n_confident": 0.1})


def test_a_score_that_is_not_a_label_error_score_is_excluded_with_its_reason():
    spread = R.Score("p_range", lambda x: np.ptp(x.p_gold, axis=1).astype(np.float64),
                     "float64", "max - min of p_gold", suspicious=None,
                     why="wide for ambiguous examples, narrow for easy and mislabelled ones")
    with R.registered(spread):
        df = S.compute_scores(make_table(n=30, epochs=4))
        result = S.noise_detection(df, np.arange(30) % 3 == 0)
    assert result["excluded"]["p_range"] == spread.why
    assert "p_range" not in result["scores"]


def test_criteria_resolve_through_the_registry():
    assert R.resolve_criterion("ambiguous")[0].name == "variability"
    assert R.resolve_criterion("ambiguous")[1] is True
    assert R.resolve_criterion("hard_to_learn")[0].name == "confidence"
    assert R.resolve_criterion("hard_to_learn")[1] is False
    assert R.resolve_criterion("easy_to_learn")[1] is True
    assert R.resolve_criterion("aum")[1] is True and R.resolve_criterion("low_aum")[1] is False
    assert R.resolve_criterion("never_learned") is None  # a flag, not a ranking
    assert R.resolve_criterion("region") is None and R.resolve_criterion("low_region") is None
    names = R.criterion_names()
    assert {"ambiguous", "hard_to_learn", "easy_to_learn", "el2n", "low_el2n"} <= set(names)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "region"}, "reserved"),
        ({"name": "low_conf"}, "reserved"),
        ({"name": "two words"}, "identifier"),
        ({"dtype": "float32"}, "dtype must be one of"),
        ({"suspicious": "up"}, "directions"),
        ({"why": " "}, "state its definition"),
        ({"needs": ("logits",)}, "unknown inputs"),
    ],
)
def test_bad_entries_are_refused(kwargs, message):
    entry = {"name": "x", "reduce": n_confident, "dtype": "int64", "definition": "d",
             "suspicious": None, "why": "because", **kwargs}
    with pytest.raises(ValueError, match=message):
        R.Score(**entry)


def test_names_and_aliases_are_unique():
    with pytest.raises(ValueError, match="'confidence' is already registered"):
        R.register_score(N_CONFIDENT.__class__(**{**N_CONFIDENT.__dict__, "name": "confidence"}))
    clash = R.Score("other", n_confident, "int64", "d", None, "why not",
                    aliases={"ambiguous": "high"})
    with pytest.raises(ValueError, match="'ambiguous' is already registered by 'variability'"):
        R.register_score(clash)
    assert "other" not in R.score_names()


def test_docs_score_table_is_the_registry():
    page = (ROOT / "docs" / "scores.md").read_text(encoding="utf-8")
    assert R.registry_table() in page, "docs/scores.md's score table differs: paste `datamap " \
                                       "list-scores` into its section 'The score table'"
    assert "| score | definition | type | suspicious when | why |" in page


def n_confident_score() -> R.Score:
    """A factory the ``scores`` config can name (tests.test_score_registry.n_confident_score)."""
    return N_CONFIDENT


def test_a_score_named_in_config_reaches_scores_and_selection():
    target = {"_target_": "tests.test_score_registry.n_confident_score", "_partial_": False}
    try:
        assert R.register_configured({"n_confident": target}) == ["n_confident"]
        assert R.register_configured({"n_confident": target}) == ["n_confident"]  # idempotent
        assert "n_confident" in S.compute_scores(make_table(n=12, epochs=4)).columns
        assert parse_spec("top", {"low_n_confident": 0.5})[0].column == "n_confident"
    finally:
        R.unregister_score("n_confident")
        R._CONFIGURED.discard("n_confident")


@pytest.mark.parametrize(("entry", "fragment"), [
    ({"confidence": {"_target_": "tests.test_score_registry.n_confident_score"}},
     "scores.confidence builds a score named 'n_confident'"),
    ({"n_confident": {"value": 1}}, "scores.n_confident needs a _target_"),
    ({"n_confident": {"_target_": "builtins.dict"}}, "gave dict, not a datamap.scoring.Score"),
    ({"n_confident": {"_target_": "no_such_module.score"}}, "could not be built"),
])
def test_bad_score_configs_are_refused_in_one_line(entry, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")) as err:
        R.register_configured(entry)
    assert "\n" not in str(err.value)
    assert "n_confident" not in R.score_names()


def test_the_code_deps_follow_a_score_target_into_the_repository():
    from datamap.pipeline.deps import Sources

    sources = Sources(ROOT)
    found = sources.target_modules({"scores": {"n": {
        "_target_": "tests.test_score_registry.n_confident_score"}}})
    assert found == {"tests.test_score_registry"}
    assert sources.module_file("tests.test_score_registry") == ROOT / "tests" / \
        "test_score_registry.py"
