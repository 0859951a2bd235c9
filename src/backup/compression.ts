/**
 * The dump's compressor. zstd -T0 (all cores, level 3) is the default where installed: bench/backup
 * measured it against gzip -6 on the same dump; gzip is the fallback on hosts without zstd.
 */
export type Compressor = 'zstd' | 'gzip';

export interface CompressionSpec {
  [key: string]: string | number;
  compressor: Compressor;
  level: number;
}

export const compressedSuffix: Record<Compressor, string> = { zstd: '.zst', gzip: '.gz' };

export function compressArgv(spec: CompressionSpec): { program: string; args: string[] } {
  return spec.compressor === 'zstd' ? { program: 'zstd', args: ['-q', '-T0', `-${spec.level}`, '-c'] } : { program: 'gzip', args: [`-${spec.level}`, '-c'] };
}

export function decompressArgv(spec: CompressionSpec, file: string): { program: string; args: string[] } {
  return spec.compressor === 'zstd' ? { program: 'zstd', args: ['-q', '-d', '-c', file] } : { program: 'gzip', args: ['-d', '-c', file] };
}
