#!/bin/bash
# Stop the daemons started by start_local_cluster.sh, using only their PID files (never by name).
# Jobs still queued or running on this cluster are cancelled first.
#
#   bash scripts/slurm/stop_local_cluster.sh        (same FTLAB_SLURM_DIR as the start)
set -uo pipefail
DIR=${FTLAB_SLURM_DIR:-${TMPDIR:-/tmp}/ftlab-slurm}
export SLURM_CONF=$DIR/etc/slurm.conf

alive() {  # alive <pidfile> <exe>
    local pid; pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "$2.*$DIR"
}

if alive "$DIR/run/slurmctld.pid" slurmctld; then
    jobs=$(timeout 10 squeue -h -t pending,running,suspended,completing,requeued -o %A 2>/dev/null | sort -u | tr '\n' ' ')
    if [ -n "${jobs// }" ]; then
        echo "[stop_local_cluster] cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        timeout 10 scancel $jobs
        for _ in $(seq 50); do
            [ -z "$(timeout 5 squeue -h -t pending,running,suspended,completing 2>/dev/null)" ] && break; sleep 0.2
        done
    fi
fi

for d in slurmd slurmctld munged; do
    pf=$DIR/run/$d.pid
    if alive "$pf" "$d"; then
        pid=$(cat "$pf"); kill -TERM "$pid"
        for _ in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
        if [ -d "/proc/$pid" ]; then kill -KILL "$pid"; echo "[stop_local_cluster] $d ($pid) killed"
        else echo "[stop_local_cluster] $d ($pid) stopped"; fi
    else
        echo "[stop_local_cluster] $d not running"
    fi
    rm -f "$pf"
done
exit 0
