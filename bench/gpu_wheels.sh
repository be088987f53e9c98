#!/usr/bin/env bash
# Wheels for bench/gpu.sh on a machine whose Python has torch but not dnasweep's other needs (the
# lent GPU machine: Python 3.12 with torch, numpy, PyYAML, tqdm and scikit-learn, no omegaconf).
# Run where pip reaches a registry; carry .whl/ to that machine (bench/gpu.sh installs what it finds
# there). Parts 1 and 2 need only these; part 3 (the sweep) needs Ray, whose wheel alone is larger than
# what such a machine is sent, so there it is skipped unless the stack is installed.
set -eu
cd "$(dirname "$0")/.."
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PYV=${PYV:-3.12}  # the target machine's Python
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
  --platform manylinux2014_x86_64 -d .whl "omegaconf==2.4.0"
ls -l .whl
