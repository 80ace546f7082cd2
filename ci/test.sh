#!/usr/bin/env bash
# The README's test command: installs the test dependencies, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# Real Fashion-MNIST for the end-to-end training test (Debian package; tests skip without it).
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
    || echo "ci/test.sh: dataset-fashion-mnist not installed; real-data tests will be skipped"
fi
# torch==2.13.0 resolves to the local CPU wheel; an unpinned torch would pull CUDA packages.
python3 -m pip install -q --disable-pip-version-check torch==2.13.0 -e '.[test,plot]'
# Two worker processes (pytest-xdist): the suite is mostly single-threaded Python, so on 2 cores
# it takes about two thirds of one process's time (docs/performance.md). PYTEST_WORKERS=0 runs it in one.
python3 -m pytest -q -n "${PYTEST_WORKERS:-2}" "$@"
