/**
 * Sizes and durations for people: "23.5 GB", "2 min 5 s". Sizes count in 1024s, as PostgreSQL's
 * kB, MB and GB do, with a space: every command prints the same size the same way.
 */
export function formatBytes(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let v = bytes;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  // three significant digits at most: 4.9 kB, 23.5 GB, 512 MB
  return `${i === 0 ? v : v < 10 ? v.toFixed(1) : v < 100 ? Number.parseFloat(v.toFixed(1)) : Math.round(v)} ${units[i]}`;
}

export function formatDuration(seconds: number): string {
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const m = Math.floor(seconds / 60);
  const s = Math.round(seconds % 60);
  if (m < 60) return `${m} min${s ? ` ${s} s` : ''}`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}
