#!/usr/bin/env bash
# Create (or update) the RabbitMQ users of compute-driver's three roles, with
# vhost and topic permissions so that:
#   - a client can publish only to the public scheduler API (topic `scheduler`);
#   - only the scheduler publishes to the agents (`compute.<host>`, `compute_fanout`);
#   - only agents publish reports (topic `agent_reports`), and an agent
#     consumes only its own queue `compute.<host>`.
# The broker cannot keep an agent (write on `amq.default`, to answer calls) out
# of the `scheduler` queue: signatures do (README "Bus permissions"; the client's
# [client] key = `python -m compute_driver.rpc.report_signing --client < secret`).
# Idempotent: an existing user gets the new password and the permissions again.
#
# Usage (as root, on a broker node; the password is read from standard input,
# one line, so it never appears in `ps`):
#   tools/rabbitmq-users.sh [-p VHOST] [-e EXCHANGE] scheduler [USER]   (default user: scheduler)
#   tools/rabbitmq-users.sh [-p VHOST] [-e EXCHANGE] client [USER]      (default user: client)
#   tools/rabbitmq-users.sh [-p VHOST] [-e EXCHANGE] agent HOST [USER]  (default user: agent-HOST)
#   tools/rabbitmq-users.sh [-p VHOST] [-e EXCHANGE] notifications [USER]
#       (default user: notifications: a consumer of the scheduler's notifications)
#   tools/rabbitmq-users.sh [-p VHOST] vhost          (create the vhost; the roles do too)
# Options: -p VHOST (default /), -e EXCHANGE = [DEFAULT] control_exchange
# (default compute_driver), -n TOPIC = [notifications] topics (default
# versioned_notifications). Environment: RABBITMQCTL (default rabbitmqctl).
#
# How oslo.messaging's rabbit driver names what these patterns match:
#   exchange EXCHANGE (topic): RPC casts and calls, routing key TOPIC or
#     TOPIC.SERVER; notifications, routing key NOTIFY_TOPIC.PRIORITY;
#   queues TOPIC and TOPIC.SERVER, bound to EXCHANGE with their own name;
#   exchange TOPIC_fanout (fanout) with queues TOPIC_fanout_<32 hex>;
#   replies: queue reply_<32 hex>, sent through the default exchange
#     (`amq.default`) with the queue's name as routing key;
#   notifications: the sender declares queue NOTIFY_TOPIC.PRIORITY and binds it.
# RabbitMQ checks: declare/delete = configure on the name; queue.bind = write
# on the queue, read on the exchange, and the topic read pattern on the
# binding key; basic.publish = write on the exchange and, on a topic
# exchange, the topic write pattern on the routing key; consume = read.
set -euo pipefail

RABBITMQCTL=${RABBITMQCTL:-rabbitmqctl}
VHOST=/
EXCHANGE=compute_driver
NOTIFY=versioned_notifications
HEX='[0-9a-f]{32}'

die() { printf 'rabbitmq-users: ERROR: %s\n' "$*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }

while getopts 'p:e:n:h' opt; do
    case $opt in
        p) VHOST=$OPTARG ;;
        e) EXCHANGE=$OPTARG ;;
        n) NOTIFY=$OPTARG ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || usage

# quote: NAME with the regex metacharacters a host or exchange name may hold escaped.
quote() { printf '%s' "$1" | sed 's/[][\.*^$+?(){}|]/\\&/g'; }

name_ok() { [[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$ ]]; }

ctl() { "$RABBITMQCTL" -q "$@"; }

# ensure_user USER: create USER or set its password, from one line of stdin.
ensure_user() {
    local user=$1 password
    IFS= read -r password || true
    [ -n "$password" ] || die "no password on standard input for user $user"
    # NOTE: rabbitmqctl reads the password from stdin when it is not an
    # argument: it never shows in the process list.
    if ctl list_users | cut -f1 | grep -qxF -- "$user"; then
        printf '%s\n' "$password" | ctl change_password -- "$user" >/dev/null
    else
        printf '%s\n' "$password" | ctl add_user -- "$user" >/dev/null
    fi
}

# grant USER CONFIGURE WRITE READ TOPIC_WRITE TOPIC_READ (in VHOST, made if missing)
grant() {
    ensure_vhost
    ctl set_permissions -p "$VHOST" -- "$1" "$2" "$3" "$4"
    ctl set_topic_permissions -p "$VHOST" -- "$1" "$EXCHANGE" "$5" "$6"
    printf 'rabbitmq-users: %s on vhost %s: configure %s write %s read %s; topic %s write %s read %s\n' \
        "$1" "$VHOST" "$2" "$3" "$4" "$EXCHANGE" "$5" "$6"
}

ensure_vhost() {
    ctl list_vhosts | grep -qxF -- "$VHOST" || ctl add_vhost -- "$VHOST"
}

X=$(quote "$EXCHANGE")
N=$(quote "$NOTIFY")
NOTIFY_Q="$N\\.[a-z]+"

role=$1
shift
case $role in
    vhost)
        ensure_vhost
        ;;
    client)
        user=${1:-client}
        name_ok "$user" || die "bad user name: $user"
        ensure_user "$user"
        # Declares the control exchange (oslo does before it publishes) and its
        # reply queues; publishes only with routing key `scheduler`.
        grant "$user" \
            "^($X|reply_$HEX)$" \
            "^($X)$" \
            "^(reply_$HEX)$" \
            '^scheduler$' \
            '^$'
        ;;
    scheduler)
        user=${1:-scheduler}
        name_ok "$user" || die "bad user name: $user"
        ensure_user "$user"
        mine="scheduler|scheduler\\..+|scheduler_fanout_$HEX|agent_reports|agent_reports\\..+|agent_reports_fanout_$HEX"
        grant "$user" \
            "^($X|scheduler_fanout|agent_reports_fanout|compute_fanout|$mine|reply_$HEX|$NOTIFY_Q)$" \
            "^($X|compute_fanout|amq\\.default|$mine|$NOTIFY_Q)$" \
            "^($X|scheduler_fanout|agent_reports_fanout|$mine|reply_$HEX)$" \
            "^(compute\\..+|scheduler|$NOTIFY_Q)$" \
            "^(scheduler|scheduler\\..+|agent_reports|agent_reports\\..+|$NOTIFY_Q)$"
        ;;
    notifications)
        user=${1:-notifications}
        name_ok "$user" || die "bad user name: $user"
        ensure_user "$user"
        # Declares, binds and reads the notification queues; publishes nothing.
        grant "$user" \
            "^($X|$NOTIFY_Q)$" \
            "^($NOTIFY_Q)$" \
            "^($X|$NOTIFY_Q)$" \
            '^$' \
            "^($NOTIFY_Q)$"
        ;;
    agent)
        [ $# -ge 1 ] || usage
        host=$1
        name_ok "$host" || die "bad host name: $host"
        user=${2:-agent-$host}
        name_ok "$user" || die "bad user name: $user"
        ensure_user "$user"
        H=$(quote "$host")
        mine="compute|compute\\.$H|compute_fanout_$HEX"
        grant "$user" \
            "^($X|compute_fanout|$mine|reply_$HEX)$" \
            "^($X|amq\\.default|$mine)$" \
            "^($X|compute_fanout|$mine|reply_$HEX)$" \
            '^agent_reports$' \
            "^(compute|compute\\.$H)$"
        ;;
    *)
        usage
        ;;
esac
