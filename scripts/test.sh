#!/bin/bash
# The whole test suite: installs what the tests need (idempotent), then lint + mypy + pytest
# against a real sshd and real containers that the tests start and stop themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/inv test
