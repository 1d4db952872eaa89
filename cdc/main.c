/* main.c - pgfanout: the only place that decides to exit. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cdc/log.h"
#include "cdc/options.h"
#include "cdc/replconn.h"
#include "cdc/stream.h"
#include "sinks/sink.h"

#ifndef PGFANOUT_VERSION
#define PGFANOUT_VERSION "dev"
#endif

/* Parses flags, prepares the server, streams; returns the process exit status. */
int main(int argc, char **argv)
{
    struct pgf_options opts;
    if (pgf_options_parse(argc, argv, &opts) != 0)
        return 2;
    if (opts.show_help) {
        pgf_options_usage(stdout);
        return 0;
    }
    if (opts.show_version) {
        printf("pgfanout %s\n", PGFANOUT_VERSION);
        return 0;
    }
    /* A closed stdout must surface as a write error, not kill us before we can report it. */
    signal(SIGPIPE, SIG_IGN);

    char err[2048];
    PGconn *conn = pgf_replconn_open(opts.dsn, 1, err, sizeof err);
    if (conn == NULL) {
        pgf_error("%s", err);
        return 1;
    }
    if (pgf_replconn_prepare(conn, &opts, err, sizeof err) != 0) {
        pgf_error("%s", err);
        PQfinish(conn);
        return 1;
    }
    struct sink *sink = stdout_sink_open(opts.output, err, sizeof err);
    if (sink == NULL) {
        pgf_error("%s", err);
        PQfinish(conn);
        return 1;
    }
    if (pgf_replconn_start(conn, &opts, err, sizeof err) != 0) {
        pgf_error("%s", err);
        sink_close(sink);
        PQfinish(conn);
        return 1;
    }
    pgf_info("streaming slot \"%s\", publication \"%s\"", opts.slot, opts.publication);
    int rc = pgf_stream_run(conn, &opts, &sink, 1);
    sink_close(sink);
    PQfinish(conn);
    return rc;
}
