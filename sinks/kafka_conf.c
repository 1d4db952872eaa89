/* kafka_conf.c - librdkafka settings from pgfanout's; see kafka_conf.h. */
#include "sinks/kafka_conf.h"

#include <stdio.h>
#include <string.h>

/* Sets one librdkafka property; on failure names the key, never the value (it may be a
 * password): librdkafka's reason quotes a rejected value, so the value is cut out of it. */
static int conf_set(rd_kafka_conf_t *conf, const char *key, const char *val, char *err, size_t errlen)
{
    char why[256];
    if (rd_kafka_conf_set(conf, key, val, why, sizeof why) == RD_KAFKA_CONF_OK)
        return 0;
    char clean[256];
    size_t n = 0, vlen = strlen(val);
    for (const char *p = why; *p && n + 4 < sizeof clean;) {
        if (vlen > 0 && strncmp(p, val, vlen) == 0) {
            memcpy(clean + n, "...", 3);
            n += 3;
            p += vlen;
        } else {
            clean[n++] = *p++;
        }
    }
    clean[n] = '\0';
    snprintf(err, errlen, "invalid Kafka setting '%s': %s", key, clean);
    return -1;
}

/* Builds a configuration; see kafka_conf.h. */
rd_kafka_conf_t *kafka_conf_build(const char *const (*defaults)[2], size_t ndefaults, const char *brokers,
                                  const char *const *kv, size_t nkv, const char *const (*required)[2],
                                  size_t nrequired, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    for (size_t i = 0; i < ndefaults; i++)
        if (conf_set(conf, defaults[i][0], defaults[i][1], err, errlen))
            goto fail;
    if (brokers && conf_set(conf, "bootstrap.servers", brokers, err, errlen))
        goto fail;
    for (size_t i = 0; i < nkv; i++) {
        const char *eq = strchr(kv[i], '=');
        if (eq == NULL || eq == kv[i]) {
            snprintf(err, errlen, "invalid kafka.conf entry '%.*s...': expected key=value",
                     (int)(eq ? eq - kv[i] : 20), kv[i]);
            goto fail;
        }
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)(eq - kv[i]), kv[i]);
        if (conf_set(conf, key, eq + 1, err, errlen))
            goto fail;
    }
    for (size_t i = 0; i < nrequired; i++)
        if (conf_set(conf, required[i][0], required[i][1], err, errlen))
            goto fail;
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

