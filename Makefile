# Two commands: `make demo` (main job on the shipped default model) and `make test`.
# Each builds its own virtual environment in $(VENV) (with the test and ray extras); torch is installed first from
# TORCH_SPEC so CPU machines get the local CPU wheel. GPU users: make TORCH_SPEC="torch==2.13.0" \
#   PIP_EXTRA="--index-url https://download.pytorch.org/whl/cu128" (or any spec they like).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PIP_EXTRA ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv test test-fast demo clean browser

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(PIP_EXTRA) "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test,ray]"
	touch $(STAMP)

venv: $(STAMP)

# Headless Chromium for the report screenshot tests (Debian packages; installed only when missing).
browser:
	@test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium chromium-driver)

# The full suite (what CI runs): fast and slow tests. The Ray executor tests need the [ray] extra
# (installed above); WB_REQUIRE_OPTIONAL=1 makes tests needing Ray, Triton or the browser fail, not skip, if one is missing.
test: $(STAMP) browser
	WB_REQUIRE_OPTIONAL=1 $(PY) -m pytest -m "slow or not slow" $(PYTEST_ARGS)

# The fast subset for local iteration (plain `pytest` does the same).
test-fast: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m workbench.demo

clean:
	rm -rf $(VENV) wb-results

# kvpress bench (issue #21): the atlas's exported head labels inside NVIDIA kvpress, in its own venv
# (kvpress 0.5.5 needs transformers <5.3; the main venv has >=5.9). Not part of `make test`.
# Builds $(KVPRESS_VENV), runs kvpress_bench/tests, then the needle benchmark, which writes
# benchmarks/results/kvpress_needle.{md,png}. KVPRESS_PATTERN: a `workbench export RUN --format duo-attention` folder.
KVPRESS_VENV ?= .venv-kvpress
KVPRESS_PATTERN ?= kvpress_bench/data/organism-4l-duo
KVPRESS_ARGS ?=
KVPRESS_PY := $(KVPRESS_VENV)/bin/python
KVPRESS_STAMP := $(KVPRESS_VENV)/.installed

.PHONY: kvpress-bench

$(KVPRESS_STAMP): kvpress_bench/requirements.txt
	$(PYTHON) -m venv $(KVPRESS_VENV)
	echo '*' > $(KVPRESS_VENV)/.gitignore
	$(KVPRESS_PY) -m pip install --quiet $(PIP_EXTRA) "$(TORCH_SPEC)"
	$(KVPRESS_PY) -m pip install --quiet -r kvpress_bench/requirements.txt
	touch $(KVPRESS_STAMP)

kvpress-bench: $(KVPRESS_STAMP)
	PYTHONPATH=. $(KVPRESS_PY) -m pytest -c kvpress_bench/pytest.ini --rootdir=. -p no:cacheprovider kvpress_bench/tests
	PYTHONPATH=. $(KVPRESS_PY) -m kvpress_bench.bench --pattern $(KVPRESS_PATTERN) $(KVPRESS_ARGS)
