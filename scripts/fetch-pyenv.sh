#!/usr/bin/env bash
# Creates the test virtualenv ($1, or build/venv) with pip packages of tests/pyenv/requirements.txt
# (Django, django-cacheops, redis-py, matplotlib) on top of Debian's python3 packages
# (psycopg, pytest, protobuf), which it sees through --system-site-packages: hence Debian's
# /usr/bin/python3, not whatever python3 comes first on PATH.
# A later run with the same requirements does nothing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$root/build/venv}"
req="$root/tests/pyenv/requirements.txt"
stamp="$venv/.requirements"
if [ -x "$venv/bin/python" ] && cmp -s "$req" "$stamp"; then
  exit 0
fi
# Debian's python3 by path: a pyenv or other python3 first on PATH does not see its packages.
/usr/bin/python3 -m venv --system-site-packages "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
cp "$req" "$stamp"
echo "fetch-pyenv: $venv ready ($("$venv/bin/python" -m pip list --disable-pip-version-check 2>/dev/null | grep -iE '^(django|django-cacheops|redis|matplotlib) ' | tr -s ' ' | paste -sd, -))" >&2
