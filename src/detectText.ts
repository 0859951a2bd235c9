/** `pgscale detect` for people: one screen, compute, storage per path, installations, clusters. */
import type { DetectReport } from './detect.js';
import type { RhelClusterLayout } from './cluster/rhel.js';
import { formatBytes } from './format.js';

/** The unit that runs a RHEL/PGDG cluster, and how to drive it. */
function rhelServiceLines(l: RhelClusterLayout): string[] {
  if (!l.service)
    return [`    service     none: no postgresql-${l.version}.service unit sets PGDATA to this directory (is postgresql${l.version}-server installed?)`];
  return [
    `    service     ${l.service}  (PGDATA from ${l.unitFiles.join(', ')})`,
    `    next        start, stop and reload it with systemctl … ${l.service}: a pg_ctl start or stop behind systemd's back leaves the unit's state wrong`,
  ];
}

export function detectText(r: DetectReport): string {
  const out: string[] = [];
  const c = r.compute;
  out.push('Compute');
  const cpuLimited = c.effective.cpus !== c.host.cpus;
  const memLimited = c.effective.memoryBytes !== c.host.memoryBytes;
  out.push(
    `  vCPUs   ${c.effective.cpus}${c.effective.exactCpus !== c.effective.cpus ? ` (quota worth ${c.effective.exactCpus})` : ''}${cpuLimited ? `   (host: ${c.host.cpus})` : ''}`,
  );
  out.push(`  memory  ${formatBytes(c.effective.memoryBytes)}${memLimited ? `   (host: ${formatBytes(c.host.memoryBytes)})` : ''}`);
  out.push(
    `  cgroup  ${c.cgroupVersion ? `v${c.cgroupVersion}` : 'none'}${[
      c.limits.cpuQuota && `cpu quota from ${c.limits.cpuQuota.source}`,
      c.limits.cpuset && `cpuset ${c.limits.cpuset.list}`,
      c.limits.memory && `memory limit from ${c.limits.memory.source}`,
    ]
      .filter(Boolean)
      .map((s) => `; ${s}`)
      .join('')}`,
  );
  out.push('');
  out.push('Installations');
  if (r.installations.length === 0) out.push('  none found (give --bindir)');
  for (const i of r.installations) out.push(`  ${String(i.major).padEnd(3)} ${i.version.padEnd(34)} ${i.bindir}  [${i.layout}]`);
  out.push('');
  out.push('Clusters');
  if (r.clusters.length === 0) out.push('  none found (give --pgdata)');
  for (const cl of r.clusters) {
    const name =
      cl.layout.kind === 'debian'
        ? `${cl.layout.version}/${cl.layout.name}`
        : cl.layout.kind === 'rhel' && cl.layout.service
          ? `${cl.layout.service.replace(/\.service$/, '')} (${cl.dataDir})`
          : cl.dataDir;
    out.push(`  ${name}: PostgreSQL ${cl.serverVersion ?? cl.major}, ${cl.state}${cl.pid ? ` (pid ${cl.pid})` : ''}, port ${cl.port}, ${cl.role}`);
    out.push(`    data        ${cl.dataDir}  (${formatBytes(cl.sizeBytes)}, owner ${cl.owner})`);
    out.push(
      `    checksums   ${cl.checksums === undefined ? 'unknown' : cl.checksums ? 'on' : 'off'}   encoding ${cl.encoding ?? '?'}   locale ${cl.lcCollate ?? '?'}${cl.localeProvider ? ` (${cl.localeProvider})` : ''}`,
    );
    out.push(`    WAL         ${cl.wal.path}${cl.wal.symlink ? '  (symlink: separate location)' : ''}`);
    for (const t of cl.tablespaces) out.push(`    tablespace  ${t.name ?? `oid ${t.oid}`} → ${t.location}`);
    for (const s of cl.storage) {
      const space = s.space
        ? `${formatBytes(s.space.sizeBytes)}, ${formatBytes(s.space.usedBytes)} used, ${formatBytes(s.space.freeBytes)} free`
        : 'size unknown';
      if (!s.storage) {
        out.push(`    storage ${s.role.padEnd(10)} ${s.path}: ${space}; ${s.error}`);
        continue;
      }
      const st = s.storage;
      out.push(
        `    storage ${s.role.padEnd(10)} ${st.mount.mountPoint} (${st.mount.fsType}): ${space}; ${st.storageClass} (${st.confidence} confidence), ${st.mount.options.join(',')}; ${st.stack.join(' → ')}`,
      );
      out.push(`      why: ${st.reasons.join('; ')}`);
    }
    if (cl.layout.kind === 'rhel') out.push(...rhelServiceLines(cl.layout));
    for (const n of cl.notes) out.push(`    note: ${n}`);
  }
  for (const s of r.skipped) out.push(`  skipped ${s.dataDir}: ${s.reason}`);
  return out.join('\n');
}
