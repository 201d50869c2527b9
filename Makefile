# The README's two commands: `make demo` and `make test`. Both set up everything they need, and
# only that: `make demo` the tap, Meltano and the demo's plugins; the other targets add theirs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The tap and Meltano (`make demo`, `make readme`).
DEMO_STAMP := $(VENV)/.installed-demo
# Everything else: test and lint tools, Dagster (orchestrate/, deploy/), the benchmark's plot.
STAMP := $(VENV)/.installed-stamp
DEMO_PLUGINS_STAMP := .meltano/.installed-demo
PLUGINS_STAMP := .meltano/.installed-stamp
# dbt (transform/), one Meltano utility per adapter: installed by `make transform` and `make test`,
# not by `make demo`.
DBT_DUCKDB_STAMP := .meltano/.dbt-duckdb-stamp
DBT_POSTGRES_STAMP := .meltano/.dbt-postgres-stamp
# The benchmark runs the tap from an environment like a user's: the tap alone, no dev tools.
BENCH_VENV := bench/out/venv
BENCH_STAMP := $(BENCH_VENV)/.installed-stamp

.PHONY: install install-demo plugins postgres demo transform dagster test test-quick lint bench clean plugin-ref

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install-demo: $(DEMO_STAMP)
$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[meltano]"
	touch $@

install: $(STAMP)
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[meltano,dev,bench,orchestrate,cluster]"
	touch $@ $(DEMO_STAMP)

# The extractor and target-jsonl: what `make demo` and the README's blocks run.
$(DEMO_PLUGINS_STAMP): meltano.yml $(DEMO_STAMP)
	$(BIN)/meltano install tap-optico target-jsonl
	touch $@

plugins: $(PLUGINS_STAMP)
# The extractor and every loader; the dbt utilities have their own targets below.
$(PLUGINS_STAMP): meltano.yml $(DEMO_STAMP)
	$(BIN)/meltano install --plugin-type extractor
	$(BIN)/meltano install --plugin-type loader
	touch $@ $(DEMO_PLUGINS_STAMP)

$(DBT_DUCKDB_STAMP): meltano.yml $(DEMO_STAMP)
	$(BIN)/meltano install dbt-duckdb
	touch $@

$(DBT_POSTGRES_STAMP): meltano.yml $(DEMO_STAMP)
	$(BIN)/meltano install dbt-postgres
	touch $@

# Debian's PostgreSQL server for the warehouse load tests (installed when missing and we can).
postgres:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "PostgreSQL is missing: install Debian's postgresql package for the warehouse tests"; fi; }

demo: $(DEMO_PLUGINS_STAMP)
	$(BIN)/python scripts/demo.py

# The sandbox's calls into output/warehouse.duckdb through Meltano, then every dbt model and test.
transform: plugins $(DBT_DUCKDB_STAMP)
	$(BIN)/python scripts/transform.py

# The Dagster UI on this project (orchestrate/), against the sandbox: http://127.0.0.1:$(DAGSTER_PORT)
DAGSTER_PORT ?= 3000
dagster: install plugins
	$(BIN)/python -m orchestrate.local --port $(DAGSTER_PORT)

# The whole suite, as CI runs it (.ci/run): about 17-25 minutes on 2 cores.
test: install plugins $(DBT_DUCKDB_STAMP) $(DBT_POSTGRES_STAMP) postgres
	$(BIN)/python -m pytest

# The in-process tests only (tests/conftest.py's QUICK files: no process started): under a minute.
test-quick: install
	$(BIN)/python -m pytest -m quick -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

$(BENCH_STAMP): pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet -e .
	touch $@

# Writes under bench/out/; `make bench UPDATE_RESULTS=1` also rewrites bench/RESULTS.md and the plot.
bench: install $(BENCH_STAMP)
	$(BIN)/python bench/run.py --venv $(BENCH_VENV) $(if $(UPDATE_RESULTS),--update-results)

clean:
	rm -rf $(VENV) .meltano .dagster output bench/out

# The generated parts: the README's settings table (from `tap-optico --about`), docs/targets.md's
# table, and plugin/tap-optico.yml (from meltano.yml and pyproject.toml's version).
.PHONY: readme
readme: $(DEMO_STAMP)
	$(BIN)/python scripts/readme.py

# dist/tap-optico.yml: plugin/tap-optico.yml installing the tap from this clone (docs/meltano.md).
# After `make demo`; it installs nothing (a venv shared with another clone stays as it is).
plugin-ref:
	@test -x $(BIN)/python || { echo "make plugin-ref: run make demo first"; exit 1; }
	$(BIN)/python scripts/readme.py --plugin-ref dist/tap-optico.yml
