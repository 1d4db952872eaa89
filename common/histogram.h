/* histogram.h - a latency histogram with log-linear buckets (16 per power of two, so any
 * quantile is within about 6% of the true value) that also answers "how many at most X",
 * which is what a Prometheus histogram's cumulative buckets need. */
#ifndef PGFANOUT_HISTOGRAM_H
#define PGFANOUT_HISTOGRAM_H

#include <stdint.h>

#define PGF_HIST_SUB 16
#define PGF_HIST_BUCKETS (PGF_HIST_SUB + 40 * PGF_HIST_SUB)

struct pgf_hist {
    uint64_t counts[PGF_HIST_BUCKETS];
    uint64_t total;
    double sum_us;
    uint64_t max_us;
};

/* Records one value in microseconds; negative values (clock steps) count as 0. */
void pgf_hist_record(struct pgf_hist *h, int64_t us);

/* Returns the q-quantile (0 < q <= 1) in microseconds, or 0 when empty. */
uint64_t pgf_hist_quantile(const struct pgf_hist *h, double q);

/* Returns how many recorded values are at most us (bucket resolution). */
uint64_t pgf_hist_count_le(const struct pgf_hist *h, uint64_t us);

#endif
