#!/usr/bin/env bash
# provision-hosts.sh — what the namespace test hosts need on this machine: iproute2 (ip netns),
# Debian's openssh-server (sshd; its package starts no daemon where systemd is not PID 1) and the
# OpenSSH client, rsync. Installs only what is missing; idempotent; serialised by a lock.
set -euo pipefail
need=()
command -v ip >/dev/null || need+=(iproute2)
[[ -x /usr/sbin/sshd ]] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v rsync >/dev/null || need+=(rsync)
if ((${#need[@]})); then
  [[ $(id -u) == 0 ]] || { echo "provision-hosts.sh: ${need[*]} missing and not root" >&2; exit 1; }
  exec 9>/var/lock/pgscale-provision-hosts.lock; flock 9
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${need[@]}" >&2 || { apt-get update >&2 && apt-get install -y --no-install-recommends "${need[@]}" >&2; }
fi
mkdir -p /run/sshd
echo ok
