/* metrics.h - what the process counts for /metrics and /readyz.  One instance per process,
 * written by the stream on the event loop's thread and read by the HTTP handlers on the same
 * thread, so no locking is needed. */
#ifndef PGFANOUT_METRICS_H
#define PGFANOUT_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "decoders/event.h"
#include "sinks/sink.h"

/* Events of one table, by op. */
struct pgf_table_count {
    uint32_t oid;
    char *name; /* "schema.table" */
    uint64_t ops[PGF_OP_NONE];
};

/* One table's snapshot progress (this process's run). */
struct pgf_snapshot_count {
    char name[256]; /* "schema.table" */
    uint64_t rows;   /* rows read */
    uint64_t chunks; /* chunks read */
    uint64_t left;   /* rows left, estimated from the table's statistics */
};

struct pgf_replicas;

struct pgf_metrics {
    struct pgf_table_count *tables;
    size_t ntables, cap;
    size_t last; /* the entry hit last: consecutive changes are usually to one table */
    uint64_t messages;        /* logical decoding messages (not per table) */
    uint64_t received_bytes;  /* pgoutput payload bytes read from the slot */
    uint64_t server_lsn;      /* newest WAL end the server reported */
    uint64_t written_lsn;     /* end of the newest transaction handed to the sinks */
    uint64_t confirmed_lsn;   /* what was last confirmed to the server */
    int64_t last_commit_time; /* commit time of the newest transaction handed to the sinks */
    uint64_t heartbeats;      /* heartbeat messages written by us */
    uint64_t heartbeat_errors;
    uint64_t reconnects;      /* to PostgreSQL */
    uint64_t transactions;    /* committed transactions handed to the sinks */
    int streaming;            /* in COPY BOTH with the server */
    int caught_up;            /* a keepalive came between transactions: nothing more to read now */
    char waiting[512];        /* why we are not streaming yet (a standby waiting for the slot), or "" */
    struct sink *const *sinks;
    size_t nsinks;
    struct pgf_snapshot_count *snapshots; /* tables snapshotted by this process */
    size_t nsnapshots;
    int snapshot_running;                 /* a snapshot or backfill job is under way */
    const struct pgf_replicas *replicas;  /* the standbys polled for the second pass, or NULL */
};

/* The process's metrics. */
extern struct pgf_metrics pgf_metrics;

/* Counts one event (insert, update, delete, truncate and read per table, or message). */
void pgf_metrics_count(const struct pgf_event *ev);

/* Appends the Prometheus text exposition of everything to *out (malloc'd, *len bytes).
 * now_us is the current time since PostgreSQL's epoch.  Returns 0, or -1 when out of memory. */
int pgf_metrics_render(char **out, size_t *len, int64_t now_us);

/* Returns the replication lag in seconds at now_us: the age of the oldest transaction some sink
 * has not acknowledged; with none, of the newest one handed on while the server has more; 0
 * when caught up. */
double pgf_metrics_lag_seconds(int64_t now_us);

/* Writes the periodic progress line into buf: changes and transactions since the last call
 * (over seconds_since_last), the confirmed LSN, lag in bytes and seconds, in-flight per sink. */
void pgf_metrics_progress(char *buf, size_t len, double seconds_since_last, int64_t now_us);

/* Returns 1 when streaming with every sink connected; else 0 with the reason in why. */
int pgf_metrics_ready(char *why, size_t whylen);

/* Returns the snapshot counters of table name, created at 0, or NULL when out of memory. */
struct pgf_snapshot_count *pgf_metrics_snapshot(const char *name);

/* Frees the per-table counters. */
void pgf_metrics_free(void);

#endif
