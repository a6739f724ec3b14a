#!/usr/bin/env bash
# Start or stop a single-node SLURM cluster on localhost for testing the
# Snakemake slurm executor (snakemake-executor-plugin-slurm).
#
# Usage:
#   tests/slurm/cluster.sh start    install packages if missing, write the
#                                   configs, start the daemons, wait until
#                                   the node is idle
#   tests/slurm/cluster.sh stop     cancel leftover jobs, stop the daemons
#   tests/slurm/cluster.sh env      print the export line that SLURM client
#                                   commands (sbatch, squeue, sacct) need
#   tests/slurm/cluster.sh status   show sinfo and squeue
#
# The machines this runs on have no systemd, so the script starts every
# daemon itself and stops each one by the process id in its pid file. All
# state (configs, munge key and socket, database, spool, logs, pid files)
# lives in $SLURM_TEST_DIR, and the system's /etc/slurm, /etc/munge and
# /etc/mysql are not read. Client commands find the config through
# SLURM_CONF, which `start` and `env` print, and sbatch passes it on to the
# jobs (the plugin submits with --export=ALL).
#
# Environment:
#   SLURM_TEST_DIR          state directory (default /tmp/concepts-slurm)
#   SLURM_TEST_ACCOUNTING   slurmdbd (default) or none, see below
#   SLURM_TEST_PARTITION    name of the only partition (default debug)
#   SLURM_TEST_CTLD_PORT    slurmctld port (default 6817)
#   SLURM_TEST_SLURMD_PORT  slurmd port (default 6818)
#   SLURM_TEST_DBD_PORT     slurmdbd port (default 6819)
#   SLURM_TEST_DB_PORT      MariaDB port on 127.0.0.1 (default 13306)
#   SLURM_TEST_WAIT         seconds to wait for each daemon (default 30)
#
# Accounting decides how Snakemake's slurm plugin (2.8.0) can see jobs:
#   slurmdbd  A private MariaDB on 127.0.0.1 and slurmdbd record every job,
#             so `sacct` works as on a university cluster. The plugin's
#             default status command (sacct whenever the sacct program is
#             installed) works without extra settings.
#   none      No database. `sacct` and `sacctmgr` exit non-zero, so the
#             plugin must be run with --slurm-status-command squeue, or it
#             never learns that a job ended and Snakemake waits forever.
#             squeue lists a finished job for MinJobAge seconds, set below
#             well above the plugin's longest poll interval (180 s).
#             The plugin switches back to sacct when MinJobAge is below
#             3 x --slurm-init-seconds-before-status-checks.
# In both modes no account exists and none is enforced. With no
# slurm_account resource the plugin guesses an account from sacct, finds
# none and submits without -A, which this cluster accepts.

set -Eeuo pipefail

STATE_DIR=${SLURM_TEST_DIR:-/tmp/concepts-slurm}
ACCOUNTING=${SLURM_TEST_ACCOUNTING:-slurmdbd}
PARTITION=${SLURM_TEST_PARTITION:-debug}
CTLD_PORT=${SLURM_TEST_CTLD_PORT:-6817}
SLURMD_PORT=${SLURM_TEST_SLURMD_PORT:-6818}
DBD_PORT=${SLURM_TEST_DBD_PORT:-6819}
DB_PORT=${SLURM_TEST_DB_PORT:-13306}
WAIT_SECONDS=${SLURM_TEST_WAIT:-30}

CONF=$STATE_DIR/etc/slurm.conf
DBD_CONF=$STATE_DIR/etc/slurmdbd.conf
LOG_DIR=$STATE_DIR/log
RUN_DIR=$STATE_DIR/run
MUNGE_DIR=$STATE_DIR/munge
MUNGE_SOCKET=$MUNGE_DIR/munge.socket
DB_DIR=$STATE_DIR/mariadb
DB_SOCKET=$RUN_DIR/mariadb.sock

MUNGE_PID=$RUN_DIR/munged.pid
DB_PID=$RUN_DIR/mariadbd.pid
DBD_PID=$RUN_DIR/slurmdbd.pid
CTLD_PID=$RUN_DIR/slurmctld.pid
SLURMD_PID=$RUN_DIR/slurmd.pid

log() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

case "$ACCOUNTING" in
    slurmdbd|none) ;;
    *) die "SLURM_TEST_ACCOUNTING must be 'slurmdbd' or 'none', not '$ACCOUNTING'" ;;
esac

# Install Debian's packages for every program that is missing.
install_packages() {
    local packages=() program package
    local required="munged:munge mungekey:munge slurmctld:slurmctld slurmd:slurmd"
    required+=" sbatch:slurm-client squeue:slurm-client sinfo:slurm-client"
    required+=" scontrol:slurm-client scancel:slurm-client"
    if [ "$ACCOUNTING" = slurmdbd ]; then
        required+=" slurmdbd:slurmdbd mariadbd:mariadb-server"
        required+=" mariadb-install-db:mariadb-server mariadb:mariadb-client"
    fi
    for entry in $required; do
        program=${entry%%:*}
        package=${entry#*:}
        # The daemons live in /usr/sbin, which may be missing from PATH.
        if ! PATH=$PATH:/usr/sbin:/sbin command -v "$program" >/dev/null 2>&1; then
            case " ${packages[*]} " in *" $package "*) ;; *) packages+=("$package") ;; esac
        fi
    done
    [ "${#packages[@]}" = 0 ] && return 0
    [ "$(id -u)" = 0 ] || die "missing packages ${packages[*]}; installing them needs root"
    log "installing ${packages[*]} with apt-get"
    # A fresh machine may have empty package lists, so update them once.
    apt-get update -q
    # NOTE: where /usr/sbin/policy-rc.d does not deny service starts, the
    # maintainer scripts may start the system's munged or mariadbd. This
    # cluster does not use them (its own key, sockets, ports and data).
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}"
}

# Print the pid stored in FILE if that process is alive.
live_pid() {
    local file=$1 pid
    [ -s "$file" ] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    printf '%s\n' "$pid"
}

# Run COMMAND every 0.2 s until it succeeds; fail after SECONDS. Callers
# wrap client commands in `timeout`, because a client that cannot reach a
# daemon may retry for minutes.
wait_for() {
    local seconds=$1; shift
    local deadline=$((SECONDS + seconds))
    while [ "$SECONDS" -lt "$deadline" ]; do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}

# Print the last lines of a daemon's log to help explain a failed start.
show_log() {
    log "last lines of $1:"
    tail -n 20 "$1" >&2 2>/dev/null || true
}

write_slurm_conf() {
    local node=$1 cpus memory
    cpus=$(nproc)
    # slurmd drains a node whose configured RealMemory exceeds what it
    # detects, so take the value slurmd itself reports.
    memory=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    [ -n "$memory" ] || die "could not read RealMemory from 'slurmd -C'"

    cat >"$CONF" <<EOF
# Written by tests/slurm/cluster.sh for a throwaway one-node test cluster.
ClusterName=concepts-test
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root

# Daemons and client commands reach the private munged through this socket.
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET

StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log

# No cgroups: processes are tracked through /proc and tasks are not bound.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none

SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# A job without a memory request gets this many MB per CPU instead of the
# whole node, so that it leaves room for other jobs.
DefMemPerCPU=1000
# Seconds slurmctld keeps a finished job, and so squeue lists it.
MinJobAge=600
# A node that was down becomes usable as soon as slurmd registers.
ReturnToService=2
EOF

    if [ "$ACCOUNTING" = slurmdbd ]; then
        cat >>"$CONF" <<EOF

# Accounting through slurmdbd, so that sacct works.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# With slurmdbd this names the munge socket for talking to slurmdbd; a
# munged other than the system's needs it, despite the name.
AccountingStoragePass=$MUNGE_SOCKET
# jobacct_gather/linux records CPU time and memory for sacct (and for the
# plugin's --slurm-efficiency-report).
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
EOF
    else
        cat >>"$CONF" <<EOF

# No accounting: sacct fails, so the plugin must use squeue.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
EOF
    fi

    cat >>"$CONF" <<EOF
JobCompType=jobcomp/none

NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munged() {
    mkdir -p "$STATE_DIR/munge-key"
    chmod 700 "$STATE_DIR/munge-key"
    mungekey --create --force --keyfile="$STATE_DIR/munge-key/munge.key"
    # munged rejects a socket directory that others cannot traverse.
    chmod 755 "$STATE_DIR" "$MUNGE_DIR"
    munged --key-file="$STATE_DIR/munge-key/munge.key" \
        --socket="$MUNGE_SOCKET" --pid-file="$MUNGE_PID" \
        --log-file="$LOG_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed" \
        || { show_log "$LOG_DIR/munged.log"; return 1; }
    wait_for 10 live_pid "$MUNGE_PID" || { log "munged wrote no pid file"; return 1; }
}

# Run the mariadb client as root over the private Unix socket.
db_client() {
    mariadb --no-defaults --socket="$DB_SOCKET" --user=root "$@"
}

# Start a private MariaDB on 127.0.0.1 and slurmdbd in front of it.
start_accounting() {
    local password
    mariadb-install-db --no-defaults --user=root --datadir="$DB_DIR" \
        --auth-root-authentication-method=socket --skip-test-db \
        >"$LOG_DIR/mariadb-install-db.log" 2>&1 \
        || { show_log "$LOG_DIR/mariadb-install-db.log"; return 1; }
    # mariadbd has no option to daemonize, so setsid detaches it from this
    # shell; its pid comes from --pid-file like the other daemons'.
    setsid -f mariadbd --no-defaults --user=root --datadir="$DB_DIR" \
        --socket="$DB_SOCKET" --pid-file="$DB_PID" \
        --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
        --log-error="$LOG_DIR/mariadbd.log" --innodb-buffer-pool-size=64M \
        </dev/null >/dev/null 2>&1
    wait_for "$WAIT_SECONDS" db_client --execute='SELECT 1' \
        || { log "MariaDB does not answer"; show_log "$LOG_DIR/mariadbd.log"; return 1; }

    password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    db_client --execute="CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

    # slurmdbd refuses a config file that others can read.
    (umask 077 && cat >"$DBD_CONF" <<EOF
# Written by tests/slurm/cluster.sh for a throwaway one-node test cluster.
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
PidFile=$DBD_PID
LogFile=$LOG_DIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$password
StorageLoc=slurm_acct_db
EOF
    )
    # slurmdbd has no option for its config file: it reads slurmdbd.conf
    # from the directory of SLURM_CONF.
    SLURM_CONF=$CONF slurmdbd || { show_log "$LOG_DIR/slurmdbd.log"; return 1; }
    wait_for "$WAIT_SECONDS" timeout 10 sacctmgr --noheader list cluster \
        || { log "slurmdbd does not answer"; show_log "$LOG_DIR/slurmdbd.log"; return 1; }
}

# Succeed once slurmd has registered and the node accepts jobs.
node_is_idle() {
    timeout 10 sinfo --noheader --partition="$PARTITION" --format=%t | grep -qx idle
}

start() {
    local node pid_file
    for pid_file in "$MUNGE_PID" "$DB_PID" "$DBD_PID" "$CTLD_PID" "$SLURMD_PID"; do
        if live_pid "$pid_file" >/dev/null; then
            die "a daemon from $STATE_DIR is still running ($pid_file); run '$0 stop' first"
        fi
    done
    install_packages
    export PATH=$PATH:/usr/sbin:/sbin

    node=$(hostname -s)
    # srun and slurmstepd reach each other at the address that the node's
    # name resolves to, and all traffic must stay on the loopback interface.
    case "$(getent hosts "$node" | awk '{print $1; exit}')" in
        127.*|::1) ;;
        *) die "host name '$node' does not resolve to a loopback address; add it to /etc/hosts" ;;
    esac

    # Delete only a directory that an earlier start created.
    if [ -e "$STATE_DIR" ] && [ ! -e "$STATE_DIR/.cluster-sh-state" ]; then
        die "$STATE_DIR exists but was not made by $0; choose another SLURM_TEST_DIR"
    fi
    rm -rf "$STATE_DIR"
    mkdir -p "$STATE_DIR/etc" "$STATE_DIR/ctld" "$STATE_DIR/spool" \
        "$MUNGE_DIR" "$RUN_DIR" "$LOG_DIR"
    touch "$STATE_DIR/.cluster-sh-state"
    write_slurm_conf "$node"
    export SLURM_CONF=$CONF

    # If a step fails, stop what this call has started so far.
    trap 'log "start failed; stopping the daemons started so far"; stop_daemons' ERR

    start_munged
    if [ "$ACCOUNTING" = slurmdbd ]; then
        start_accounting
    fi
    # -c: cold start, so no job state from an earlier run is recovered.
    slurmctld -f "$CONF" -c || { show_log "$LOG_DIR/slurmctld.log"; false; }
    wait_for "$WAIT_SECONDS" timeout 10 scontrol ping \
        || { log "slurmctld does not answer"; show_log "$LOG_DIR/slurmctld.log"; false; }
    slurmd -f "$CONF" || { show_log "$LOG_DIR/slurmd.log"; false; }
    wait_for "$WAIT_SECONDS" node_is_idle \
        || { log "node not idle after ${WAIT_SECONDS}s"; sinfo >&2 || true
             show_log "$LOG_DIR/slurmd.log"; false; }
    trap - ERR

    log "cluster is up: partition '$PARTITION' on node $node, accounting $ACCOUNTING, state in $STATE_DIR"
    print_env
}

# Send SIGTERM to the process in FILE, and SIGKILL if it still runs 20 s later.
stop_pid_file() {
    local name=$1 file=$2 pid
    pid=$(live_pid "$file") || { rm -f "$file"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for 20 eval "! kill -0 $pid"; then
        log "$name (pid $pid) still runs 20 s after SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
    log "stopped $name (pid $pid)"
}

# Succeed when squeue lists no job that is still pending or running.
no_active_jobs() {
    [ -z "$(timeout 10 squeue --noheader --format=%i --states=PENDING,RUNNING,SUSPENDED,COMPLETING)" ]
}

stop_daemons() {
    local jobs
    export PATH=$PATH:/usr/sbin:/sbin SLURM_CONF=$CONF
    # Cancel leftover jobs first: their slurmstepd processes are not
    # children of slurmd and would outlive it.
    if live_pid "$CTLD_PID" >/dev/null && [ -f "$CONF" ]; then
        jobs=$(timeout 10 squeue --noheader --format=%i --states=PENDING,RUNNING,SUSPENDED,COMPLETING 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            log "cancelling jobs:" $jobs
            # shellcheck disable=SC2086
            timeout 10 scancel $jobs || true
            wait_for 20 no_active_jobs || log "jobs still active after 20 s"
        fi
    fi
    stop_pid_file slurmd "$SLURMD_PID"
    stop_pid_file slurmctld "$CTLD_PID"
    stop_pid_file slurmdbd "$DBD_PID"
    stop_pid_file mariadbd "$DB_PID"
    stop_pid_file munged "$MUNGE_PID"
}

print_env() {
    printf 'export SLURM_CONF=%q\n' "$CONF"
}

case "${1:-}" in
    start) start ;;
    stop) stop_daemons ;;
    env) print_env ;;
    status)
        export PATH=$PATH:/usr/sbin:/sbin SLURM_CONF=$CONF
        sinfo
        squeue --states=all
        ;;
    *)
        echo "usage: $0 start|stop|env|status" >&2
        exit 2
        ;;
esac
