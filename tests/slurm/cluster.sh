#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for trying the slurm profile and for the tests.
#
#   tests/slurm/cluster.sh start [DIR]   install slurm-wlm + munge if missing, start the daemons
#   tests/slurm/cluster.sh stop  [DIR]   stop the daemons started by `start`, by their PIDs
#
# Needs root on Debian/Ubuntu; no systemd needed. Everything it writes (config, keys, state,
# logs, PID files) lives under DIR (default: $SLURM_TEST_DIR or /tmp/rbmflow-slurm), plus one
# link, /run/slurm/conf -> DIR, for commands run inside jobs. Once started, point the SLURM
# commands (and snakemake) at it:
#
#   export SLURM_CONF=DIR/slurm.conf
#   sinfo; snakemake --profile profiles/slurm --workflow-profile none ...
#
# The node is this host: one partition `debug`, no job accounting (so the snakemake plugin
# must poll with `squeue`, see profiles/slurm/config.yaml), and one fake GPU (gres.conf maps it
# to /dev/null) so that jobs asking for `--gpus=1` or `--gres=gpu:1` are scheduled. The node
# declares 16 CPUs and 64 GB whatever the hardware (SlurmdParameters=config_overrides), so
# jobs sized for a real cluster node still fit.
set -euo pipefail

ACTION=${1:-}
DIR=${2:-${SLURM_TEST_DIR:-/tmp/rbmflow-slurm}}
CTLD_PORT=${SLURM_TEST_CTLD_PORT:-16817}
SLURMD_PORT=${SLURM_TEST_SLURMD_PORT:-16818}
START_TIMEOUT_S=${SLURM_TEST_START_TIMEOUT_S:-60}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

die() { echo "cluster.sh: $*" >&2; exit 1; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
      && command -v munged >/dev/null && command -v sbatch >/dev/null; then
    return
  fi
  [ "$(id -u)" = 0 ] || die "slurm-wlm/munge are missing and installing them needs root"
  command -v apt-get >/dev/null || die "slurm-wlm/munge are missing and apt-get is not available"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends slurm-wlm munge >"$DIR/apt.log" 2>&1; then
    apt-get update >>"$DIR/apt.log" 2>&1 || die "apt-get update failed (see $DIR/apt.log)"
    apt-get install -y --no-install-recommends slurm-wlm munge >>"$DIR/apt.log" 2>&1 \
      || die "apt-get install slurm-wlm munge failed (see $DIR/apt.log)"
  fi
}

write_config() {
  local node
  node=$(hostname -s)
  cat >"$DIR/slurm.conf" <<EOF
ClusterName=rbmflow-test
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/pid/slurmctld.pid
SlurmdPidFile=$DIR/pid/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups, no accounting: runs inside a plain container
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# finished jobs stay visible to squeue for 5 minutes (the plugin's status check needs >= 2)
MinJobAge=300
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
SlurmdParameters=config_overrides
NodeName=$node NodeAddr=127.0.0.1 CPUs=16 RealMemory=64000 Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$DIR/gres.conf" <<EOF
AutoDetect=off
NodeName=$node Name=gpu File=/dev/null
EOF
  printf 'export SLURM_CONF=%s\n' "$DIR/slurm.conf" >"$DIR/env.sh"
}

# Inside a job, snakemake runs each rule through `srun` with the SLURM_* variables (SLURM_CONF
# too) removed, so srun looks for the config where SLURM commands look without SLURM_CONF:
# /etc/slurm/slurm.conf, then /run/slurm/conf/ (where a configless slurmd keeps its copy).
link_config() {
  if [ -e /etc/slurm/slurm.conf ]; then
    die "/etc/slurm/slurm.conf exists: this host has a SLURM of its own; not starting a second"
  fi
  if [ -L /run/slurm/conf ]; then
    local other
    other=$(readlink /run/slurm/conf)
    if [ -f "$other/pid/slurmctld.pid" ] && kill -0 "$(cat "$other/pid/slurmctld.pid")" 2>/dev/null
    then
      die "a local cluster is running from $other: stop it first ($0 stop $other)"
    fi
    rm -f /run/slurm/conf  # left behind by a cluster that was not stopped
  fi
  [ -e /run/slurm/conf ] && die "/run/slurm/conf exists and is not a link of this script"
  mkdir -p /run/slurm
  ln -s "$DIR" /run/slurm/conf
}

start_munge() {
  local key="$DIR/munge/munge.key"
  mkdir -p "$DIR/munge"
  if command -v mungekey >/dev/null; then
    mungekey --create --keyfile="$key" --force
  else
    dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
  fi
  runuser -u munge -- test -x "$DIR" \
    || die "the munge user cannot reach $DIR: use a folder whose parents all allow o+x"
  chown -R munge:munge "$DIR/munge"
  chmod 0700 "$DIR/munge"
  chmod 0600 "$key"
  runuser -u munge -- munged --force \
    --socket="$DIR/munge/munge.socket" --key-file="$key" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
    --seed-file="$DIR/munge/munged.seed"
  for _ in $(seq 50); do [ -s "$DIR/munge/munged.pid" ] && break; sleep 0.1; done
  [ -s "$DIR/munge/munged.pid" ] || die "munged did not start (see $DIR/munge/munged.log)"
  cp "$DIR/munge/munged.pid" "$DIR/pid/munged.pid"
}

wait_for_idle_node() {
  local waited=0
  until sinfo --noheader --states=idle --format=%N 2>/dev/null | grep -q .; do
    sleep 1
    waited=$((waited + 1))
    if [ "$waited" -ge "$START_TIMEOUT_S" ]; then
      sinfo -N -l >&2 || true
      tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
      die "the node is not idle after ${START_TIMEOUT_S}s (logs in $DIR/log)"
    fi
  done
}

start() {
  [ "$(id -u)" = 0 ] || die "needs root (slurmd runs jobs as their users)"
  if [ -f "$DIR/pid/slurmctld.pid" ] && kill -0 "$(cat "$DIR/pid/slurmctld.pid")" 2>/dev/null; then
    die "a cluster is already running from $DIR (run: $0 stop $DIR)"
  fi
  mkdir -p "$DIR"
  chmod 0755 "$DIR"
  trap 'status=$?; [ "$status" -eq 0 ] || stop; exit "$status"' EXIT  # half-started: undo
  install_packages
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/pid" "$DIR/log"
  write_config
  export SLURM_CONF="$DIR/slurm.conf"
  link_config
  start_munge
  slurmctld -f "$SLURM_CONF" -c
  slurmd -f "$SLURM_CONF"
  # daemons write their PID files shortly after forking
  for name in slurmctld slurmd; do
    for _ in $(seq 50); do [ -s "$DIR/pid/$name.pid" ] && break; sleep 0.1; done
    [ -s "$DIR/pid/$name.pid" ] || die "$name did not start (see $DIR/log/$name.log)"
  done
  wait_for_idle_node
  echo "SLURM is up: export SLURM_CONF=$SLURM_CONF"
}

stop() {
  local name pid
  # jobs still running on this private cluster go first
  if [ -f "$DIR/pid/slurmctld.pid" ] && kill -0 "$(cat "$DIR/pid/slurmctld.pid")" 2>/dev/null; then
    SLURM_CONF="$DIR/slurm.conf" timeout 10 scancel --quiet --full --partition=debug || true
  fi
  for name in slurmd slurmctld munged; do
    [ -f "$DIR/pid/$name.pid" ] || continue
    pid=$(cat "$DIR/pid/$name.pid")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$DIR/pid/$name.pid"
  done
  if [ -L /run/slurm/conf ] && [ "$(readlink /run/slurm/conf)" = "$DIR" ]; then
    rm -f /run/slurm/conf
  fi
}

case "$ACTION" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop [DIR]" >&2; exit 2 ;;
esac
