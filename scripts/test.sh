#!/usr/bin/env bash
# The README's test command: install everything the tests need, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
.venv/bin/python -m pytest "$@"
# The run above starts every exporter process with the default --web.workers (one worker
# per usable CPU). The tests that start exporter processes (tests/command.py) run once
# more with --web.workers=1, so both shapes stay tested (issue 15). Only for a whole run:
# when every argument is an option (CI passes -q), not when tests were named.
for arg in "$@"; do
    [[ $arg == -* ]] || exit 0
done
mapfile -t process_tests < <(grep -l 'exporter_command' tests/test_*.py)
SSL_EXPORTER_TEST_WORKERS=1 exec .venv/bin/python -m pytest "$@" "${process_tests[@]}"
