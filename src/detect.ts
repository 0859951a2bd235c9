/** `pgscale detect`: compute, storage and clusters as pgscale sees them. */
import { statfs } from 'node:fs/promises';
import { inspectCluster, type ClusterInfo } from './cluster/inspect.js';
import { discoverClusters, defaultDiscoveryRoots, layoutOf, type DiscoveryRoots } from './cluster/discover.js';
import { findInstallations, defaultInstallationRoots, type Installation, type InstallationRoots } from './cluster/installations.js';
import type { AuditSink } from './audit.js';
import type { ConnectionSettings } from './connection.js';
import { PgscaleError } from './errors.js';
import { detectCompute } from './host/compute.js';
import type { HostRoot } from './host/hostRoot.js';
import { detectStorage } from './host/storage.js';
import type { ComputeProfile, StorageInfo } from './host/types.js';
import type { Runner } from './runner.js';

export type StorageRole = 'data' | 'wal' | 'tablespace';

/** The filesystem holding a path, as df counts it: bytes; free is what an unprivileged writer (the server) may still use. */
export interface Space {
  sizeBytes: number;
  usedBytes: number;
  freeBytes: number;
}

export interface ClusterStorage {
  role: StorageRole;
  path: string;
  storage: StorageInfo | undefined;
  space: Space | undefined;
  error?: string;
}

/** Size, used and free of the filesystem holding `path`, as `df -B1` shows them (Size, Used, Avail). */
export async function spaceOf(path: string): Promise<Space> {
  const fs = await statfs(path);
  return { sizeBytes: fs.blocks * fs.bsize, usedBytes: (fs.blocks - fs.bfree) * fs.bsize, freeBytes: fs.bavail * fs.bsize };
}

export interface DetectedCluster extends ClusterInfo {
  storage: ClusterStorage[];
}

export interface DetectReport {
  hostRoot: string;
  compute: ComputeProfile;
  installations: Installation[];
  clusters: DetectedCluster[];
  /** Candidates that were found but could not be inspected. */
  skipped: { dataDir: string; reason: string }[];
}

export interface DetectOptions {
  runner: Runner;
  hostRoot: HostRoot;
  audit?: AuditSink;
  pgdata?: string;
  bindir?: string;
  connection?: ConnectionSettings;
  env?: NodeJS.ProcessEnv;
  installationRoots?: InstallationRoots;
  discoveryRoots?: DiscoveryRoots;
}

async function storageOf(root: HostRoot, info: ClusterInfo): Promise<ClusterStorage[]> {
  const paths: { role: StorageRole; path: string }[] = [
    { role: 'data', path: info.dataDir },
    ...(info.wal.symlink ? [{ role: 'wal' as const, path: info.wal.path }] : []),
    ...info.tablespaces.map((t) => ({ role: 'tablespace' as const, path: t.location })),
  ];
  return Promise.all(
    paths.map(async (p) => {
      const space = await spaceOf(p.path).catch(() => undefined);
      try {
        return { ...p, storage: await detectStorage(root, p.path), space };
      } catch (e) {
        if (e instanceof PgscaleError) throw e;
        return { ...p, storage: undefined, space, error: (e as Error).message };
      }
    }),
  );
}

export async function detect(opts: DetectOptions): Promise<DetectReport> {
  const roots = opts.discoveryRoots ?? defaultDiscoveryRoots;
  // independent reads and probes run side by side: on a host with several clusters, start-up is mostly waiting on them
  const [compute, installations, found, layout] = await Promise.all([
    detectCompute(opts.hostRoot),
    findInstallations(opts.runner, opts.bindir ? [opts.bindir] : [], opts.installationRoots ?? defaultInstallationRoots),
    opts.pgdata ? undefined : discoverClusters([], opts.env ?? process.env, roots),
    opts.pgdata ? layoutOf(opts.pgdata, roots) : undefined,
  ]);
  const ctxBase = { runner: opts.runner, installations, audit: opts.audit, connection: opts.connection };
  const clusters: DetectedCluster[] = [];
  const skipped: DetectReport['skipped'] = [];

  if (opts.pgdata) {
    // an explicit data directory must be valid: its errors are the user's to see, not skipped
    const info = await inspectCluster(opts.pgdata, { ...ctxBase, layout, foundBy: ['flag'] });
    clusters.push({ ...info, storage: await storageOf(opts.hostRoot, info) });
  } else {
    const inspected = await Promise.all(
      (found ?? []).map(async ({ candidate, foundBy }): Promise<DetectedCluster | DetectReport['skipped'][number]> => {
        try {
          const info = await inspectCluster(candidate.dataDir, { ...ctxBase, layout: candidate.layout, foundBy });
          return { ...info, storage: await storageOf(opts.hostRoot, info) };
        } catch (e) {
          return { dataDir: candidate.dataDir, reason: (e as Error).message };
        }
      }),
    );
    for (const r of inspected) {
      if ('reason' in r) skipped.push(r);
      else if (!clusters.some((c) => c.dataDir === r.dataDir)) clusters.push(r);
    }
  }
  return { hostRoot: opts.hostRoot.root, compute, installations, clusters, skipped };
}
