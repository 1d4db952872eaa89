/* redis_lease.c - lease key names; see redis_lease.h.  Both layouts keep the lease next to its
 * key in one hash slot wherever a name can do that, because a fill script names both keys and
 * Redis Cluster refuses a script whose keys span slots. */
#include "sinks/redis_lease.h"

#include <string.h>

/* Finds the hash tag as Redis Cluster does (keyHashSlot in cluster.c): the first '{', then the
 * first '}' after it; an empty "{}" is no tag. */
int pgf_redis_hash_tag(const char *key, size_t len, size_t *tag_off, size_t *tag_len)
{
    const char *open = memchr(key, '{', len);
    if (open == NULL)
        return 0;
    size_t start = (size_t)(open - key) + 1;
    const char *close = memchr(key + start, '}', len - start);
    if (close == NULL || (size_t)(close - key) == start)
        return 0;
    if (tag_off)
        *tag_off = start;
    if (tag_len)
        *tag_len = (size_t)(close - key) - start;
    return 1;
}

/* Bound for the output buffer; see redis_lease.h. */
size_t pgf_redis_lease_key_max(size_t suffix_len, size_t len)
{
    return len + suffix_len + 2;
}

/* Builds the lease key; see redis_lease.h. */
long pgf_redis_lease_key(enum pgf_lease_layout layout, const char *suffix, size_t suffix_len, const char *key,
                         size_t len, char *out, size_t outcap)
{
    /* Appending never moves a valid tag: the first '{' and the first '}' after it stay in K. */
    int wrap = 0;
    if (layout == PGF_LEASE_CLUSTER && !pgf_redis_hash_tag(key, len, NULL, NULL)) {
        /* Untagged keys hash whole; "{K}" makes K the tag, unless K's own '}' would end it early
         * (and "{}" is no tag at all). */
        if (len == 0 || memchr(key, '}', len) != NULL)
            return 0;
        wrap = 1;
    }
    size_t need = len + suffix_len + (wrap ? 2 : 0);
    if (need > outcap || need > (size_t)0x7fffffff)
        return -1;
    size_t at = 0;
    if (wrap)
        out[at++] = '{';
    memcpy(out + at, key, len);
    at += len;
    if (wrap)
        out[at++] = '}';
    memcpy(out + at, suffix, suffix_len);
    return (long)(at + suffix_len);
}
