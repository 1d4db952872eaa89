/* fuzz_pgoutput.c - libFuzzer target: pgoutput bytes through the decoder, transaction assembly
 * and every renderer a sink uses (JSON, protobuf, debezium-json), as a worker does them.
 *
 * Input: the framing of the .bin files in tests/fixtures, a 4-byte big-endian length then that many bytes
 * of one XLogData payload, repeated; a short last frame is cut to what is left.  The
 * fixtures are therefore the seed corpus as they are. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "decoders/event.h"
#include "decoders/pgoutput.h"
#include "decoders/txn.h"
#include "sinks/debezium_event.h"
#include "sinks/json_event.h"
#include "sinks/proto_event.h"
#include "pgfanout/v1/event.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The renderers one input goes through. */
struct renderers {
    struct pgf_proto *proto;
    struct pgf_dbz *dbz;
};

/* Returns 1 when a value of ev's images holds a NUL byte.  pgf_proto_encode keeps such text
 * whole (a protobuf string may hold U+0000), but protobuf-c's unpacked strings are C strings,
 * so packing them again cuts there: no byte-for-byte comparison then. */
static int has_nul(const struct pgf_event *ev)
{
    const struct pgf_value *images[] = {ev->key, ev->before, ev->after};
    for (size_t i = 0; ev->rel && i < 3; i++)
        for (uint16_t a = 0; images[i] && a < ev->rel->natts; a++)
            if (images[i][a].len && memchr(images[i][a].data, 0, images[i][a].len))
                return 1;
    return 0;
}

/* Aborts unless protobuf-c decodes the n bytes at b as message desc and, when exact, packs
 * them back into exactly those bytes: pgf_proto_encode writes the wire format by hand and must
 * stay valid, and what protobuf-c would write. */
static void check_canonical(const ProtobufCMessageDescriptor *desc, const uint8_t *b, size_t n, int exact)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, n, b);
    if (m == NULL)
        abort();
    if (!exact) {
        protobuf_c_message_free_unpacked(m, NULL);
        return;
    }
    size_t again = protobuf_c_message_get_packed_size(m);
    uint8_t *out = malloc(again ? again : 1);
    if (out == NULL || protobuf_c_message_pack(m, out) != n || again != n || (n && memcmp(out, b, n) != 0))
        abort();
    free(out);
    protobuf_c_message_free_unpacked(m, NULL);
}

/* Consumer event callback: renders ev every way a sink can; returns 0 so feeding goes on. */
static int on_event(void *ctx, const struct pgf_event *ev)
{
    struct renderers *r = ctx;
    char err[256];
    json_t *j = pgf_json_event(ev, err, sizeof err);
    if (j != NULL) {
        char *s = json_dumps(j, JSON_COMPACT);
        free(s);
        json_decref(j);
    }
    const uint8_t *value, *key;
    size_t value_len, key_len;
    if (pgf_proto_encode(r->proto, ev, 0, &value, &value_len, &key, &key_len) == 0) {
        int exact = !has_nul(ev);
        check_canonical(&pgfanout__v1__event__descriptor, value, value_len, exact);
        if (key_len > 0) {
            check_canonical(&pgfanout__v1__key__descriptor, key, key_len, exact);
            char text[128];
            pgf_proto_key_text(key, key_len, 1, text, sizeof text);
        }
    }
    struct pgf_dbz_record rec;
    /* A fixed processing time: the output must depend on the input only. */
    int64_t now_ns = INT64_C(1764547200000000000);
    if (ev->op == PGF_OP_TRUNCATE) {
        for (uint32_t i = 0; i < ev->truncate.nrels; i++)
            pgf_dbz_encode_truncate(r->dbz, ev, i, now_ns, &rec);
    } else {
        pgf_dbz_encode(r->dbz, ev, NULL, now_ns, &rec);
    }
    return 0;
}

/* Consumer commit callback: nothing to render; returns 0. */
static int on_commit(void *ctx, const struct pgf_txn *txn)
{
    (void)ctx;
    (void)txn;
    return 0;
}

/* Decodes and renders every frame of data; never fails: only a sanitizer report is a finding. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The debezium modes are picked from the size so the seeds keep the fixtures' framing. */
    struct pgf_dbz_config cfg = {
        .decimal = (enum pgf_dbz_decimal)(size % 3),
        .time = (enum pgf_dbz_time)(size / 3 % 3),
        .binary = (enum pgf_dbz_binary)(size / 9 % 3),
        .name = "fuzz",
        .database = "fuzzdb",
        .version = "3.6.1.Final",
    };
    struct renderers r = {pgf_proto_new("fuzzdb"), pgf_dbz_new(&cfg)};
    struct pgo_decoder *dec = pgo_decoder_new();
    struct pgf_txn_asm *a = pgf_txn_asm_new(0, 0);
    struct pgf_txn_consumer c = {on_event, on_commit, &r};
    if (r.proto == NULL || r.dbz == NULL || dec == NULL || a == NULL)
        goto out;
    uint64_t lsn = 0x1000000;
    while (size >= 4) {
        size_t len = (size_t)data[0] << 24 | (size_t)data[1] << 16 | (size_t)data[2] << 8 | data[3];
        data += 4;
        size -= 4;
        if (len > size)
            len = size;
        /* A buffer of exactly len bytes, so that ASan catches any read past the message. */
        uint8_t *msg = malloc(len ? len : 1);
        if (msg == NULL)
            break;
        memcpy(msg, data, len);
        struct pgo_msg m;
        if (pgo_decode(dec, msg, len, &m) == 0)
            pgf_txn_asm_feed(a, lsn, &m, &c);
        free(msg);
        data += len;
        size -= len;
        lsn += len + 4;
    }
    pgf_txn_asm_abandon(a, &c);
out:
    pgf_txn_asm_free(a);
    pgo_decoder_free(dec);
    pgf_dbz_free(r.dbz);
    pgf_proto_free(r.proto);
    return 0;
}
