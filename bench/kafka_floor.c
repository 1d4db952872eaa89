/* kafka_floor.c - librdkafka alone, with pgfanout's producer defaults: the CPU one record costs
 * and the produce-to-ack latency at a fixed rate, with no PostgreSQL and none of pgfanout's
 * decoding or encoding (only its producer settings, sinks/kafka_sink.c's, built as it builds them).
 *
 * It is the floor under pgfanout's Kafka figures in bench/compare.py: what any program that
 * hands the same records to librdkafka 2.0.2 pays, so what is left above it is pgfanout's own.
 *
 *   kafka_floor -b HOST:PORT -t TOPIC -n COUNT [-s VALUE_BYTES] [-k KEY_BYTES] [-r RATE]
 *               [-X key=value ...]
 *
 * Without -r it produces COUNT records as fast as librdkafka takes them, waits for every ack,
 * and prints "floor: N records, CPU S s (U us/record, all threads), wall W s".  With -r it
 * produces RATE records per second until COUNT are out and prints the produce-to-ack latency
 * percentiles.  Not part of ctest. */
#define _POSIX_C_SOURCE 200809L
#include "sinks/kafka_conf.h"
#include "sinks/kafka_sink.h"

#include <librdkafka/rdkafka.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

struct floor_run {
    uint64_t *sent_ns;    /* per record, for -r: when produce() took it */
    double *lat_ms;       /* per acked record, for -r */
    size_t acked, failed;
};

/* Monotonic nanoseconds. */
static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* User plus system CPU seconds of the whole process, all threads. */
static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* Counts the ack and, when latencies are kept, records produce-to-ack for this record. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    struct floor_run *run = opaque;
    if (m->err) {
        run->failed++;
        return;
    }
    if (run->sent_ns != NULL)
        run->lat_ms[run->acked] = (double)(now_ns() - run->sent_ns[(uintptr_t)m->_private]) / 1e6;
    run->acked++;
}

/* qsort order for doubles. */
static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Parses the flags, produces, prints the figures; exit 0 only when every record was acked. */
int main(int argc, char **argv)
{
    const char *brokers = NULL, *topic = NULL;
    size_t count = 0, value_bytes = 256, key_bytes = 8;
    double rate = 0;
    /* -X items after pgfanout's producer defaults, as kafka.conf's: kafka_conf_build applies both. */
    const char **items = calloc((size_t)argc, sizeof *items);
    size_t nitems = 0;
    if (items == NULL)
        return 1;
    int opt;
    while ((opt = getopt(argc, argv, "b:t:n:s:k:r:X:")) != -1) {
        switch (opt) {
        case 'b': brokers = optarg; break;
        case 't': topic = optarg; break;
        case 'n': count = strtoull(optarg, NULL, 10); break;
        case 's': value_bytes = strtoull(optarg, NULL, 10); break;
        case 'k': key_bytes = strtoull(optarg, NULL, 10); break;
        case 'r': rate = strtod(optarg, NULL); break;
        case 'X': items[nitems++] = optarg; break;
        default:
            fprintf(stderr, "usage: kafka_floor -b BROKERS -t TOPIC -n COUNT [-s VALUE_BYTES] [-k KEY_BYTES] "
                            "[-r RATE] [-X key=value]\n");
            return 2;
        }
    }
    if (brokers == NULL || topic == NULL || count == 0) {
        fprintf(stderr, "kafka_floor: -b, -t and -n are required\n");
        return 2;
    }
    char why[512];
    rd_kafka_conf_t *conf =
        kafka_conf_build(kafka_producer_defaults, kafka_producer_ndefaults, brokers, items, nitems, NULL, 0, why, sizeof why);
    free(items);
    if (conf == NULL) {
        fprintf(stderr, "kafka_floor: %s\n", why);
        return 2;
    }
    struct floor_run run = {0};
    if (rate > 0) {
        run.sent_ns = calloc(count, sizeof *run.sent_ns);
        run.lat_ms = calloc(count, sizeof *run.lat_ms);
        if (run.sent_ns == NULL || run.lat_ms == NULL) {
            fprintf(stderr, "kafka_floor: out of memory for %zu latencies\n", count);
            return 1;
        }
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, &run);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    if (rk == NULL) {
        fprintf(stderr, "kafka_floor: %s\n", why);
        return 1;
    }
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (rkt == NULL) {
        fprintf(stderr, "kafka_floor: topic %s: %s\n", topic, rd_kafka_err2str(rd_kafka_last_error()));
        return 1;
    }
    char key[32], *value = malloc(value_bytes + 1);
    if (value == NULL) {
        fprintf(stderr, "kafka_floor: out of memory for a %zu-byte value\n", value_bytes);
        return 1;
    }
    /* Not all one byte, or lz4 would make the floor look cheaper than real rows. */
    for (size_t i = 0; i < value_bytes; i++)
        value[i] = (char)(' ' + (i * 7919u) % 95u);
    if (key_bytes > sizeof key - 1)
        key_bytes = sizeof key - 1;
    char lsn[24], xid[24];
    double cpu0 = cpu_s();
    uint64_t t0 = now_ns(), period_ns = rate > 0 ? (uint64_t)(1e9 / rate) : 0;
    for (size_t i = 0; i < count; i++) {
        if (period_ns) {
            uint64_t due = t0 + i * period_ns, now;
            while ((now = now_ns()) < due) {
                rd_kafka_poll(rk, 0);
                uint64_t left = due - now;
                struct timespec ts = {0, (long)(left > 200000 ? 200000 : left)};
                nanosleep(&ts, NULL);
            }
        }
        /* A distinct key per record spreads them over the partitions as primary keys do. */
        snprintf(key, sizeof key, "%0*zu", (int)key_bytes, i);
        memcpy(value, key, key_bytes < value_bytes ? key_bytes : value_bytes);
        snprintf(lsn, sizeof lsn, "0/%zX", 0x1000000 + i * 64);
        snprintf(xid, sizeof xid, "%zu", 1000 + i / 1000);
        rd_kafka_headers_t *hdrs = rd_kafka_headers_new(4);
        rd_kafka_header_add(hdrs, "op", -1, "c", -1);
        rd_kafka_header_add(hdrs, "table", -1, "public.bench_insert", -1);
        rd_kafka_header_add(hdrs, "lsn", -1, lsn, -1);
        rd_kafka_header_add(hdrs, "xid", -1, xid, -1);
        if (run.sent_ns != NULL)
            run.sent_ns[i] = now_ns();
        for (;;) {
            rd_kafka_resp_err_t err = rd_kafka_producev(
                rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_VALUE(value, value_bytes),
                RD_KAFKA_V_KEY(key, key_bytes), RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE((void *)(uintptr_t)i),
                RD_KAFKA_V_END);
            if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
                break;
            if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                fprintf(stderr, "kafka_floor: produce: %s\n", rd_kafka_err2str(err));
                return 1;
            }
            rd_kafka_poll(rk, 10);
        }
        /* As pgfanout's loop does: serve acks between records without waiting. */
        if ((i & 255) == 0 || period_ns)
            rd_kafka_poll(rk, 0);
    }
    while (run.acked + run.failed < count)
        rd_kafka_poll(rk, 100);
    double wall = (double)(now_ns() - t0) / 1e9, cpu = cpu_s() - cpu0;
    printf("floor: %zu records of %zu+%zu bytes, CPU %.3f s (%.3f us/record, all threads), wall %.3f s "
           "(%.0f records/s), %zu failed\n",
           count, key_bytes, value_bytes, cpu, cpu / (double)count * 1e6, wall, (double)count / wall, run.failed);
    if (run.lat_ms != NULL && run.acked > 0) {
        qsort(run.lat_ms, run.acked, sizeof *run.lat_ms, cmp_double);
        double *l = run.lat_ms;
        size_t n = run.acked;
        printf("latency: rate %.0f/s, produce->ack ms p50 %.2f p99 %.2f p999 %.2f max %.2f\n", rate, l[n / 2],
               l[(size_t)(n * 0.99)], l[(size_t)(n * 0.999)], l[n - 1]);
    }
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    free(value);
    free(run.sent_ns);
    free(run.lat_ms);
    return run.failed ? 1 : 0;
}
