import type { TestCluster } from './testbed.js';

/** The partitions of `history` that loadTiers makes: one per month of 2023's first quarter. */
export const historyPartitions = ['history_2023_01', 'history_2023_02', 'history_2023_03'];

/**
 * The schema the tablespace tests place: a small hot table (hot_t) and a range-partitioned
 * history of `historyRows` rows whose partitions go cold once nothing reads them.
 */
export async function loadTiers(c: TestCluster, historyRows: number): Promise<void> {
  await c.sql(`
    create table hot_t (id int primary key, v int not null default 0);
    insert into hot_t select g from generate_series(1, 2000) g;
    create table history (id bigint not null, at date not null, payload text, primary key (id, at)) partition by range (at);
    create index history_at on history (at);
    ${historyPartitions.map((p, i) => `create table ${p} partition of history for values from ('2023-0${i + 1}-01') to ('2023-0${i + 2}-01');`).join('\n')}
    insert into history select g, date '2023-01-01' + (g % 89), repeat(md5(g::text), 4) from generate_series(1, ${historyRows}) g;
    analyze;`);
}
