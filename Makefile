# avsearch: `make demo` runs the main job on the built-in data, `make test` runs the tests.
# Both set up .venv first (torch pinned to the 2.13.0 CPU build; see README "Installing").
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0

.PHONY: setup demo test bench debian-packages graphviz clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -e ".[test,nni,serve,distributed]"
	touch $@

setup: $(VENV)/.installed debian-packages

# Debian packages, as COMMAND:PACKAGE: Graphviz's `dot` renders diagrams (the DOT text itself
# never needs it); espeak-ng lets the avdigits rebuild tests run instead of skipping.
DEB_TOOLS := dot:graphviz espeak-ng:espeak-ng
# Debian data packages, as FILE:PACKAGE (a data package has no command to look for):
# Fashion-MNIST's images are the source of the built-in image and video-text data (issues 15
# and 14), WordNet's glosses and synonyms of the video-text captions; without them the tests
# that build those data sets skip. PostgreSQL's server (initdb, pg_ctl; not on PATH) is what
# the shared-study tests start in a temporary folder (issue 16).
DEB_DATA := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz:dataset-fashion-mnist \
            /usr/share/wordnet/data.noun:wordnet-base \
            /usr/lib/postgresql:postgresql

debian-packages:
	@missing=""; for tool in $(DEB_TOOLS); do \
	  command -v $${tool%%:*} >/dev/null 2>&1 || missing="$$missing $${tool#*:}"; done; \
	for data in $(DEB_DATA); do \
	  [ -e $${data%%:*} ] || missing="$$missing $${data#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing:$$missing; run 'sudo apt-get install$$missing' (Debian/Ubuntu) or 'brew install$$missing' (macOS)"; \
	  fi; fi

graphviz: debian-packages

# The main job on the built-in data: search (csp, default budget), export, draw, evaluate.
demo: setup
	rm -rf runs/demo
	$(VENV)/bin/avsearch run --space av_nas --strategy csp --out runs/demo
	$(VENV)/bin/avsearch export runs/demo/best.arch
	$(VENV)/bin/avsearch draw runs/demo/best.arch
	$(VENV)/bin/avsearch eval runs/demo/best.arch

test: setup
	$(PY) -m pytest tests

bench: setup
	$(PY) benchmarks/bench_scan.py
	$(PY) benchmarks/bench_supernet.py
	$(PY) benchmarks/bench_eval.py
	$(PY) benchmarks/bench_h5_stream.py
	@if $(PY) -c 'import nni' 2>/dev/null; then $(PY) benchmarks/bench_vs_nni.py; else echo "bench_vs_nni skipped: needs the nni extra (pip install -e '.[nni]')"; fi

clean:
	rm -rf $(VENV) build dist *.egg-info runs benchmarks/results
