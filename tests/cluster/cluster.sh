#!/usr/bin/env bash
# A real single-node SLURM cluster on loopback, for tests/test_slurm.py and for trying the
# cluster profile on a laptop.
#
#   bash tests/cluster/cluster.sh up      # install if missing, start, wait until it takes jobs
#   bash tests/cluster/cluster.sh down    # stop exactly the daemons `up` started
#
# Everything lives in $DICAP_SLURM_STATE (default /tmp/dicap-slurm): configs, MariaDB's
# datadir, spool, logs and one pidfile per daemon we started.  A daemon already running
# (munged from the system, say) is used and never stopped.  The configs are also linked
# into /etc/slurm, where every Slurm command finds them: the executor plugin strips
# SLURM_CONF from a job's environment before its inner srun.  `up` refuses to replace a
# slurm.conf there that is not one of ours.  Facts behind the choices: cgroup plugins do not
# work in sandboxes, and without slurmdbd the executor plugin polls sacct forever.
set -euo pipefail

STATE="${DICAP_SLURM_STATE:-/tmp/dicap-slurm}"
ETC=/etc/slurm
CONFS=(slurm.conf gres.conf slurmdbd.conf)
CLUSTER=dicap
DB_PORT="${DICAP_SLURM_DB_PORT:-3307}"
PACKAGES=(slurm-wlm munge slurmdbd mariadb-server mariadb-client)

log() { echo "[cluster] $*" >&2; }
die() { echo "[cluster] error: $*" >&2; exit 1; }

install_missing() {
    local missing=()
    for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    ((${#missing[@]} == 0)) && return
    [[ $(id -u) == 0 ]] || die "missing Debian packages ${missing[*]}; install them as root"
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >"$STATE/apt.log" 2>&1 \
        || { apt-get update >>"$STATE/apt.log" 2>&1 \
             && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >>"$STATE/apt.log" 2>&1; } \
        || die "apt-get install failed, see $STATE/apt.log"
}

alive() { [[ -s "$STATE/pids/$1" ]] && kill -0 "$(cat "$STATE/pids/$1")" 2>/dev/null; }

# start NAME COMMAND...: run a daemon in the foreground of a background process, record its pid.
start() {
    local name=$1; shift
    if alive "$name"; then log "$name already running (pid $(cat "$STATE/pids/$name"))"; return; fi
    setsid "$@" >"$STATE/log/$name.out" 2>&1 </dev/null &
    echo $! >"$STATE/pids/$name"
    log "started $name (pid $!)"
}

# wait_for DAEMON SECONDS COMMAND...: poll until COMMAND succeeds; stop early if DAEMON died
# (a port already taken, say), showing the end of its log.
wait_for() {
    local name=$1 seconds=$2; shift 2
    for ((i = 0; i < seconds * 5; i++)); do
        "$@" >/dev/null 2>&1 && return
        if [[ -s "$STATE/pids/$name" ]] && ! alive "$name"; then
            tail -n 5 "$STATE/log/$name.out" >&2
            die "$name exited during start-up; full log: $STATE/log/$name.out"
        fi
        sleep 0.2
    done
    die "$name not ready after ${seconds}s; logs in $STATE/log"
}

write_configs() {
    local mem_mb
    # Leave the OS a quarter of the memory; Slurm refuses jobs asking more than RealMemory.
    mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.75)}' /proc/meminfo)
    cat >"$STATE/etc/slurm.conf" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/spool/slurmctld.pid
SlurmdPidFile=$STATE/spool/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
DefMemPerCPU=1000
MpiDefault=none
ReturnToService=2
MinJobAge=300
SlurmdTimeout=300
GresTypes=gpu
NodeName=localhost CPUs=$(nproc) RealMemory=$mem_mb Gres=gpu:$(nproc) State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    # Pretend GPUs, one per core, backed by empty files: GPU rules are scheduled as on a
    # real cluster (--gpus), and torch finds no CUDA driver, so jobs run on the CPU.
    local last=$(($(nproc) - 1))
    mkdir -p "$STATE/dev" && for ((i = 0; i <= last; i++)); do touch "$STATE/dev/gpu$i"; done
    echo "NodeName=localhost Name=gpu File=$STATE/dev/gpu[0-$last]" >"$STATE/etc/gres.conf"
    cat >"$STATE/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$STATE/spool/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$STATE/etc/slurmdbd.conf"
    mkdir -p "$ETC"
    for f in "${CONFS[@]}"; do
        if [[ -e "$ETC/$f" && ! -L "$ETC/$f" ]]; then
            die "$ETC/$f exists and is not ours; this script only runs where no other Slurm is configured"
        fi
        ln -sfn "$STATE/etc/$f" "$ETC/$f"
    done
}

database() {
    local sock="$STATE/mysql.sock"
    if [[ ! -d "$STATE/mysql/mysql" ]]; then
        mariadb-install-db --datadir="$STATE/mysql" --user=root --auth-root-authentication-method=socket \
            >"$STATE/log/mariadb-install.out" 2>&1 || die "mariadb-install-db failed, see $STATE/log/mariadb-install.out"
    fi
    start mariadbd mariadbd --no-defaults --datadir="$STATE/mysql" --socket="$sock" --port="$DB_PORT" \
        --bind-address=127.0.0.1 --user=root --pid-file="$STATE/spool/mariadbd.pid" --skip-log-bin
    wait_for mariadbd 60 mariadb --no-defaults --socket="$sock" -u root -e "SELECT 1"
    mariadb --no-defaults --socket="$sock" -u root -e "
        CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

up() {
    mkdir -p "$STATE"/{etc,log,pids,spool/ctld,spool/d}
    install_missing
    write_configs
    unset SLURM_CONF  # the links in /etc/slurm are the configuration, as on a real cluster
    if ! pgrep -x munged >/dev/null; then
        mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
        start munged runuser -u munge -- munged --foreground
    fi
    wait_for munged 20 bash -c "munge -n | unmunge"
    database
    start slurmdbd slurmdbd -D
    wait_for slurmdbd 60 bash -c "sacctmgr -n list cluster"
    start slurmctld slurmctld -D -i
    start slurmd slurmd -D -N localhost
    # A node drained by an earlier, broken configuration stays drained across restarts.
    wait_for slurmctld 30 scontrol ping
    scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true
    wait_for slurmd 60 bash -c "sinfo -h -N -o %T | grep -qE '^(idle|mixed|allocated)'"
    wait_for slurmdbd 60 sacct -n -X -S now
    log "up: $(sinfo -h -o '%P %D node(s) %G') - configs in $STATE/etc, linked from $ETC"
}

down() {
    # Reverse order, and only what `up` started (pidfiles in $STATE/pids).
    for name in slurmd slurmctld slurmdbd mariadbd munged; do
        alive "$name" || { rm -f "$STATE/pids/$name"; continue; }
        local pid; pid=$(cat "$STATE/pids/$name")
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
        rm -f "$STATE/pids/$name"
        log "stopped $name (pid $pid)"
    done
    for f in "${CONFS[@]}"; do
        [[ "$(readlink "$ETC/$f" 2>/dev/null)" == "$STATE/etc/$f" ]] && rm -f "$ETC/$f"
    done
    true
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) for n in munged mariadbd slurmdbd slurmctld slurmd; do alive "$n" && echo "$n $(cat "$STATE/pids/$n")"; done; true ;;
    *) die "usage: $0 up|down|status" ;;
esac
