#!/usr/bin/env bash
# Run the whole suite against each supported Salt release, one virtualenv per
# release (.venv-salt<version>/, created on first use). Prints one line per
# release and exits non-zero if any failed. `make test` stays on the default
# (requirements-test.txt); this is the separate matrix command.
#
#   tools/matrix.sh                 # 3006.29 3007.16 3008.4
#   tools/matrix.sh 3007.16         # one release
#   PYTEST_ARGS="tests/unit" tools/matrix.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3006.29 3007.16 3008.4)
mkdir -p .matrix
status=0
for version in "${versions[@]}"; do
  venv=".venv-salt${version}"
  log=".matrix/salt-${version}.log"
  # (Re)install when the venv is missing or older than what it installs from.
  if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.installed-stamp" ] \
     || [ requirements-test.txt -nt "$venv/.installed-stamp" ] || [ setup.cfg -nt "$venv/.installed-stamp" ]; then
    $PYTHON -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    # The pinned test requirements, with this Salt release in place of the default.
    grep -v '^salt==' requirements-test.txt > ".matrix/requirements-${version}.txt"
    "$venv/bin/python" -m pip install -q "salt==${version}" -r ".matrix/requirements-${version}.txt" || { echo "salt ${version}: install failed"; status=1; continue; }
    "$venv/bin/python" -m pip install -q -e . || { echo "salt ${version}: package install failed"; status=1; continue; }
    touch "$venv/.installed-stamp"
  fi
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-} > "$log" 2>&1
  rc=$?
  summary=$(grep -E '^[0-9]+ (passed|failed)|[0-9]+ passed|[0-9]+ failed|error' "$log" | tail -n 1)
  echo "salt ${version}: exit ${rc}: ${summary:-see $log}"
  [ $rc -eq 0 ] || status=1
done
exit $status
