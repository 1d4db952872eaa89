/* redis_lease.h - the name of a cache key's lease key, which pgfanout deletes together with the
 * key so that a fill racing an invalidation loses (see contrib/redis/ and the README, "Leases").
 * Pure: no I/O, no logging, no allocation. */
#ifndef PGFANOUT_REDIS_LEASE_H
#define PGFANOUT_REDIS_LEASE_H

#include <stddef.h>

/* How a lease key is named (redis.lease_layout). */
enum pgf_lease_layout {
    PGF_LEASE_SUFFIX = 0, /* L = K + suffix: what Django's make_key(key + suffix) gives */
    PGF_LEASE_CLUSTER,    /* L in K's Redis Cluster hash slot, or no lease when no name can be */
};

/* Returns 1 when key has a Redis Cluster hash tag: a '{' and, after the first one, a '}' with
 * at least one byte between them; else 0. */
int pgf_redis_hash_tag(const char *key, size_t len, size_t *tag_off, size_t *tag_len);

/* Writes the lease key of key (len bytes) into out (room for outcap bytes, not terminated).
 * Returns its length; 0 when the layout gives this key no lease (cluster layout, a key with a
 * '}' but no valid tag); or -1 when out is too small (nothing useful was written). */
long pgf_redis_lease_key(enum pgf_lease_layout layout, const char *suffix, size_t suffix_len, const char *key,
                         size_t len, char *out, size_t outcap);

/* Returns the most bytes pgf_redis_lease_key can need for a key of len bytes. */
size_t pgf_redis_lease_key_max(size_t suffix_len, size_t len);

#endif
