/* test_redis_rules.c - key templates, filters, old/new row images, presets, app messages, the
 * replica identity warning, the YAML loader's errors, the latency histogram. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "cdc/config.h"
#include "decoders/txn.h"
#include "sinks/redis_rules.h"

/* What the rules reported, one "kind key" line per call. */
struct capture {
    char lines[64][256];
    int n;
    struct pgf_redis_rules *rules;
};

/* Records a key. */
static int cap_key(void *ctx, enum pgf_redis_action a, const char *key, size_t len)
{
    struct capture *c = ctx;
    snprintf(c->lines[c->n++], 256, "%s %.*s", a == PGF_REDIS_UNLINK ? "unlink" : "del", (int)len, key);
    return 0;
}

/* Records a generation. */
static int cap_gen(void *ctx, enum pgf_redis_generation m, const char *key, size_t len)
{
    struct capture *c = ctx;
    snprintf(c->lines[c->n++], 256, "%s %.*s", m == PGF_GEN_INCR ? "incr" : "setlsn", (int)len, key);
    return 0;
}

/* Records a publish. */
static int cap_pub(void *ctx, const char *channel, const char *payload, size_t len)
{
    struct capture *c = ctx;
    snprintf(c->lines[c->n++], 256, "pub %s %.*s", channel, (int)len, payload);
    return 0;
}

/* True when the capture holds line exactly once. */
static int has_once(const struct capture *c, const char *line)
{
    int hits = 0;
    for (int i = 0; i < c->n; i++)
        hits += strcmp(c->lines[i], line) == 0;
    return hits == 1;
}

/* The decoder's structs hold mutable strings; these fixtures never change them. */
#define MUT(s) ((char *)(uintptr_t)(s))

/* A users(id key, email, slug) relation. */
static struct pgf_column attrs[] = {
    {.name = MUT("id"), .type_oid = 23, .is_key = 1},
    {.name = MUT("email"), .type_oid = 25},
    {.name = MUT("slug"), .type_oid = 25},
};
static struct pgf_relation users = {.oid = 1, .nspname = MUT("public"), .relname = MUT("users"), .replident = 'd',
                                    .natts = 3, .attrs = attrs};

/* Makes a text value, or NULL/unchanged-TOAST for the special strings. */
static struct pgf_value val(const char *s)
{
    if (s == NULL)
        return (struct pgf_value){.kind = PGF_VALUE_NULL};
    if (strcmp(s, "<toast>") == 0)
        return (struct pgf_value){.kind = PGF_VALUE_UNCHANGED_TOAST};
    return (struct pgf_value){.kind = PGF_VALUE_TEXT, .len = (uint32_t)strlen(s), .data = s};
}

/* Compiles rules from a config with one users rule and the given templates. */
static struct pgf_redis_rules *compile(const char *const *keys, unsigned nkeys, int django, int cachalot,
                                       enum pgf_redis_generation gen, char *err)
{
    static struct pgf_redis_rule_cfg rule;
    static int three = 3;
    static struct pgf_django_cfg dj = {.key_prefix = MUT("app"), .version = &three};
    static struct pgf_cachalot_cfg ca = {.db_alias = NULL};
    memset(&rule, 0, sizeof rule);
    rule.table = MUT("users");
    rule.keys = (char **)keys;
    rule.keys_count = nkeys;
    rule.generation = gen;
    struct pgf_redis_cfg cfg = {.rules = &rule, .rules_count = 1, .django = django ? &dj : NULL,
                                .cachalot = cachalot ? &ca : NULL};
    return pgf_redis_rules_new(&cfg, NULL, err, 512);
}

/* Hands the rules one event, as the Redis sink does. */
static int apply_event(void *ctx, const struct pgf_event *ev)
{
    struct capture *c = ctx;
    struct pgf_inval_out out = {.key = cap_key, .generation = cap_gen, .publish = cap_pub, .ctx = c};
    assert_int_equal(pgf_redis_rules_apply(c->rules, ev, &out), 0);
    return 0;
}

/* Ignores a commit. */
static int ignore_commit(void *ctx, const struct pgf_txn *txn)
{
    (void)ctx;
    (void)txn;
    return 0;
}

/* Runs one decoded change, inside a transaction, through transaction assembly (which builds
 * its event) and the rules into a fresh capture. */
static void run(struct pgf_redis_rules *r, const struct pgo_msg *msg, struct capture *c)
{
    memset(c, 0, sizeof *c);
    c->rules = r;
    struct pgf_txn_asm *a = pgf_txn_asm_new(0, 0);
    assert_non_null(a);
    struct pgf_txn_consumer to_rules = {.event = apply_event, .commit = ignore_commit, .ctx = c};
    struct pgo_msg begin = {.type = PGO_MSG_BEGIN, .u.begin = {.final_lsn = 100, .xid = 7}};
    assert_int_equal(pgf_txn_asm_feed(a, 98, &begin, &to_rules), PGF_TXN_OK);
    assert_int_equal(pgf_txn_asm_feed(a, 99, msg, &to_rules), PGF_TXN_OK);
    pgf_txn_asm_free(a);
}

/* Insert: new row only; filters; a NULL column drops that key. */
static void test_insert_filters_and_null(void **state)
{
    (void)state;
    char err[512];
    const char *keys[] = {"user:{id}", "e:{email|lower}", "h:{id|sha1}", "m:{id|md5}", "s:{slug}", "{{x}}{id|upper}"};
    struct pgf_redis_rules *r = compile(keys, 6, 0, 0, PGF_GEN_NONE, err);
    assert_non_null(r);
    struct pgf_value row[] = {val("5"), val("A@X.com"), val(NULL)};
    struct pgo_msg m = {.type = PGO_MSG_INSERT, .u.change = {.rel = &users, .new_tuple = {3, row}}};
    struct capture c;
    run(r, &m, &c);
    assert_int_equal(c.n, 5);
    assert_true(has_once(&c, "del user:5"));
    assert_true(has_once(&c, "del e:a@x.com"));
    assert_true(has_once(&c, "del h:ac3478d69a3c81fa62e60f5c3696165a4e5e6ac4"));
    assert_true(has_once(&c, "del m:e4da3b7fbbce2345d7772b0674a318d5"));
    assert_true(has_once(&c, "del {x}5"));
    pgf_redis_rules_free(r);
}

/* Update with a full old row: both images, so a changed slug drops the old and the new key. */
static void test_update_old_and_new(void **state)
{
    (void)state;
    char err[512];
    const char *keys[] = {"p:{slug}", "u:{id}"};
    struct pgf_redis_rules *r = compile(keys, 2, 0, 0, PGF_GEN_NONE, err);
    struct pgf_value oldr[] = {val("5"), val("a"), val("old")}, newr[] = {val("5"), val("<toast>"), val("new")};
    struct pgo_msg m = {.type = PGO_MSG_UPDATE,
                        .u.change = {.rel = &users, .old_kind = 'O', .old_tuple = {3, oldr}, .new_tuple = {3, newr}}};
    struct capture c;
    run(r, &m, &c);
    assert_true(has_once(&c, "del p:old"));
    assert_true(has_once(&c, "del p:new"));
    /* The rules report u:5 twice (old and new image); the sink drops the duplicate. */
    assert_int_equal(c.n, 4);
    pgf_redis_rules_free(r);
}

/* Update without an old tuple (default identity, key unchanged): the old key is the new key;
 * a non-key column of the old row is unknown and counted, not guessed. */
static void test_update_default_identity(void **state)
{
    (void)state;
    char err[512];
    const char *keys[] = {"p:{slug}", "u:{id}"};
    struct pgf_redis_rules *r = compile(keys, 2, 0, 0, PGF_GEN_NONE, err);
    struct pgf_value newr[] = {val("5"), val("a"), val("new")};
    struct pgo_msg m = {.type = PGO_MSG_UPDATE, .u.change = {.rel = &users, .new_tuple = {3, newr}}};
    struct capture c;
    run(r, &m, &c);
    assert_int_equal(c.n, 3); /* u:5 (old), p:new, u:5 (new) */
    assert_true(has_once(&c, "del p:new"));
    assert_int_equal(pgf_redis_rules_unexpanded(r), 1);
    /* Delete with the old key only ('K'): non-key columns are not sent. */
    struct pgf_value key[] = {val("9"), val(NULL), val(NULL)};
    struct pgo_msg d = {.type = PGO_MSG_DELETE, .u.change = {.rel = &users, .old_kind = 'K', .old_tuple = {3, key}}};
    run(r, &d, &c);
    assert_int_equal(c.n, 1);
    assert_true(has_once(&c, "del u:9"));
    assert_int_equal(pgf_redis_rules_unexpanded(r), 2);
    pgf_redis_rules_free(r);
}

/* Django prefix on every key; cachalot's table key; generation on truncate. */
static void test_presets_and_truncate(void **state)
{
    (void)state;
    char err[512];
    const char *keys[] = {"u:{id}"};
    struct pgf_redis_rules *r = compile(keys, 1, 1, 1, PGF_GEN_LSN, err);
    assert_non_null(r);
    struct pgf_value row[] = {val("5"), val("a"), val("s")};
    struct pgo_msg m = {.type = PGO_MSG_INSERT, .u.change = {.rel = &users, .new_tuple = {3, row}}};
    struct capture c;
    run(r, &m, &c);
    assert_true(has_once(&c, "del app:3:u:5"));
    assert_true(has_once(&c, "setlsn app:3:pgfanout:gen:public.users"));
    assert_true(has_once(&c, "del app:3:2c1bb8508cbb582cf39001c391f8c31d7fef502e")); /* sha1("default:users") */
    const struct pgf_relation *rels[] = {&users};
    struct pgo_msg t = {.type = PGO_MSG_TRUNCATE, .u.truncate = {.nrelids = 1, .rels = rels}};
    run(r, &t, &c);
    assert_int_equal(c.n, 2);
    assert_true(has_once(&c, "setlsn app:3:pgfanout:gen:public.users"));
    pgf_redis_rules_free(r);
}

/* Application keys: split on whitespace, other prefixes ignored. */
static void test_app_message(void **state)
{
    (void)state;
    char err[512];
    struct pgf_redis_cfg cfg = {0};
    struct pgf_redis_rules *r = pgf_redis_rules_new(&cfg, NULL, err, sizeof err);
    const char body[] = "  k1 k2\n\tk3 ";
    struct pgo_msg m = {.type = PGO_MSG_MESSAGE,
                        .u.message = {.transactional = 1, .prefix = "pgfanout.invalidate",
                                      .content_len = sizeof body - 1, .content = body}};
    struct capture c;
    run(r, &m, &c);
    assert_int_equal(c.n, 3);
    assert_true(has_once(&c, "del k1") && has_once(&c, "del k2") && has_once(&c, "del k3"));
    m.u.message.prefix = "other";
    run(r, &m, &c);
    assert_int_equal(c.n, 0);
    pgf_redis_rules_free(r);
}

/* Bad templates are errors naming the problem. */
static void test_template_errors(void **state)
{
    (void)state;
    char err[512];
    const char *bad[][1] = {{"u:{id"}, {"u:{}"}, {"u:{id|nope}"}, {"u:}x"}, {"u:{|lower}"}, {"u:{id||lower}"},
                            {"u:{id|}"}};
    const char *why[] = {"without a '}'", "empty placeholder", "unknown filter 'nope'", "without a '{'",
                         "empty placeholder", "empty placeholder", "empty placeholder"};
    for (size_t i = 0; i < 7; i++) {
        err[0] = '\0';
        assert_null(compile(bad[i], 1, 0, 0, PGF_GEN_NONE, err));
        assert_non_null(strstr(err, why[i]));
        assert_non_null(strstr(err, "redis.rules[0].keys[0]"));
    }
}

/* The startup warning names the missing columns and the fix; FULL needs none. */
static void test_identity_warning(void **state)
{
    (void)state;
    char err[512], msg[1024];
    const char *keys[] = {"u:{id}", "e:{email}", "e2:{email|lower}"};
    struct pgf_redis_rules *r = compile(keys, 3, 0, 0, PGF_GEN_NONE, err);
    const char *keycols[] = {"id"};
    assert_int_equal(pgf_redis_rule_identity_warning(r, 0, 'd', keycols, 1, NULL, 0, msg, sizeof msg), 1);
    assert_non_null(strstr(msg, "use email,"));
    assert_non_null(strstr(msg, "REPLICA IDENTITY FULL"));
    assert_int_equal(pgf_redis_rule_identity_warning(r, 0, 'f', keycols, 1, NULL, 0, msg, sizeof msg), 0);
    const char *both[] = {"id", "email"};
    assert_int_equal(pgf_redis_rule_identity_warning(r, 0, 'i', both, 2, NULL, 0, msg, sizeof msg), 0);
    const char *all[] = {"id", "slug"};
    /* email is not a column at all: the unknown-column warning covers it, not this one */
    assert_int_equal(pgf_redis_rule_identity_warning(r, 0, 'd', keycols, 1, all, 2, msg, sizeof msg), 0);
    assert_int_equal(pgf_redis_rule_unknown_column(r, 0, all, 2, msg, sizeof msg), 1);
    assert_non_null(strstr(msg, "name email,"));
    pgf_redis_rules_free(r);
}

/* Writes text to a temp file and returns its path (static buffer). */
static const char *temp_yaml(const char *text)
{
    static char path[64];
    strcpy(path, "/tmp/pgfanout-test-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

/* The loader's errors name file, line, key path and what is allowed; a good file loads. */
static void test_config_errors(void **state)
{
    (void)state;
    struct {
        const char *yaml, *want[3];
    } cases[] = {
        {"redis:\n  rules:\n    - table: a\n    - table: b\n      acton: del\n",
         {"line 5", "redis.rules[1].acton", "allowed keys here: table, keys"}},
        {"redis:\n  window: lots\n", {"line 2", "redis.window", "non-negative integers"}},
        {"redis:\n  rules:\n    - table: a\n      generation: sometimes\n",
         {"line 4", "redis.rules[0].generation", "none, lsn, incr"}},
        {"kafka: {}\nrabbit: {}\n", {"line 2", "unknown key 'rabbit'", "allowed keys here: source, sinks"}},
        {"source:\n  slto: x\n", {"line 2", "source.slto", "allowed keys here: dsn, slot"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *path = temp_yaml(cases[i].yaml);
        struct pgf_config *cfg;
        char err[1024];
        assert_int_equal(pgf_config_load(path, &cfg, err, sizeof err), -1);
        for (int w = 0; w < 3; w++)
            if (strstr(err, cases[i].want[w]) == NULL)
                fail_msg("case %zu: '%s' not in: %s", i, cases[i].want[w], err);
        unlink(path);
    }
    const char *path = temp_yaml("redis:\n  port: 7000\n  rules:\n    - table: s.t\n      keys: [\"a:{x}\"]\n"
                                 "      action: unlink\n      generation: incr\n");
    struct pgf_config *cfg;
    char err[1024];
    assert_int_equal(pgf_config_load(path, &cfg, err, sizeof err), 0);
    assert_int_equal(cfg->redis->port, 7000);
    assert_int_equal(cfg->redis->rules_count, 1);
    assert_int_equal(cfg->redis->rules[0].action, PGF_REDIS_UNLINK);
    assert_int_equal(cfg->redis->rules[0].generation, PGF_GEN_INCR);
    assert_string_equal(cfg->redis->rules[0].keys[0], "a:{x}");
    assert_int_equal(pgf_config_line_of(path, "redis.rules[0].keys[0]"), 5);
    assert_int_equal(pgf_config_line_of(path, "redis.rules[0].action"), 6);
    pgf_config_free(cfg);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_insert_filters_and_null),
        cmocka_unit_test(test_update_old_and_new),
        cmocka_unit_test(test_update_default_identity),
        cmocka_unit_test(test_presets_and_truncate),
        cmocka_unit_test(test_app_message),
        cmocka_unit_test(test_template_errors),
        cmocka_unit_test(test_identity_warning),
        cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
