/* redis_cacheops.c - row images as cacheops' Python would encode them; see redis_cacheops.h.
 *
 * The oracle is json.dumps(get_obj_dict(Model, Model.objects.get(pk=...)), default=str) under
 * Django 5.2 with USE_TZ = True and psycopg (tests/fixtures/cacheops_rows.json, made by
 * tests/django_cacheops/make_golden.py).  The PostgreSQL text comes from a session that pins
 * DateStyle ISO, IntervalStyle postgres, TimeZone UTC and extra_float_digits 3 (cdc/pgconn.c),
 * so each form below is parsed from exactly one layout.  Anything else is reported and left
 * out, never guessed: a wrong value would leave a stale cache silently, while a missing one
 * makes the script invalidate the whole table. */
#include "sinks/redis_cacheops.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decoders/value.h"
#include "sinks/redis_scripts.h"
#include "sinks/sink.h"

#define OID_INET 869
#define OID_INTERVAL 1186

/* Appends len bytes; returns 0 or -1. */
static int put(struct pgf_cacheops_buf *b, const char *s, size_t len)
{
    if (sink_grow((void **)&b->p, &b->cap, b->len + len + 1) != 0)
        return -1;
    memcpy(b->p + b->len, s, len);
    b->len += len;
    b->p[b->len] = '\0';
    return 0;
}

/* Appends a NUL-terminated string; returns 0 or -1. */
static int puts_(struct pgf_cacheops_buf *b, const char *s)
{
    return put(b, s, strlen(s));
}

/* Decodes one UTF-8 sequence at s (n bytes left); returns its length with *cp set, or 1 with
 * *cp the byte itself for a malformed sequence (PostgreSQL only sends valid UTF-8). */
static size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || len > n) {
        *cp = c;
        return 1;
    }
    *cp = len == 1 ? c : len == 2 ? (c & 0x1fu) : len == 3 ? (c & 0x0fu) : (c & 0x07u);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            *cp = c;
            return 1;
        }
        *cp = (*cp << 6) | (s[i] & 0x3fu);
    }
    return len;
}

/* Appends s as a JSON string the way Python's json.dumps writes it (ensure_ascii): the short
 * escapes, \u00XX for other control bytes, \uXXXX (surrogate pairs beyond the BMP) for
 * everything outside ASCII; byte-identical output keeps the golden test exact. */
static int put_json_string(struct pgf_cacheops_buf *b, const char *s, size_t len)
{
    if (put(b, "\"", 1) != 0)
        return -1;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = utf8_next((const unsigned char *)s + i, len - i, &cp);
        char esc[16];
        i += n;
        if (cp == '"' || cp == '\\') {
            esc[0] = '\\', esc[1] = (char)cp, esc[2] = '\0';
        } else if (cp == '\n' || cp == '\r' || cp == '\t' || cp == '\b' || cp == '\f') {
            esc[0] = '\\';
            esc[1] = cp == '\n' ? 'n' : cp == '\r' ? 'r' : cp == '\t' ? 't' : cp == '\b' ? 'b' : 'f';
            esc[2] = '\0';
        } else if (cp < 0x20 || (cp >= 0x7f && cp < 0x10000)) {
            /* Python leaves DEL (0x7f) alone: it is ASCII. */
            if (cp == 0x7f)
                esc[0] = 0x7f, esc[1] = '\0';
            else
                snprintf(esc, sizeof esc, "\\u%04x", (unsigned)cp);
        } else if (cp >= 0x10000) {
            uint32_t v = cp - 0x10000;
            snprintf(esc, sizeof esc, "\\u%04x\\u%04x", (unsigned)(0xd800 + (v >> 10)), (unsigned)(0xdc00 + (v & 0x3ff)));
        } else {
            esc[0] = (char)cp, esc[1] = '\0';
        }
        if (puts_(b, esc) != 0)
            return -1;
    }
    return put(b, "\"", 1);
}

/* Returns 1 when s (n bytes) is n > 0 ASCII digits, else 0. */
static int all_digits(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* Writes Python's repr() of a finite double into out (at least 40 bytes): the shortest digits
 * that read back as the same double, fixed notation for decimal exponents -5 < e < 16 (with a
 * ".0" on integral values), else d.ddde±XX.  Python's float_repr_style 'short' rules. */
static void python_float_repr(double d, char *out, size_t outlen)
{
    char sci[40];
    for (int p = 0; p <= 17; p++) {
        snprintf(sci, sizeof sci, "%.*e", p, d);
        if (strtod(sci, NULL) == d)
            break;
    }
    /* sci is [-]D[.DDD]e±XX: collect the digits and the exponent. */
    const char *s = sci;
    int neg = *s == '-';
    if (neg)
        s++;
    char digits[24];
    size_t nd = 0;
    for (; *s && *s != 'e'; s++)
        if (*s != '.' && nd < sizeof digits - 1)
            digits[nd++] = *s;
    digits[nd] = '\0';
    int e = atoi(s + 1);
    while (nd > 1 && digits[nd - 1] == '0') /* %.0e of 0 gives "0"; trailing zeros never count */
        digits[--nd] = '\0';
    size_t o = 0;
    char buf[64];
    if (neg)
        buf[o++] = '-';
    if (e < -4 || e >= 16) {
        buf[o++] = digits[0];
        if (nd > 1) {
            buf[o++] = '.';
            memcpy(buf + o, digits + 1, nd - 1);
            o += nd - 1;
        }
        o += (size_t)snprintf(buf + o, sizeof buf - o, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    } else if (e < 0) {
        buf[o++] = '0', buf[o++] = '.';
        for (int z = 0; z < -e - 1; z++)
            buf[o++] = '0';
        memcpy(buf + o, digits, nd);
        o += nd;
    } else {
        for (int k = 0; k <= e; k++)
            buf[o++] = (size_t)k < nd ? digits[k] : '0';
        buf[o++] = '.';
        if ((size_t)e + 1 < nd) {
            memcpy(buf + o, digits + e + 1, nd - (size_t)e - 1);
            o += nd - (size_t)e - 1;
        } else {
            buf[o++] = '0';
        }
    }
    buf[o] = '\0';
    snprintf(out, outlen, "%s", buf);
}

/* Writes Python's str(Decimal(text)) of a numeric's text (digits with an optional sign and
 * point; PostgreSQL never writes an exponent) into out.  Returns 0, or -1 when text is not that
 * form (NaN and the infinities are handled by the caller). */
static int python_decimal_str(const char *s, size_t n, struct pgf_cacheops_buf *out)
{
    int neg = 0;
    size_t i = 0;
    if (i < n && (s[i] == '-' || s[i] == '+'))
        neg = s[i++] == '-';
    char coeff[1100];
    size_t nc = 0;
    long exp = 0;
    int seen_point = 0, any = 0;
    for (; i < n; i++) {
        if (s[i] == '.' && !seen_point) {
            seen_point = 1;
        } else if (s[i] >= '0' && s[i] <= '9') {
            any = 1;
            if (seen_point)
                exp--;
            if (nc == 0 && s[i] == '0')
                continue; /* leading zeros are not part of the coefficient */
            if (nc >= sizeof coeff - 1)
                return -1;
            coeff[nc++] = s[i];
        } else {
            return -1;
        }
    }
    if (!any)
        return -1;
    if (nc == 0)
        coeff[nc++] = '0';
    coeff[nc] = '\0';
    /* decimal.py's __str__ (eng=False). */
    long leftdigits = exp + (long)nc;
    long dotplace = (exp <= 0 && leftdigits > -6) ? leftdigits : 1;
    if (neg && put(out, "-", 1) != 0)
        return -1;
    if (dotplace <= 0) {
        if (put(out, "0.", 2) != 0)
            return -1;
        for (long z = 0; z < -dotplace; z++)
            if (put(out, "0", 1) != 0)
                return -1;
        if (put(out, coeff, nc) != 0)
            return -1;
    } else if (dotplace >= (long)nc) {
        if (put(out, coeff, nc) != 0)
            return -1;
        for (long z = 0; z < dotplace - (long)nc; z++)
            if (put(out, "0", 1) != 0)
                return -1;
    } else {
        if (put(out, coeff, (size_t)dotplace) != 0 || put(out, ".", 1) != 0 ||
            put(out, coeff + dotplace, nc - (size_t)dotplace) != 0)
            return -1;
    }
    if (leftdigits != dotplace) {
        char e[32];
        snprintf(e, sizeof e, "E%+ld", leftdigits - dotplace);
        if (puts_(out, e) != 0)
            return -1;
    }
    return 0;
}

/* Parses "HH:MM:SS[.f{1,6}]" at s (n bytes) into microseconds since midnight; returns 0, or -1
 * when it is not that form or not a Python time (24:00:00 is valid in PostgreSQL only). */
static int parse_time(const char *s, size_t n, int64_t *us)
{
    if (n < 8 || !all_digits(s, 2) || s[2] != ':' || !all_digits(s + 3, 2) || s[5] != ':' || !all_digits(s + 6, 2))
        return -1;
    int h = (s[0] - '0') * 10 + s[1] - '0', m = (s[3] - '0') * 10 + s[4] - '0', sec = (s[6] - '0') * 10 + s[7] - '0';
    int64_t frac = 0;
    if (n > 8) {
        if (s[8] != '.' || n - 9 < 1 || n - 9 > 6 || !all_digits(s + 9, n - 9))
            return -1;
        for (size_t k = 9; k < 15; k++)
            frac = frac * 10 + (k < n ? s[k] - '0' : 0);
    }
    if (h > 23 || m > 59 || sec > 59)
        return -1;
    *us = ((int64_t)h * 3600 + m * 60 + sec) * 1000000 + frac;
    return 0;
}

/* Writes Python's str(time) of microseconds since midnight: HH:MM:SS[.ffffff]. */
static void format_time(int64_t us, char *out, size_t len)
{
    int64_t s = us / 1000000, f = us % 1000000;
    int n = snprintf(out, len, "%02d:%02d:%02d", (int)(s / 3600), (int)(s / 60 % 60), (int)(s % 60));
    if (f)
        snprintf(out + n, len - (size_t)n, ".%06d", (int)f);
}

/* Returns 1 when s starts with a Python date, "YYYY-MM-DD" (years 1 to 9999), else 0. */
static int is_date(const char *s, size_t n)
{
    return n >= 10 && all_digits(s, 4) && s[4] == '-' && all_digits(s + 5, 2) && s[7] == '-' &&
           all_digits(s + 8, 2) && memcmp(s, "0000", 4) != 0;
}

/* Parses a postgres-style interval without months: "[N day[s] ][±]HH:MM:SS[.f]" or "N day[s]",
 * into microseconds.  Returns 0, or -1 (years, months, other forms). */
static int parse_interval(const char *s, size_t n, int64_t *total)
{
    char buf[128];
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    const char *p = buf;
    int64_t days = 0, t = 0;
    int have_days = 0;
    /* A days part is a signed integer followed by " day" or " days". */
    char *end;
    long long v = strtoll(p, &end, 10);
    if (end != p && (strncmp(end, " day", 4) == 0)) {
        days = v;
        have_days = 1;
        p = end + 4;
        if (*p == 's')
            p++;
        if (*p == ' ')
            p++;
        else if (*p != '\0')
            return -1;
    }
    if (*p != '\0') {
        int neg = 0;
        if (*p == '-' || *p == '+')
            neg = *p++ == '-';
        /* Hours can exceed 23 in an interval: parse them apart from parse_time. */
        char *colon;
        long long h = strtoll(p, &colon, 10);
        if (colon == p || *colon != ':' || h < 0)
            return -1;
        char hms[32];
        int k = snprintf(hms, sizeof hms, "00%s", colon);
        if (k <= 0 || (size_t)k >= sizeof hms)
            return -1;
        int64_t rest;
        if (parse_time(hms, (size_t)k, &rest) != 0)
            return -1;
        t = (int64_t)h * 3600 * 1000000 + rest;
        if (neg)
            t = -t;
    } else if (!have_days) {
        return -1;
    }
    *total = days * 86400 * INT64_C(1000000) + t;
    return 0;
}

/* Writes Python's str(timedelta) of microseconds: "[D day[s], ]H:MM:SS[.ffffff]", with the
 * days floored so the time part is never negative ("-1 day, 23:00:00"). */
static void format_timedelta(int64_t us, char *out, size_t len)
{
    int64_t day = 86400 * INT64_C(1000000);
    int64_t days = us / day, rem = us % day;
    if (rem < 0)
        rem += day, days--;
    int n = 0;
    if (days)
        n = snprintf(out, len, "%lld day%s, ", (long long)days, (days == 1 || days == -1) ? "" : "s");
    int64_t s = rem / 1000000, f = rem % 1000000;
    n += snprintf(out + n, len - (size_t)n, "%d:%02d:%02d", (int)(s / 3600), (int)(s / 60 % 60), (int)(s % 60));
    if (f)
        snprintf(out + n, len - (size_t)n, ".%06d", (int)f);
}

/* Types cacheops never puts in a conj key (CACHEOPS_SKIP_FIELDS: TextField, BinaryField,
 * JSONField, ArrayField, FileField is a varchar and stays): left out without a word. */
static int skipped_type(uint32_t oid)
{
    switch (oid) {
    case PGF_OID_TEXT: case PGF_OID_BYTEA: case PGF_OID_JSON: case PGF_OID_JSONB:
    case 199: case 3807: /* json[], jsonb[] */
    case 1000: case 1005: case 1007: case 1016: case 1009: case 1015: case 1014: /* bool..varchar, bpchar arrays */
    case 1021: case 1022: case 1231: case 2951: case 1182: case 1183: case 1185: case 1115: case 1187:
        return 1;
    default:
        return 0;
    }
}

/* The form of one value: a bare JSON token (number, true, false, null) or a string. */
enum form { BARE, STRING };

/* Appends one converted value.  Plain mode writes JSON as Python's json.dumps(default=str)
 * would; insideout writes every value as the JSON string of its str().  Returns 0, -1 out of
 * memory, or 1 with *why set when the value has no exact conversion. */
static int put_value(const struct pgf_cacheops_call *call, uint32_t oid, const struct pgf_value *v,
                     struct pgf_cacheops_buf *out, const char **why)
{
    int io = call->insideout;
    const char *s = v->data;
    size_t n = v->len;
    char tmp[128];
    if (v->kind == PGF_VALUE_NULL)
        return puts_(out, io ? "\"None\"" : "null");
    if (v->kind != PGF_VALUE_TEXT) {
        *why = "not in text format";
        return 1;
    }
    switch (oid) {
    case PGF_OID_BOOL:
        if (n != 1 || (s[0] != 't' && s[0] != 'f'))
            break;
        return puts_(out, s[0] == 't' ? (io ? "\"True\"" : "true") : (io ? "\"False\"" : "false"));
    case PGF_OID_INT2:
    case PGF_OID_INT4:
    case PGF_OID_INT8: {
        /* All the digits: Lua formats numbers with %.14g when it builds the key, as it did when
         * cacheops wrote it; insideout keys hold Python's str(), every digit. */
        size_t d = n > 0 && s[0] == '-';
        if (!all_digits(s + d, n - d))
            break;
        return io ? put_json_string(out, s, n) : put(out, s, n);
    }
    case PGF_OID_FLOAT4:
    case PGF_OID_FLOAT8: {
        if (n >= sizeof tmp)
            break;
        memcpy(tmp, s, n);
        tmp[n] = '\0';
        char *end;
        /* psycopg hands Python the real's own value widened to a double. */
        double d = oid == PGF_OID_FLOAT4 ? (double)strtof(tmp, &end) : strtod(tmp, &end);
        if (end == tmp || *end != '\0')
            break;
        if (!isfinite(d)) {
            if (!io) {
                *why = "NaN or infinity (Python's json writes a bare NaN/Infinity)";
                return 1;
            }
            return puts_(out, isnan(d) ? "\"nan\"" : d > 0 ? "\"inf\"" : "\"-inf\"");
        }
        char r[64], q[72];
        python_float_repr(d, r, sizeof r);
        if (!io)
            return puts_(out, r);
        snprintf(q, sizeof q, "\"%s\"", r);
        return puts_(out, q);
    }
    case PGF_OID_NUMERIC: {
        if ((n == 3 && memcmp(s, "NaN", 3) == 0) || (n == 8 && memcmp(s, "Infinity", 8) == 0) ||
            (n == 9 && memcmp(s, "-Infinity", 9) == 0))
            return put(out, "\"", 1) || put(out, s, n) || put(out, "\"", 1) ? -1 : 0;
        struct pgf_cacheops_buf d = {0};
        if (python_decimal_str(s, n, &d) != 0) {
            free(d.p);
            break;
        }
        /* Variants: a filter on Decimal('1.5') names the row whose column reads back 1.50. */
        const char *dot = call->variants && d.len < 256 ? memchr(d.p, '.', d.len) : NULL;
        int rc;
        if (dot && d.p[d.len - 1] == '0' && !memchr(d.p, 'E', d.len)) {
            rc = put(out, "[", 1);
            for (size_t len = d.len; rc == 0;) {
                rc = put(out, "\"", 1) || put(out, d.p, len) || put(out, "\"", 1) ? -1 : 0;
                if (len <= (size_t)(dot - d.p) || d.p[len - 1] != '0')
                    break; /* no trailing zero left after the point */
                len--;
                if (d.p[len - 1] == '.')
                    len--; /* "2." is no form: the next is "2" */
                if (rc == 0)
                    rc = put(out, ",", 1);
            }
            if (rc == 0)
                rc = put(out, "]", 1);
        } else {
            rc = put(out, "\"", 1) || put(out, d.p, d.len) || put(out, "\"", 1) ? -1 : 0;
        }
        free(d.p);
        return rc;
    }
    case PGF_OID_DATE:
        if (n != 10 || !is_date(s, n))
            break;
        return put_json_string(out, s, n);
    case PGF_OID_TIMESTAMPTZ: {
        /* "YYYY-MM-DD HH:MM:SS[.f]+00" (TimeZone is UTC) -> str(aware datetime) */
        int64_t us;
        if (n < 22 || n > 32 || !is_date(s, n) || s[10] != ' ' || memcmp(s + n - 3, "+00", 3) != 0 ||
            parse_time(s + 11, n - 14, &us) != 0)
            break;
        char t[32];
        format_time(us, t, sizeof t);
        snprintf(tmp, sizeof tmp, "%.10s %s+00:00", s, t);
        return put_json_string(out, tmp, strlen(tmp));
    }
    case PGF_OID_TIME: {
        int64_t us;
        if (parse_time(s, n, &us) != 0)
            break;
        format_time(us, tmp, sizeof tmp);
        return put_json_string(out, tmp, strlen(tmp));
    }
    case OID_INTERVAL: {
        int64_t us;
        if (parse_interval(s, n, &us) != 0) {
            *why = "an interval with months or years (no timedelta holds those exactly)";
            return 1;
        }
        format_timedelta(us, tmp, sizeof tmp);
        return put_json_string(out, tmp, strlen(tmp));
    }
    case PGF_OID_UUID:
        if (n != 36)
            break;
        return put_json_string(out, s, n);
    case PGF_OID_VARCHAR:
    case PGF_OID_BPCHAR:
        return put_json_string(out, s, n);
    case OID_INET:
        /* GenericIPAddressField: an IPv4 host prints the same; IPv6 normalization and
         * networks are not verified against Django. */
        if (memchr(s, ':', n) || memchr(s, '/', n))
            break;
        return put_json_string(out, s, n);
    case PGF_OID_TIMESTAMP:
        *why = "timestamp without time zone (Django with USE_TZ writes timestamptz)";
        return 1;
    default:
        *why = "a type with no known Django conversion";
        return 1;
    }
    if (*why == NULL)
        *why = "a value outside what Python's types hold";
    return 1;
}

/* Encodes one row; see redis_cacheops.h. */
int pgf_cacheops_encode_row(const struct pgf_cacheops_call *call, const struct pgf_relation *rel,
                            const struct pgf_value *const *vals, struct pgf_cacheops_buf *out,
                            pgf_cacheops_skip_fn skip, void *ctx)
{
    int first = 1;
    if (put(out, "{", 1) != 0)
        return -1;
    for (uint16_t att = 0; att < rel->natts; att++) {
        const struct pgf_value *v = vals[att];
        uint32_t oid = rel->attrs[att].type_oid;
        if (v == NULL || v->kind == PGF_VALUE_ABSENT || v->kind == PGF_VALUE_UNCHANGED_TOAST || skipped_type(oid))
            continue;
        size_t mark = out->len;
        /* Python's json.dumps separators: ", " between items, ": " after a key. */
        if ((!first && put(out, ", ", 2) != 0) || put_json_string(out, rel->attrs[att].name,
                                                                    strlen(rel->attrs[att].name)) != 0 ||
            put(out, ": ", 2) != 0)
            return -1;
        const char *why = NULL;
        int rc = put_value(call, oid, v, out, &why);
        if (rc < 0)
            return -1;
        if (rc > 0) {
            out->len = mark;
            out->p[mark] = '\0';
            if (skip)
                skip(ctx, att, why);
            continue;
        }
        first = 0;
    }
    return put(out, "}", 1);
}

/* Builds the script call; see redis_cacheops.h.  The connection loaded the script in its
 * handshake, so EVALSHA names it by digest. */
void pgf_cacheops_command(const struct pgf_cacheops_call *call, const char *schemes_key, size_t sklen,
                          const char *db_table, size_t tlen, const char *rows, size_t rlen, int wide,
                          struct redis_cmd *cmd)
{
    const char *mode = call->insideout ? "insideout" : "plain";
    cmd->argv[0] = "EVALSHA", cmd->argl[0] = 7;
    cmd->argv[1] = redis_script_sha(REDIS_SCRIPT_CACHEOPS), cmd->argl[1] = 40;
    cmd->argv[2] = "1", cmd->argl[2] = 1;
    cmd->argv[3] = schemes_key, cmd->argl[3] = sklen;
    cmd->argv[4] = call->prefix, cmd->argl[4] = strlen(call->prefix);
    cmd->argv[5] = db_table, cmd->argl[5] = tlen;
    cmd->argv[6] = mode, cmd->argl[6] = strlen(mode);
    cmd->argv[7] = rows, cmd->argl[7] = rlen;
    cmd->argv[8] = wide ? "1" : "0", cmd->argl[8] = 1;
    cmd->argc = 9;
    cmd->nkeys = 1;
    cmd->nleases = 0;
}
