"""Benchmark the interactive data map (data_map.html): build time, size, and the page in Chromium.

(a) Synthetic points (``tests/helpers.py`` ``synthetic_points``: 10 classes, flipped labels) with
    ~100-character texts at 100,000, 550,000 and 1,000,000 points, and with 8x8 grey images at
    1,000,000. For each page: the median build time of ``build_page``, the page size, and in
    Chromium (Debian's, headless, ``--disable-gpu``; the page draws on the CPU, no WebGL): the
    first render (navigation start to the first map frame, the page's own
    ``performance.now()``), a pan step (one mouse move of a pan drag until the next map frame),
    a box selection round trip (mouse release until the frame with the table and histograms
    updated), a filter change (a region checkbox until its frame) and the hover latency (a
    mouse move onto a point until its tooltip shows). Every browser timing is the median over
    ``--repeats`` page loads of the median within each load (wall clock from Python, so
    Playwright's round trip of a few ms is included).
(b) The built-in demo: ``dvc repro cartography`` in a temporary copy of the repository, the
    size of its page, and (``--screenshot``) the README's screenshot of it coloured by region
    with a box selection and a tooltip, ``docs/images/data_map_html.png``.

Writes ``benchmarks/results/html.md`` and prints it.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_html.py [--repeats 3]
        [--sizes 100000,550000,1000000] [--no-demo] [--screenshot] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "html.md"
SCREENSHOT = ROOT / "docs" / "images" / "data_map_html.png"
sys.path[:0] = [str(ROOT)]  # tests.helpers: synthetic points, repository copies, Chromium

from workdir import private_workdir  # noqa: E402

from datamap.cartography.page import Images, Texts, build_page  # noqa: E402
from tests.helpers import PAGE_CLASSES as CLASSES  # noqa: E402
from tests.helpers import PAGE_REGION_RULE as REGION_RULE  # noqa: E402
from tests.helpers import (  # noqa: E402
    chromium,
    copy_repo,
    sh,
    synthetic_images,
    synthetic_points,
    synthetic_texts,
)

PAN_STEPS = 10
HOVERS = 5


def build(n: int, kind: str, repeats: int, out: Path) -> tuple[float, int]:
    """Median build time (s) and size (bytes) of the page, written to ``out``."""
    points = synthetic_points(n)
    preview = Texts(synthetic_texts(n)) if kind == "texts" else Images(synthetic_images(points))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        html = build_page(points, CLASSES, preview, title=f"Synthetic data map, {n:,} points",
                          region_rule=REGION_RULE)
        times.append(time.perf_counter() - start)
    data = html.encode("utf-8")
    out.write_bytes(data)
    return statistics.median(times), len(data)


def _next_frame(page, action) -> float:
    """Seconds from ``action()`` until the page has drawn a new frame of the map."""
    frames = page.evaluate("dataMap.frames")
    start = time.perf_counter()
    action()
    page.wait_for_function(f"() => dataMap.frames > {frames}", timeout=120_000)
    return time.perf_counter() - start


def browse(browser, path: Path) -> dict[str, float]:
    """One load of the page: its timings in ms (medians within the load)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(path.as_uri(), timeout=300_000)
    page.wait_for_function("() => document.body.dataset.state", timeout=300_000)
    assert page.evaluate("() => document.body.dataset.state") == "ready"
    out = {"first render": page.evaluate("dataMap.firstRender")}

    page.check("input[name='dm-tool'][value='pan']")
    x, y = page.evaluate("dataMap.toScreen(0.2, 0.5)")
    page.mouse.move(x, y)
    page.mouse.down()
    steps = [_next_frame(page, lambda k=k: page.mouse.move(x + 8 * k, y + 3 * (k % 2)))
             for k in range(1, PAN_STEPS + 1)]
    page.mouse.up()
    page.click("#dm-reset")
    out["pan step"] = statistics.median(steps) * 1000

    page.check("input[name='dm-tool'][value='box']")
    page.mouse.move(*page.evaluate("dataMap.toScreen(0.0, 0.95)"))
    page.mouse.down()
    page.mouse.move(*page.evaluate("dataMap.toScreen(0.25, 0.45)"), steps=4)
    out["box selection"] = _next_frame(page, page.mouse.up) * 1000
    out["selected"] = int(page.text_content("#dm-selection-status").split()[0].replace(",", ""))

    box = "#dm-region-filter input[value='2']"
    out["filter change"] = statistics.median(
        [_next_frame(page, lambda: page.click(box)) for _ in range(4)]) * 1000

    hovers = []
    for k in range(HOVERS):  # onto points of the dense easy corner, from an empty spot
        page.mouse.move(*page.evaluate("dataMap.toScreen(0.4, 0.05)"))
        page.wait_for_selector("#dm-tooltip", state="hidden")
        target = page.evaluate(f"dataMap.toScreen({0.004 + 0.002 * k}, 0.9)")
        start = time.perf_counter()
        page.mouse.move(*target)
        page.wait_for_selector("#dm-tooltip", state="visible")
        hovers.append(time.perf_counter() - start)
    out["hover"] = statistics.median(hovers) * 1000
    page.close()
    return out


def machine(browser_version: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} cores (shared with other work), {memory:.0f} GiB; "
            f"{platform.system()} {platform.release()}; Python {platform.python_version()}; "
            f"Chromium {browser_version} headless, `--disable-gpu` (no GPU).")


def demo(work: Path, browser, screenshot: bool) -> list[str]:
    """(b): the built-in demo's page in a temporary copy of the repository."""
    repo = copy_repo(work / "repo")
    start = time.perf_counter()
    sh("dvc", "repro", "cartography", cwd=repo, timeout=1800)
    took = time.perf_counter() - start
    path = repo / "data" / "cartography" / "data_map.html"
    size = path.stat().st_size
    rows = [f"| built-in demo (`dvc repro cartography`: prepare, train, cartography: "
            f"{took:.0f} s) | {size / 1e6:.2f} MB ({size:,} bytes) |"]
    if screenshot:
        take_screenshot(path, browser, SCREENSHOT)
        rows.append(f"| screenshot | `{SCREENSHOT.relative_to(ROOT)}` |")
    return rows


def take_screenshot(path: Path, browser, out: Path) -> None:
    """The page coloured by region, with a box selection in the hard-to-learn corner and the
    tooltip of one example."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(path.as_uri())
    page.wait_for_function("() => document.body.dataset.state", timeout=120_000)
    page.check("input[name='dm-colour'][value='region']")
    page.check("input[name='dm-tool'][value='box']")
    page.mouse.move(*page.evaluate("dataMap.toScreen(0.0, 0.35)"))
    page.mouse.down()
    page.mouse.move(*page.evaluate("dataMap.toScreen(0.15, 0.0)"), steps=5)
    page.mouse.up()
    target = page.evaluate("dataMap.toScreen(0.1, 0.9)")
    page.mouse.move(target[0] + 30, target[1] - 30)
    page.mouse.move(*target, steps=4)
    page.wait_for_timeout(300)
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out))
    page.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="100000,550000,1000000")
    parser.add_argument("--no-demo", action="store_true", help="skip (b), the demo's page")
    parser.add_argument("--screenshot", action="store_true",
                        help=f"write {SCREENSHOT.relative_to(ROOT)} from the demo's page")
    parser.add_argument("--workdir", default=None,
                        help="an empty or new directory of yours (default: a new private temp dir)")
    args = parser.parse_args(argv)

    sizes = [int(s) for s in args.sizes.split(",")]
    cases = [(n, "texts") for n in sizes] + [(max(sizes), "images")]
    work = private_workdir(args.workdir, "datamap-bench-html-")
    rows = []
    demo_rows: list[str] = []
    with chromium() as browser:
        version = browser.version
        for n, kind in cases:
            path = work / f"data_map_{n}_{kind}.html"
            built, size = build(n, kind, args.repeats, path)
            loads = [browse(browser, path) for _ in range(args.repeats)]
            med = {key: statistics.median(load[key] for load in loads) for key in loads[0]}
            preview = "texts ~100 chars" if kind == "texts" else "8x8 grey images"
            rows.append(
                f"| {n:,} | {preview} | {built:.1f} s "
                f"| {size / 1e6:.1f} MB ({size / 2**20:.1f} MiB) "
                f"| {med['first render'] / 1000:.2f} s | {med['pan step']:.0f} ms "
                f"| {med['box selection']:.0f} ms ({med['selected']:,.0f} selected) "
                f"| {med['filter change']:.0f} ms | {med['hover']:.0f} ms |")
            print(rows[-1], flush=True)
            path.unlink()
        if not args.no_demo:
            demo_rows = demo(work / "demo", browser, args.screenshot)
    command = "python benchmarks/bench_html.py " + shlex.join(
        argv if argv is not None else sys.argv[1:])
    text = "\n".join([
        "# Data map page benchmark",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Machine: {machine(version)}",
        "",
        f"Medians of {args.repeats} builds and {args.repeats} page loads (in each load: the "
        f"median of {PAN_STEPS} pan steps, 4 filter changes and {HOVERS} hovers; one box "
        "selection). Browser timings are wall clock from Python to the page's next frame, so "
        "they include Playwright's round trip. Goals: page < 60 MB, first render < 5 s, pan "
        "step and box selection < 200 ms at 1,000,000 points.",
        "",
        "| points | inputs | build | page | first render | pan step | box selection "
        "| filter change | hover |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        *(["| page | size |", "|---|---:|", *demo_rows, ""] if demo_rows else []),
    ])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
