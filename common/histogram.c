/* histogram.c - see histogram.h. */
#include "common/histogram.h"

/* Returns the bucket of a value: exact below PGF_HIST_SUB, then 16 steps per power of two. */
static unsigned bucket_of(uint64_t v)
{
    if (v < PGF_HIST_SUB)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* v in [2^e, 2^(e+1)) with e >= 4 */
    unsigned idx = PGF_HIST_SUB + (e - 4) * PGF_HIST_SUB + (unsigned)((v >> (e - 4)) & (PGF_HIST_SUB - 1));
    return idx < PGF_HIST_BUCKETS ? idx : PGF_HIST_BUCKETS - 1;
}

/* Returns the largest value that falls in bucket i. */
static uint64_t bucket_upper(unsigned i)
{
    if (i < PGF_HIST_SUB)
        return i;
    unsigned e = (i - PGF_HIST_SUB) / PGF_HIST_SUB + 4, sub = (i - PGF_HIST_SUB) % PGF_HIST_SUB;
    return ((uint64_t)(PGF_HIST_SUB + sub + 1) << (e - 4)) - 1;
}

/* Adds one value. */
void pgf_hist_record(struct pgf_hist *h, int64_t us)
{
    uint64_t v = us < 0 ? 0 : (uint64_t)us;
    h->counts[bucket_of(v)]++;
    h->total++;
    h->sum_us += (double)v;
    if (v > h->max_us)
        h->max_us = v;
}

/* Walks the buckets to the q-th value; reports the bucket's upper bound, capped by the max. */
uint64_t pgf_hist_quantile(const struct pgf_hist *h, double q)
{
    if (h->total == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->total + 0.999999);
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < PGF_HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t up = bucket_upper(i);
            return up < h->max_us ? up : h->max_us;
        }
    }
    return h->max_us;
}

/* Sums the buckets that lie wholly at or below us. */
uint64_t pgf_hist_count_le(const struct pgf_hist *h, uint64_t us)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < PGF_HIST_BUCKETS && bucket_upper(i) <= us; i++)
        n += h->counts[i];
    return n;
}
