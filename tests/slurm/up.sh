#!/usr/bin/env bash
# tests/slurm/up.sh: bring up (or tear down) a REAL SLURM cluster on localhost for
# distdyn's SLURM test (tests/test_slurm.py) and for trying `snakemake --profile
# profiles/slurm` on one machine: munged + slurmctld + one slurmd per node, Debian 12
# packages (Slurm 22.05), no slurmdbd, no systemd, no cgroups.
#
#   bash tests/slurm/up.sh up        # install if needed, write config, start, wait until idle
#   bash tests/slurm/up.sh down      # cancel its jobs, stop ONLY the daemons it started (by PID),
#                                    # remove the config and /etc/hosts lines it wrote (restoring a
#                                    # config it set aside)
#   bash tests/slurm/up.sh status    # show PIDs, sinfo, squeue
#   bash tests/slurm/up.sh selftest  # srun hostname + sbatch --wrap round trip (+ a GPU step)
#
# Needs root: it installs packages, writes /etc/slurm/slurm.conf (and gres.conf)
# and runs the daemons as root. An existing slurm.conf is set aside and put back by
# `down`; still, use it on a CI machine or a throw-away box, not on a node of a real cluster.
#
# Env knobs:
#   NODES=N       N compute nodes on this one machine (default 1: one node named
#                 `hostname -s`). N > 1 runs one slurmd per node (`slurmd -N <name>`,
#                 which needs a Slurm built with multiple-slurmd support; Debian's
#                 is: `scontrol show config` says MULTIPLE_SLURMD = Yes, checked
#                 below), named <host>-1 .. <host>-N, all at 127.0.0.1 with their own
#                 Port, spool, log and pid file (`%n` in slurm.conf); each gets the
#                 machine's CPUs and memory divided by N and FAKE_GPUS fake GPUs, and
#                 its name is added to /etc/hosts (removed by `down`), so a job on
#                 two nodes sees two hosts and can rendezvous at the first.
#   FAKE_GPUS=N   declare N fake GPUs per node (GresTypes=gpu, Gres=gpu:N, gres.conf with
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
NODES=${NODES:-1}
PIDS="$CI_DIR/pids"              # lines: "<name> <pid>"
UNAVAILABLE=3
MARKER="# single-node CI cluster written by distdyn's tests/slurm/up.sh"
# /etc/hosts lines this script added (one per line), removed again by `down`
HOSTS_ADDED="$CI_DIR/hosts.added"

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

# add_host NAME: make NAME resolve (to 127.0.0.1) unless it does already; recorded for `down`
add_host() {
  getent hosts "$1" >/dev/null && return
  [ -z "$(tail -c1 /etc/hosts 2>/dev/null)" ] || echo >> /etc/hosts  # a last line without its newline
  echo "127.0.0.1 $1" >> /etc/hosts
  echo "127.0.0.1 $1" >> "$HOSTS_ADDED"
}

# The node names: `hostname -s` for one node, <host>-1 .. <host>-N for several.
node_names() {
  local host i; host=$(hostname -s)
  if [ "$NODES" -gt 1 ]; then
    for i in $(seq 1 "$NODES"); do echo "$host-$i"; done
  else
    echo "$host"
  fi
}

write_config() {
  local host mem cpus names
  host=$(hostname -s)
  mapfile -t names < <(node_names)
  cpus=$(nproc)
  # RealMemory must not exceed what slurmd detects, else the node is DRAINED
  # ("Low RealMemory"); take 90 % of MemTotal.
  mem=$(free -m | awk '/^Mem:/{print int($2*0.9)}')
  # Several nodes share the machine: each gets an equal part (at least one CPU).
  cpus=$(( cpus / NODES > 0 ? cpus / NODES : 1 )); mem=$(( mem / NODES ))
  # A single node's name must equal `hostname -s` (slurmd looks itself up by it;
  # `slurmd -N <name>` names the others). NodeAddr/SlurmctldHost address pinned to
  # 127.0.0.1 so no DNS is needed; still make every name resolve (/etc/hosts) in case
  # it does not: a job's first node name is its rendezvous host.
  add_host "$host"
  local n; for n in "${names[@]}"; do add_host "$n"; done

  local gres_line="" gres_types=""
  if [ "$FAKE_GPUS" -gt 0 ]; then
    gres_types="GresTypes=gpu"
    gres_line=" Gres=gpu:$FAKE_GPUS"
    # Dummy GPU "devices": slurmd insists on character/block devices
    # ("is not a valid character or block device" -> no CUDA_VISIBLE_DEVICES),
    # so clone /dev/null (c 1 3). The trailing number is the index slurm exports
    # as CUDA_VISIBLE_DEVICES. Nothing opens them (no cgroup device constraint).
    # With several nodes each has its own files (nvidia0.. on the first, and so on).
    mkdir -p "$CI_DIR/fakegpu"
    echo "$MARKER" > /etc/slurm/gres.conf
    local k=0 i
    for n in "${names[@]}"; do
      for i in $(seq 0 $((FAKE_GPUS-1))); do
        [ -c "$CI_DIR/fakegpu/nvidia$k" ] || { rm -f "$CI_DIR/fakegpu/nvidia$k"; mknod "$CI_DIR/fakegpu/nvidia$k" c 1 3; }
        echo "NodeName=$n Name=gpu File=$CI_DIR/fakegpu/nvidia$k" >> /etc/slurm/gres.conf
        k=$((k+1))
      done
    done
  else
    rm -f /etc/slurm/gres.conf
  fi

  # One slurmd per node: with several, spool, log and pid file are per node (%n: the node
  # name) and each listens on its own port, since they share 127.0.0.1.
  local node_lines="" spool=slurmd pidfile=slurmd.pid logfile=slurmd.log i=0
  if [ "$NODES" -gt 1 ]; then
    spool=slurmd-%n pidfile=slurmd-%n.pid logfile=slurmd-%n.log
    for n in "${names[@]}"; do
      node_lines+="NodeName=$n NodeHostname=$host NodeAddr=127.0.0.1 Port=$((17000 + i)) CPUs=$cpus RealMemory=$mem$gres_line State=UNKNOWN"$'\n'
      i=$((i+1))
    done
  else
    node_lines="NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem$gres_line State=UNKNOWN"
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
SlurmdSpoolDir=/var/lib/slurm/$spool
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/$pidfile
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/$logfile
SlurmctldDebug=info
SlurmdDebug=info
$gres_types
$node_lines
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  log "wrote /etc/slurm/slurm.conf (nodes ${names[*]}, each CPUs=$cpus, RealMemory=$mem, fake GPUs=$FAKE_GPUS)"
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
  # The /etc/hosts lines add_host wrote, each once; the file is rewritten in place (it
  # may be a bind mount, which a rename-based `sed -i` cannot replace).
  if [ -s "$HOSTS_ADDED" ]; then
    local kept; kept=$(awk 'NR == FNR { drop[$0]++; next } ($0 in drop) && drop[$0]-- > 0 { next } { print }' \
      "$HOSTS_ADDED" /etc/hosts)
    printf '%s\n' "$kept" > /etc/hosts
    log "removed from /etc/hosts: $(awk '{print $2}' "$HOSTS_ADDED" | tr '\n' ' ')"
  fi
  rm -f "$HOSTS_ADDED"
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
  for name in munged:/run/munge/munged.pid slurmctld:/run/slurmctld.pid slurmd:/run/slurmd.pid \
      $(for f in /run/slurmd-*.pid; do [ -e "$f" ] && echo "slurmd:$f"; done); do
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
  install -d -m 0755 /var/log/slurm
  rm -rf /var/lib/slurm/slurmctld; install -d -m 0755 /var/lib/slurm/slurmctld
  : > /var/log/slurm/slurmctld.log

  start_daemon slurmctld /run/slurmctld.pid /usr/sbin/slurmctld
  local n
  if [ "$NODES" -gt 1 ]; then
    # Several slurmd on one machine need a Slurm built with multiple-slurmd support
    # (slurmctld reports it once it answers).
    for _ in $(seq 50); do scontrol ping >/dev/null 2>&1 && break; sleep 0.1; done
    local multiple; multiple=$(scontrol show config 2>/dev/null | grep -i '^MULTIPLE_SLURMD' || true)
    if ! grep -qiE '= *Yes' <<< "$multiple"; then
      down
      unavailable "NODES=$NODES needs a Slurm built with multiple-slurmd support (scontrol show config: ${multiple:-no MULTIPLE_SLURMD line})"
    fi
    for n in $(node_names); do
      install -d -m 0755 "/var/lib/slurm/slurmd-$n"; : > "/var/log/slurm/slurmd-$n.log"
      start_daemon slurmd "/run/slurmd-$n.pid" /usr/sbin/slurmd -N "$n"
    done
  else
    install -d -m 0755 /var/lib/slurm/slurmd; : > /var/log/slurm/slurmd.log
    start_daemon slurmd /run/slurmd.pid /usr/sbin/slurmd
  fi

  # --- wait for every node to become schedulable
  local st="" ready=0
  for _ in $(seq 100); do
    st=$(sinfo -h -N -o '%N %T' 2>/dev/null | tr '\n' ' ' || true)
    ready=$(sinfo -h -N -o '%T' 2>/dev/null | grep -cxE 'idle|mixed|allocated' || true)
    [ "$ready" -eq "$NODES" ] && break
    sleep 0.2
  done
  if [ "$ready" -ne "$NODES" ]; then
    log "nodes not ready (states: '$st')"; sinfo -R >&2 || true; tail -20 /var/log/slurm/slurmctld.log >&2; exit 1
  fi
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
  local nn; nn=$(sinfo -h -N -o %N | wc -l)
  if [ "$nn" -gt 1 ]; then
    srun -N "$nn" -n "$nn" bash -c 'echo "node $SLURMD_NODENAME task $SLURM_PROCID of $SLURM_NTASKS: $SLURM_JOB_NODELIST"'
  fi
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
