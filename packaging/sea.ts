/**
 * The single executable's entry (`npm run package` bundles it with every command): oclif gets its
 * root plugin with the commands in memory, since the executable has no command files to discover or
 * import. What commands exist and their help come from oclif.manifest.json; it, the templates and
 * the catalogs are read from beside the executable (packageRoot).
 */
import { Config, Plugin, flush, handle, run, type Command, type Interfaces } from '@oclif/core';
import { packageRoot } from '../src/gucCatalog/packageRoot.js';

/** `commands`: id → class, each looked up only when that command runs (see build.ts). */
export async function main(pjson: Interfaces.PJSON, commands: Record<string, Command.Class>): Promise<void> {
  const plugin = new Plugin({
    root: packageRoot,
    isRoot: true,
    pjson: { ...pjson, oclif: { ...pjson.oclif, commands: { strategy: 'explicit', target: 'bundled', identifier: 'commands' } } },
  });
  // the explicit strategy would import `target`; its cache (a private field) is filled instead
  Object.assign(plugin, { commandCache: commands });
  await plugin.load();
  const config = await Config.load({ root: packageRoot, plugins: new Map([[plugin.name, plugin]]) });
  await run(process.argv.slice(2), config)
    .then(() => flush())
    .catch(async (error: Error) => handle(error));
}
