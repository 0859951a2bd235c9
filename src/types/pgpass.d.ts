/** pgpass ships no types: it looks a connection's password up in libpq's password file. */
declare module 'pgpass' {
  export default function lookup(connection: unknown, callback: (password: string | undefined) => void): void;
}
