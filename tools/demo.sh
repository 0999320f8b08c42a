#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions run from the EXIT trap (shellcheck cannot see it)
# End-to-end demo on this host: start a compute-scheduler and a compute-agent
# from the project venv, wait until the agent's host is registered, then run
# `computectl demo` against the test guest.  Both services are always stopped
# again (SIGTERM, SIGKILL after 10 s) and the temp dir removed.  The exit code
# is computectl's.
#
# Needs: make venv services test-guest (i.e. run it as `make demo`).
#
# Environment:
#   VENV        virtualenv (default: <repo>/.venv)
#   GUEST_DIR   test guest built by tools/build-test-guest.sh
#               (default: /var/lib/compute-driver/test-guest)
set -euo pipefail

REPO_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$REPO_TOP/.venv}
VENV=$(realpath -m -- "$VENV")  # relative VENV: relative to the caller's cwd
GUEST_DIR=${GUEST_DIR:-/var/lib/compute-driver/test-guest}
STATE_PATH=/var/lib/compute-driver/demo
BROKER=127.0.0.1:5672
VHOST=compute-driver-demo
HOST_WAIT=60    # seconds to wait for the agent's host to show up
STOP_GRACE=10   # seconds between SIGTERM and SIGKILL

log() { printf 'demo: %s\n' "$*"; }
die() { printf 'demo: ERROR: %s\n' "$*" >&2; exit 1; }

SCHEDULER=$VENV/bin/compute-scheduler
AGENT=$VENV/bin/compute-agent
COMPUTECTL=$VENV/bin/computectl

TMP=''
SCHED_PID=''
AGENT_PID=''

# Each service runs in its own session (setsid), so its pid is also its
# process-group id and stopping the group also stops any helper children.
group_alive() { [ -n "$1" ] && kill -0 -- "-$1" 2>/dev/null; }

stop_services() {
    local pid waited=0 alive
    for pid in "$AGENT_PID" "$SCHED_PID"; do
        if group_alive "$pid"; then
            log "stopping pid $pid (SIGTERM)"
            kill -TERM -- "-$pid" 2>/dev/null || true
        fi
    done
    while :; do
        alive=''
        for pid in "$AGENT_PID" "$SCHED_PID"; do
            group_alive "$pid" && alive="$alive $pid"
        done
        [ -z "$alive" ] && break
        if [ "$waited" -ge $((STOP_GRACE * 10)) ]; then
            log "still running after ${STOP_GRACE} s:$alive; sending SIGKILL"
            for pid in $alive; do
                kill -KILL -- "-$pid" 2>/dev/null || true
            done
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    for pid in "$AGENT_PID" "$SCHED_PID"; do
        if [ -n "$pid" ]; then
            wait "$pid" 2>/dev/null || true
        fi
    done
}

show_logs() {
    local f
    for f in "$STATE_PATH/demo-scheduler.log" "$STATE_PATH/demo-agent.log"; do
        [ -s "$f" ] || continue
        printf '\n----- last 40 lines of %s -----\n' "$f" >&2
        tail -n 40 "$f" >&2
    done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_services
    if [ "$rc" -ne 0 ]; then
        show_logs
    fi
    [ -n "$TMP" ] && rm -rf -- "$TMP"
    log "exit $rc"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- checks -----------------------------------------------------------------------

[ "$(id -u)" -eq 0 ] || die "must run as root (try: sudo make demo)"
for exe in "$SCHEDULER" "$AGENT" "$COMPUTECTL"; do
    [ -x "$exe" ] || die "$exe not found; run 'make venv' first"
done
[ -d "$GUEST_DIR" ] || die "test guest dir $GUEST_DIR not found; run 'make test-guest' first"

# --- config -----------------------------------------------------------------------

TMP=$(mktemp -d -t compute-driver-demo.XXXXXX)
CONF=$TMP/compute-driver.conf
HOST=$(/usr/bin/python3 -c 'import socket; print(socket.gethostname())')

install -d -m 0755 "$STATE_PATH"
# Start from an empty scheduler database so a host row left by an earlier run
# cannot satisfy the wait below before this agent has reported.
rm -f -- "$STATE_PATH"/scheduler.sqlite "$STATE_PATH"/scheduler.sqlite-journal \
    "$STATE_PATH"/scheduler.sqlite-wal "$STATE_PATH"/scheduler.sqlite-shm

# Each service its own broker user (tools/rabbitmq-users.sh, as an operator
# would): computectl may only call the scheduler, only the scheduler may
# cast to the agent, and the agent signs its reports with its host's key.
# Passwords go through stdin and files in $TMP (0700), never argv.
"$REPO_TOP/tools/rabbitmq-users.sh" -p "$VHOST" vhost
declare -A URL
for role in client scheduler agent; do
    password=$(/usr/bin/python3 -c 'import secrets; print(secrets.token_hex(16))')
    case $role in
        agent) user=agent-$HOST; args=(agent "$HOST" "$user") ;;
        *) user=cd-demo-$role; args=("$role" "$user") ;;
    esac
    printf '%s\n' "$password" | "$REPO_TOP/tools/rabbitmq-users.sh" -p "$VHOST" "${args[@]}" >/dev/null
    URL[$role]=rabbit://$user:$password@$BROKER/$VHOST
done
REPORT_SECRET=$(/usr/bin/python3 -c 'import secrets; print(secrets.token_hex(32))')
REPORT_KEY=$("$VENV/bin/python" -m compute_driver.rpc.report_signing "$HOST" <<<"$REPORT_SECRET")
# computectl signs its calls with the client key (an agent's credential could
# otherwise put a call into the scheduler's queue); only clients hold it.
CLIENT_KEY=$("$VENV/bin/python" -m compute_driver.rpc.report_signing --client <<<"$REPORT_SECRET")
(umask 077
printf '[DEFAULT]\ntransport_url = %s\n\n[agent_reports]\nsecret = %s\n' \
    "${URL[scheduler]}" "$REPORT_SECRET" >"$TMP/scheduler.conf"
printf '[DEFAULT]\ntransport_url = %s\n\n[agent_reports]\nkey = %s\n' \
    "${URL[agent]}" "$REPORT_KEY" >"$TMP/agent.conf"
printf '[client]\nkey = %s\n' "$CLIENT_KEY" >"$TMP/client.conf")

cat >"$CONF" <<EOF
[DEFAULT]
host = $HOST
transport_url = ${URL[client]}
state_path = $STATE_PATH

[database]
connection = sqlite:///$STATE_PATH/scheduler.sqlite

[image]
# The demo imports the test guest's files, named relative to this directory.
import_path = $GUEST_DIR

[agent]
report_interval = 2
EOF
log "config $CONF (passwords hidden; the services read $TMP/scheduler.conf or $TMP/agent.conf after it, computectl $TMP/client.conf):"
sed 's/^/    /; s/\(transport_url = rabbit:\/\/[^:]*:\)[^@]*@/\1***@/' "$CONF"

# --- services ---------------------------------------------------------------------

log "starting compute-scheduler (log: $STATE_PATH/demo-scheduler.log)"
setsid "$SCHEDULER" --config-file "$CONF" --config-file "$TMP/scheduler.conf" </dev/null >"$STATE_PATH/demo-scheduler.log" 2>&1 &
SCHED_PID=$!
log "starting compute-agent (log: $STATE_PATH/demo-agent.log)"
setsid "$AGENT" --config-file "$CONF" --config-file "$TMP/agent.conf" </dev/null >"$STATE_PATH/demo-agent.log" 2>&1 &
AGENT_PID=$!
log "scheduler pid $SCHED_PID, agent pid $AGENT_PID"

# host_listed: does `computectl host list` (JSON) mention $HOST?
host_listed() {
    local out
    out=$(timeout 15 "$COMPUTECTL" --config-file "$CONF" --config-file "$TMP/client.conf" -f json --timeout 5 host list 2>/dev/null) || return 1
    HOST="$HOST" /usr/bin/python3 -c '
import json, os, sys

want = os.environ["HOST"]

def walk(v):
    if isinstance(v, dict):
        return any(walk(x) for x in v.values())
    if isinstance(v, list):
        return any(walk(x) for x in v)
    return v == want

sys.exit(0 if walk(json.loads(sys.stdin.read() or "null")) else 1)
' <<<"$out"
}

log "waiting up to ${HOST_WAIT} s for host '$HOST' in 'computectl host list'"
deadline=$((SECONDS + HOST_WAIT))
until host_listed; do
    kill -0 "$SCHED_PID" 2>/dev/null || die "compute-scheduler exited early"
    kill -0 "$AGENT_PID" 2>/dev/null || die "compute-agent exited early"
    [ "$SECONDS" -lt "$deadline" ] ||
        die "host '$HOST' did not appear in 'computectl host list' within ${HOST_WAIT} s"
    sleep 1
done
log "host '$HOST' is registered"

# --- demo -------------------------------------------------------------------------

log "running: computectl demo --guest-dir $GUEST_DIR"
rc=0
"$COMPUTECTL" --config-file "$CONF" --config-file "$TMP/client.conf" demo --guest-dir "$GUEST_DIR" || rc=$?
if [ "$rc" -eq 0 ]; then
    log "computectl demo succeeded"
else
    log "computectl demo failed (exit $rc)"
fi
exit "$rc"
