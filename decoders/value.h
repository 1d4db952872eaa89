/* value.h - what a column value means: its PostgreSQL type and text decide its typed form
 * (number, string, NaN/Infinity, bool, bytes, uuid, date/time, or PostgreSQL's text), here
 * and nowhere else; every renderer (JSON, protobuf) renders that typed form. Pure, no I/O. */
#ifndef PGFANOUT_VALUE_H
#define PGFANOUT_VALUE_H

#include <stddef.h>
#include <stdint.h>

#include "decoders/event.h"

/* Built-in type OIDs that get a non-text rendering (from pg_type.dat). */
#define PGF_OID_BOOL 16
#define PGF_OID_BYTEA 17
#define PGF_OID_INT8 20
#define PGF_OID_INT2 21
#define PGF_OID_INT4 23
#define PGF_OID_OID 26
#define PGF_OID_FLOAT4 700
#define PGF_OID_FLOAT8 701
#define PGF_OID_NAME 19
#define PGF_OID_TEXT 25
#define PGF_OID_JSON 114
#define PGF_OID_BPCHAR 1042
#define PGF_OID_VARCHAR 1043
#define PGF_OID_DATE 1082
#define PGF_OID_TIME 1083
#define PGF_OID_TIMESTAMP 1114
#define PGF_OID_TIMESTAMPTZ 1184
#define PGF_OID_NUMERIC 1700
#define PGF_OID_UUID 2950
#define PGF_OID_JSONB 3802

/* The typed form of a value in an event; mirrors pgfanout.v1.Value. */
enum pgf_vkind {
    PGF_VK_NULL,
    PGF_VK_UNCHANGED_TOAST,
    PGF_VK_BOOL,
    PGF_VK_INT,
    PGF_VK_DOUBLE,
    PGF_VK_NUMERIC,
    PGF_VK_TEXT,
    PGF_VK_BYTES,
    PGF_VK_UUID,
    PGF_VK_DATE,
    PGF_VK_TIME,
    PGF_VK_TIMESTAMP,
    PGF_VK_TIMESTAMPTZ,
    PGF_VK_PGTEXT,
};

/* A converted value.  str/len are the source value's bytes (its text, for every kind but
 * BYTES), or for BYTES the decoded bytes in the caller's scratch (a bytea's text) or the
 * source's own bytes (a binary-format value). */
struct pgf_typed {
    enum pgf_vkind kind;
    int64_t i;      /* BOOL (0/1), INT, DATE (days), TIME, TIMESTAMP, TIMESTAMPTZ (microseconds) */
    double d;       /* DOUBLE */
    const char *str;
    size_t len;
    uint8_t uuid[16];
};

/* Returns the bytes a text-format bytea of len characters needs once decoded (a bound). */
size_t pgf_bytea_decoded_max(size_t len);

/* Returns the scratch bytes pgf_value_convert needs for a value of len bytes of type_oid
 * (0 for every type but bytea). */
size_t pgf_value_scratch_size(uint32_t type_oid, size_t len);

/* Converts one column value of type_oid to its typed form.  A text value that does not parse
 * as its type expects (infinity dates, BC years, an escape-format bytea) becomes PGF_VK_PGTEXT,
 * so nothing is ever lost.  An ABSENT value converts as NULL (renderers leave it out first).
 * scratch must hold pgf_value_scratch_size(type_oid, v->len) bytes (may be NULL when that is
 * 0).  Never fails. */
void pgf_value_convert(const struct pgf_value *v, uint32_t type_oid, uint8_t *scratch, struct pgf_typed *out);

/* Parses "YYYY-MM-DD" into days since 1970-01-01; returns 0, or -1 if s is not that form. */
int pgf_parse_date(const char *s, size_t n, int32_t *days);

/* Parses "HH:MM:SS[.ffffff]" into microseconds since midnight; returns 0 or -1. */
int pgf_parse_time(const char *s, size_t n, int64_t *us);

/* Parses "YYYY-MM-DD HH:MM:SS[.ffffff]" and, when with_zone, a "+HH[:MM[:SS]]" offset, into
 * microseconds since 1970-01-01 (UTC when with_zone); returns 0 or -1. */
int pgf_parse_timestamp(const char *s, size_t n, int with_zone, int64_t *us);

/* Parses a canonical uuid into 16 bytes; returns 0 or -1. */
int pgf_parse_uuid(const char *s, size_t n, uint8_t out[16]);

#endif
