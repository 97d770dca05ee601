#!/usr/bin/env bash
# Runs the airgate-airflow tests: unit tests and a real Airflow 3 run through the airgate binary.
# Creates (or reuses) a virtualenv with the pinned versions of requirements-test.txt, installs
# this package from the repository into it, and runs pytest. The venv is cached under
# ${AIRGATE_AIRFLOW_VENV_ROOT:-~/.cache/airgate} keyed by the pins, so reruns skip the install.
# AIRGATE_BIN names the gateway binary (default: target/debug/airgate of this repository).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"

die() { echo "run-tests.sh: $*" >&2; exit 1; }

command -v "$python" >/dev/null || die "$python not found (Python 3.10+ is needed)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "$python is older than 3.10"

pins="$(sha256sum "$here/requirements-test.txt" | cut -c1-16)"
pyver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
root="${AIRGATE_AIRFLOW_VENV_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/airgate}"
venv="$root/airflow-venv-py$pyver-$pins"
mkdir -p "$root"

# One installer at a time; a venv counts only once its marker says the install finished.
exec 9>"$root/.lock"
flock 9
if [ ! -e "$venv/.installed" ]; then
    rm -rf "$venv"
    echo "run-tests.sh: creating $venv (one-time: installs Airflow from PyPI)" >&2
    "$python" -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements-test.txt" \
        || die "pip could not install requirements-test.txt"
    touch "$venv/.installed"
fi
# The package under test, always from this checkout.
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
    --force-reinstall "$here" || die "pip could not install $here"
rm -rf "$here/build" "$here/src/airgate_airflow.egg-info"
flock -u 9

export AIRGATE_BIN="${AIRGATE_BIN:-$repo/target/debug/airgate}"
[ -x "$AIRGATE_BIN" ] || die "no airgate binary at $AIRGATE_BIN (cargo build, or set AIRGATE_BIN)"
cd "$here"
exec "$venv/bin/python" -m pytest -p no:cacheprovider "$@"
