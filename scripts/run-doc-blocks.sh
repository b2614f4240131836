#!/usr/bin/env bash
# Runs the fenced shell blocks of README.md and docs/ as their fences say (```sh: as written;
# ```sh platform: with the all-in-one binary running on its default ports and a fresh DATA_DIR;
# ```sh no-run: <why>: listed, not run). CI runs it on its fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo xtask doc-blocks --run "$@"
