#!/bin/sh
# The user-code image's install (deploy/Dockerfile runs it; tests/test_dagster.py runs it in a
# clean folder): the project with its Dagster extras in a virtual environment, then Meltano's
# plugins, so that a run fetches nothing when it starts.
#   deploy/install.sh PROJECT VENV [PLUGIN...]   (no PLUGIN: every plugin of meltano.yml)
set -eu
project=$1
venv=$2
shift 2
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet "$project[orchestrate,cluster]"
cd "$project"
"$venv/bin/meltano" install "$@"
