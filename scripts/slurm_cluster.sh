#!/usr/bin/env bash
# A one-machine SLURM cluster for the tests (tests/test_slurm.py) and CI (.ci/run): Debian's slurm-wlm and
# munge, run as root, with every file under a private folder, never under /etc or the repository.
#
#   bash scripts/slurm_cluster.sh install   # apt-get install slurm-wlm munge (idempotent, quiet; root)
#   bash scripts/slurm_cluster.sh start     # munged + slurmctld + slurmd; waits for the node; prints the
#                                           # line to run: export SLURM_CONF=<folder>/slurm.conf
#   bash scripts/slurm_cluster.sh status    # the daemons, sinfo and squeue; exit 0 only when it all answers
#   bash scripts/slurm_cluster.sh stop      # cancels this cluster's jobs, stops the daemons (idempotent)
#
# The folder is $FEATDROP_SLURM_DIR (default /tmp/featdrop-slurm): slurm.conf, munge/ (key, socket, pid,
# log), state/, spool/, log/ and the daemons' pid files. The controller listens on $FEATDROP_SLURM_PORT
# (default 6817, SLURM's own) and slurmd on the next port. `start` rewrites slurm.conf each time, so a
# change of these variables takes effect after `stop` and `start`.
#
# Quirks found by experiment in a Debian 12 container (gVisor, no systemd, PID 1 is not an init; slurm-wlm
# 22.05.8, munge 0.5.15):
# - Nothing is started by the packages without systemd (and /etc/slurm/slurm.conf does not exist), so the
#   daemons are started here directly; each daemonises itself and writes its pid file, which `stop` uses.
# - munged refuses a socket in a folder not executable by all ("Socket is inaccessible: execute permissions
#   for all required"): the folders are made 0755, the key stays 0600. Running munged as root works.
#   Our munged has its own key and socket; slurm.conf points at that socket (AuthInfo=socket=...), so a
#   system munged, if any, is neither used nor disturbed.
# - Without SLURM_CONF the clients (sinfo, sbatch, even `sinfo --version`) look for /etc/slurm/slurm.conf,
#   then for DNS SRV records, and fail with "fetch_config: DNS SRV lookup failed" (after a few seconds):
#   export the line `start` prints. `slurmd -V` tells the version without a configuration.
# - No cgroups in the container: ProctrackType=proctrack/linuxproc (a job's processes are found by their
#   parent chain). TaskPlugin=task/affinity works without cgroups (sched_setaffinity; a job's
#   os.sched_getaffinity is its own CPUs, under gVisor too), as on a real cluster, so `featdrop grid` sizes
#   its threads by the job's --cpus-per-task. With task/none every job saw all the machine's cores: two
#   1-CPU array tasks ran 2 threads each on the 2 cores (the 4-cell grid of tests/test_slurm.py took 2 min
#   18 s instead of 41-60 s, one run each beside a background job). FEATDROP_SLURM_TASK_PLUGIN=task/none
#   brings that back, should binding ever fail on some machine.
# - The logs show harmless errors at every start: "mpi/pmix_v4: can not load PMIx library" (the plugin is
#   installed, the library is not; MpiDefault=none) and, on a fresh state folder, "Could not open ... state
#   file" (there is none yet).
# - srun of SLURM 22.05 no longer reads SLURM_CPUS_PER_TASK (its release notes; 23.11 reads it again), so
#   scripts/slurm/torchrun.sbatch passes --cpus-per-task to srun itself. (Here a 1-task step of a 2-CPU
#   job got both CPUs with or without it.)
set -euo pipefail

PATH="$PATH:/usr/sbin:/sbin"  # the daemons live in sbin, which a non-login PATH may lack
DIR="${FEATDROP_SLURM_DIR:-/tmp/featdrop-slurm}"
PORT="${FEATDROP_SLURM_PORT:-6817}"
CONF="$DIR/slurm.conf"
MUNGE="$DIR/munge"
SOCKET="$MUNGE/munged.sock"
NODE="$(hostname -s)"

say() { echo "slurm_cluster: $*" >&2; }
die() { say "$*"; exit 1; }

alive() {  # alive PIDFILE: the process it names is running
    local pid
    [ -s "$1" ] && pid="$(cat "$1")" && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

installed() {
    local cmd
    for cmd in munged mungekey slurmctld slurmd sinfo sbatch srun squeue scancel scontrol; do
        command -v "$cmd" >/dev/null 2>&1 || return 1
    done
}

node_state() {  # the node's state as sinfo says it (idle, mix, alloc, down*, drain, ...); empty if none
    SLURM_CONF="$CONF" timeout 10 sinfo -h -n "$NODE" -o %t 2>/dev/null | head -n1 | tr -d ' '
}

cmd_install() {
    if installed; then
        say "slurm-wlm and munge are installed ($(slurmd -V))"
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "install needs root (apt-get install slurm-wlm munge)"
    local log
    log="$(mktemp)"
    say "installing slurm-wlm and munge (apt-get; about a minute)"
    # --no-install-recommends: every plugin slurm.conf names is in slurm-wlm-basic-plugins, a dependency
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends slurm-wlm munge; } >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        rm -f "$log"
        die "apt-get install slurm-wlm munge failed (last lines above)"
    fi
    rm -f "$log"
    installed || die "installed, but some SLURM or munge command is still missing from PATH"
    say "installed $(slurmd -V)"
}

write_conf() {
    # CPUs, sockets, cores and memory as slurmd measures them (`slurmd -C`, first line). RealMemory is
    # written 2% under the measure: a node whose slurmd later reports less than slurm.conf says is drained.
    local hw
    hw="$(slurmd -C | head -n1 | tr ' ' '\n' \
        | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' \
        | awk -F= '$1 == "RealMemory" { $2 = int($2 * 0.98) } { printf "%s=%s ", $1, $2 }')"
    cat >"$CONF.tmp" <<EOF
# Written by scripts/slurm_cluster.sh start: a one-node cluster on $(hostname -s) for featdrop's tests.
ClusterName=featdrop
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# no cgroups in a container: processes tracked by parent chain; CPU binding by sched_setaffinity
ProctrackType=proctrack/linuxproc
TaskPlugin=${FEATDROP_SLURM_TASK_PLUGIN:-task/affinity}
# several 1-CPU jobs side by side on the node
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
# no accounting (no slurmdbd): squeue, not sacct
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
# a node that was down comes back when its slurmd registers; scancel: SIGTERM, SIGKILL 5 s later
ReturnToService=2
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$NODE NodeAddr=127.0.0.1 ${hw}State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

cmd_start() {
    installed || die "slurm-wlm or munge is not installed: run \`bash $0 install\` first (as root)"
    [ "$(id -u)" = 0 ] || die "start needs root (SlurmUser=root)"
    mkdir -p "$DIR" "$MUNGE" "$DIR/state" "$DIR/spool" "$DIR/log"
    chmod 0755 "$DIR" "$MUNGE"  # munged: the socket's folder must be executable by all
    if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" && alive "$MUNGE/munged.pid" \
            && [ -n "$(node_state)" ]; then
        say "already running (node $NODE: $(node_state)); $DIR"
        echo "export SLURM_CONF=$CONF"
        return 0
    fi

    # munge: a key of this cluster's own, made once
    if [ ! -s "$MUNGE/munge.key" ]; then
        mungekey --create --keyfile="$MUNGE/munge.key" --bits=1024 \
            || { dd if=/dev/urandom of="$MUNGE/munge.key" bs=128 count=1 status=none; }
        chmod 0600 "$MUNGE/munge.key"
    fi
    if ! alive "$MUNGE/munged.pid"; then
        rm -f "$SOCKET"
        munged --key-file="$MUNGE/munge.key" --socket="$SOCKET" --pid-file="$MUNGE/munged.pid" \
            --log-file="$MUNGE/munged.log" --seed-file="$MUNGE/munged.seed" \
            || die "munged did not start; see $MUNGE/munged.log"
    fi

    write_conf
    export SLURM_CONF="$CONF"
    # each daemonises itself (no -D) and writes the pid file named in slurm.conf
    if ! alive "$DIR/slurmctld.pid"; then
        slurmctld -f "$CONF" || die "slurmctld did not start; see $DIR/log/slurmctld.log"
    fi
    if ! alive "$DIR/slurmd.pid"; then
        slurmd -f "$CONF" -N "$NODE" || die "slurmd did not start; see $DIR/log/slurmd.log"
    fi

    local state="" resumed=0
    for _ in $(seq 1 60); do
        state="$(node_state)"
        case "$state" in
            idle|mix|alloc|comp) break ;;
            down*|drain*|drng*|fail*)
                # left down or drained by an earlier run of this folder: bring it back once
                if [ "$resumed" = 0 ]; then
                    scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
                    resumed=1
                fi ;;
        esac
        sleep 1
    done
    case "$state" in
        idle|mix|alloc|comp) ;;
        *)
            tail -n 15 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
            die "node $NODE not up after 60 s (sinfo: '${state:-no answer}'); logs above, in $DIR/log" ;;
    esac
    local cpus
    cpus="$(sed -n 's/^NodeName=.* CPUs=\([0-9]*\) .*/\1/p' "$CONF")"
    say "$(slurmd -V) running: node $NODE $state ($cpus CPUs); $DIR"
    echo "export SLURM_CONF=$CONF"
}

stop_pid() {  # stop_pid NAME PIDFILE: SIGTERM, then SIGKILL after 10 s
    local pid
    if alive "$2"; then
        pid="$(cat "$2")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -9 "$pid" 2>/dev/null || true
        fi
        say "stopped $1 (pid $pid)"
    fi
    rm -f "$2"
}

cmd_stop() {
    if [ -f "$CONF" ] && alive "$DIR/slurmctld.pid"; then
        # jobs of this cluster would outlive slurmd (their slurmstepd stays): cancel them first
        local jobs
        jobs="$(SLURM_CONF="$CONF" timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')" || true
        if [ -n "${jobs// /}" ]; then
            say "cancelling jobs $jobs"
            # shellcheck disable=SC2086
            SLURM_CONF="$CONF" scancel $jobs 2>/dev/null || true
            for _ in $(seq 1 15); do
                [ -z "$(SLURM_CONF="$CONF" timeout 10 squeue -h -o %A 2>/dev/null)" ] && break
                sleep 1
            done
        fi
    fi
    stop_pid slurmd "$DIR/slurmd.pid"
    stop_pid slurmctld "$DIR/slurmctld.pid"
    stop_pid munged "$MUNGE/munged.pid"
}

cmd_status() {
    local ok=0 name file
    echo "folder: $DIR"
    for name in munged slurmctld slurmd; do
        file="$DIR/$name.pid"
        [ "$name" = munged ] && file="$MUNGE/munged.pid"
        if alive "$file"; then
            echo "$name: running (pid $(cat "$file"))"
        else
            echo "$name: not running"
            ok=3
        fi
    done
    if [ -f "$CONF" ] && SLURM_CONF="$CONF" timeout 10 sinfo 2>/dev/null; then
        SLURM_CONF="$CONF" timeout 10 squeue 2>/dev/null || true
        echo "export SLURM_CONF=$CONF"
    else
        echo "sinfo: no controller answers"
        ok=3
    fi
    return "$ok"
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: bash $0 install|start|stop|status" \
            "(folder: \$FEATDROP_SLURM_DIR, default /tmp/featdrop-slurm)" >&2
       exit 2 ;;
esac
