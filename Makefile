# Two entry points (see README): `make run` and `make test`. Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# 2-core machines: torch's intra-op threads fight Lightning's loop; one thread is much faster.
export OMP_NUM_THREADS ?= 1
export DVC_NO_ANALYTICS := 1
# dvc.yaml runs `python -m stages.X`: that must be this environment's python.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup browser run test test-fast lint docs params bench clean

setup: $(VENV)/.installed

# torch first, pinned: the CPU wheel. A bare `torch` requirement would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# The browser test of data_map.html drives Debian's Chromium through Playwright (Playwright's
# own browser download is not used). Installs it when missing; needs root (or `sudo make browser`).
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
# The optional loggers (TensorBoard, W&B, DVCLive, MLflow client): the tests prove each of them.
$(VENV)/.loggers: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev,loggers]'
	touch $@

run: setup
	$(VENV)/bin/dvc repro

# Two workers (one per core of a small machine), whole files per worker so a file's module
# fixtures (the reproduced pipeline) are built once.
PYTEST_PARALLEL ?= -n 2 --dist loadfile
test: setup browser $(VENV)/.loggers docs
	$(VENV)/bin/pytest $(PYTEST_PARALLEL) --durations=25

test-fast: setup browser $(VENV)/.loggers
	$(VENV)/bin/pytest $(PYTEST_PARALLEL) -m "not slow"

lint: setup
	$(VENV)/bin/ruff check src stages tests benchmarks

# The documentation site (mkdocs.yml, docs/) into site/ (git-ignored); --strict turns a broken
# link or a page missing from the nav into a failure. `make test` runs it first: it takes seconds.
docs: setup
	$(VENV)/bin/mkdocs build --strict --quiet

params: setup
	$(VENV)/bin/datamap compose

bench: setup
	$(PY) benchmarks/bench_scores.py
	$(PY) benchmarks/bench_recording.py
	$(PY) benchmarks/bench_html.py
	$(PY) benchmarks/bench_media.py
	$(PY) benchmarks/bench_text_bow.py
	$(PY) benchmarks/bench_sweep.py
	$(PY) benchmarks/bench_corrections.py

clean:
	rm -rf $(VENV) outputs multirun site
