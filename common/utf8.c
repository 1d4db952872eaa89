/* utf8.c - UTF-8 validation and repair (RFC 3629 well-formedness). */
#include "common/utf8.h"

#include <stdint.h>
#include <string.h>

/* Returns the length of the well-formed sequence at s (n bytes left), or 0 when malformed. */
static size_t seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf; /* bounds of the second byte */
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* past U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* Checks well-formedness; see utf8.h. */
int pgf_utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        /* Text is mostly ASCII: skip it eight bytes at a time. */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, u + i, 8);
            if (w & 0x8080808080808080ull)
                break;
            i += 8;
        }
        if (i >= n)
            break;
        if (u[i] < 0x80) { /* short names end up here: no call for an ASCII byte */
            i++;
            continue;
        }
        size_t l = seq_len(u + i, n - i);
        if (l == 0)
            return 0;
        i += l;
    }
    return 1;
}

/* Measures the repaired string; see utf8.h. */
size_t pgf_utf8_repaired_len(const char *s, size_t n)
{
    size_t out = 0;
    for (size_t i = 0; i < n;) {
        size_t l = seq_len((const unsigned char *)s + i, n - i);
        out += l ? l : 3; /* U+FFFD is three bytes */
        i += l ? l : 1;
    }
    return out;
}

/* Repairs; see utf8.h. */
size_t pgf_utf8_repair(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t l = seq_len((const unsigned char *)s + i, n - i);
        if (l) {
            memcpy(out + o, s + i, l);
            o += l;
            i += l;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    return o;
}
