#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the SLURM tests (tests/test_slurm.py).
#
#   sudo ci/slurm/setup.sh          install (Debian packages munge, slurmctld, slurmd, slurmdbd, mariadb-server),
#                                   configure, start
#   ci/slurm/setup.sh --check       exit 0 when sinfo answers and the node is idle
#
# Idempotent: re-running rewrites the configuration and restarts the daemons. Needs root and
# apt-get; does nothing harmful elsewhere (it only writes /etc/slurm/slurm.conf, cgroup.conf,
# slurmdbd.conf, the spool/log folders and a slurm_acct_db database). The node advertises this
# machine's CPUs and (most of) its memory. Accounting (slurmdbd on MariaDB) is on because submitit
# reads job states with sacct: rosa.jobs status and Hydra's submitit launcher depend on it.
set -euo pipefail

check() {
  command -v sinfo >/dev/null || return 1
  sinfo -h -o '%T' 2>/dev/null | grep -Eq 'idle|mixed|allocated'
}
if [ "${1:-}" = "--check" ]; then check; exit $?; fi
if [ "$(id -u)" != 0 ]; then echo "ci/slurm/setup.sh: needs root" >&2; exit 1; fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
   || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client slurmdbd mariadb-server >/dev/null
fi

HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)

# munge: a key, then the daemon
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
chown munge:munge /etc/munge/munge.key 2>/dev/null || true
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown -R munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
if ! pgrep -x munged >/dev/null; then
  if command -v runuser >/dev/null && id munge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
  else
    /usr/sbin/munged --force
  fi
fi

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
chown -R slurm:slurm /var/spool/slurmctld /var/log/slurm 2>/dev/null || true
cat > /etc/slurm/slurm.conf <<CONF
# Written by ci/slurm/setup.sh: a one-node test cluster on ${HOST}
ClusterName=rosa-ci
SlurmctldHost=${HOST}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
SlurmctldParameters=preempt_send_user_signal
MpiDefault=none
NodeName=${HOST} CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=debug Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
cat > /etc/slurm/cgroup.conf <<CONF
CgroupPlugin=autodetect
IgnoreSystemd=yes
CONF

# accounting: MariaDB holds slurmdbd's database (sacct answers from it)
pgrep -x mariadbd >/dev/null || service mariadb start >/dev/null
mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
          CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'rosa-ci';
          GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
cat > /etc/slurm/slurmdbd.conf <<CONF
# Written by ci/slurm/setup.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=rosa-ci
StorageLoc=slurm_acct_db
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
CONF
chmod 600 /etc/slurm/slurmdbd.conf

# (re)start the daemons; -c: ignore saved state, a fresh cluster every time
for pidfile in /run/slurmd.pid /run/slurmctld.pid /run/slurmdbd.pid; do
  if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill "$(cat "$pidfile")"; sleep 1
  fi
done
/usr/sbin/slurmdbd
for _ in $(seq 1 30); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 1; done
sacctmgr -i add cluster rosa-ci >/dev/null 2>&1 || true   # already there on a re-run
/usr/sbin/slurmctld -c
/usr/sbin/slurmd -c
for _ in $(seq 1 30); do
  if check; then
    sinfo
    exit 0
  fi
  scontrol update NodeName="${HOST}" State=RESUME >/dev/null 2>&1 || true
  sleep 1
done
echo "ci/slurm/setup.sh: the node did not come up; see /var/log/slurm/*.log" >&2
tail -20 /var/log/slurm/slurmdbd.log /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
