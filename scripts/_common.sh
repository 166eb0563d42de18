# shellcheck shell=bash disable=SC2034  # the variables are for the scripts that source this
# Shared by scripts/build, submit, cluster-up and cluster-down. Source it; do not run it.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LAKEML_VENV:-$REPO_ROOT/.venv}"
PY="$VENV/bin/python"
DIST_DIR="$REPO_ROOT/dist"
BUILD_DIR="$REPO_ROOT/build"
ENV_ARCHIVE="$DIST_DIR/lakeml-env.tar.gz"

die() {
    echo "$(basename "$0"): error: $*" >&2
    exit 2
}

log() {
    echo "[$(basename "$0")] $*" >&2
}

require_venv() {
    [[ -x "$PY" ]] || die "no Python venv at $VENV (create it and 'pip install -e .[test,build]', or set LAKEML_VENV)"
}

# SPARK_HOME = the installed pyspark package folder, which carries bin/spark-class and bin/spark-submit.
spark_home() {
    require_venv
    "$PY" -c 'import os, pyspark; print(os.path.dirname(os.path.realpath(pyspark.__file__)))'
}

# The one project wheel in dist/ (empty when there is none).
project_wheel() {
    local wheels=()
    shopt -s nullglob
    wheels=("$DIST_DIR"/lakeml-*.whl)
    shopt -u nullglob
    if ((${#wheels[@]} > 1)); then
        die "more than one wheel in $DIST_DIR: ${wheels[*]} (run scripts/build --clean)"
    fi
    if ((${#wheels[@]} == 1)); then
        echo "${wheels[0]}"
    fi
}

# A TCP port that is free on 127.0.0.1 right now.
free_port() {
    "$PY" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# Seconds since the epoch with a fraction, for timings.
now() {
    date +%s.%N
}

elapsed() {
    # elapsed START -> seconds since START, one decimal
    awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.1f", e - s }'
}

# The script's leading comment block (after the shebang), as help text.
usage() {
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
}
