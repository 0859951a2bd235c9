/** pg_controldata output, parsed. Labels are stable across 9.6–18; run it with LC_ALL=C. */

export type ClusterControlState =
  'starting up' | 'shut down' | 'shut down in recovery' | 'shutting down' | 'in crash recovery' | 'in archive recovery' | 'in production';

export interface ControlData {
  controlVersion: number;
  catalogVersion: number;
  systemIdentifier: string;
  state: ClusterControlState | string;
  latestCheckpoint: string;
  timeline: number;
  walSegmentBytes: number;
  blockSize: number;
  /** 0 means checksums off. */
  checksumVersion: number;
  walLevel: string | undefined;
}

export function parseControlData(text: string): ControlData {
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) fields.set(line.slice(0, i).trim(), line.slice(i + 1).trim());
  }
  const get = (label: string): string => {
    const v = fields.get(label);
    if (v === undefined) throw new Error(`pg_controldata output has no "${label}" line`);
    return v;
  };
  const num = (label: string) => {
    const n = Number(get(label));
    if (!Number.isFinite(n)) throw new Error(`pg_controldata "${label}" is not a number: ${get(label)}`);
    return n;
  };
  return {
    controlVersion: num('pg_control version number'),
    catalogVersion: num('Catalog version number'),
    systemIdentifier: get('Database system identifier'),
    state: get('Database cluster state'),
    latestCheckpoint: get('Latest checkpoint location'),
    timeline: num("Latest checkpoint's TimeLineID"),
    walSegmentBytes: num('Bytes per WAL segment'),
    blockSize: num('Database block size'),
    checksumVersion: num('Data page checksum version'),
    walLevel: fields.get('wal_level setting'),
  };
}
