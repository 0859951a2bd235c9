/**
 * One reader of the random-read probe (src/tune/randomReads.ts), in its own thread so that every
 * reader blocks in its own read: libuv's pool would cap reads in flight at its 4 threads.
 */
import { closeSync, constants, openSync, readSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';

const PAGE = 8192;
/** O_DIRECT wants the buffer aligned to the device's logical block (512 B or 4 kB); JavaScript cannot ask for an address. */
const MAX_ALIGNMENT = 4096;
const ALIGNMENT_STEP = 8;

const { path, pages } = workerData as { path: string; pages: number };
const port = parentPort!;

/** A page-sized view of `raw` that O_DIRECT reads into: misaligned reads fail with EINVAL and do no I/O. */
function alignedView(fd: number): Buffer | undefined {
  const raw = Buffer.alloc(PAGE + MAX_ALIGNMENT);
  for (let offset = 0; offset <= MAX_ALIGNMENT; offset += ALIGNMENT_STEP) {
    const view = raw.subarray(offset, offset + PAGE);
    try {
      readSync(fd, view, 0, PAGE, 0);
      return view;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
    }
  }
  return undefined;
}

function start(): void {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_DIRECT);
  } catch (e) {
    port.postMessage({ refused: (e as Error).message });
    return;
  }
  const view = alignedView(fd);
  if (!view) {
    closeSync(fd);
    port.postMessage({ refused: 'no buffer alignment was accepted for O_DIRECT reads' });
    return;
  }
  port.postMessage({ ready: true });
  port.once('message', ({ stopAt }: { stopAt: number }) => {
    const started = Date.now();
    let reads = 0;
    while (Date.now() < stopAt) {
      readSync(fd, view, 0, PAGE, Math.floor(Math.random() * pages) * PAGE);
      reads++;
    }
    const ms = Date.now() - started;
    closeSync(fd);
    port.postMessage({ reads, ms });
  });
}

start();
