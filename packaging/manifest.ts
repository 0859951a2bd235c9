/**
 * oclif.manifest.json (every command's id, flags and help) at the package root, which
 * `npm run build` writes after tsc (packaging/writeManifest.ts): with it, `--help` reads one JSON file and a command loads only
 * its own module, instead of oclif importing every command to learn what exists.
 */
import { join } from 'node:path';
import { Plugin, type Interfaces } from '@oclif/core';
import { packageRoot } from '../src/gucCatalog/packageRoot.js';

export const manifestPath = join(packageRoot, 'oclif.manifest.json');

/** The manifest as oclif computes it from the built commands (dist/commands), ignoring any manifest on disk. */
export async function buildManifest(): Promise<Interfaces.Manifest> {
  const plugin = new Plugin({ root: packageRoot, type: 'core', isRoot: true, ignoreManifest: true, errorOnManifestCreate: true });
  await plugin.load();
  return plugin.manifest;
}
