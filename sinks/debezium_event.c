/* debezium_event.c - events as Debezium's JsonConverter writes them (schemas.enable=false).
 *
 * The JSON is written by hand, not with jansson, because the format is judged byte for byte
 * against Debezium's own output: Jackson escapes a character outside the BMP as an uppercase
 * surrogate pair (\uD834\uDD1E) while jansson writes it raw or escapes every non-ASCII one,
 * and Java spells doubles its own way (Double.toString: "-9.99999999999E8", "0.0").  Every
 * value's rule was read off tests/fixtures/debezium (Debezium 3.6.1 over pgoutput). */
#include "sinks/debezium_event.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/lsn.h"
#include "decoders/value.h"

/* Type OIDs value.h does not name (from pg_type.dat). */
#define OID_TIMETZ 1266
#define OID_INTERVAL 1186

/* Debezium's placeholder for a value pgoutput did not send (unchanged TOAST). */
#define UNAVAILABLE "__debezium_unavailable_value"

/* PgJDBC's infinity timestamps (PGStatement.DATE_POSITIVE_INFINITY, ..._NEGATIVE_...), which
 * Debezium writes as they are where it writes microseconds and divided by 1000 for millis. */
#define PG_POS_INFINITY INT64_C(9223372036825200000)
#define PG_NEG_INFINITY (-INT64_C(9223372036832400000))
/* date 'infinity': the stream gives PostgreSQL's internal day number (INT32_MAX days after
 * 2000-01-01) moved to 1970 and wrapped to 32 bits; the snapshot's JDBC read another value. */
#define DATE_POS_INFINITY_STREAM ((int64_t)INT32_MIN + 10956)
#define DATE_NEG_INFINITY_STREAM ((int64_t)INT32_MIN + 10957)
#define DATE_POS_INFINITY_SNAPSHOT INT64_C(-622191234)

/* A numeric interval's month, as Debezium counts it: 365.25 / 12 days. */
#define MONTH_US INT64_C(2629800000000)
#define DAY_US INT64_C(86400000000)

/* A growable output buffer; oom sticks once an allocation failed. */
struct dbuf {
    char *p;
    size_t n, cap;
    int oom;
};

struct pgf_dbz {
    struct pgf_dbz_config cfg;
    struct dbuf value, key, hdr;
    struct dbuf tmp; /* decoded bytea, unescaped array elements, numeric bytes */
};

/* Makes room for more bytes in b; returns 0, or -1 (and sets oom). */
static int dbuf_grow(struct dbuf *b, size_t more)
{
    if (b->oom)
        return -1;
    if (b->n + more + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

/* Appends n bytes of s to b. */
static void put(struct dbuf *b, const char *s, size_t n)
{
    if (dbuf_grow(b, n) != 0)
        return;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

/* Appends the NUL-terminated s to b. */
static void puts_(struct dbuf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* Appends a signed decimal integer to b. */
static void put_i64(struct dbuf *b, int64_t v)
{
    char buf[24];
    int n = snprintf(buf, sizeof buf, "%" PRId64, v);
    put(b, buf, (size_t)n);
}

/* Appends s (n bytes of UTF-8) as a JSON string the way Jackson writes it: '"' and '\\'
 * escaped, control characters as \b \t \n \f \r or \u00XX, a character outside the BMP as
 * an uppercase surrogate-pair escape, everything else raw. */
static void put_str(struct dbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    if (dbuf_grow(b, n + 2) != 0)
        return;
    put(b, "\"", 1);
    size_t run = 0; /* start of bytes not yet copied */
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        char esc[16];
        size_t elen = 0, adv = 1;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            elen = 2;
        } else if (c < 0x20) {
            const char *named = c == '\b' ? "\\b" : c == '\t' ? "\\t" : c == '\n' ? "\\n" : c == '\f' ? "\\f"
                                : c == '\r' ? "\\r" : NULL;
            if (named) {
                memcpy(esc, named, 2);
                elen = 2;
            } else {
                memcpy(esc, "\\u00", 4);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                elen = 6;
            }
        } else if (c >= 0xF0 && i + 3 < n) {
            uint32_t cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[i + 1] & 0x3F) << 12) |
                          ((uint32_t)(s[i + 2] & 0x3F) << 6) | (uint32_t)(s[i + 3] & 0x3F);
            cp -= 0x10000;
            uint32_t hi = 0xD800 + (cp >> 10), lo = 0xDC00 + (cp & 0x3FF);
            elen = (size_t)snprintf(esc, sizeof esc, "\\u%04X\\u%04X", (unsigned)hi, (unsigned)lo);
            adv = 4;
        }
        if (elen) {
            put(b, s + run, i - run);
            put(b, esc, elen);
            i += adv;
            run = i;
        } else {
            i++;
        }
    }
    put(b, s + run, n - run);
    put(b, "\"", 1);
}

/* Appends the NUL-terminated s as a JSON string, or null when s is NULL. */
static void put_cstr(struct dbuf *b, const char *s)
{
    if (s)
        put_str(b, s, strlen(s));
    else
        puts_(b, "null");
}

/* Java's Double.toString (Float.toString when as_float): the shortest digits that read back
 * as x, plain for 1e-3 <= |x| < 1e7 ("0.001", "12345.678"), else d.dddE<exp>. */
size_t pgf_dbz_java_double(double x, int as_float, char *buf, size_t room)
{
    if (isnan(x))
        return (size_t)snprintf(buf, room, "NaN");
    if (isinf(x))
        return (size_t)snprintf(buf, room, x > 0 ? "Infinity" : "-Infinity");
    if (x == 0)
        return (size_t)snprintf(buf, room, signbit(x) ? "-0.0" : "0.0");
    if (as_float)
        x = (double)(float)x; /* the float's exact value: each precision then rounds nearest */
    char sci[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(sci, sizeof sci, "%.*e", prec - 1, x);
        double back = strtod(sci, NULL);
        if (as_float ? (float)back == (float)x : back == x)
            break;
    }
    /* sci is "[-]d[.ddd]e[+-]NN": split it into sign, digits and the first digit's exponent. */
    const char *p = sci;
    int neg = *p == '-';
    if (neg)
        p++;
    char digits[24];
    size_t nd = 0;
    for (; *p && *p != 'e'; p++)
        if (*p != '.')
            digits[nd++] = *p;
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = '\0';
    int exp = atoi(p + 1);
    char out[64];
    size_t o = 0;
    if (neg)
        out[o++] = '-';
    double ax = fabs(x);
    if (ax >= 1e-3 && ax < 1e7) {
        if (exp >= 0) {
            for (int i = 0; i <= exp; i++)
                out[o++] = (size_t)i < nd ? digits[i] : '0';
            out[o++] = '.';
            if ((size_t)exp + 1 < nd)
                for (size_t i = (size_t)exp + 1; i < nd; i++)
                    out[o++] = digits[i];
            else
                out[o++] = '0';
        } else {
            out[o++] = '0';
            out[o++] = '.';
            for (int i = 0; i < -exp - 1; i++)
                out[o++] = '0';
            for (size_t i = 0; i < nd; i++)
                out[o++] = digits[i];
        }
        out[o] = '\0';
    } else {
        out[o++] = digits[0];
        out[o++] = '.';
        if (nd > 1)
            for (size_t i = 1; i < nd; i++)
                out[o++] = digits[i];
        else
            out[o++] = '0';
        o += (size_t)snprintf(out + o, sizeof out - o, "E%d", exp);
    }
    return (size_t)snprintf(buf, room, "%s", out);
}

/* Appends a float or double as Debezium writes it: a JSON number, or "NaN", "Infinity",
 * "-Infinity" as strings. */
static void put_double(struct dbuf *b, double x, int as_float)
{
    char buf[64];
    size_t n = pgf_dbz_java_double(x, as_float, buf, sizeof buf);
    if (isfinite(x))
        put(b, buf, n);
    else
        put_str(b, buf, n);
}

/* Appends the standard base64 of n bytes. */
static void put_base64(struct dbuf *b, const uint8_t *s, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (dbuf_grow(b, (n + 2) / 3 * 4 + 2) != 0)
        return;
    put(b, "\"", 1);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0) | (i + 2 < n ? s[i + 2] : 0);
        char q[4] = {tab[v >> 18], tab[(v >> 12) & 63], i + 1 < n ? tab[(v >> 6) & 63] : '=',
                     i + 2 < n ? tab[v & 63] : '='};
        put(b, q, 4);
    }
    put(b, "\"", 1);
}

/* Floor division, as Java's Math.floorDiv: milliseconds of a time before 1970 round down. */
static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

/* True when s (n bytes) equals the NUL-terminated lit. */
static int text_is(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

/* The precision (fractional digits) of a time or timestamp column from its typmod: 6 when
 * unconstrained. */
static int time_precision(int32_t typmod)
{
    return typmod >= 0 && typmod <= 6 ? typmod : 6;
}

/* Appends the unscaled value of a decimal digit string (digits only, most significant first,
 * negative when neg) as Java's BigInteger.toByteArray() in base64: the minimal big-endian
 * two's complement. */
static void put_unscaled(struct pgf_dbz *d, struct dbuf *b, const char *digits, size_t nd, int neg)
{
    struct dbuf *t = &d->tmp;
    t->n = 0;
    if (dbuf_grow(t, nd / 2 + 2) != 0) {
        b->oom = 1;
        return;
    }
    uint8_t *mag = (uint8_t *)t->p; /* big-endian magnitude, len bytes, grown from the right */
    size_t cap = nd / 2 + 2, len = 0;
    for (size_t i = 0; i < nd; i++) {
        unsigned carry = (unsigned)(digits[i] - '0');
        for (size_t j = 0; j < len; j++) {
            unsigned v = mag[cap - 1 - j] * 10u + carry;
            mag[cap - 1 - j] = (uint8_t)v;
            carry = v >> 8;
        }
        while (carry) {
            mag[cap - 1 - len++] = (uint8_t)carry;
            carry >>= 8;
        }
    }
    uint8_t *m = mag + cap - len;
    /* Java's minimal form: one more byte when the top bit would read as the wrong sign; for
     * a negative value, exactly 2^(8len-1) still fits. */
    int extra = 0;
    if (len == 0) {
        extra = 1;
    } else if (m[0] & 0x80) {
        extra = 1;
        if (neg && m[0] == 0x80) {
            extra = 0;
            for (size_t j = 1; j < len; j++)
                if (m[j]) {
                    extra = 1;
                    break;
                }
        }
    }
    if (extra) {
        m--;
        m[0] = 0;
        len++;
    }
    if (neg) {
        unsigned carry = 1;
        for (size_t j = len; j-- > 0;) {
            unsigned v = (uint8_t)~m[j] + carry;
            m[j] = (uint8_t)v;
            carry = v >> 8;
        }
    }
    put_base64(b, m, len);
}

/* Appends a numeric's text as decimal.handling.mode says.  A constrained column's scale
 * (from its typmod; PostgreSQL 15 allows it negative) is fixed; an unconstrained numeric's
 * precise form carries its own, the text's. */
static void put_numeric(struct pgf_dbz *d, struct dbuf *b, const char *s, size_t n, int constrained, int scale)
{
    int nan = text_is(s, n, "NaN"), pinf = text_is(s, n, "Infinity"), ninf = text_is(s, n, "-Infinity");
    if (d->cfg.decimal == PGF_DBZ_DECIMAL_STRING) {
        /* Debezium's SpecialValueDecimal names its special values. */
        if (nan || pinf || ninf)
            put_cstr(b, nan ? "NAN" : pinf ? "POSITIVE_INFINITY" : "NEGATIVE_INFINITY");
        else
            put_str(b, s, n);
        return;
    }
    if (d->cfg.decimal == PGF_DBZ_DECIMAL_DOUBLE) {
        /* strtod rounds correctly, as BigDecimal.doubleValue does. */
        char *copy = strndup(s, n);
        if (copy == NULL) {
            b->oom = 1;
            return;
        }
        put_double(b, nan ? NAN : strtod(copy, NULL), 0);
        free(copy);
        return;
    }
    if (nan || pinf || ninf) {
        puts_(b, "null");
        return;
    }
    /* precise: the unscaled digits; a constrained column's text already has its scale's
     * fraction digits, an unconstrained one's scale is its text's. */
    size_t i = 0;
    int neg = 0;
    if (i < n && (s[i] == '-' || s[i] == '+'))
        neg = s[i++] == '-';
    char *digits = malloc(n + (constrained && scale > 0 ? (size_t)scale : 0) + 1);
    if (digits == NULL) {
        b->oom = 1;
        return;
    }
    size_t nd = 0;
    int frac = -1;
    for (; i < n; i++) {
        if (s[i] == '.')
            frac = 0;
        else if (s[i] >= '0' && s[i] <= '9') {
            digits[nd++] = s[i];
            if (frac >= 0)
                frac++;
        }
    }
    if (frac < 0)
        frac = 0;
    int out_scale = constrained ? scale : frac;
    for (int k = frac; k < out_scale; k++)
        digits[nd++] = '0';
    if (out_scale < frac) {
        /* A negative scale: the text's trailing zeros go, but never the last digit: zero in
         * numeric(3,-2) is "0", one digit for a drop of two (this underflowed nd before). */
        size_t drop = (size_t)(frac - out_scale);
        nd = drop < nd ? nd - drop : nd > 0 ? 1 : 0;
    }
    size_t lead = 0;
    while (lead + 1 < nd && digits[lead] == '0')
        lead++;
    int is_zero = nd - lead == 1 && digits[lead] == '0';
    if (!constrained) {
        puts_(b, "{\"scale\":");
        put_i64(b, out_scale);
        puts_(b, ",\"value\":");
    }
    put_unscaled(d, b, digits + lead, nd - lead, neg && !is_zero);
    if (!constrained)
        puts_(b, "}");
    free(digits);
}

/* Appends bytes as binary.handling.mode says: base64 (bytes, base64) or lowercase hex. */
static void put_bytes(struct pgf_dbz *d, struct dbuf *b, const uint8_t *s, size_t n)
{
    if (d->cfg.binary != PGF_DBZ_BINARY_HEX) {
        put_base64(b, s, n);
        return;
    }
    static const char hex[] = "0123456789abcdef";
    put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        char h[2] = {hex[s[i] >> 4], hex[s[i] & 15]};
        put(b, h, 2);
    }
    put(b, "\"", 1);
}

/* Parses a time zone offset "+HH[:MM[:SS]]" (all of s) into seconds east; returns 0 or -1. */
static int parse_offset(const char *s, size_t n, int64_t *secs)
{
    if (n < 3 || (s[0] != '+' && s[0] != '-'))
        return -1;
    int64_t parts[3] = {0, 0, 0};
    size_t i = 1;
    for (int p = 0; p < 3 && i < n; p++) {
        if (p > 0 && s[i++] != ':')
            return -1;
        if (i + 2 > n || s[i] < '0' || s[i] > '9' || s[i + 1] < '0' || s[i + 1] > '9')
            return -1;
        parts[p] = (s[i] - '0') * 10 + (s[i + 1] - '0');
        i += 2;
    }
    if (i != n)
        return -1;
    *secs = (parts[0] * 3600 + parts[1] * 60 + parts[2]) * (s[0] == '-' ? -1 : 1);
    return 0;
}

/* Appends "HH:MM:SS[.f]" of us microseconds after midnight, the fraction without trailing
 * zeros (Java's ISO_LOCAL_TIME). */
static void put_local_time(struct dbuf *b, int64_t us)
{
    char buf[32];
    int64_t secs = us / 1000000, frac = us % 1000000;
    int n = snprintf(buf, sizeof buf, "%02d:%02d:%02d", (int)(secs / 3600), (int)(secs / 60 % 60), (int)(secs % 60));
    if (frac) {
        char f[8];
        snprintf(f, sizeof f, "%06d", (int)frac);
        size_t fl = 6;
        while (f[fl - 1] == '0')
            fl--;
        f[fl] = '\0';
        n += snprintf(buf + n, sizeof buf - (size_t)n, ".%s", f);
    }
    put(b, buf, (size_t)n);
}

/* Appends a timetz's text as Debezium's ZonedTime: the time in UTC, "HH:MM:SS[.f]Z";
 * returns 0, or -1 when the text is not that form. */
static int put_timetz(struct dbuf *b, const char *s, size_t n)
{
    size_t z = 0;
    while (z < n && s[z] != '+' && s[z] != '-')
        z++;
    int64_t us, off;
    if (z == n || pgf_parse_time(s, z, &us) != 0 || parse_offset(s + z, n - z, &off) != 0)
        return -1;
    us = ((us - off * 1000000) % DAY_US + DAY_US) % DAY_US;
    put(b, "\"", 1);
    put_local_time(b, us);
    put(b, "Z\"", 2);
    return 0;
}

/* Appends an epoch-microseconds timestamp as Debezium's ZonedTimestamp,
 * "YYYY-MM-DDTHH:MM:SS.ffffffZ" with as many fraction digits as the column's precision. */
static void put_zoned_timestamp(struct dbuf *b, int64_t us, int precision)
{
    int64_t days = floor_div(us, DAY_US), tod = us - days * DAY_US;
    /* Howard Hinnant's civil_from_days. */
    int64_t z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097, yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400, doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
    int64_t dd = doy - (153 * mp + 2) / 5 + 1, mm = mp < 10 ? mp + 3 : mp - 9;
    y += mm <= 2;
    int64_t secs = tod / 1000000, frac = tod % 1000000;
    char buf[64];
    int len = snprintf(buf, sizeof buf, "\"%04" PRId64 "-%02d-%02dT%02d:%02d:%02d", y, (int)mm, (int)dd,
                       (int)(secs / 3600), (int)(secs / 60 % 60), (int)(secs % 60));
    if (precision > 0) {
        char f[8];
        snprintf(f, sizeof f, "%06d", (int)frac);
        len += snprintf(buf + len, sizeof buf - (size_t)len, ".%.*s", precision, f);
    }
    len += snprintf(buf + len, sizeof buf - (size_t)len, "Z\"");
    put(b, buf, (size_t)len);
}

/* Parses an interval's text (IntervalStyle=postgres: "1 year 2 mons -3 days 04:05:06.789")
 * into Debezium's numeric form, microseconds with 30.4375-day months; returns 0 or -1. */
static int parse_interval(const char *s, size_t n, int64_t *out)
{
    int64_t total = 0;
    size_t i = 0;
    while (i < n) {
        while (i < n && s[i] == ' ')
            i++;
        if (i == n)
            break;
        size_t tok = i;
        while (i < n && s[i] != ' ')
            i++;
        if (memchr(s + tok, ':', i - tok)) {
            int neg = s[tok] == '-';
            size_t start = tok + (s[tok] == '-' || s[tok] == '+');
            /* hours may exceed 24 here, so not pgf_parse_time */
            int64_t h = 0, m = 0, sec = 0, frac = 0;
            size_t j = start;
            while (j < i && s[j] >= '0' && s[j] <= '9')
                h = h * 10 + (s[j++] - '0');
            if (j + 6 > i || s[j] != ':' || s[j + 3] != ':')
                return -1;
            m = (s[j + 1] - '0') * 10 + (s[j + 2] - '0');
            sec = (s[j + 4] - '0') * 10 + (s[j + 5] - '0');
            j += 6;
            if (j < i && s[j] == '.') {
                int digits = 0;
                for (j++; j < i && s[j] >= '0' && s[j] <= '9'; j++)
                    if (digits < 6) {
                        frac = frac * 10 + (s[j] - '0');
                        digits++;
                    }
                for (; digits < 6; digits++)
                    frac *= 10;
            }
            if (j != i)
                return -1;
            int64_t us = ((h * 60 + m) * 60 + sec) * 1000000 + frac;
            total += neg ? -us : us;
            continue;
        }
        char *end;
        char num[24];
        if (i - tok >= sizeof num)
            return -1;
        memcpy(num, s + tok, i - tok);
        num[i - tok] = '\0';
        long long v = strtoll(num, &end, 10);
        if (*end != '\0')
            return -1;
        while (i < n && s[i] == ' ')
            i++;
        size_t unit = i;
        while (i < n && s[i] != ' ')
            i++;
        size_t ul = i - unit;
        if (ul >= 3 && memcmp(s + unit, "day", 3) == 0)
            total += v * DAY_US;
        else if (ul >= 3 && memcmp(s + unit, "mon", 3) == 0)
            total += v * MONTH_US;
        else if (ul >= 4 && memcmp(s + unit, "year", 4) == 0)
            total += v * 12 * MONTH_US;
        else
            return -1;
    }
    *out = total;
    return 0;
}

/* The element type of a one-dimensional array type Debezium writes as a JSON array, or 0. */
static uint32_t array_element(uint32_t oid)
{
    static const uint32_t map[][2] = {
        {1000, PGF_OID_BOOL}, {1005, PGF_OID_INT2}, {1007, PGF_OID_INT4}, {1016, PGF_OID_INT8},
        {1028, PGF_OID_OID}, {1021, PGF_OID_FLOAT4}, {1022, PGF_OID_FLOAT8}, {1009, PGF_OID_TEXT},
        {1015, PGF_OID_VARCHAR}, {1014, PGF_OID_BPCHAR}, {1003, PGF_OID_NAME}, {1231, PGF_OID_NUMERIC},
        {1182, PGF_OID_DATE}, {1183, PGF_OID_TIME}, {1270, OID_TIMETZ}, {1115, PGF_OID_TIMESTAMP},
        {1185, PGF_OID_TIMESTAMPTZ}, {1187, OID_INTERVAL}, {2951, PGF_OID_UUID}, {199, PGF_OID_JSON},
        {3807, PGF_OID_JSONB}, {1001, PGF_OID_BYTEA},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (map[i][0] == oid)
            return map[i][1];
    return 0;
}

static void put_text_value(struct pgf_dbz *d, struct dbuf *b, uint32_t oid, int32_t typmod, const char *s,
                           size_t n, int snapshot);

/* Appends a one-dimensional array's text ("{1,NULL,"b c"}") as a JSON array of its elements;
 * returns 0, or -1 when the text is not that form (a multi-dimensional array, bounds). */
static int put_array(struct pgf_dbz *d, struct dbuf *b, uint32_t elem, int32_t typmod, const char *s, size_t n,
                     int snapshot)
{
    if (n < 2 || s[0] != '{' || s[n - 1] != '}' || (n > 2 && s[1] == '{'))
        return -1;
    char *el = malloc(n + 1); /* one element, unescaped; the encoder's tmp is in use below */
    if (el == NULL) {
        b->oom = 1;
        return 0;
    }
    size_t mark = b->n;
    put(b, "[", 1);
    size_t i = 1, count = 0;
    int bad = 0;
    while (i < n - 1 && !bad) {
        size_t len = 0;
        int quoted = s[i] == '"';
        if (quoted) {
            for (i++; i < n - 1 && s[i] != '"'; i++) {
                if (s[i] == '\\' && i + 1 < n - 1)
                    i++;
                el[len++] = s[i];
            }
            if (i >= n - 1) {
                bad = 1;
                break;
            }
            i++; /* the closing quote */
        } else {
            while (i < n - 1 && s[i] != ',')
                el[len++] = s[i++];
        }
        if (count++)
            put(b, ",", 1);
        if (!quoted && len == 4 && memcmp(el, "NULL", 4) == 0)
            puts_(b, "null");
        else
            put_text_value(d, b, elem, typmod, el, len, snapshot);
        if (i < n - 1) {
            if (s[i] != ',')
                bad = 1;
            i++;
        }
    }
    free(el);
    if (bad) {
        b->n = mark;
        return -1;
    }
    put(b, "]", 1);
    return 0;
}

/* Appends one non-NULL value of type oid, given as PostgreSQL's text, as Debezium writes it
 * under the encoder's modes; snapshot is set for a row a snapshot read (Debezium's snapshot
 * reads date 'infinity' differently from the stream).  Text that does not parse as its type
 * is written as a string. */
static void put_text_value(struct pgf_dbz *d, struct dbuf *b, uint32_t oid, int32_t typmod, const char *s,
                           size_t n, int snapshot)
{
    int millis = d->cfg.time == PGF_DBZ_TIME_CONNECT;
    int64_t v;
    int32_t days;
    switch (oid) {
    case PGF_OID_BOOL:
        if (n == 1 && (s[0] == 't' || s[0] == 'f')) {
            puts_(b, s[0] == 't' ? "true" : "false");
            return;
        }
        break;
    case PGF_OID_INT2:
    case PGF_OID_INT4:
    case PGF_OID_INT8:
    case PGF_OID_OID: {
        /* The text is the number: written as it is, so a bigint stays exact. */
        size_t i = n > 0 && s[0] == '-';
        int ok = i < n;
        for (; i < n; i++)
            ok &= s[i] >= '0' && s[i] <= '9';
        if (ok) {
            put(b, s, n);
            return;
        }
        break;
    }
    case PGF_OID_FLOAT4:
    case PGF_OID_FLOAT8: {
        char buf[64];
        if (n < sizeof buf) {
            memcpy(buf, s, n);
            buf[n] = '\0';
            char *end;
            double x = strtod(buf, &end);
            if (*end == '\0' && n > 0) {
                put_double(b, x, oid == PGF_OID_FLOAT4);
                return;
            }
        }
        break;
    }
    case PGF_OID_NUMERIC:
        /* numeric(p,s)'s typmod: ((p << 16) | s) + 4, s an 11-bit signed field since PG 15 */
        put_numeric(d, b, s, n, typmod >= 4, typmod >= 4 ? (int)((((typmod - 4) & 0x7ff) ^ 1024) - 1024) : 0);
        return;
    case PGF_OID_DATE:
        if (text_is(s, n, "infinity")) {
            put_i64(b, snapshot ? DATE_POS_INFINITY_SNAPSHOT : DATE_POS_INFINITY_STREAM);
            return;
        }
        if (text_is(s, n, "-infinity")) {
            put_i64(b, DATE_NEG_INFINITY_STREAM);
            return;
        }
        if (pgf_parse_date(s, n, &days) == 0) {
            put_i64(b, days);
            return;
        }
        break;
    case PGF_OID_TIME:
        if (pgf_parse_time(s, n, &v) == 0) {
            int as_millis = millis || (d->cfg.time == PGF_DBZ_TIME_ADAPTIVE && time_precision(typmod) <= 3);
            put_i64(b, as_millis ? v / 1000 : v);
            return;
        }
        break;
    case OID_TIMETZ:
        if (put_timetz(b, s, n) == 0)
            return;
        break;
    case PGF_OID_TIMESTAMP: {
        int as_millis = millis || time_precision(typmod) <= 3;
        if (text_is(s, n, "infinity") || text_is(s, n, "-infinity")) {
            v = s[0] == '-' ? PG_NEG_INFINITY : PG_POS_INFINITY;
            put_i64(b, as_millis ? v / 1000 : v);
            return;
        }
        if (pgf_parse_timestamp(s, n, 0, &v) == 0) {
            put_i64(b, as_millis ? floor_div(v, 1000) : v);
            return;
        }
        break;
    }
    case PGF_OID_TIMESTAMPTZ:
        if (text_is(s, n, "infinity") || text_is(s, n, "-infinity"))
            break; /* Debezium writes the text */
        if (pgf_parse_timestamp(s, n, 1, &v) == 0) {
            put_zoned_timestamp(b, v, time_precision(typmod));
            return;
        }
        break;
    case OID_INTERVAL:
        if (parse_interval(s, n, &v) == 0) {
            put_i64(b, v);
            return;
        }
        break;
    case PGF_OID_BYTEA: {
        struct dbuf *t = &d->tmp;
        size_t need = pgf_value_scratch_size(PGF_OID_BYTEA, n);
        t->n = 0;
        if (dbuf_grow(t, need) != 0) {
            b->oom = 1;
            return;
        }
        struct pgf_value pv = pgf_value_text(s, (uint32_t)n);
        struct pgf_typed ty;
        pgf_value_convert(&pv, PGF_OID_BYTEA, (uint8_t *)t->p, &ty);
        if (ty.kind == PGF_VK_BYTES) {
            put_bytes(d, b, (const uint8_t *)ty.str, ty.len);
            return;
        }
        break;
    }
    default: {
        uint32_t elem = array_element(oid);
        if (elem && put_array(d, b, elem, typmod, s, n, snapshot) == 0)
            return;
        break;
    }
    }
    put_str(b, s, n); /* text, varchar, char (padded), json, jsonb, uuid, enums, the rest */
}

/* Appends one column value: null, Debezium's placeholder for unchanged TOAST, or the value. */
static void put_value(struct pgf_dbz *d, struct dbuf *b, const struct pgf_column *col, const struct pgf_value *v,
                      int snapshot)
{
    if (v == NULL || v->kind == PGF_VALUE_NULL || v->kind == PGF_VALUE_ABSENT)
        puts_(b, "null");
    else if (v->kind == PGF_VALUE_UNCHANGED_TOAST)
        put_str(b, UNAVAILABLE, strlen(UNAVAILABLE));
    else if (v->kind == PGF_VALUE_BINARY)
        put_bytes(d, b, (const uint8_t *)v->data, v->len);
    else
        put_text_value(d, b, col->type_oid, col->type_mod, v->data, v->len, snapshot);
}

/* Appends a row image as a JSON object of every column in table order; fill (or NULL) is an
 * image of the same row whose values stand in for unchanged TOAST (the old row under
 * REPLICA IDENTITY FULL, as Debezium fills it). */
static void put_row(struct pgf_dbz *d, struct dbuf *b, const struct pgf_relation *rel, const struct pgf_value *row,
                    const struct pgf_value *fill, int snapshot)
{
    put(b, "{", 1);
    for (uint16_t i = 0; i < rel->natts; i++) {
        if (i)
            put(b, ",", 1);
        put_str(b, rel->attrs[i].name, strlen(rel->attrs[i].name));
        put(b, ":", 1);
        const struct pgf_value *v = &row[i];
        if (v->kind == PGF_VALUE_UNCHANGED_TOAST && fill && fill[i].kind != PGF_VALUE_UNCHANGED_TOAST &&
            fill[i].kind != PGF_VALUE_ABSENT)
            v = &fill[i];
        put_value(d, b, &rel->attrs[i], v, snapshot);
    }
    put(b, "}", 1);
}

/* Writes the record key of ev (its values from the images pgf_event_key_value picks) as a
 * compact JSON object into b, from scratch; returns 0, or 1 when the table has no key. */
static int put_key(struct pgf_dbz *d, struct dbuf *b, const struct pgf_event *ev)
{
    b->n = 0;
    const struct pgf_relation *rel = ev->rel;
    if (rel->nkey == 0)
        return 1;
    put(b, "{", 1);
    for (uint16_t k = 0; k < rel->nkey; k++) {
        uint16_t att = rel->key_atts[k];
        if (k)
            put(b, ",", 1);
        put_str(b, rel->attrs[att].name, strlen(rel->attrs[att].name));
        put(b, ":", 1);
        put_value(d, b, &rel->attrs[att], pgf_event_key_value(ev, att), ev->op == PGF_OP_READ);
    }
    put(b, "}", 1);
    return 0;
}

/* Appends the envelope's "source" block for relation rel (NULL for a message) of ev. */
static void put_source(struct pgf_dbz *d, struct dbuf *b, const struct pgf_event *ev,
                       const struct pgf_relation *rel, int64_t now_ns)
{
    const struct pgf_txn *txn = ev->txn;
    /* Commit time for a change; the read's transaction for a snapshot row; now without one. */
    /* The shift is checked: 'infinity' stays INT64_MAX (and ts_ns below saturates). */
    int64_t us = txn && txn->commit_time ? pgf_pgtime_to_unix_us(txn->commit_time) : now_ns / 1000;
    char num[24];
    puts_(b, "\"source\":{\"version\":");
    put_cstr(b, d->cfg.version);
    puts_(b, ",\"connector\":\"postgresql\",\"name\":");
    put_cstr(b, d->cfg.name);
    puts_(b, ",\"ts_ms\":");
    put_i64(b, floor_div(us, 1000));
    puts_(b, ev->op == PGF_OP_READ ? ",\"snapshot\":\"true\",\"db\":" : ",\"snapshot\":\"false\",\"db\":");
    put_cstr(b, d->cfg.database);
    /* sequence: [commit LSN of the transaction, the event's LSN], decimal, as a string
     * holding a JSON array; a snapshot row has no commit. */
    char seq[64];
    snprintf(num, sizeof num, "%" PRIu64, txn ? txn->commit_lsn : 0);
    if (ev->op == PGF_OP_READ || txn == NULL)
        snprintf(seq, sizeof seq, "[null,\"%" PRIu64 "\"]", ev->lsn);
    else
        snprintf(seq, sizeof seq, "[\"%s\",\"%" PRIu64 "\"]", num, ev->lsn);
    puts_(b, ",\"sequence\":");
    put_cstr(b, seq);
    puts_(b, ",\"ts_us\":");
    put_i64(b, us);
    puts_(b, ",\"ts_ns\":");
    /* Saturated: nanoseconds since 1970 overflow int64 after 2262 and before 1677. */
    put_i64(b, us > INT64_MAX / 1000 ? INT64_MAX : us < INT64_MIN / 1000 ? INT64_MIN : us * 1000);
    puts_(b, ",\"schema\":");
    put_cstr(b, rel ? rel->nspname : "");
    puts_(b, ",\"table\":");
    put_cstr(b, rel ? rel->relname : "");
    puts_(b, ",\"txId\":");
    if (txn)
        put_i64(b, txn->xid);
    else
        puts_(b, "null");
    puts_(b, ",\"lsn\":");
    if (ev->lsn) {
        snprintf(num, sizeof num, "%" PRIu64, ev->lsn);
        puts_(b, num);
    } else {
        puts_(b, "null");
    }
    puts_(b, ",\"xmin\":null,\"origin\":");
    put_cstr(b, txn ? txn->origin : NULL);
    puts_(b, ",\"origin_lsn\":null}");
}

/* Appends ,"ts_ms":..,"ts_us":..,"ts_ns":.. of now_ns. */
static void put_now(struct dbuf *b, int64_t now_ns)
{
    puts_(b, "\"ts_ms\":");
    put_i64(b, floor_div(now_ns, 1000000));
    puts_(b, ",\"ts_us\":");
    put_i64(b, floor_div(now_ns, 1000));
    puts_(b, ",\"ts_ns\":");
    put_i64(b, now_ns);
}

/* Returns the encoder's record, or -1 when a buffer ran out of memory. */
static int finish(struct pgf_dbz *d, int has_key, struct pgf_dbz_record *out)
{
    if (d->value.oom || d->key.oom || d->hdr.oom || d->tmp.oom)
        return -1;
    out->value = d->value.p;
    out->value_len = d->value.n;
    out->key = has_key ? d->key.p : NULL;
    out->key_len = has_key ? d->key.n : 0;
    return 0;
}

/* Encodes a logical message as Debezium documents its message events (op "m", key
 * {"prefix"}, message {prefix, content}); not captured from Debezium itself. */
static int encode_message(struct pgf_dbz *d, const struct pgf_event *ev, int64_t now_ns, struct pgf_dbz_record *out)
{
    struct dbuf *b = &d->value;
    b->n = 0;
    d->key.n = 0;
    puts_(&d->key, "{\"prefix\":");
    put_cstr(&d->key, ev->message.prefix);
    puts_(&d->key, "}");
    puts_(b, "{\"op\":\"m\",");
    put_now(b, now_ns);
    put(b, ",", 1);
    put_source(d, b, ev, NULL, now_ns);
    puts_(b, ",\"message\":{\"prefix\":");
    put_cstr(b, ev->message.prefix);
    puts_(b, ",\"content\":");
    put_bytes(d, b, (const uint8_t *)ev->message.content, ev->message.content_len);
    puts_(b, "}}");
    return finish(d, 1, out);
}

/* Encodes one event; see debezium_event.h. */
int pgf_dbz_encode(struct pgf_dbz *d, const struct pgf_event *ev, const struct pgf_event *moved, int64_t now_ns,
                   struct pgf_dbz_record *out)
{
    memset(out, 0, sizeof *out);
    if (ev->op == PGF_OP_MESSAGE)
        return encode_message(d, ev, now_ns, out);
    const struct pgf_relation *rel = ev->rel;
    int snapshot = ev->op == PGF_OP_READ;
    int has_key = put_key(d, &d->key, ev) == 0;
    if (moved && has_key) {
        /* The other half's key: the update's new row for the delete, its old row for the
         * insert (the old image carries every key column, or the key did not move). */
        struct pgf_event other = *moved;
        if (ev->op == PGF_OP_INSERT) {
            other.op = PGF_OP_DELETE;
            other.key = moved->before;
            out->header = "__debezium.oldkey";
        } else {
            out->header = "__debezium.newkey";
        }
        put_key(d, &d->hdr, &other);
    }
    struct dbuf *b = &d->value;
    b->n = 0;
    puts_(b, "{\"before\":");
    /* A delete's old row: the whole row under FULL, else the key with every other column
     * null; an update's under FULL only (DEFAULT sends no old row). */
    const struct pgf_value *before = ev->before;
    if (ev->op == PGF_OP_DELETE && before == NULL)
        before = ev->key;
    if (before && (ev->op == PGF_OP_DELETE || ev->op == PGF_OP_UPDATE))
        put_row(d, b, rel, before, NULL, snapshot);
    else
        puts_(b, "null");
    puts_(b, ",\"after\":");
    if (ev->after && ev->op != PGF_OP_DELETE)
        put_row(d, b, rel, ev->after, rel->replident != 'f' ? NULL : ev->before ? ev->before : moved ? moved->before : NULL,
                snapshot);
    else
        puts_(b, "null");
    put(b, ",", 1);
    put_source(d, b, ev, rel, now_ns);
    static const char *const ops[] = {[PGF_OP_INSERT] = "c", [PGF_OP_UPDATE] = "u", [PGF_OP_DELETE] = "d",
                                      [PGF_OP_READ] = "r"};
    puts_(b, ",\"transaction\":null,\"op\":\"");
    puts_(b, ev->op < sizeof ops / sizeof ops[0] && ops[ev->op] ? ops[ev->op] : "c");
    puts_(b, "\",");
    put_now(b, now_ns);
    puts_(b, "}");
    if (finish(d, has_key, out) != 0)
        return -1;
    if (out->header) {
        out->header_value = d->hdr.p;
        out->header_len = d->hdr.n;
    }
    return 0;
}

/* Encodes one truncated relation's record; see debezium_event.h. */
int pgf_dbz_encode_truncate(struct pgf_dbz *d, const struct pgf_event *ev, uint32_t i, int64_t now_ns,
                            struct pgf_dbz_record *out)
{
    memset(out, 0, sizeof *out);
    struct dbuf *b = &d->value;
    b->n = 0;
    puts_(b, "{\"before\":null,\"after\":null,");
    put_source(d, b, ev, ev->truncate.rels[i], now_ns);
    puts_(b, ",\"transaction\":null,\"op\":\"t\",");
    put_now(b, now_ns);
    puts_(b, "}");
    return finish(d, 0, out);
}

/* Returns a new encoder; see debezium_event.h. */
struct pgf_dbz *pgf_dbz_new(const struct pgf_dbz_config *cfg)
{
    struct pgf_dbz *d = calloc(1, sizeof *d);
    if (d)
        d->cfg = *cfg;
    return d;
}

/* Frees the encoder and its buffers. */
void pgf_dbz_free(struct pgf_dbz *d)
{
    if (d == NULL)
        return;
    free(d->value.p);
    free(d->key.p);
    free(d->hdr.p);
    free(d->tmp.p);
    free(d);
}
