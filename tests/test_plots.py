"""The data map figure, its points, and the review grid."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from datamap import scoring as S
from datamap.cartography.figures import plot_data_map, plot_points_frame, plot_review_grid
from datamap.errors import DataError


def fake_scores(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0, 1, n)
    var = rng.uniform(0, 0.45, n) * np.sqrt(conf * (1 - conf)) * 2
    df = pd.DataFrame({
        "id": rng.permutation(10 * n)[:n],
        "confidence": conf,
        "variability": var,
        "correctness": rng.integers(0, 6, n) / 5,
    })
    df["region"] = S.assign_regions(df)
    return df


def test_png_is_written_and_deterministic(tmp_path):
    df = fake_scores(300)
    a = plot_data_map(df, tmp_path / "a.png", title="Digits")
    plot_data_map(df.sample(frac=1.0, random_state=3), tmp_path / "b.png", title="Digits")
    data = (tmp_path / "a.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data == (tmp_path / "b.png").read_bytes()  # same scores, any row order
    assert b"Software" not in data and b"matplotlib" not in data.lower()
    assert a.n_examples == a.n_shown == 300
    assert a.title == "Digits — 300 examples"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]  # no temp left


def test_subsample_above_max_points_is_stated_in_the_title(tmp_path):
    df = fake_scores(500)
    info = plot_data_map(df, tmp_path / "m.png", max_points=120, seed=4)
    assert (info.n_examples, info.n_shown) == (500, 120)
    assert "120 of 500 examples shown (random subsample, seed 4)" in info.title
    other = plot_data_map(df, tmp_path / "n.png", max_points=120, seed=5)
    assert (tmp_path / "m.png").read_bytes() != (tmp_path / "n.png").read_bytes()
    assert "seed 5" in other.title


def test_points_frame_is_the_same_seeded_subsample():
    df = fake_scores(400)
    points = plot_points_frame(df, max_points=50, seed=1)
    assert list(points.columns) == ["id", "confidence", "variability", "correctness", "region"]
    assert len(points) == 50 and points["id"].is_monotonic_increasing
    again = plot_points_frame(df.iloc[::-1], max_points=50, seed=1)
    pd.testing.assert_frame_equal(points, again)
    merged = points.merge(df, on="id", suffixes=("", "_src"))
    np.testing.assert_array_equal(merged["confidence"], merged["confidence_src"])
    assert set(points["region"]) <= set(S.REGIONS)
    everything = plot_points_frame(df, max_points=1000)
    assert len(everything) == 400


def test_missing_columns_are_refused(tmp_path):
    with pytest.raises(DataError, match="variability"):
        plot_data_map(fake_scores(10).drop(columns="variability"), tmp_path / "x.png")
    with pytest.raises(DataError, match="no examples"):
        plot_data_map(fake_scores(10).iloc[:0], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_review_grid_is_deterministic_and_captions_each_image(tmp_path):
    rng = np.random.default_rng(0)
    queue = pd.DataFrame({"id": [7, 3, 11], "given_label": ["1", "7", "4"],
                          "model_label": ["7", "1", "9"]})
    images = {i: rng.random((1, 8, 8)).astype(np.float32) for i in (3, 7, 11)}
    plot_review_grid(queue, images, tmp_path / "a.png")
    plot_review_grid(queue, images, tmp_path / "b.png")
    data = (tmp_path / "a.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and b"Software" not in data
    assert data == (tmp_path / "b.png").read_bytes()
    rgb = {i: rng.random((3, 8, 8)).astype(np.float32) for i in (3, 7, 11)}
    plot_review_grid(queue.head(2), rgb, tmp_path / "c.png", max_images=1)
    assert (tmp_path / "c.png").read_bytes() != data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "c.png"]
