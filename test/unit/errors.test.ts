/** The error contract: every error has an exit code, a kind and a hint; no secret survives redaction. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { redact, registerSecret } from '../../src/audit.js';
import { ExitCode, PgscaleError, asPgscaleError, defaultHint, exitCodeName, parseFailure } from '../../src/errors.js';

test("oclif parse failures become bad input (exit 2) with the command's help as the hint", () => {
  const e = parseFailure(new Error('Nonexistent flag: --bogus\nSee more help with --help'), 'backup:verify');
  assert.equal(e.exitCode, ExitCode.BadInput);
  assert.equal(e.message, 'Nonexistent flag: --bogus');
  assert.match(e.hint ?? '', /pgscale backup verify --help/);
  assert.equal(parseFailure(new Error('Parsing --level \n\tExpected an integer'), 'backup').message, 'Parsing --level: Expected an integer');
  const own = new PgscaleError('mine', ExitCode.Refused, 'do this');
  assert.equal(parseFailure(own, 'x'), own);
});

test('every error that reaches the user has a kind and a hint; anything unexpected is an internal error', () => {
  for (const code of Object.values(ExitCode).filter((c) => c !== ExitCode.Ok)) {
    assert.ok(exitCodeName[code], `kind of ${code}`);
    assert.ok(defaultHint[code].length > 20, `hint of ${code}`);
    assert.equal(asPgscaleError(new PgscaleError('m', code)).hint, defaultHint[code]);
  }
  assert.equal(asPgscaleError(new PgscaleError('m', ExitCode.Refused, 'own hint')).hint, 'own hint');
  const bug = asPgscaleError(new TypeError('x is undefined'));
  assert.equal(bug.exitCode, ExitCode.InternalError);
  assert.match(bug.hint ?? '', /--verbose/);
  assert.equal(asPgscaleError(new PgscaleError('ok?', ExitCode.Ok)).exitCode, ExitCode.InternalError);
});

test('redact removes passwords from URIs, keyword strings, PGPASSWORD and registered secrets', () => {
  assert.equal(redact('postgresql://u:pa55@h/db'), 'postgresql://u:***@h/db');
  assert.equal(redact("host=h password='a b' user=u"), 'host=h password=*** user=u');
  const saved = process.env.PGPASSWORD;
  process.env.PGPASSWORD = 'env-s3cret';
  try {
    assert.equal(redact('failed for env-s3cret!'), 'failed for ***!');
  } finally {
    if (saved === undefined) delete process.env.PGPASSWORD;
    else process.env.PGPASSWORD = saved;
  }
  registerSecret('dsn-pw-42');
  assert.equal(redact('{"argv":["--dsn","x dsn-pw-42 y"]}'), '{"argv":["--dsn","x *** y"]}');
});
