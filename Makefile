# The README's two commands: `make demo` and `make test`. Both set up everything they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PLUGINS_STAMP := .meltano/.installed-stamp
# dbt (transform/), one Meltano utility per adapter: installed by `make transform` and `make test`,
# not by `make demo`.
DBT_DUCKDB_STAMP := .meltano/.dbt-duckdb-stamp
DBT_POSTGRES_STAMP := .meltano/.dbt-postgres-stamp
# The benchmark runs the tap from an environment like a user's: the tap alone, no dev tools.
BENCH_VENV := bench/out/venv
BENCH_STAMP := $(BENCH_VENV)/.installed-stamp

.PHONY: install plugins postgres demo transform dagster test lint bench clean

install: $(STAMP)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,bench,orchestrate,cluster]"
	touch $@

plugins: $(PLUGINS_STAMP)
# The extractor and the loaders; the dbt utilities have their own targets below.
$(PLUGINS_STAMP): meltano.yml $(STAMP)
	$(BIN)/meltano install --plugin-type extractor
	$(BIN)/meltano install --plugin-type loader
	touch $@

$(DBT_DUCKDB_STAMP): meltano.yml $(STAMP)
	$(BIN)/meltano install dbt-duckdb
	touch $@

$(DBT_POSTGRES_STAMP): meltano.yml $(STAMP)
	$(BIN)/meltano install dbt-postgres
	touch $@

# Debian's PostgreSQL server for the warehouse load tests (installed when missing and we can).
postgres:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "PostgreSQL is missing: install Debian's postgresql package for the warehouse tests"; fi; }

demo: plugins
	$(BIN)/python scripts/demo.py

# The sandbox's calls into output/warehouse.duckdb through Meltano, then every dbt model and test.
transform: plugins $(DBT_DUCKDB_STAMP)
	$(BIN)/python scripts/transform.py

# The Dagster UI on this project (orchestrate/), against the sandbox: http://127.0.0.1:$(DAGSTER_PORT)
DAGSTER_PORT ?= 3000
dagster: plugins
	$(BIN)/python -m orchestrate.local --port $(DAGSTER_PORT)

test: plugins $(DBT_DUCKDB_STAMP) $(DBT_POSTGRES_STAMP) postgres
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

$(BENCH_STAMP): pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet -e .
	touch $@

bench: install $(BENCH_STAMP)
	$(BIN)/python bench/run.py --venv $(BENCH_VENV)

clean:
	rm -rf $(VENV) .meltano .dagster output bench/out

# The README's generated parts: the settings table (from `tap-optico --about`) and the
# extractor definition to paste into another project (from meltano.yml).
.PHONY: readme
readme: install
	$(BIN)/python scripts/readme.py
