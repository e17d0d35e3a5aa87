#!/usr/bin/env bash
# tests/slurm/up.sh: bring up (or tear down) a REAL single-node SLURM cluster on
# localhost for distdyn's SLURM test (tests/test_slurm.py) and for trying
# `snakemake --profile profiles/slurm` on one machine: munged + slurmctld + slurmd,
# Debian 12 packages (Slurm 22.05), no slurmdbd, no systemd, no cgroups.
#
#   bash tests/slurm/up.sh up        # install if needed, write config, start, wait until idle
#   bash tests/slurm/up.sh down      # cancel its jobs, stop ONLY the daemons it started (by PID),
#                                    # remove the config it wrote (restoring one it set aside)
#   bash tests/slurm/up.sh status    # show PIDs, sinfo, squeue
#   bash tests/slurm/up.sh selftest  # srun hostname + sbatch --wrap round trip (+ a GPU step)
#
# Needs root: it installs packages, writes /etc/slurm/slurm.conf (and gres.conf)
# and runs the daemons as root. An existing slurm.conf is set aside and put back by
# `down`; still, use it on a CI machine or a throw-away box, not on a node of a real cluster.
#
# Env knobs:
#   FAKE_GPUS=N   declare N fake GPUs (GresTypes=gpu, Gres=gpu:N, gres.conf with
#                 dummy device files cloned from /dev/null) so the workflow's
#                 `resources: gpu=1` (-> `sbatch --gpus=1`) is accepted and
#                 scheduled; jobs see CUDA_VISIBLE_DEVICES but no CUDA device, so
#                 distdyn falls back to the CPU. Default 0: GPU requests are
#                 REJECTED at submit ("Invalid generic resource (gres) specification").
#   SLURM_CI_DIR  where PIDs and daemon output of this script live (default /tmp/distdyn-slurm)
#
# Accounting is off (AccountingStorageType=accounting_storage/none): `sacct` fails,
# so the Snakemake SLURM executor must poll with `slurm-status-command: squeue`
# (profiles/slurm does); MinJobAge=3600 keeps finished jobs visible to squeue.
#
# Exit status: 0 ok; 3 SLURM cannot be installed or run here (not root, apt-get
# failed, binaries missing); the test skips on 3 and fails on anything else.
# Adapted from the tested recipe in ../shared/docs/slurm.md (slurm-up.sh).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

CI_DIR=${SLURM_CI_DIR:-/tmp/distdyn-slurm}
FAKE_GPUS=${FAKE_GPUS:-0}
PIDS="$CI_DIR/pids"              # lines: "<name> <pid>"
UNAVAILABLE=3
MARKER="# single-node CI cluster written by distdyn's tests/slurm/up.sh"

log() { printf '[slurm-up %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
unavailable() { log "SLURM unavailable: $*"; exit "$UNAVAILABLE"; }

install_pkgs() {
  local need=() pkgs=(slurmctld slurmd slurm-client munge)
  for b in munged mungekey slurmctld slurmd sinfo sbatch squeue scancel; do
    command -v "$b" >/dev/null || need+=("$b")
  done
  [ ${#need[@]} -eq 0 ] && { log "packages already installed"; return; }
  command -v apt-get >/dev/null || unavailable "missing ${need[*]} and no apt-get to install them"
  log "installing ${pkgs[*]} (apt --no-install-recommends; ~11 s; missing: ${need[*]})"
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine may have no package lists yet.
  if ! apt-cache policy slurmctld 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    apt-get update -qq || unavailable "apt-get update failed"
  fi
  # postinst tries invoke-rc.d (denied without an init system: harmless) and
  # generates /etc/munge/munge.key (0600 munge:munge).
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >"$CI_DIR/apt.out" 2>&1 \
    || { tail -20 "$CI_DIR/apt.out" >&2; unavailable "apt-get install ${pkgs[*]} failed"; }
  for b in "${need[@]}"; do command -v "$b" >/dev/null || unavailable "$b still missing after apt-get install"; done
}

write_config() {
  local host mem cpus
  host=$(hostname -s)
  cpus=$(nproc)
  # RealMemory must not exceed what slurmd detects, else the node is DRAINED
  # ("Low RealMemory"); take 90 % of MemTotal.
  mem=$(free -m | awk '/^Mem:/{print int($2*0.9)}')
  # The node name must equal `hostname -s` (slurmd looks itself up by it).
  # NodeAddr/SlurmctldHost address pinned to 127.0.0.1 so no DNS is needed;
  # still add an /etc/hosts entry in case the host name does not resolve.
  getent hosts "$host" >/dev/null || echo "127.0.0.1 $host" >> /etc/hosts

  local gres_line="" gres_types=""
  if [ "$FAKE_GPUS" -gt 0 ]; then
    gres_types="GresTypes=gpu"
    gres_line=" Gres=gpu:$FAKE_GPUS"
    # Dummy GPU "devices": slurmd insists on character/block devices
    # ("is not a valid character or block device" -> no CUDA_VISIBLE_DEVICES),
    # so clone /dev/null (c 1 3). The trailing number is the index slurm exports
    # as CUDA_VISIBLE_DEVICES. Nothing opens them (no cgroup device constraint).
    mkdir -p "$CI_DIR/fakegpu"
    echo "$MARKER" > /etc/slurm/gres.conf
    for i in $(seq 0 $((FAKE_GPUS-1))); do
      [ -c "$CI_DIR/fakegpu/nvidia$i" ] || { rm -f "$CI_DIR/fakegpu/nvidia$i"; mknod "$CI_DIR/fakegpu/nvidia$i" c 1 3; }
      echo "NodeName=$host Name=gpu File=$CI_DIR/fakegpu/nvidia$i" >> /etc/slurm/gres.conf
    done
  else
    rm -f /etc/slurm/gres.conf
  fi

  cat > /etc/slurm/slurm.conf <<EOF
$MARKER
ClusterName=localci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# no mail in CI (silences "Configured MailProg is invalid")
MailProg=/bin/true
# no cgroups: process tracking via /proc, no task containment
ProctrackType=proctrack/linuxproc
# task/none would make srun print "lacks support for cpu binding" (the plugin passes --cpu-bind=q)
TaskPlugin=task/affinity
JobCompType=jobcomp/none
# no slurmdbd -> sacct does NOT work; the executor must use squeue for status
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# start batch jobs right at submit (default may defer them up to 3 s)
SchedulerParameters=batch_sched_delay=0
# a job without --mem would otherwise be given ALL node memory (CR_Core_Memory)
# and run alone; 1000 MB per CPU matches Snakemake's usual default
DefMemPerCPU=1000
# keep finished jobs visible to squeue/scontrol for 1 h: the executor polls squeue
# (no sacct), and the test reads the finished jobs' GPU requests from squeue
MinJobAge=3600
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=60
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
$gres_types
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem$gres_line State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  log "wrote /etc/slurm/slurm.conf (node $host, CPUs=$cpus, RealMemory=$mem, fake GPUs=$FAKE_GPUS)"
}

# Set aside a slurm.conf/gres.conf this script did not write (e.g. the client config of a real
# cluster); `down` puts it back.
save_foreign_config() {
  local f
  for f in slurm.conf gres.conf; do
    if [ -e "/etc/slurm/$f" ] && ! head -1 "/etc/slurm/$f" | grep -qxF "$MARKER" && [ ! -e "$CI_DIR/$f.orig" ]; then
      cp -p "/etc/slurm/$f" "$CI_DIR/$f.orig"
      log "saved the existing /etc/slurm/$f to $CI_DIR/$f.orig (restored by down)"
    fi
  done
}

# Remove the config files this script wrote, and restore saved ones. Left in place, a slurm.conf
# whose slurmctld is down makes every `scontrol` call hang ~10 s before failing, and
# snakemake-executor-plugin-slurm runs `scontrol show config` when it is imported, i.e. at the
# start of EVERY snakemake command, local runs included, once the plugin is installed.
remove_config() {
  local f
  for f in slurm.conf gres.conf; do
    if [ -e "/etc/slurm/$f" ] && head -1 "/etc/slurm/$f" | grep -qxF "$MARKER"; then
      rm -f "/etc/slurm/$f"
    fi
    if [ -e "$CI_DIR/$f.orig" ]; then
      mv "$CI_DIR/$f.orig" "/etc/slurm/$f"
      log "restored /etc/slurm/$f"
    fi
  done
}

# A killed daemon may linger as a zombie (PID 1 in some sandboxes does not reap
# orphans); `kill -0` succeeds on zombies, so look at the state field too.
alive() {
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
  [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# Refuse to start next to daemons this script did not start (a real SLURM or
# munge on this machine, or another copy of this script): two slurmctlds would
# fight over the ports and pid files, and we must not stop someone else's.
check_foreign() {
  local name pidfile pid
  for name in munged:/run/munge/munged.pid slurmctld:/run/slurmctld.pid slurmd:/run/slurmd.pid; do
    pidfile=${name#*:}; name=${name%%:*}
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if alive "$pid" && grep -q "$name" "/proc/$pid/comm" 2>/dev/null; then
      log "$name is already running (pid $pid, $pidfile) and was not started by $0; stop it first"
      exit 1
    fi
  done
}

# start_daemon NAME PIDFILE CMD...  (the daemons fork themselves and write PIDFILE)
start_daemon() {
  local name=$1 pidfile=$2; shift 2
  rm -f "$pidfile"
  "$@" </dev/null >>"$CI_DIR/$name.out" 2>&1
  for _ in $(seq 50); do [ -s "$pidfile" ] && break; sleep 0.1; done
  local pid; pid=$(cat "$pidfile" 2>/dev/null || true)
  alive "$pid" || { log "$name failed to start; see $CI_DIR/$name.out and /var/log/slurm"; tail -20 "$CI_DIR/$name.out" /var/log/slurm/$name.log 2>/dev/null >&2 || true; exit 1; }
  echo "$name $pid" >> "$PIDS"
  log "$name started, pid $pid"
}

up() {
  local t0=$SECONDS
  [ "$(id -u)" -eq 0 ] || unavailable "needs root (installs packages, writes /etc/slurm, runs the daemons as root)"
  install_pkgs
  [ -s "$PIDS" ] && { log "found $PIDS from an earlier run: stopping those first"; stop_daemons; }
  check_foreign
  save_foreign_config
  write_config

  # --- munge: needs /run/munge (tmpfs, not created without systemd), key 0400 owned by munge
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge /etc/munge
  [ -s /etc/munge/munge.key ] || mungekey --create --keyfile /etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
  start_daemon munged /run/munge/munged.pid runuser -u munge -- /usr/sbin/munged
  munge -n | unmunge >/dev/null || { log "munge round trip failed"; exit 1; }

  # --- slurm state/spool/log dirs (package creates them, we make sure), fresh state each time
  install -d -m 0755 /var/lib/slurm/slurmd /var/log/slurm
  rm -rf /var/lib/slurm/slurmctld; install -d -m 0755 /var/lib/slurm/slurmctld
  : > /var/log/slurm/slurmctld.log; : > /var/log/slurm/slurmd.log

  start_daemon slurmctld /run/slurmctld.pid /usr/sbin/slurmctld
  start_daemon slurmd    /run/slurmd.pid    /usr/sbin/slurmd

  # --- wait for the node to become schedulable
  local st=""
  for _ in $(seq 100); do
    st=$(sinfo -h -N -o '%T' 2>/dev/null | head -1 || true)
    case "$st" in idle|mixed|allocated) break;; esac
    sleep 0.2
  done
  case "$st" in idle|mixed|allocated) ;; *)
    log "node not ready (state '$st')"; sinfo -R >&2 || true; tail -20 /var/log/slurm/slurmctld.log >&2; exit 1;;
  esac
  log "cluster up in $((SECONDS - t0)) s"
  sinfo >&2
}

down() {
  stop_daemons
  remove_config
}

stop_daemons() {
  [ -s "$PIDS" ] || { log "no daemons recorded in $PIDS: nothing to stop"; return 0; }
  # Jobs run under slurmstepd processes that are NOT children we track and that
  # survive a killed slurmd: cancel every job of this private cluster first.
  if scontrol ping >/dev/null 2>&1; then
    local ids; ids=$(squeue -h -t PD,R,CG,S -o %i 2>/dev/null | tr '\n' ' ')
    if [ -n "${ids// /}" ]; then
      log "cancelling jobs: $ids"; scancel $ids || true
      for _ in $(seq 50); do [ -z "$(squeue -h -t PD,R,CG,S -o %i 2>/dev/null)" ] && break; sleep 0.2; done
    fi
  fi
  # reverse start order: slurmd, slurmctld, munged; each PID checked against its name
  tac "$PIDS" | while read -r name pid; do
    if alive "$pid" && grep -q "$name" "/proc/$pid/comm" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
      alive "$pid" && kill -9 "$pid"
      log "stopped $name ($pid)"
    else
      log "$name ($pid) not running"
    fi
  done
  rm -f "$PIDS"
}

status() {
  if [ -s "$PIDS" ]; then
    while read -r name pid; do
      printf '%-10s %-7s %s\n' "$name" "$pid" "$(alive "$pid" && echo running || echo dead)"
    done < "$PIDS"
  else
    echo "no daemons recorded in $PIDS"
  fi
  sinfo; squeue
}

selftest() {
  local t0=$SECONDS out
  srun -N1 -n1 hostname
  out=$(mktemp -d)
  local id; id=$(sbatch --parsable -o "$out/%j.out" --wrap 'echo hello from job $SLURM_JOB_ID')
  for _ in $(seq 100); do
    [ "$(squeue -h -t all -j "$id" -o %T 2>/dev/null)" = COMPLETED ] && break; sleep 0.2; done
  cat "$out/$id.out"; rm -rf "$out"
  if grep -q '^GresTypes=gpu' /etc/slurm/slurm.conf; then
    srun --gpus=1 bash -c 'echo "gpu step: CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES SLURM_JOB_GPUS=${SLURM_JOB_GPUS:-}"'
  fi
  log "selftest ok in $((SECONDS - t0)) s"
}

mkdir -p "$CI_DIR"
case "${1:-up}" in
  up) up;; down) down;; status) status;; selftest) selftest;;
  *) echo "usage: $0 up|down|status|selftest" >&2; exit 2;;
esac
