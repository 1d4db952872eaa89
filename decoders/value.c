/* value.c - column values to their typed form. Pure. */
#include "decoders/value.h"

#include <stdlib.h>
#include <string.h>

/* Reads exactly `digits` decimal digits at s[*pos] (or at least that many when at_least),
 * into *v; returns 0 or -1. */
static int read_digits(const char *s, size_t n, size_t *pos, int digits, int at_least, int64_t *v)
{
    int64_t x = 0;
    int got = 0;
    while (*pos < n && s[*pos] >= '0' && s[*pos] <= '9' && (at_least || got < digits)) {
        if (got >= 12)
            return -1; /* no field we parse is that long; also keeps x from overflowing */
        x = x * 10 + (s[*pos] - '0');
        (*pos)++;
        got++;
    }
    if (got < digits)
        return -1;
    *v = x;
    return 0;
}

/* Consumes the character c at s[*pos]; returns 0 or -1. */
static int expect_char(const char *s, size_t n, size_t *pos, char c)
{
    if (*pos >= n || s[*pos] != c)
        return -1;
    (*pos)++;
    return 0;
}

/* Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* Parses YYYY-MM-DD at s[*pos] into days; returns 0 or -1. */
static int parse_date_at(const char *s, size_t n, size_t *pos, int64_t *days)
{
    int64_t y, m, d;
    if (read_digits(s, n, pos, 4, 1, &y) || expect_char(s, n, pos, '-') || read_digits(s, n, pos, 2, 0, &m) ||
        expect_char(s, n, pos, '-') || read_digits(s, n, pos, 2, 0, &d))
        return -1;
    if (y < 1 || m < 1 || m > 12 || d < 1 || d > 31)
        return -1;
    *days = days_from_civil(y, m, d);
    return 0;
}

/* Parses HH:MM:SS[.ffffff] at s[*pos] into microseconds; returns 0 or -1. */
static int parse_time_at(const char *s, size_t n, size_t *pos, int64_t *us)
{
    int64_t h, mi, sec, frac = 0;
    if (read_digits(s, n, pos, 2, 0, &h) || expect_char(s, n, pos, ':') || read_digits(s, n, pos, 2, 0, &mi) ||
        expect_char(s, n, pos, ':') || read_digits(s, n, pos, 2, 0, &sec))
        return -1;
    if (*pos < n && s[*pos] == '.') {
        (*pos)++;
        int digits = 0;
        while (*pos < n && s[*pos] >= '0' && s[*pos] <= '9' && digits < 6) {
            frac = frac * 10 + (s[*pos] - '0');
            (*pos)++;
            digits++;
        }
        if (digits == 0)
            return -1;
        for (; digits < 6; digits++)
            frac *= 10;
    }
    /* 24:00:00 is a valid PostgreSQL time. */
    if (h > 24 || mi > 59 || sec > 60 || (h == 24 && (mi || sec || frac)))
        return -1;
    *us = ((h * 60 + mi) * 60 + sec) * 1000000 + frac;
    return 0;
}

/* Parses YYYY-MM-DD; see value.h. */
int pgf_parse_date(const char *s, size_t n, int32_t *days)
{
    size_t pos = 0;
    int64_t d;
    if (parse_date_at(s, n, &pos, &d) || pos != n || d < INT32_MIN || d > INT32_MAX)
        return -1;
    *days = (int32_t)d;
    return 0;
}

/* Parses HH:MM:SS[.f]; see value.h. */
int pgf_parse_time(const char *s, size_t n, int64_t *us)
{
    size_t pos = 0;
    return parse_time_at(s, n, &pos, us) || pos != n ? -1 : 0;
}

/* Parses a timestamp, with a zone offset when asked; see value.h. */
int pgf_parse_timestamp(const char *s, size_t n, int with_zone, int64_t *us)
{
    size_t pos = 0;
    int64_t days, t;
    if (parse_date_at(s, n, &pos, &days) || expect_char(s, n, &pos, ' ') || parse_time_at(s, n, &pos, &t))
        return -1;
    int64_t offset = 0;
    if (with_zone) {
        if (pos >= n || (s[pos] != '+' && s[pos] != '-'))
            return -1;
        int sign = s[pos++] == '-' ? -1 : 1;
        int64_t oh, om = 0, os = 0;
        if (read_digits(s, n, &pos, 2, 0, &oh))
            return -1;
        if (pos < n && s[pos] == ':' && (pos++, read_digits(s, n, &pos, 2, 0, &om)))
            return -1;
        if (pos < n && s[pos] == ':' && (pos++, read_digits(s, n, &pos, 2, 0, &os)))
            return -1;
        offset = sign * ((oh * 60 + om) * 60 + os) * 1000000;
    }
    if (pos != n)
        return -1;
    /* Local time = UTC + offset, so UTC = local - offset.  PostgreSQL accepts years past what
     * int64 microseconds since 1970 can hold; those stay text rather than wrap. */
    int64_t r;
    if (__builtin_mul_overflow(days, INT64_C(86400000000), &r) || __builtin_add_overflow(r, t, &r) ||
        __builtin_sub_overflow(r, offset, &r))
        return -1;
    *us = r;
    return 0;
}

/* Returns the value of one hex digit, or -1. */
static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Parses 8-4-4-4-12 hex; see value.h. */
int pgf_parse_uuid(const char *s, size_t n, uint8_t out[16])
{
    if (n != 36)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i++] != '-')
                return -1;
            continue;
        }
        int hi = hexval(s[i]), lo = hexval(s[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[o++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    return 0;
}

/* Bytes a hex-format bytea decodes to, at most. */
size_t pgf_bytea_decoded_max(size_t len)
{
    return len / 2;
}

/* Decodes "\x" hex into out; returns the byte count, or -1 if not hex format. */
static long decode_bytea_hex(const char *s, size_t n, uint8_t *out)
{
    if (n < 2 || s[0] != '\\' || s[1] != 'x' || (n - 2) % 2 != 0)
        return -1;
    size_t o = 0;
    for (size_t i = 2; i < n; i += 2) {
        int hi = hexval(s[i]), lo = hexval(s[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[o++] = (uint8_t)(hi << 4 | lo);
    }
    return (long)o;
}

/* Parses a signed decimal integer of exactly n characters; returns 0 or -1. */
static int parse_int(const char *s, size_t n, int64_t *v)
{
    size_t pos = 0;
    int neg = 0;
    if (n > 0 && (s[0] == '-' || s[0] == '+'))
        neg = s[pos++] == '-';
    if (pos == n || n - pos > 19)
        return -1;
    uint64_t x = 0;
    for (; pos < n; pos++) {
        if (s[pos] < '0' || s[pos] > '9')
            return -1;
        x = x * 10 + (uint64_t)(s[pos] - '0');
    }
    if (neg ? x > (uint64_t)INT64_MAX + 1 : x > (uint64_t)INT64_MAX)
        return -1;
    *v = neg ? (int64_t)(0 - x) : (int64_t)x;
    return 0;
}

/* Parses a float's text, including NaN and +-Infinity, into *d; returns 0 or -1. */
static int parse_double(const char *s, size_t n, double *d)
{
    char buf[64];
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (strcmp(buf, "NaN") == 0) {
        *d = __builtin_nan("");
        return 0;
    }
    if (strcmp(buf, "Infinity") == 0 || strcmp(buf, "-Infinity") == 0) {
        *d = buf[0] == '-' ? -__builtin_inf() : __builtin_inf();
        return 0;
    }
    char *end;
    *d = strtod(buf, &end);
    return *end == '\0' ? 0 : -1;
}

/* Scratch a conversion needs; see value.h. */
size_t pgf_value_scratch_size(uint32_t type_oid, size_t len)
{
    return type_oid == PGF_OID_BYTEA ? pgf_bytea_decoded_max(len) : 0;
}

/* Converts one value; see value.h. */
void pgf_value_convert(const struct pgf_value *v, uint32_t type_oid, uint8_t *scratch, struct pgf_typed *out)
{
    enum pgf_value_kind col_kind = v->kind;
    const char *data = v->data;
    size_t len = v->len;
    memset(out, 0, sizeof *out);
    out->str = data;
    out->len = len;
    if (col_kind == PGF_VALUE_NULL || col_kind == PGF_VALUE_ABSENT) {
        out->kind = PGF_VK_NULL;
        return;
    }
    if (col_kind == PGF_VALUE_UNCHANGED_TOAST) {
        out->kind = PGF_VK_UNCHANGED_TOAST;
        return;
    }
    if (col_kind == PGF_VALUE_BINARY) {
        /* Binary mode is not requested yet; keep the bytes rather than guess a layout. */
        out->kind = PGF_VK_BYTES;
        return;
    }
    out->kind = PGF_VK_PGTEXT;
    int32_t days;
    switch (type_oid) {
    case PGF_OID_BOOL:
        if (len == 1 && (data[0] == 't' || data[0] == 'f')) {
            out->kind = PGF_VK_BOOL;
            out->i = data[0] == 't';
        }
        return;
    case PGF_OID_INT2:
    case PGF_OID_INT4:
    case PGF_OID_INT8:
    case PGF_OID_OID:
        if (parse_int(data, len, &out->i) == 0)
            out->kind = PGF_VK_INT;
        return;
    case PGF_OID_FLOAT4:
    case PGF_OID_FLOAT8:
        if (parse_double(data, len, &out->d) == 0)
            out->kind = PGF_VK_DOUBLE;
        return;
    case PGF_OID_NUMERIC:
        out->kind = PGF_VK_NUMERIC;
        return;
    case PGF_OID_TEXT:
    case PGF_OID_VARCHAR:
    case PGF_OID_BPCHAR:
    case PGF_OID_NAME:
    case PGF_OID_JSON:
    case PGF_OID_JSONB:
        out->kind = PGF_VK_TEXT;
        return;
    case PGF_OID_BYTEA: {
        long n = scratch ? decode_bytea_hex(data, len, scratch) : -1;
        if (n >= 0) {
            out->kind = PGF_VK_BYTES;
            out->str = (const char *)scratch;
            out->len = (size_t)n;
        }
        return;
    }
    case PGF_OID_UUID:
        if (pgf_parse_uuid(data, len, out->uuid) == 0)
            out->kind = PGF_VK_UUID;
        return;
    case PGF_OID_DATE:
        if (pgf_parse_date(data, len, &days) == 0) {
            out->kind = PGF_VK_DATE;
            out->i = days;
        }
        return;
    case PGF_OID_TIME:
        if (pgf_parse_time(data, len, &out->i) == 0)
            out->kind = PGF_VK_TIME;
        return;
    case PGF_OID_TIMESTAMP:
        if (pgf_parse_timestamp(data, len, 0, &out->i) == 0)
            out->kind = PGF_VK_TIMESTAMP;
        return;
    case PGF_OID_TIMESTAMPTZ:
        if (pgf_parse_timestamp(data, len, 1, &out->i) == 0)
            out->kind = PGF_VK_TIMESTAMPTZ;
        return;
    default:
        return;
    }
}
