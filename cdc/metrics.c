/* metrics.c - see metrics.h.  The text format is Prometheus's exposition format 0.0.4. */
#include "cdc/metrics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/replicas.h"
#include "common/histogram.h"
#include "common/lsn.h"
#include "sinks/kafka_sink.h"
#include "sinks/redis_sink.h"

struct pgf_metrics pgf_metrics;

/* Returns the counters of a relation, creating them on first use; NULL when out of memory. */
static struct pgf_table_count *table_for(const struct pgf_relation *rel)
{
    struct pgf_metrics *m = &pgf_metrics;
    if (m->last < m->ntables && m->tables[m->last].oid == rel->oid)
        return &m->tables[m->last];
    char name[512];
    snprintf(name, sizeof name, "%s.%s", rel->nspname, rel->relname);
    for (size_t i = 0; i < m->ntables; i++)
        if (m->tables[i].oid == rel->oid && strcmp(m->tables[i].name, name) == 0) {
            m->last = i;
            return &m->tables[i];
        }
    if (m->ntables == m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 16;
        struct pgf_table_count *n = realloc(m->tables, ncap * sizeof *n);
        if (n == NULL)
            return NULL;
        m->tables = n;
        m->cap = ncap;
    }
    struct pgf_table_count *t = &m->tables[m->ntables];
    memset(t, 0, sizeof *t);
    t->oid = rel->oid;
    if ((t->name = strdup(name)) == NULL)
        return NULL;
    m->last = m->ntables++;
    return t;
}

/* Counts one event. */
void pgf_metrics_count(const struct pgf_event *ev)
{
    struct pgf_table_count *t;
    if (ev->op == PGF_OP_MESSAGE) {
        pgf_metrics.messages++;
    } else if (ev->op == PGF_OP_TRUNCATE) {
        for (uint32_t i = 0; i < ev->truncate.nrels; i++)
            if ((t = table_for(ev->truncate.rels[i])) != NULL)
                t->ops[ev->op]++;
    } else if (ev->rel != NULL && (t = table_for(ev->rel)) != NULL) {
        t->ops[ev->op]++;
    }
}

/* A growing text buffer for the exposition. */
struct text {
    char *p;
    size_t len, cap;
    int oom;
};

/* Appends formatted text. */
static void put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct text *t, const char *fmt, ...)
{
    for (int attempt = 0; attempt < 2 && !t->oom; attempt++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->p ? t->p + t->len : NULL, t->p ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->oom = 1;
            return;
        }
        if (t->p && t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return;
        }
        if (sink_grow((void **)&t->p, &t->cap, t->len + (size_t)n + 1) != 0)
            t->oom = 1;
    }
}

/* Writes a label value with Prometheus's escapes (backslash, quote, newline). */
static void put_label(struct text *t, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            put(t, "\\%c", *s);
        else if (*s == '\n')
            put(t, "\\n");
        else
            put(t, "%c", *s);
    }
}

/* Writes "metric{replica="name"} " with the name escaped; the caller writes the value. */
static void put_replica(struct text *t, const char *metric, const char *name)
{
    put(t, "%s{replica=\"", metric);
    put_label(t, name);
    put(t, "\"} ");
}

/* Upper bounds of the latency histogram's exported buckets, in seconds.  Dense from 0.5 ms to
 * 50 ms, where a Kafka ack's p99 lies, so a quantile read from them is not off by a whole
 * 10-25 ms step.  common/histogram.c resolves each edge to within 1/16 below it (a value just
 * under an edge may land in the next bucket up), finer than the gap between any two edges. */
static const double latency_buckets[] = {0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025,
                                         0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

/* An edge in whole microseconds, rounded: 0.0075 * 1e6 must not truncate to 7499. */
static uint64_t bucket_us(double seconds)
{
    return (uint64_t)(seconds * 1e6 + 0.5);
}

/* Renders everything; see metrics.h. */
int pgf_metrics_render(char **out, size_t *len, int64_t now_us)
{
    const struct pgf_metrics *m = &pgf_metrics;
    struct text t = {0};
    put(&t, "# HELP pgfanout_events_total Row changes handed to the sinks, by table and op.\n"
            "# TYPE pgfanout_events_total counter\n");
    for (size_t i = 0; i < m->ntables; i++)
        for (int op = 0; op < PGF_OP_MESSAGE; op++) {
            put(&t, "pgfanout_events_total{table=\"");
            put_label(&t, m->tables[i].name);
            put(&t, "\",op=\"%s\"} %" PRIu64 "\n", pgf_op_name((enum pgf_op)op), m->tables[i].ops[op]);
        }
    put(&t, "# HELP pgfanout_messages_total Logical decoding messages handed to the sinks.\n"
            "# TYPE pgfanout_messages_total counter\npgfanout_messages_total %" PRIu64 "\n", m->messages);
    put(&t, "# HELP pgfanout_snapshot_running 1 while a snapshot or backfill job is under way.\n"
            "# TYPE pgfanout_snapshot_running gauge\npgfanout_snapshot_running %d\n", m->snapshot_running);
    static const struct {
        const char *name, *type, *help;
    } per_snap[] = {
        {"pgfanout_snapshot_rows_total", "counter", "Rows of the chunks snapshots and backfills handed on, by table."},
        {"pgfanout_snapshot_chunks_total", "counter", "Chunks snapshots and backfills handed on, by table."},
        {"pgfanout_snapshot_rows_left", "gauge", "Rows left to read, estimated from the table's statistics."},
    };
    for (size_t k = 0; k < sizeof per_snap / sizeof *per_snap; k++) {
        put(&t, "# HELP %s %s\n# TYPE %s %s\n", per_snap[k].name, per_snap[k].help, per_snap[k].name,
            per_snap[k].type);
        for (size_t i = 0; i < m->nsnapshots; i++) {
            const struct pgf_snapshot_count *c = &m->snapshots[i];
            put(&t, "%s{table=\"", per_snap[k].name);
            put_label(&t, c->name);
            put(&t, "\"} %" PRIu64 "\n", k == 0 ? c->rows : k == 1 ? c->chunks : c->left);
        }
    }
    put(&t, "# HELP pgfanout_received_bytes_total pgoutput bytes read from the slot.\n"
            "# TYPE pgfanout_received_bytes_total counter\npgfanout_received_bytes_total %" PRIu64 "\n",
        m->received_bytes);
    put(&t, "# HELP pgfanout_confirmed_lsn The position last confirmed to the server, as a byte offset.\n"
            "# TYPE pgfanout_confirmed_lsn gauge\npgfanout_confirmed_lsn %" PRIu64 "\n", m->confirmed_lsn);
    put(&t, "# HELP pgfanout_server_lsn The newest WAL position the server reported.\n"
            "# TYPE pgfanout_server_lsn gauge\npgfanout_server_lsn %" PRIu64 "\n", m->server_lsn);
    uint64_t lag = m->server_lsn > m->confirmed_lsn ? m->server_lsn - m->confirmed_lsn : 0;
    put(&t, "# HELP pgfanout_slot_lag_bytes The server's WAL position minus the confirmed one: WAL the slot "
            "retains for us.\n# TYPE pgfanout_slot_lag_bytes gauge\npgfanout_slot_lag_bytes %" PRIu64 "\n", lag);
    double rlag = pgf_metrics_lag_seconds(now_us);
    put(&t, "# HELP pgfanout_replication_lag_seconds Age of the oldest transaction a sink has not acknowledged; "
            "with none, of the newest one handed on while the server has more; 0 when caught up.\n"
            "# TYPE pgfanout_replication_lag_seconds gauge\npgfanout_replication_lag_seconds %.3f\n", rlag);
    put(&t, "# HELP pgfanout_streaming 1 while streaming from the slot.\n# TYPE pgfanout_streaming gauge\n"
            "pgfanout_streaming %d\n", m->streaming);
    put(&t, "# HELP pgfanout_reconnects_total Reconnections to PostgreSQL.\n"
            "# TYPE pgfanout_reconnects_total counter\npgfanout_reconnects_total %" PRIu64 "\n", m->reconnects);
    put(&t, "# HELP pgfanout_heartbeats_total Heartbeat messages written.\n"
            "# TYPE pgfanout_heartbeats_total counter\npgfanout_heartbeats_total %" PRIu64 "\n"
            "# HELP pgfanout_heartbeat_errors_total Heartbeats that failed.\n"
            "# TYPE pgfanout_heartbeat_errors_total counter\npgfanout_heartbeat_errors_total %" PRIu64 "\n",
        m->heartbeats, m->heartbeat_errors);
    static const struct {
        const char *name, *type, *help;
    } per_sink[] = {
        {"pgfanout_sink_inflight_messages", "gauge", "Messages (records, or Redis transactions) not yet acked."},
        {"pgfanout_sink_inflight_bytes", "gauge", "Bytes not yet acked; drives back-pressure."},
        {"pgfanout_sink_errors_total", "counter", "Errors seen by the sink (failed connections or commands)."},
        {"pgfanout_sink_retries_total", "counter", "Reconnections or resends after an error."},
        {"pgfanout_sink_connected", "gauge", "1 when the sink can deliver now."},
    };
    for (size_t k = 0; k < sizeof per_sink / sizeof *per_sink; k++) {
        put(&t, "# HELP %s %s\n# TYPE %s %s\n", per_sink[k].name, per_sink[k].help, per_sink[k].name,
            per_sink[k].type);
        for (size_t i = 0; i < m->nsinks; i++) {
            const struct sink *s = m->sinks[i];
            uint64_t v = k == 0 ? s->inflight_msgs : k == 1 ? s->inflight_bytes : k == 2 ? s->errors
                       : k == 3 ? s->retries : (uint64_t)s->connected;
            put(&t, "%s{sink=\"%s\"} %" PRIu64 "\n", per_sink[k].name, s->ops->name, v);
        }
    }
    /* Only a Kafka sink has them; rendered from 0 so an alert can watch the series. */
    int kafka_header = 0;
    for (size_t i = 0; i < m->nsinks; i++) {
        uint64_t dead_lettered, skipped;
        if (kafka_sink_oversize_counts(m->sinks[i], &dead_lettered, &skipped) != 0)
            continue;
        if (!kafka_header++)
            put(&t, "# HELP pgfanout_kafka_oversize_records_total Records too large for Kafka handled by "
                    "kafka.on_oversize instead of delivered, by action.\n"
                    "# TYPE pgfanout_kafka_oversize_records_total counter\n");
        put(&t, "pgfanout_kafka_oversize_records_total{action=\"dead_letter\"} %" PRIu64 "\n"
                "pgfanout_kafka_oversize_records_total{action=\"skip\"} %" PRIu64 "\n", dead_lettered, skipped);
    }
    /* Only a Redis sink has them; rendered from 0 so an alert can watch the series. */
    for (size_t i = 0; i < m->nsinks; i++) {
        uint64_t leases, unsupported;
        if (redis_sink_lease_counts(m->sinks[i], &leases, &unsupported) != 0)
            continue;
        put(&t, "# HELP pgfanout_redis_lease_keys_total Lease keys deleted together with their cache keys "
                "(redis.leases).\n# TYPE pgfanout_redis_lease_keys_total counter\n"
                "pgfanout_redis_lease_keys_total %" PRIu64 "\n"
                "# HELP pgfanout_redis_lease_unsupported_total Keys deleted without a lease: with "
                "redis.lease_layout: cluster, no lease name shares their hash slot.\n"
                "# TYPE pgfanout_redis_lease_unsupported_total counter\n"
                "pgfanout_redis_lease_unsupported_total %" PRIu64 "\n", leases, unsupported);
        break;
    }
    for (size_t i = 0; i < m->nsinks; i++) {
        struct redis_sink_pass_stats ps;
        if (redis_sink_pass_stats(m->sinks[i], &ps) != 0)
            continue;
        put(&t, "# HELP pgfanout_redis_ryw_lsn The LSN the read-your-writes key (redis.ryw_key) was last raised "
                "to: every invalidation up to it is done.\n# TYPE pgfanout_redis_ryw_lsn gauge\n"
                "pgfanout_redis_ryw_lsn %" PRIu64 "\n", ps.ryw_lsn);
        put(&t, "# HELP pgfanout_redis_second_passes_total Transactions invalidated a second time after the "
                "standbys replayed them.\n# TYPE pgfanout_redis_second_passes_total counter\n"
                "pgfanout_redis_second_passes_total %" PRIu64 "\n"
                "# HELP pgfanout_redis_second_pass_forced_total Second passes that went after "
                "redis.replica_max_wait without every standby having replayed the transaction.\n"
                "# TYPE pgfanout_redis_second_pass_forced_total counter\n"
                "pgfanout_redis_second_pass_forced_total %" PRIu64 "\n"
                "# HELP pgfanout_redis_held_transactions Transactions whose second pass waits for the standbys.\n"
                "# TYPE pgfanout_redis_held_transactions gauge\npgfanout_redis_held_transactions %zu\n"
                "# HELP pgfanout_replica_horizon_lsn The lowest replay position over the listed standbys.\n"
                "# TYPE pgfanout_replica_horizon_lsn gauge\npgfanout_replica_horizon_lsn %" PRIu64 "\n",
            ps.second_passes, ps.forced, ps.held, ps.horizon == UINT64_MAX ? 0 : ps.horizon);
        put(&t, "# HELP pgfanout_redis_second_pass_seconds Commit to the last reply of the transaction's second "
                "pass.\n# TYPE pgfanout_redis_second_pass_seconds histogram\n");
        for (size_t b = 0; b < sizeof latency_buckets / sizeof *latency_buckets; b++)
            put(&t, "pgfanout_redis_second_pass_seconds_bucket{le=\"%g\"} %" PRIu64 "\n", latency_buckets[b],
                pgf_hist_count_le(ps.second_pass, bucket_us(latency_buckets[b])));
        put(&t, "pgfanout_redis_second_pass_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n"
                "pgfanout_redis_second_pass_seconds_sum %.6f\npgfanout_redis_second_pass_seconds_count %" PRIu64 "\n",
            ps.second_pass->total, ps.second_pass->sum_us / 1e6, ps.second_pass->total);
        const struct pgf_replica_stat *rs;
        put(&t, "# HELP pgfanout_replica_up 1 when the standby's last poll answered and showed it streaming.\n"
                "# TYPE pgfanout_replica_up gauge\n");
        for (size_t k = 0; (rs = pgf_replicas_stat(m->replicas, k)) != NULL; k++) {
            put_replica(&t, "pgfanout_replica_up", rs->name);
            put(&t, "%d\n", rs->up);
        }
        put(&t, "# HELP pgfanout_replica_replay_lsn The standby's replay position as last read.\n"
                "# TYPE pgfanout_replica_replay_lsn gauge\n");
        for (size_t k = 0; (rs = pgf_replicas_stat(m->replicas, k)) != NULL; k++) {
            put_replica(&t, "pgfanout_replica_replay_lsn", rs->name);
            put(&t, "%" PRIu64 "\n", rs->replay_lsn);
        }
        put(&t, "# HELP pgfanout_replica_lag_bytes WAL the server reported to pgfanout that the standby has not "
                "replayed.\n# TYPE pgfanout_replica_lag_bytes gauge\n");
        for (size_t k = 0; (rs = pgf_replicas_stat(m->replicas, k)) != NULL; k++) {
            put_replica(&t, "pgfanout_replica_lag_bytes", rs->name);
            put(&t, "%" PRIu64 "\n", m->server_lsn > rs->replay_lsn && rs->replay_lsn ? m->server_lsn - rs->replay_lsn : 0);
        }
        put(&t, "# HELP pgfanout_replica_lag_seconds The standby's own replay delay: how old its last replayed "
                "commit is while it has WAL left to replay (replay_lag in pg_stat_replication).\n"
                "# TYPE pgfanout_replica_lag_seconds gauge\n");
        for (size_t k = 0; (rs = pgf_replicas_stat(m->replicas, k)) != NULL; k++) {
            put_replica(&t, "pgfanout_replica_lag_seconds", rs->name);
            put(&t, "%.3f\n", rs->lag_seconds);
        }
        put(&t, "# HELP pgfanout_replica_poll_errors_total Polls of the standby that failed.\n"
                "# TYPE pgfanout_replica_poll_errors_total counter\n");
        for (size_t k = 0; (rs = pgf_replicas_stat(m->replicas, k)) != NULL; k++) {
            put_replica(&t, "pgfanout_replica_poll_errors_total", rs->name);
            put(&t, "%" PRIu64 "\n", rs->poll_errors);
        }
        break;
    }
    put(&t, "# HELP pgfanout_sink_ack_latency_seconds Commit (timestamp in pgoutput's Commit) to the sink's "
            "acknowledgement of the whole transaction.\n# TYPE pgfanout_sink_ack_latency_seconds histogram\n");
    for (size_t i = 0; i < m->nsinks; i++) {
        const struct pgf_hist *h = m->sinks[i]->latency;
        if (h == NULL)
            continue;
        const char *name = m->sinks[i]->ops->name;
        for (size_t b = 0; b < sizeof latency_buckets / sizeof *latency_buckets; b++)
            put(&t, "pgfanout_sink_ack_latency_seconds_bucket{sink=\"%s\",le=\"%g\"} %" PRIu64 "\n", name,
                latency_buckets[b], pgf_hist_count_le(h, bucket_us(latency_buckets[b])));
        put(&t, "pgfanout_sink_ack_latency_seconds_bucket{sink=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", name, h->total);
        put(&t, "pgfanout_sink_ack_latency_seconds_sum{sink=\"%s\"} %.6f\n", name, h->sum_us / 1e6);
        put(&t, "pgfanout_sink_ack_latency_seconds_count{sink=\"%s\"} %" PRIu64 "\n", name, h->total);
    }
    if (t.oom) {
        free(t.p);
        return -1;
    }
    *out = t.p;
    *len = t.len;
    return 0;
}

/* Replication lag in seconds; see metrics.h. */
double pgf_metrics_lag_seconds(int64_t now_us)
{
    const struct pgf_metrics *m = &pgf_metrics;
    /* A sink that is down holds the oldest transaction: that is how far behind the output is. */
    int64_t oldest = 0;
    for (size_t i = 0; i < m->nsinks; i++)
        if (m->sinks[i]->pending_since > 0 && (oldest == 0 || m->sinks[i]->pending_since < oldest))
            oldest = m->sinks[i]->pending_since;
    if (oldest > 0)
        return now_us > oldest ? (double)(now_us - oldest) / 1e6 : 0.0;
    /* Behind the server: how old the newest transaction we handed on is; caught up: 0. */
    return !m->caught_up && m->last_commit_time > 0 && now_us > m->last_commit_time
               ? (double)(now_us - m->last_commit_time) / 1e6
               : 0.0;
}

/* The progress line; see metrics.h. */
void pgf_metrics_progress(char *buf, size_t len, double seconds_since_last, int64_t now_us)
{
    static uint64_t last_changes, last_txns;
    const struct pgf_metrics *m = &pgf_metrics;
    uint64_t changes = m->messages;
    for (size_t i = 0; i < m->ntables; i++)
        for (int op = 0; op < PGF_OP_NONE; op++)
            changes += m->tables[i].ops[op];
    char lsn[PGF_LSN_BUFSZ];
    uint64_t lag = m->server_lsn > m->confirmed_lsn ? m->server_lsn - m->confirmed_lsn : 0;
    size_t n = (size_t)snprintf(buf, len,
                                "progress: %" PRIu64 " changes in %" PRIu64 " transactions in the last %.0f s; "
                                "confirmed %s; lag %" PRIu64 " bytes, %.1f s; in flight:",
                                changes - last_changes, m->transactions - last_txns, seconds_since_last,
                                pgf_lsn_format(m->confirmed_lsn, lsn), lag, pgf_metrics_lag_seconds(now_us));
    for (size_t i = 0; i < m->nsinks && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s %s %zu (%zu bytes)", i ? "," : "", m->sinks[i]->ops->name,
                              m->sinks[i]->inflight_msgs, m->sinks[i]->inflight_bytes);
    last_changes = changes;
    last_txns = m->transactions;
}

/* Readiness: see metrics.h. */
int pgf_metrics_ready(char *why, size_t whylen)
{
    if (!pgf_metrics.streaming) {
        snprintf(why, whylen, "not streaming from PostgreSQL%s%s", pgf_metrics.waiting[0] ? ": " : "",
                 pgf_metrics.waiting);
        return 0;
    }
    for (size_t i = 0; i < pgf_metrics.nsinks; i++)
        if (!pgf_metrics.sinks[i]->connected) {
            snprintf(why, whylen, "%s sink not connected", pgf_metrics.sinks[i]->ops->name);
            return 0;
        }
    snprintf(why, whylen, "ready");
    return 1;
}

/* Frees the table counters. */
/* Returns the snapshot counters of a table; see metrics.h. */
struct pgf_snapshot_count *pgf_metrics_snapshot(const char *name)
{
    struct pgf_metrics *m = &pgf_metrics;
    for (size_t i = 0; i < m->nsnapshots; i++)
        if (strcmp(m->snapshots[i].name, name) == 0)
            return &m->snapshots[i];
    struct pgf_snapshot_count *n = realloc(m->snapshots, (m->nsnapshots + 1) * sizeof *n);
    if (n == NULL)
        return NULL;
    m->snapshots = n;
    struct pgf_snapshot_count *c = &n[m->nsnapshots++];
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    return c;
}

/* Frees the per-table counters. */
void pgf_metrics_free(void)
{
    for (size_t i = 0; i < pgf_metrics.ntables; i++)
        free(pgf_metrics.tables[i].name);
    free(pgf_metrics.tables);
    pgf_metrics.tables = NULL;
    pgf_metrics.ntables = pgf_metrics.cap = 0;
    free(pgf_metrics.snapshots);
    pgf_metrics.snapshots = NULL;
    pgf_metrics.nsnapshots = 0;
}
