/**
 * Random 8kB reads of a file with O_DIRECT, one at a time and `depth` at once, each for `seconds`:
 * what random_page_cost and effective_io_concurrency are decided from. In-process (worker threads,
 * one blocking reader each: libuv's pool would cap reads in flight at its 4 threads), so the
 * database host needs nothing but pgscale; read-only.
 */
import { Worker } from 'node:worker_threads';

/**
 * One reader, as source: the single executable bundles pgscale into one file, so a worker cannot
 * be a module of its own. O_DIRECT wants the buffer aligned to the device's logical block (512 B or
 * 4 kB) and JavaScript cannot ask for an address: offsets are tried, a misaligned read fails with
 * EINVAL before any I/O.
 */
const READER = `
const { closeSync, constants, openSync, readSync } = require('node:fs');
const { parentPort, workerData } = require('node:worker_threads');
const PAGE = 8192;
const { path, pages } = workerData;
function alignedView(fd) {
  const raw = Buffer.alloc(PAGE + 4096);
  for (let offset = 0; offset <= 4096; offset += 8) {
    const view = raw.subarray(offset, offset + PAGE);
    try {
      readSync(fd, view, 0, PAGE, 0);
      return view;
    } catch (e) {
      if (e.code !== 'EINVAL') throw e;
    }
  }
  return undefined;
}
let fd;
try {
  fd = openSync(path, constants.O_RDONLY | constants.O_DIRECT);
} catch (e) {
  parentPort.postMessage({ refused: 'opening the probe file with O_DIRECT failed: ' + e.message });
}
const view = fd === undefined ? undefined : alignedView(fd);
if (fd !== undefined && !view) {
  closeSync(fd);
  parentPort.postMessage({ refused: 'the volume accepted no buffer alignment for O_DIRECT reads' });
} else if (view) {
  parentPort.postMessage({ ready: true });
  parentPort.once('message', ({ stopAt }) => {
    const started = Date.now();
    let reads = 0;
    while (Date.now() < stopAt) {
      readSync(fd, view, 0, PAGE, Math.floor(Math.random() * pages) * PAGE);
      reads++;
    }
    const ms = Date.now() - started;
    closeSync(fd);
    parentPort.postMessage({ reads, ms });
  });
}
`;

export interface ReaderResult {
  reads: number;
  ms: number;
}

/** Reads per second of readers running side by side: each over its own elapsed time, so start skew does not count. */
export function readsPerSecond(readers: readonly ReaderResult[]): number {
  return readers.reduce((sum, r) => sum + (r.ms > 0 ? (r.reads * 1000) / r.ms : 0), 0);
}

/** Slack past the read window before a reader stuck in a read is given up on. */
const STUCK_READER_MS = 10_000;

type FromReader = { ready: true } | { refused: string } | ReaderResult;

/** `readers` threads reading `pages` 8kB pages of `path` at random for `seconds`; a string when O_DIRECT is refused. */
async function readTogether(path: string, pages: number, readers: number, seconds: number): Promise<ReaderResult[] | string> {
  const workers = Array.from({ length: readers }, () => new Worker(READER, { eval: true, workerData: { path, pages } }));
  const next = (w: Worker) =>
    new Promise<FromReader>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
      w.once('exit', () => reject(new Error(`a reader stopped before reporting (no answer within ${seconds * 1000 + STUCK_READER_MS}ms)`)));
    });
  const timer = setTimeout(() => void Promise.all(workers.map((w) => w.terminate())), seconds * 1000 + STUCK_READER_MS);
  try {
    const opened = await Promise.all(workers.map(next));
    const refused = opened.find((m): m is { refused: string } => 'refused' in m);
    if (refused) return refused.refused;
    const done = workers.map(next);
    const stopAt = Date.now() + seconds * 1000;
    for (const w of workers) w.postMessage({ stopAt });
    return (await Promise.all(done)) as ReaderResult[];
  } finally {
    clearTimeout(timer);
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

/** Reads per second one at a time, then `depth` at once; a string when the file cannot be read with O_DIRECT. */
export async function probeRandomReads(
  path: string,
  fileBytes: number,
  seconds: number,
  depth: number,
): Promise<{ serialIops: number; parallelIops: number } | string> {
  const pages = Math.floor(fileBytes / 8192);
  const serial = await readTogether(path, pages, 1, seconds);
  if (typeof serial === 'string') return serial;
  const parallel = await readTogether(path, pages, depth, seconds);
  if (typeof parallel === 'string') return parallel;
  return { serialIops: readsPerSecond(serial), parallelIops: readsPerSecond(parallel) };
}
