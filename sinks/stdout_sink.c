/* stdout_sink.c - JSON lines to stdout or a file; a transaction is acked once flushed. */
#include "sinks/stdout_sink.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sinks/json_event.h"
#include "sinks/sink.h"

struct stdout_sink {
    struct sink base;
    FILE *out;
    int owns_out;
};

/* Writes one event as a JSON line; write errors surface at commit's fflush or here. */
static int stdout_emit(struct sink *sink, const struct pgf_event *ev)
{
    struct stdout_sink *s = (struct stdout_sink *)sink;
    json_t *obj = pgf_json_event(ev, sink->errstr, sizeof sink->errstr);
    if (obj == NULL)
        return -1;
    int rc = json_dumpf(obj, s->out, JSON_COMPACT);
    json_decref(obj);
    if (rc != 0 || fputc('\n', s->out) == EOF)
        return sink_fail(sink, "cannot write JSON output: %s", strerror(errno));
    return 0;
}

/* Flushes the transaction's lines; only then is it acked, so the slot never passes
 * output that is still in a stdio buffer. */
static int stdout_commit(struct sink *sink, const struct pgf_txn *txn)
{
    struct stdout_sink *s = (struct stdout_sink *)sink;
    if (fflush(s->out) != 0)
        return sink_fail(sink, "cannot flush JSON output: %s", strerror(errno));
    if (txn->end_lsn > sink->acked_lsn) /* an abandoned transaction ends at 0 */
        sink->acked_lsn = txn->end_lsn;
    return 0;
}

/* Nothing is asynchronous here. */
static int stdout_poll(struct sink *sink)
{
    (void)sink;
    return 0;
}

/* Everything committed is already flushed. */
static int stdout_flush(struct sink *sink, int timeout_ms)
{
    (void)timeout_ms;
    struct stdout_sink *s = (struct stdout_sink *)sink;
    return fflush(s->out) == 0 ? 0 : sink_fail(sink, "cannot flush JSON output: %s", strerror(errno));
}

/* Closes the file if we opened it. */
static void stdout_close(struct sink *sink)
{
    struct stdout_sink *s = (struct stdout_sink *)sink;
    if (s->owns_out)
        fclose(s->out);
    else
        fflush(s->out);
    free(s);
}

static const struct sink_ops stdout_ops = {
    .name = "stdout",
    .emit = stdout_emit,
    .commit = stdout_commit,
    .poll = stdout_poll,
    .flush = stdout_flush,
    .close = stdout_close,
};

/* Opens the sink on path, appending, or on stdout for NULL or "-". */
struct sink *stdout_sink_open(const char *path, char *errbuf, size_t errlen)
{
    struct stdout_sink *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    s->base.ops = &stdout_ops;
    s->base.connected = 1;
    s->base.wake_fd = -1;
    if (path == NULL || strcmp(path, "-") == 0) {
        s->out = stdout;
    } else {
        /* Append: a restart adds to what an earlier run wrote instead of destroying it. */
        s->out = fopen(path, "a");
        if (s->out == NULL) {
            snprintf(errbuf, errlen, "cannot open output file %s: %s", path, strerror(errno));
            free(s);
            return NULL;
        }
        s->owns_out = 1;
    }
    return &s->base;
}
