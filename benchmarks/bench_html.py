"""Benchmark the interactive data map (data_map.html): build time, size, and the page in Chromium.

(a) 100,000 synthetic examples (10 classes, 10 epochs, 8x8 image inputs, 10 % flipped labels;
    dynamics from ``benchmarks/synthetic.py``): the time of ``write_data_map_html`` with every
    point on the page (``max_points`` = 100,000) and with the default ``max_points`` (50,000, a
    sample), by step, and the page size;
(b) that 100,000-point page in headless Chromium (Debian's, software WebGL): time until the
    document is idle, a box selection round trip (drag -> table and histograms updated), a
    filter change, and frame times while panning;
(c) the built-in demo: ``dvc repro cartography`` in a temporary copy of the repository, the
    size of its page, and (``--screenshot``) the README's screenshot of it with a selection and
    a tooltip, ``docs/images/data_map_html.png``.

Writes ``benchmarks/results/html.md`` and prints it.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_html.py [--examples 100000] [--repeats 3]
        [--screenshot] [--workdir /tmp/datamap-bench-html]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "html.md"
SCREENSHOT = ROOT / "docs" / "images" / "data_map_html.png"
sys.path[:0] = [str(HERE), str(ROOT)]  # synthetic.py; tests.helpers (repo copies, Chromium)

from synthetic import synthetic_examples, write_synthetic  # noqa: E402

from tests.helpers import chromium, copy_repo, sh  # noqa: E402

CLASSES = 10
EPOCHS = 10

# JavaScript run in the page (see tests/test_data_map_browser.py for the same probes).
_VIEW = """const fig = Bokeh.documents[0].get_model_by_name("data_map");
  const view = [...Bokeh.index.roots][0].owner.get_one(fig);
  const canvas = view.canvas_view.el.getBoundingClientRect();"""
_SCREEN_XY = f"""([x, y]) => {{ {_VIEW}
  return [canvas.left + view.frame.x_scale.compute(x), canvas.top + view.frame.y_scale.compute(y)];
}}"""
_MODEL = "(name) => Bokeh.documents[0].get_model_by_name(name)"
_PAN_FRAMES = """async (steps) => {
  const fig = Bokeh.documents[0].get_model_by_name("data_map");
  const [start, end] = [fig.x_range.start, fig.x_range.end];
  const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));
  const times = [];
  await frame();
  for (let i = 1; i <= steps; i++) {
    const t0 = performance.now();
    const shift = (end - start) * 0.2 * Math.sin(i / steps * Math.PI);
    fig.x_range.setv({start: start + shift, end: end + shift});
    await frame();
    await frame();  // the frame after the one that drew the change
    times.push(performance.now() - t0);
  }
  fig.x_range.setv({start, end});
  return times;
}"""


def synthetic_inputs(n: int, seed: int = 0) -> tuple[dict, pa.Table]:
    """meta.json and a prepared train split for ids 0..n-1 of ``benchmarks/synthetic.py``:
    8x8 images (a class pattern plus noise), the given (possibly flipped) label, the true one."""
    from datamap.data.sources import RawData
    from datamap.data.splits import split_table

    ex = synthetic_examples(0, n, CLASSES, seed=seed)
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(0, 1, size=(CLASSES, 1, 8, 8)).astype(np.float32)
    x = np.clip(patterns[ex["true"]] + rng.normal(0, 0.15, size=(n, 1, 8, 8)), 0, 1)
    names = [f"class {k}" for k in range(CLASSES)]
    raw = RawData(labels=ex["gold"], ids=ex["ids"], class_names=names, x=x.astype(np.float32))
    table = split_table(raw, "train", clean_labels=ex["true"])
    meta = {"class_names": names, "num_classes": CLASSES,
            "input_kind": "image", "input_shape": [1, 8, 8]}
    return meta, table


def build_synthetic(n: int, work: Path, repeats: int):
    """(a): timed page builds; returns table rows, the path of the full page and the scores."""
    from datamap import interactive
    from datamap.io import write_json, write_parquet
    from datamap.scoring.scores import compute_scores

    prepared = work / "prepared"
    meta, table = synthetic_inputs(n)
    write_parquet(prepared / "train.parquet", table)
    write_json(prepared / "meta.json", meta)
    dynamics = write_synthetic(work / "dynamics.parquet", n, EPOCHS, CLASSES)
    scores = compute_scores(dynamics)

    # time each step the way write_data_map_html runs it
    steps = {"most_predicted": 0.0, "input_previews": 0.0, "data_map_page": 0.0}
    originals = {name: getattr(interactive, name) for name in steps}

    def timed(name):
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return originals[name](*args, **kwargs)
            finally:
                steps[name] += time.perf_counter() - start
        return run

    rows = []
    pages = {}
    for max_points in (n, 50_000):
        totals, parts = [], {name: [] for name in steps}
        for _ in range(repeats):
            for name in steps:
                steps[name] = 0.0
                setattr(interactive, name, timed(name))
            path = work / f"data_map_{max_points}.html"
            start = time.perf_counter()
            info = interactive.write_data_map_html(scores, dynamics, prepared, path, meta=meta,
                                                   max_points=max_points, seed=0)
            totals.append(time.perf_counter() - start)
            for name in steps:
                parts[name].append(steps[name])
        for name, fn in originals.items():
            setattr(interactive, name, fn)
        pages[max_points] = path
        med = {name: statistics.median(v) for name, v in parts.items()}
        rows.append(
            f"| {n:,} examples, {info.n_shown:,} on the page (max_points {max_points:,}) | "
            f"{statistics.median(totals):.2f} s | {med['most_predicted']:.2f} s | "
            f"{med['input_previews']:.2f} s | {med['data_map_page']:.2f} s | "
            f"{info.bytes / 2**20:.1f} MiB |")
    return rows, pages[n], scores


def bare_scatter_page(scores, out: Path) -> Path:
    """The floor to compare with: the same points as a bare Bokeh WebGL scatter (one colour, no
    tools, widgets or callbacks), also with inline resources."""
    from bokeh.embed import file_html
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    fig = figure(width=720, height=560, output_backend="webgl", name="data_map")
    fig.scatter(scores["variability"].to_numpy(np.float32),
                scores["confidence"].to_numpy(np.float32), size=4, fill_alpha=0.7)
    out.write_text(file_html(fig, INLINE, title="bare scatter"), encoding="utf-8")
    return out


def _open(browser, path: Path):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    start = time.perf_counter()
    page.goto(path.as_uri())
    page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0 && "
                           "Bokeh.documents[0].is_idle", timeout=300_000)
    return page, time.perf_counter() - start


_NEXT_FRAME = "() => new Promise((r) => requestAnimationFrame(() => r()))"


def browse(path: Path, bare: Path, browser) -> list[str]:
    """(b): the page in Chromium; returns table rows."""
    page, loaded = _open(browser, path)
    page.wait_for_timeout(500)

    status = f"({_MODEL})('selection_status').text"
    before = page.evaluate(status)
    page.mouse.move(*page.evaluate(_SCREEN_XY, [0.02, 0.9]))
    page.mouse.down()
    page.mouse.move(*page.evaluate(_SCREEN_XY, [0.3, 0.5]), steps=5)
    start = time.perf_counter()
    page.mouse.up()
    page.wait_for_function(f"() => ({_MODEL})('selection_status').text != {before!r}",
                           timeout=300_000)
    page.evaluate(_NEXT_FRAME)
    selected = time.perf_counter() - start
    indices = page.evaluate(f"({_MODEL})('points').selected.indices")

    unfiltered = page.evaluate(f"({_MODEL})('filter_status').text")
    start = time.perf_counter()
    page.get_by_role("button", name="hard-to-learn", exact=True).click()
    page.wait_for_function(f"() => ({_MODEL})('filter_status').text != {unfiltered!r}",
                           timeout=300_000)
    page.evaluate(_NEXT_FRAME)
    filtered = time.perf_counter() - start
    page.get_by_role("button", name="hard-to-learn", exact=True).click()
    page.evaluate(_NEXT_FRAME)

    frames = page.evaluate(_PAN_FRAMES, 20)
    page.close()
    bare_page, bare_loaded = _open(browser, bare)
    bare_frames = bare_page.evaluate(_PAN_FRAMES, 20)
    bare_page.close()

    def frame_times(times):
        return f"{statistics.median(times) / 1000:.2f} s ({max(times) / 1000:.2f} s)"

    return [
        f"| load until the document is idle | {loaded:.1f} s | {bare_loaded:.1f} s |",
        f"| box selection of {len(indices):,} points: drag -> table, histograms and map "
        f"redrawn | {selected:.2f} s | |",
        f"| region filter over every point, redrawn | {filtered:.2f} s | |",
        f"| panning (the selection still shown): time per frame, median (max) of 20 | "
        f"{frame_times(frames)} | "
        f"{frame_times(bare_frames)} |",
    ]


def demo(work: Path, browser, screenshot: bool) -> list[str]:
    """(c): the built-in demo's page in a temporary copy of the repository."""
    repo = copy_repo(work / "repo")
    start = time.perf_counter()
    sh("dvc", "repro", "cartography", cwd=repo, timeout=1800)
    took = time.perf_counter() - start
    path = repo / "data" / "cartography" / "data_map.html"
    rows = [f"| built-in demo (`dvc repro cartography`: prepare, train, cartography: "
            f"{took:.0f} s) | {path.stat().st_size / 2**20:.2f} MiB "
            f"({path.stat().st_size:,} bytes) |"]
    if screenshot:
        take_screenshot(path, browser, SCREENSHOT)
        rows.append(f"| screenshot | `{SCREENSHOT.relative_to(ROOT)}` |")
    return rows


def take_screenshot(path: Path, browser, out: Path) -> None:
    """The page coloured by region, with a box selection in the hard-to-learn corner and the
    tooltip of one selected example."""
    import pandas as pd

    points = pd.read_csv(path.parent / "map_points.csv")
    page = browser.new_page(viewport={"width": 1180, "height": 1010})
    page.goto(path.as_uri())
    page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0 && "
                           "Bokeh.documents[0].is_idle", timeout=120_000)
    page.get_by_role("button", name="region", exact=True).click()
    hard = points[points["region"] == "hard-to-learn"]
    x1 = float(hard["variability"].quantile(0.9))
    y1 = float(hard["confidence"].quantile(0.9))
    page.mouse.move(*page.evaluate(_SCREEN_XY, [0.0, y1]))
    page.mouse.down()
    page.mouse.move(*page.evaluate(_SCREEN_XY, [x1, -0.015]), steps=5)
    page.mouse.up()
    inside = hard[(hard["variability"] <= x1) & (hard["confidence"] <= y1)]
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    pick = inside.sort_values("variability").iloc[-len(inside) // 4]
    target = page.evaluate(_SCREEN_XY, [float(pick["variability"]), float(pick["confidence"])])
    page.mouse.move(target[0] + 30, target[1] - 30)
    page.mouse.move(*target, steps=4)
    page.locator(".bk-tooltip-content").first.wait_for(state="visible")
    page.wait_for_timeout(300)
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out))
    page.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--screenshot", action="store_true",
                   help=f"also write {SCREENSHOT.relative_to(ROOT)}")
    p.add_argument("--workdir", default="/tmp/datamap-bench-html")
    args = p.parse_args(argv)
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    import bokeh

    build_rows, full_page, scores = build_synthetic(args.examples, work / "synthetic",
                                                    args.repeats)
    bare = bare_scatter_page(scores, work / "synthetic" / "bare_scatter.html")
    with chromium() as browser:
        browser_rows = browse(full_page, bare, browser)
        demo_rows = demo(work / "demo", browser, args.screenshot)
        version = browser.version
    command = "OMP_NUM_THREADS=1 python benchmarks/bench_html.py " + shlex.join(
        argv if argv is not None else sys.argv[1:])
    text = "\n".join([
        "# Interactive data map benchmark",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; Python "
        f"{platform.python_version()}, Bokeh {bokeh.__version__}, Chromium {version} "
        "(headless, `--disable-gpu`: WebGL in software); OMP_NUM_THREADS=1.",
        "",
        f"## Building the page: {args.examples:,} synthetic examples",
        "",
        f"{CLASSES} classes, {EPOCHS} epochs, 8x8 image inputs (a PNG thumbnail each), 10 % "
        f"flipped labels. Median of {args.repeats} builds; `write_data_map_html` from the "
        "scores (computing the scores is not included).",
        "",
        "| case | total | most-predicted label | input thumbnails | page (Bokeh) | size |",
        "|---|---:|---:|---:|---:|---:|",
        *build_rows,
        "",
        f"## The {args.examples:,}-point page in Chromium",
        "",
        "Chromium here has no GPU: WebGL runs in software (SwiftShader) on the 2 shared cores, so "
        "every redraw of 100,000 points takes seconds. The *bare scatter* column is the floor: "
        "the same points in a plain Bokeh WebGL scatter, one colour, no widgets or callbacks.",
        "",
        "| step | the page | bare scatter |",
        "|---|---:|---:|",
        *browser_rows,
        "",
        "## The built-in demo",
        "",
        "| | |",
        "|---|---:|",
        *demo_rows,
        "",
    ])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
