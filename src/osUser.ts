import { readFileSync, statSync } from 'node:fs';
import { userInfo } from 'node:os';
import type { OsUser } from './runner.js';
import { badInput } from './errors.js';

function passwdEntries(): OsUser[] {
  let text: string;
  try {
    text = readFileSync('/etc/passwd', 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .map((line) => line.split(':'))
    .filter((f) => f.length >= 7)
    .map(([name, , uid, gid, , home]) => ({ name: name!, uid: Number(uid), gid: Number(gid), home: home! }));
}

export function userByUid(uid: number): OsUser | undefined {
  if (uid === process.getuid?.()) {
    const me = userInfo();
    return { name: me.username, uid: me.uid, gid: process.getgid?.() ?? me.gid, home: me.homedir };
  }
  return passwdEntries().find((u) => u.uid === uid);
}

export function userByName(name: string): OsUser | undefined {
  return passwdEntries().find((u) => u.name === name);
}

/** The account that owns a path (a data directory): PostgreSQL programs run as it when we are root. */
export function ownerOf(path: string): OsUser {
  const st = statSync(path);
  return userByUid(st.uid) ?? { name: String(st.uid), uid: st.uid, gid: st.gid, home: '/' };
}

/** The current process's own account. */
export function currentUser(): OsUser {
  const me = userByUid(process.getuid?.() ?? userInfo().uid);
  if (!me) throw badInput('cannot determine the current OS user', 'run pgscale as an account listed in /etc/passwd');
  return me;
}
