#!/usr/bin/env bash
# The test command: installs what is missing, checks style, runs every test.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/lint-imports --no-cache
.venv/bin/pytest "$@"
