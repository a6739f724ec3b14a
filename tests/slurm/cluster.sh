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
# lives in $SLURM_TEST_DIR, and the system's /etc/munge and /etc/mysql are
# not read. The one file outside it is the symlink /etc/slurm/slurm.conf to
# the cluster's config, which `stop` removes again. It is needed because
# inside a job the plugin runs `srun` with most SLURM_* variables removed,
# SLURM_CONF among them (snakemake-executor-plugin-slurm-jobstep 0.6.1),
# so srun only finds the config at the default path. `start` fails rather
# than replace an /etc/slurm/slurm.conf that it did not create.
# Client commands outside jobs may also use SLURM_CONF, which `start` and
# `env` print.
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
#   SLURM_TEST_GPUS         number of fake GPUs on the node (default 1, see
#                           below; 0 for none)
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
#
# Fake GPUs: the node offers SLURM_TEST_GPUS generic resources of type gpu
# backed by empty files, so that a rule declaring `gpu=1` is scheduled
# (`sbatch --gpus=1`) and its job sees SLURM_GPUS_ON_NODE=1. No real GPU
# is behind them and SLURM leaves CUDA_VISIBLE_DEVICES unset (seen with
# SLURM 22.05): code in such a job must run on the CPU.
#
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
GPUS=${SLURM_TEST_GPUS:-1}

CONF=$STATE_DIR/etc/slurm.conf
SYSTEM_CONF=/etc/slurm/slurm.conf
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
case "$GPUS" in
    ''|*[!0-9]*) die "SLURM_TEST_GPUS must be a whole number, not '$GPUS'" ;;
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
    [ "$(id -u)" = 0 ] || die "missing packages: ${packages[*]}. Run as root to install them with apt-get"
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

# Run COMMAND every 0.2 s until it succeeds, and fail after SECONDS. Callers
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
# The default MailProg (/bin/mail) is not installed, and slurmctld logs an
# error for a missing one.
MailProg=/bin/true
EOF

    if [ "$ACCOUNTING" = slurmdbd ]; then
        cat >>"$CONF" <<EOF

# Accounting through slurmdbd, so that sacct works.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# Despite its name, with slurmdbd this is the munge socket used to talk to
# slurmdbd, which a munged other than the system's needs.
AccountingStoragePass=$MUNGE_SOCKET
# jobacct_gather/linux records CPU time and memory for sacct (and for the
# plugin's --slurm-efficiency-report).
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
# Store the plugin's --comment (rule_<name>_wildcards_<...>), so that
# "sacct -o JobID,Comment" shows which rule each job ran.
AccountingStoreFlags=job_comment
EOF
    else
        cat >>"$CONF" <<EOF

# No accounting: sacct fails, so the plugin must use squeue.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
EOF
    fi

    local gres_option=""
    if [ "$GPUS" -gt 0 ]; then
        write_fake_gpus "$node"
        gres_option="Gres=gpu:$GPUS "
        printf '\n# Fake GPUs listed in gres.conf (see the top of cluster.sh).\nGresTypes=gpu\n' >>"$CONF"
        if [ "$ACCOUNTING" = slurmdbd ]; then
            # Record GPUs in sacct's AllocTRES column as well.
            echo "AccountingStorageTRES=gres/gpu" >>"$CONF"
        fi
    fi

    cat >>"$CONF" <<EOF
JobCompType=jobcomp/none

NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory ${gres_option}State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
}

# Write gres.conf, which SLURM reads from the directory of slurm.conf, with
# GPUS empty files standing in for GPU device files.
write_fake_gpus() {
    local node=$1 i
    mkdir -p "$STATE_DIR/fake-gpus"
    {
        echo "# Written by tests/slurm/cluster.sh: fake GPUs, no hardware behind them."
        echo "AutoDetect=off"
        for ((i = 0; i < GPUS; i++)); do
            : >"$STATE_DIR/fake-gpus/nvidia$i"
            echo "NodeName=$node Name=gpu File=$STATE_DIR/fake-gpus/nvidia$i"
        done
    } >"$STATE_DIR/etc/gres.conf"
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
    wait_for 10 live_pid "$MUNGE_PID" || { log "munged wrote no pid file to $MUNGE_PID"; return 1; }
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
    # shell. Its pid comes from --pid-file like the other daemons'.
    setsid -f mariadbd --no-defaults --user=root --datadir="$DB_DIR" \
        --socket="$DB_SOCKET" --pid-file="$DB_PID" \
        --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
        --log-error="$LOG_DIR/mariadbd.log" --innodb-buffer-pool-size=64M \
        </dev/null >/dev/null 2>&1
    wait_for "$WAIT_SECONDS" db_client --execute='SELECT 1' \
        || { log "timed out after ${WAIT_SECONDS}s waiting for MariaDB"; show_log "$LOG_DIR/mariadbd.log"; return 1; }

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
        || { log "timed out after ${WAIT_SECONDS}s waiting for slurmdbd (sacctmgr list cluster)"; show_log "$LOG_DIR/slurmdbd.log"; return 1; }
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

    # srun inside jobs reads the default path (see the top of this file).
    if { [ -e "$SYSTEM_CONF" ] || [ -L "$SYSTEM_CONF" ]; } \
            && [ "$(readlink "$SYSTEM_CONF")" != "$CONF" ]; then
        die "$SYSTEM_CONF exists and is not a link to $CONF made by $0; move it away first"
    fi

    # Delete only a directory that an earlier start created.
    if [ -e "$STATE_DIR" ] && [ ! -e "$STATE_DIR/.cluster-sh-state" ]; then
        die "$STATE_DIR exists but was not made by $0; choose another SLURM_TEST_DIR"
    fi
    rm -rf "$STATE_DIR"
    mkdir -p "$STATE_DIR/etc" "$STATE_DIR/ctld" "$STATE_DIR/spool" \
        "$MUNGE_DIR" "$RUN_DIR" "$LOG_DIR"
    touch "$STATE_DIR/.cluster-sh-state"
    write_slurm_conf "$node"
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    ln -sfn "$CONF" "$SYSTEM_CONF"
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
        || { log "timed out after ${WAIT_SECONDS}s waiting for slurmctld (scontrol ping)"; show_log "$LOG_DIR/slurmctld.log"; false; }
    slurmd -f "$CONF" || { show_log "$LOG_DIR/slurmd.log"; false; }
    wait_for "$WAIT_SECONDS" node_is_idle \
        || {
            log "timed out after ${WAIT_SECONDS}s waiting for the node to become idle"
            sinfo >&2 || true
            show_log "$LOG_DIR/slurmd.log"
            false
        }
    trap - ERR

    log "cluster is up: partition '$PARTITION' on node $node, accounting $ACCOUNTING, state in $STATE_DIR"
    print_env
}

# Stop the daemons named by NAME FILE pairs together: send SIGTERM to each,
# wait for all, and send SIGKILL to any that still runs 20 s later.
stop_daemon_group() {
    local names=() pids=() name file pid i
    while [ "$#" -ge 2 ]; do
        name=$1 file=$2; shift 2
        if pid=$(live_pid "$file"); then
            kill -TERM "$pid" 2>/dev/null || true
            names+=("$name"); pids+=("$pid")
        fi
        rm -f "$file"
    done
    for i in "${!pids[@]}"; do
        pid=${pids[$i]}
        if ! wait_for 20 eval "! kill -0 $pid"; then
            log "${names[$i]} (pid $pid) still runs 20 s after SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        log "stopped ${names[$i]} (pid $pid)"
    done
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
            log "cancelling jobs: ${jobs//$'\n'/ }"
            # shellcheck disable=SC2086 # one job id per word
            timeout 10 scancel $jobs || true
            wait_for 20 no_active_jobs || log "jobs still active after 20 s"
        fi
    fi
    # slurmctld sends its last records to slurmdbd, which writes them to
    # MariaDB, and all of them authenticate through munged, hence the order.
    stop_daemon_group slurmd "$SLURMD_PID" slurmctld "$CTLD_PID"
    stop_daemon_group slurmdbd "$DBD_PID"
    stop_daemon_group mariadbd "$DB_PID" munged "$MUNGE_PID"
    if [ "$(readlink "$SYSTEM_CONF")" = "$CONF" ]; then
        rm -f "$SYSTEM_CONF"
    fi
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
