/* log.c - leveled logging to stderr. */
#include "common/log.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static enum pgf_log_level min_level = PGF_LOG_INFO;
enum log_format { FMT_TEXT, FMT_LOGFMT, FMT_JSON };
static enum log_format format = FMT_TEXT;

/* Chooses the line format. */
int pgf_log_set_format(const char *name)
{
    static const char *const names[] = {"text", "logfmt", "json"};
    for (int i = 0; i < 3; i++)
        if (strcmp(name, names[i]) == 0) {
            format = (enum log_format)i;
            return 0;
        }
    return -1;
}

/* Writes msg as a logfmt value: quoted, with backslash, quote and newline escaped. */
static void logfmt_value(char *out, size_t room, const char *msg)
{
    size_t n = 0;
    out[n++] = '"';
    for (; *msg && n + 3 < room; msg++) {
        if (*msg == '"' || *msg == '\\')
            out[n++] = '\\', out[n++] = *msg;
        else if (*msg == '\n')
            out[n++] = '\\', out[n++] = 'n';
        else if (*msg == '\t')
            out[n++] = '\\', out[n++] = 't';
        else
            out[n++] = *msg;
    }
    out[n++] = '"';
    out[n] = '\0';
}
static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* Sets the lowest level written. */
void pgf_log_set_level(enum pgf_log_level level)
{
    min_level = level;
}

/* Parses a level name; returns 0 on success, -1 if s names no level. */
int pgf_log_parse_level(const char *s, enum pgf_log_level *level)
{
    for (int i = 0; i <= PGF_LOG_ERROR; i++)
        if (strcmp(s, level_names[i]) == 0) {
            *level = (enum pgf_log_level)i;
            return 0;
        }
    return -1;
}

/* Writes one timestamped line to stderr; one fprintf per line so lines never interleave. */
void pgf_log(enum pgf_log_level level, const char *fmt, ...)
{
    if (level < min_level)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[32];
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    char when[64];
    snprintf(when, sizeof when, "%s.%03ldZ", ts, (long)(tv.tv_usec / 1000));
    if (format == FMT_LOGFMT) {
        char quoted[4200];
        logfmt_value(quoted, sizeof quoted, msg);
        fprintf(stderr, "ts=%s level=%s msg=%s\n", when, level_names[level], quoted);
    } else if (format == FMT_JSON) {
        json_t *o = json_pack("{s:s, s:s, s:s}", "ts", when, "level", level_names[level], "msg", msg);
        if (o == NULL) {
            /* Not UTF-8 (a file name, a server message): keep the line, mark the odd bytes. */
            for (char *p = msg; *p; p++)
                if ((unsigned char)*p >= 0x80)
                    *p = '?';
            o = json_pack("{s:s, s:s, s:s}", "ts", when, "level", level_names[level], "msg", msg);
        }
        char *line = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
        fprintf(stderr, "%s\n", line ? line : "{\"level\":\"error\",\"msg\":\"log line not valid UTF-8\"}");
        free(line);
        json_decref(o);
    } else {
        fprintf(stderr, "%s pgfanout %s: %s\n", when, level_names[level], msg);
    }
}
