/** postmaster.pid, as the server writes it (see miscadmin.h LOCK_FILE_LINE_*). */
export interface PostmasterPid {
  pid: number;
  dataDir: string;
  startedAt: Date | undefined;
  port: number | undefined;
  socketDir: string | undefined;
  listenAddress: string | undefined;
  /** "starting", "stopping", "ready" or "standby" (10+). */
  status: string | undefined;
}

export function parsePostmasterPid(text: string): PostmasterPid | undefined {
  const lines = text.split('\n');
  const pid = Number(lines[0]?.trim());
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  const opt = (i: number) => {
    const v = lines[i]?.trim();
    return v ? v : undefined;
  };
  const epoch = Number(opt(2));
  const port = Number(opt(3));
  return {
    pid,
    dataDir: lines[1]?.trim() ?? '',
    startedAt: Number.isFinite(epoch) && epoch > 0 ? new Date(epoch * 1000) : undefined,
    port: Number.isInteger(port) && port > 0 ? port : undefined,
    socketDir: opt(4),
    listenAddress: opt(5),
    status: opt(7),
  };
}
