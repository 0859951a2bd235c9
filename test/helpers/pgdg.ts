/** A postgresql-N.service unit as the PGDG postgresqlN-server package ships it (trimmed). */
export const pgdgUnit = (major: number) => `[Unit]
Description=PostgreSQL ${major} database server
After=syslog.target network-online.target

[Service]
Type=notify
User=postgres
Group=postgres
# Location of database directory
Environment=PGDATA=/var/lib/pgsql/${major}/data/
Environment=PG_OOM_ADJUST_FILE=/proc/self/oom_score_adj
ExecStartPre=/usr/pgsql-${major}/bin/postgresql-${major}-check-db-dir \${PGDATA}
ExecStart=/usr/pgsql-${major}/bin/postmaster -D \${PGDATA}
ExecReload=/bin/kill -HUP $MAINPID

[Install]
WantedBy=multi-user.target
`;
