/**
 * `npm run package`: pgscale for a database host without Node.js, for linux-x64.
 *
 *   build/pgscale/                  the executable and the data it reads beside itself:
 *     pgscale                       Node 22 (the npm `node` package's binary) as a single executable
 *                                   application around one esbuild bundle of pgscale and its deps
 *     templates/ playbooks/ src/gucCatalog/data/ oclif.manifest.json
 *   build/pgscale-V-linux-x64.tar.gz  that directory
 *   build/pgscale_V_amd64.deb         it under /usr/lib/pgscale, /usr/bin/pgscale a symlink to it
 *
 * Runs after `npm run build` (the oclif manifest lists the commands to bundle).
 */
import { chmodSync, copyFileSync, cpSync, mkdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { build } from 'esbuild';
import { packageRoot } from '../src/gucCatalog/packageRoot.js';
import { ZxRunner, describeFailure, type Invocation } from '../src/runner.js';
import { manifestPath } from './manifest.js';

/** What the executable reads beside itself (see packageRoot). */
export const DATA_DIRS = ['templates', 'playbooks', join('src', 'gucCatalog', 'data')];
/** Node's fixed sentinel marking a binary that may carry a single-executable blob. */
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

const runner = new ZxRunner();
/** The npm `node` package's Node 22, whatever node runs this script (a developer's shell may have another). */
const node22 = join(packageRoot, 'node_modules', 'node', 'bin', 'node');

async function must(inv: Invocation): Promise<void> {
  const res = await runner.run({ cwd: packageRoot, ...inv });
  if (res.exitCode !== 0) throw new Error(describeFailure(inv, res));
}

interface PackageJson {
  name: string;
  version: string;
  description: string;
  license: string;
  type: string;
  oclif: Record<string, unknown>;
}

/**
 * One CommonJS file (what a Node 22 single executable can run). Each command is a getter that
 * requires its module on first use: esbuild keeps a required module, with everything only it
 * imports, unevaluated until then, so a start evaluates oclif and one command, as with the manifest.
 */
async function bundle(pjson: PackageJson, outfile: string): Promise<void> {
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as { commands: Record<string, { relativePath: string[] }> };
  const ids = Object.keys(manifest.commands).sort();
  const entry = [
    `import { main } from './dist/packaging/sea.js';`,
    `const commands = {};`,
    ...ids.map(
      (id) =>
        `Object.defineProperty(commands, ${JSON.stringify(id)}, { enumerable: true, get: () => require('./${manifest.commands[id]!.relativePath.join('/')}').default });`,
    ),
    `const pjson = ${JSON.stringify({ name: pjson.name, version: pjson.version, description: pjson.description, type: pjson.type, oclif: pjson.oclif })};`,
    `void main(pjson, commands);`,
  ].join('\n');
  await build({
    stdin: { contents: entry, resolveDir: packageRoot, sourcefile: 'pgscale-entry.js', loader: 'js' },
    bundle: true,
    platform: 'node',
    target: 'node22',
    format: 'cjs',
    outfile,
    keepNames: true,
    minifyWhitespace: true,
    legalComments: 'eof',
    // modules written as ESM ask for import.meta.url: in the executable that is the executable
    define: { 'import.meta.url': '__pgscaleBundleUrl' },
    banner: { js: `var __pgscaleBundleUrl = require('node:url').pathToFileURL(__filename).href;` },
    logLevel: 'error',
  });
}

async function singleExecutable(bundleFile: string, work: string, out: string): Promise<void> {
  const blob = join(work, 'sea.blob');
  const config = join(work, 'sea-config.json');
  writeFileSync(config, JSON.stringify({ main: bundleFile, output: blob, disableExperimentalSEAWarning: true, useCodeCache: true }));
  await must({ program: node22, args: ['--experimental-sea-config', config] });
  copyFileSync(node22, out);
  chmodSync(out, 0o755);
  // the npm binary carries its debug info and symbol tables (18 MB of 125 MB); no native addon needs them
  await must({ program: 'strip', args: ['--strip-all', out] });
  await must({ program: join(packageRoot, 'node_modules', '.bin', 'postject'), args: [out, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', SEA_FUSE] });
}

function duSizeKiB(dir: string, files: string[]): number {
  return Math.ceil(files.reduce((sum, f) => sum + statSync(join(dir, f)).size, 0) / 1024);
}

async function debianPackage(pjson: PackageJson, appDir: string, buildDir: string): Promise<string> {
  const root = join(buildDir, 'deb-root');
  rmSync(root, { recursive: true, force: true });
  const lib = join(root, 'usr', 'lib', 'pgscale');
  mkdirSync(join(root, 'DEBIAN'), { recursive: true });
  mkdirSync(join(root, 'usr', 'bin'), { recursive: true });
  cpSync(appDir, lib, { recursive: true });
  symlinkSync('../lib/pgscale/pgscale', join(root, 'usr', 'bin', 'pgscale'));
  const control = [
    `Package: ${pjson.name}`,
    `Version: ${pjson.version}`,
    'Architecture: amd64',
    'Section: database',
    'Priority: optional',
    'Maintainer: pgscale maintainers <pgscale@localhost>',
    // Node's own needs: glibc 2.28 and the C++ runtime
    'Depends: libc6 (>= 2.28), libstdc++6, util-linux',
    'Recommends: openssh-client',
    `Installed-Size: ${duSizeKiB(appDir, ['pgscale'])}`,
    `Description: ${pjson.description.split(':')[0]}`,
    ` ${pjson.description}.`,
    ' A single executable (Node.js is built in): no Node.js installation is needed.',
    '',
  ].join('\n');
  writeFileSync(join(root, 'DEBIAN', 'control'), control);
  const deb = join(buildDir, `${pjson.name}_${pjson.version}_amd64.deb`);
  await must({ program: 'dpkg-deb', args: ['--root-owner-group', '-Zgzip', '-z6', '--build', root, deb] });
  rmSync(root, { recursive: true, force: true });
  return deb;
}

export async function packageAll(): Promise<{ executable: string; tarball: string; deb: string }> {
  const pjson = JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as PackageJson;
  const buildDir = join(packageRoot, 'build');
  const work = join(buildDir, 'work');
  const appDir = join(buildDir, 'pgscale');
  rmSync(buildDir, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  mkdirSync(appDir);

  const started = performance.now();
  const log = (text: string) => process.stderr.write(`package: ${((performance.now() - started) / 1000).toFixed(1).padStart(5)} s  ${text}\n`);
  const bundleFile = join(work, 'pgscale.cjs');
  await bundle(pjson, bundleFile);
  log(`bundle ${relative(packageRoot, bundleFile)} (${Math.round(statSync(bundleFile).size / 1024)} KiB)`);
  const executable = join(appDir, 'pgscale');
  await singleExecutable(bundleFile, work, executable);
  for (const d of DATA_DIRS) cpSync(join(packageRoot, d), join(appDir, d), { recursive: true });
  copyFileSync(manifestPath, join(appDir, 'oclif.manifest.json'));
  log(`executable ${relative(packageRoot, executable)} (${Math.round(statSync(executable).size / 2 ** 20)} MiB)`);

  const tarball = join(buildDir, `${pjson.name}-${pjson.version}-linux-x64.tar.gz`);
  await must({ program: 'tar', args: ['--owner=0', '--group=0', '-czf', tarball, '-C', buildDir, 'pgscale'] });
  log(relative(packageRoot, tarball));
  const deb = await debianPackage(pjson, appDir, buildDir);
  log(relative(packageRoot, deb));
  rmSync(work, { recursive: true, force: true });
  log('done');
  return { executable, tarball, deb };
}
