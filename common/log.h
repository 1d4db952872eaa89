/* log.h - leveled logging to stderr.  Never pass secrets (passwords, DSNs) to these. */
#ifndef PGFANOUT_LOG_H
#define PGFANOUT_LOG_H

enum pgf_log_level { PGF_LOG_DEBUG = 0, PGF_LOG_INFO, PGF_LOG_WARN, PGF_LOG_ERROR };

/* Sets the lowest level that is written; the default is INFO. */
void pgf_log_set_level(enum pgf_log_level level);

/* Parses "debug", "info", "warn" or "error" into *level; returns 0, or -1 if unknown. */
int pgf_log_parse_level(const char *s, enum pgf_log_level *level);

/* Selects the line format: "text" (default), "logfmt" or "json"; returns 0, or -1 if unknown. */
int pgf_log_set_format(const char *name);

/* Writes one line "TIMESTAMP LEVEL message" to stderr when level is enabled. */
void pgf_log(enum pgf_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define pgf_debug(...) pgf_log(PGF_LOG_DEBUG, __VA_ARGS__)
#define pgf_info(...) pgf_log(PGF_LOG_INFO, __VA_ARGS__)
#define pgf_warn(...) pgf_log(PGF_LOG_WARN, __VA_ARGS__)
#define pgf_error(...) pgf_log(PGF_LOG_ERROR, __VA_ARGS__)

#endif
