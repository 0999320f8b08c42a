#!/usr/bin/env bash
# Run the unit and functional test trees with the project venv's pytest.
#
# Usage: tools/run-tests.sh [pytest args...]   (args are passed to both runs)
#
# Each tree runs as its own pytest invocation.  "No tests collected" (pytest
# exit 5) is fine for one tree, but if neither tree ran a single test the run
# fails.  The last line printed is the combined summary, e.g.
#   12 passed, 0 failed, 3 skipped
# ("failed" counts failures and errors; ", N skipped" only when N > 0).
# Exit status: 0 when nothing failed/errored and at least one test ran.
#
# Each run also prints its slowest tests (pytest --durations; setup and
# teardown count, so a slow fixture shows up under its first user): where the
# suite's wall time goes, in every CI log.  DURATIONS=N changes how many
# (0: every one that took 1 s or more).
set -euo pipefail

REPO_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$REPO_TOP/.venv}
VENV=$(realpath -m -- "$VENV")  # relative VENV: relative to the caller's cwd
PYTEST=$VENV/bin/pytest
TREES=(tests/unit tests/functional)
DURATIONS=${DURATIONS:-30}

log() { printf 'run-tests: %s\n' "$*"; }
die() { printf 'run-tests: ERROR: %s\n' "$*" >&2; exit 2; }

cd "$REPO_TOP"
[ -x "$PYTEST" ] || die "$PYTEST not found; run 'make venv' (tools/install-deps.sh) first"

WORK=$(mktemp -d)
trap 'rm -rf -- "$WORK"' EXIT

# junit_counts FILE -> "tests failures errors skipped" summed over testsuites.
junit_counts() {
    "$VENV/bin/python" - "$1" <<'EOF'
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
tot = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
for s in suites:
    for k in tot:
        tot[k] += int(s.get(k, 0) or 0)
print(tot["tests"], tot["failures"], tot["errors"], tot["skipped"])
EOF
}

total=0 failed=0 skipped=0 passed=0
worst=0
for tree in "${TREES[@]}"; do
    name=$(basename "$tree")
    if [ ! -d "$tree" ]; then
        log "$tree: directory missing, nothing to run"
        continue
    fi
    xml=$WORK/$name.xml
    log "running $PYTEST $tree"
    rc=0
    "$PYTEST" "$tree" -q -p no:cacheprovider --junitxml="$xml" \
        --durations="$DURATIONS" --durations-min=1.0 "$@" || rc=$?
    case $rc in
        0) ;;
        1) worst=1 ;;  # tests failed: counted from the junit file below
        5) log "$tree: no tests collected" ;;
        *)
            # 2 interrupted, 3 internal error, 4 usage error
            log "$tree: pytest exited with $rc (interrupted, internal or usage error)"
            worst=1
            ;;
    esac
    if [ -s "$xml" ]; then
        read -r t f e s < <(junit_counts "$xml")
        total=$((total + t))
        failed=$((failed + f + e))
        skipped=$((skipped + s))
        passed=$((passed + t - f - e - s))
    elif [ "$rc" -ne 5 ]; then
        # pytest died before writing its report: count it as a failure
        failed=$((failed + 1))
    fi
done

status=0
if [ "$worst" -ne 0 ] || [ "$failed" -ne 0 ]; then
    status=1
fi
if [ "$total" -eq 0 ]; then
    log "FAILURE: no tests were collected in ${TREES[*]}"
    status=1
fi

[ "$passed" -ge 0 ] || passed=0
summary="$passed passed, $failed failed"
if [ "$skipped" -gt 0 ]; then
    summary="$summary, $skipped skipped"
fi
echo "$summary"
exit "$status"
