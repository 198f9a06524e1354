#!/bin/bash
# Start a real single-node SLURM cluster on this machine (slurmctld + slurmd + munged, loopback
# only) so that `--multirun hydra/launcher=slurm` can be tried, tested and run in CI without a
# site cluster. Idempotent: installs Debian's packages if missing (as root), (re)writes the config,
# starts only the daemons that are not already running (tracked by PID files), then waits until a
# test step actually runs.
#
#   sudo bash scripts/slurm/start_local_cluster.sh     # then:  source "$FTLAB_SLURM_DIR/env.sh"
#   sudo bash scripts/slurm/stop_local_cluster.sh      # stops exactly these daemons (PID files)
#
# Knobs (environment):
#   FTLAB_SLURM_DIR        state, config, logs, env.sh   (default ${TMPDIR:-/tmp}/ftlab-slurm)
#   FTLAB_SLURM_PARTITION  the one partition             (default debug; ftlab's slurm preset uses it)
#   FTLAB_SLURM_CPUS       CPUs the node advertises      (default: nproc)
#   FTLAB_SLURM_MEM_MB     memory the node advertises    (default: min(4096, MemTotal - 512))
#   FTLAB_SLURMCTLD_PORT / FTLAB_SLURMD_PORT             (default 6817 / 6818)
# Tested on Debian 12 (slurm 22.05, munge 0.5) running as root.
set -euo pipefail

DIR=${FTLAB_SLURM_DIR:-${TMPDIR:-/tmp}/ftlab-slurm}
PARTITION=${FTLAB_SLURM_PARTITION:-debug}
NODE=localhost
CPUS=${FTLAB_SLURM_CPUS:-$(nproc)}
MEM_TOTAL_MB=$(( $(awk '/^MemTotal:/{print $2}' /proc/meminfo) / 1024 ))
MEM_MB=${FTLAB_SLURM_MEM_MB:-$(( MEM_TOTAL_MB - 512 < 4096 ? MEM_TOTAL_MB - 512 : 4096 ))}
CTLD_PORT=${FTLAB_SLURMCTLD_PORT:-6817}
SLURMD_PORT=${FTLAB_SLURMD_PORT:-6818}
CONF=$DIR/etc/slurm.conf
SOCK=$DIR/munge_sock/munge.socket.2
T0=$(date +%s.%N)
log() { printf '[start_local_cluster %5ss] %s\n' "$(awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN{printf "%.1f", a-b}')" "$*"; }
die() { echo "start_local_cluster.sh: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages; the daemons run as SlurmUser=root)"

# ---------------------------------------------------------------- 1. packages
PKGS="slurmctld slurmd slurm-client munge"
if ! { [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ] && command -v sbatch >/dev/null && [ -x /usr/sbin/munged ]; }; then
    command -v apt-get >/dev/null || die "slurm is not installed and apt-get is unavailable: install $PKGS"
    log "installing $PKGS"
    # keep the packages' postinst scripts from starting system-wide daemons
    TMP_POLICY=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; TMP_POLICY=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $PKGS >/dev/null
    [ $TMP_POLICY -eq 1 ] && rm -f /usr/sbin/policy-rc.d
    # shellcheck disable=SC2086
    log "installed: $(dpkg-query -W -f='${Package}=${Version} ' $PKGS)"
fi

# ---------------------------------------------------------------- 2. dirs, key, config
mkdir -p "$DIR"/{etc,run,log,state,spool,munge,munge_sock,bin}
chmod 700 "$DIR/munge"; chmod 755 "$DIR/munge_sock"   # munged: the socket dir must be a+x
if [ ! -s "$DIR/munge/munge.key" ]; then
    if command -v mungekey >/dev/null; then mungekey -c -k "$DIR/munge/munge.key"
    else dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none; fi
    chmod 400 "$DIR/munge/munge.key"
fi

cat > "$CONF.new" <<CONF
ClusterName=ftlab
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# containers: no cgroups
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
# no slurmdbd: sacct does not work -> $DIR/bin/sacct answers submitit from squeue; keep finished jobs 1 day
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
MinJobAge=86400
JobRequeue=1
ReturnToService=2
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=300
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
if ! cmp -s "$CONF.new" "$CONF"; then mv "$CONF.new" "$CONF"; CONF_CHANGED=1; else rm "$CONF.new"; CONF_CHANGED=0; fi

# sacct stand-in: submitit polls `sacct -o JobID,State,NodeList --parsable2 -j ID`; without an
# answer a job that died without writing its result would make the launcher wait forever.
cat > "$DIR/bin/sacct" <<'SACCT'
#!/bin/bash
args=("$@"); ids=(); fmt=""; p2=0
while [ $# -gt 0 ]; do
  case "$1" in
    -o|--format) fmt="$2"; shift ;;
    --format=*) fmt="${1#--format=}" ;;
    --parsable2|-P) p2=1 ;;
    -j|--jobs) IFS=, read -ra more <<<"$2"; ids+=("${more[@]}"); shift ;;
    --jobs=*) IFS=, read -ra more <<<"${1#--jobs=}"; ids+=("${more[@]}") ;;
  esac
  shift
done
if [ "$fmt" != "JobID,State,NodeList" ] || [ $p2 -ne 1 ] || [ ${#ids[@]} -eq 0 ]; then
  exec /usr/bin/sacct "${args[@]}"
fi
echo "JobID|State|NodeList"
for id in "${ids[@]}"; do squeue -t all -h -o '%i|%T|%N' -j "$id" 2>/dev/null; done
exit 0
SACCT
chmod +x "$DIR/bin/sacct"

cat > "$DIR/env.sh" <<ENV
# source me: SLURM client commands (and ftlab's slurm launcher) then talk to the local cluster
export SLURM_CONF=$CONF
export FTLAB_SLURM_DIR=$DIR
case ":\$PATH:" in *":$DIR/bin:"*) ;; *) export PATH=$DIR/bin:\$PATH ;; esac
ENV
export SLURM_CONF=$CONF PATH=$DIR/bin:$PATH

# ---------------------------------------------------------------- 3. daemons
# alive <pidfile> <exe>: the PID file points at a live process of that executable using our files
alive() {
    local pid; pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "$2.*$DIR"
}
wait_for() {  # wait_for <seconds> <what> <cmd...>
    local t=$1 what=$2; shift 2
    for _ in $(seq $((t * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    echo "start_local_cluster.sh: timeout waiting for $what; see $DIR/log" >&2; tail -20 "$DIR"/log/*.log >&2; exit 1
}

if alive "$DIR/run/munged.pid" munged; then log "munged already running (pid $(cat "$DIR/run/munged.pid"))"
else
    /usr/sbin/munged --socket="$SOCK" --key-file="$DIR/munge/munge.key" --log-file="$DIR/log/munged.log" \
        --pid-file="$DIR/run/munged.pid" --seed-file="$DIR/munge/munged.seed"
    wait_for 10 munged bash -c "munge -S '$SOCK' -n | unmunge -S '$SOCK'"
    log "munged started (pid $(cat "$DIR/run/munged.pid"))"
fi

if alive "$DIR/run/slurmctld.pid" slurmctld; then
    log "slurmctld already running (pid $(cat "$DIR/run/slurmctld.pid"))"
    if [ "$CONF_CHANGED" -eq 1 ]; then scontrol reconfigure; log "slurm.conf changed -> scontrol reconfigure"; fi
else
    rm -f "$DIR/run/slurmctld.pid"
    /usr/sbin/slurmctld -f "$CONF"
    wait_for 30 slurmctld bash -c "scontrol ping | grep -q UP"
    log "slurmctld started (pid $(cat "$DIR/run/slurmctld.pid"))"
fi

if alive "$DIR/run/slurmd.pid" slurmd; then log "slurmd already running (pid $(cat "$DIR/run/slurmd.pid"))"
else
    rm -f "$DIR/run/slurmd.pid"
    /usr/sbin/slurmd -f "$CONF" -N "$NODE"
    wait_for 10 slurmd test -s "$DIR/run/slurmd.pid"
    log "slurmd started (pid $(cat "$DIR/run/slurmd.pid"))"
fi

# ---------------------------------------------------------------- 4. wait until a step runs
node_ok() {
    local st; st=$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null)
    case "$st" in
        idle|mixed|allocated|completing) return 0 ;;
        down*|drain*|fail*|inval*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true; return 1 ;;
        *) return 1 ;;
    esac
}
wait_for 60 "node $NODE to become idle" node_ok
# after a restart with saved state the node can read "idle" before slurmd re-registered: run a step
timeout 60 srun -N1 -n1 -t1 -J ftlab_cluster_check true || die "test srun failed; see $DIR/log"
log "cluster ready: $(sinfo -h -o '%P %a %D %T %N %c cpus')"
log "use it with:  source $DIR/env.sh"
