/* test_keys.c - record keys: the rule that picks a table's key columns (cdc/keys.c:
 * kafka.key_columns, else the primary key, else the replica-identity index, else none), the
 * kafka.key_columns syntax check, and which image an event's key values come from
 * (decoders/event.c), including an update that moves a row to another key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cdc/keys.h"

/* public.orders (tenant int, id int, note text): under FULL every column is_key. */
static char tenant[] = "tenant", id[] = "id", note[] = "note", public_name[] = "public", orders[] = "orders";

/* A relation of orders' three columns with replica identity ident; key flags from is_key. */
static struct pgf_relation orders_rel(struct pgf_column *cols, char ident, int k0, int k1, int k2)
{
    cols[0] = (struct pgf_column){tenant, 23, -1, k0};
    cols[1] = (struct pgf_column){id, 23, -1, k1};
    cols[2] = (struct pgf_column){note, 25, -1, k2};
    return (struct pgf_relation){.oid = 7, .nspname = public_name, .relname = orders, .replident = ident,
                                 .natts = 3, .attrs = cols};
}

/* Chooses orders' key and renders the chosen column names as "a,b"; returns the rc. */
static int choose(const struct pgf_relation *rel, const char *cand, const char *spec, char *out, char *msg)
{
    uint16_t atts[3], n = 99;
    int rc = pgf_keys_choose(rel, cand, spec, atts, &n, msg, 1024);
    out[0] = '\0';
    for (uint16_t i = 0; rc >= 0 && i < n; i++)
        sprintf(out + strlen(out), "%s%s", i ? "," : "", rel->attrs[atts[i]].name);
    return rc;
}

/* Under FULL the primary key keys the table, in the index's order, not every column. */
static void test_full_takes_primary_key(void **state)
{
    (void)state;
    struct pgf_column cols[3];
    struct pgf_relation rel = orders_rel(cols, 'f', 1, 1, 1);
    char out[64], msg[1024];
    assert_int_equal(choose(&rel, "[[\"id\",\"tenant\"],null]", NULL, out, msg), 0);
    assert_string_equal(out, "id,tenant");
}

/* kafka.key_columns wins over the primary key; a column the table lacks is an error. */
static void test_configured_columns(void **state)
{
    (void)state;
    struct pgf_column cols[3];
    struct pgf_relation rel = orders_rel(cols, 'f', 1, 1, 1);
    char out[64], msg[1024];
    assert_int_equal(choose(&rel, "[[\"id\"],null]", "other.orders:id;public.orders:tenant,note", out, msg), 0);
    assert_string_equal(out, "tenant,note");
    assert_int_equal(choose(&rel, NULL, "orders:note", out, msg), 0); /* no schema: public */
    assert_string_equal(out, "note");
    assert_int_equal(choose(&rel, NULL, "public.orders:id,nope", out, msg), -1);
    assert_non_null(strstr(msg, "\"nope\""));
}

/* Under an index identity that leaves out a primary-key column, deletes cannot carry the
 * primary key, so the identity index keys the table. */
static void test_index_identity(void **state)
{
    (void)state;
    struct pgf_column cols[3];
    struct pgf_relation rel = orders_rel(cols, 'i', 0, 0, 1);
    char out[64], msg[1024];
    assert_int_equal(choose(&rel, "[[\"id\"],[\"note\"]]", NULL, out, msg), 0);
    assert_string_equal(out, "note");
    rel = orders_rel(cols, 'i', 1, 1, 0); /* the primary key inside the index: it keys */
    assert_int_equal(choose(&rel, "[[\"id\"],[\"tenant\",\"id\"]]", NULL, out, msg), 0);
    assert_string_equal(out, "id");
}

/* No key at all is a warning with the fix; a dropped table keeps its replica identity; a
 * primary key the publication leaves out falls back to the identity, with a warning. */
static void test_no_key_and_fallbacks(void **state)
{
    (void)state;
    struct pgf_column cols[3];
    struct pgf_relation rel = orders_rel(cols, 'f', 1, 1, 1);
    char out[64], msg[1024];
    assert_int_equal(choose(&rel, "[null,null]", NULL, out, msg), 1);
    assert_string_equal(out, "");
    assert_non_null(strstr(msg, "ADD PRIMARY KEY"));
    assert_int_equal(choose(&rel, NULL, NULL, out, msg), 0);
    assert_string_equal(out, "tenant,id,note");
    assert_int_equal(choose(&rel, "[[\"gone\"],null]", NULL, out, msg), 1);
    assert_string_equal(out, "tenant,id,note");
    assert_non_null(strstr(msg, "\"gone\""));
}

/* The syntax check names the bad entry and says how to write it. */
static void test_check_syntax(void **state)
{
    (void)state;
    char err[512];
    assert_int_equal(pgf_keys_check(NULL, err, sizeof err), 0);
    assert_int_equal(pgf_keys_check("", err, sizeof err), 0);
    assert_int_equal(pgf_keys_check("public.a:x,y;b:z", err, sizeof err), 0);
    assert_int_equal(pgf_keys_check("public.a", err, sizeof err), -1);
    assert_non_null(strstr(err, "\"public.a\""));
    assert_int_equal(pgf_keys_check("public.a:", err, sizeof err), -1);
    assert_int_equal(pgf_keys_check("public.a:x,,y", err, sizeof err), -1);
    assert_int_equal(pgf_keys_check(":x", err, sizeof err), -1);
}

/* Key values: a delete's from its old row, an update's from the new row (unchanged TOAST
 * from the old one); a changed primary key is seen, an unchanged one is not. */
static void test_event_key_values(void **state)
{
    (void)state;
    struct pgf_column cols[3];
    struct pgf_relation rel = orders_rel(cols, 'f', 1, 1, 1);
    uint16_t key_atts[] = {1};
    rel.nkey = 1;
    rel.key_atts = key_atts;
    struct pgf_value old[3] = {pgf_value_text("1", 1), pgf_value_text("10", 2), pgf_value_text("a", 1)};
    struct pgf_value new[3] = {pgf_value_text("1", 1), pgf_value_text("10", 2), pgf_value_text("b", 1)};
    struct pgf_txn txn = {.xid = 5};
    struct pgf_event ev = {.op = PGF_OP_UPDATE, .txn = &txn, .rel = &rel, .key = new, .before = old, .after = new};
    assert_ptr_equal(pgf_event_key_value(&ev, 1), &new[1]);
    assert_int_equal(pgf_event_key_changed(&ev), 0);
    new[1] = pgf_value_text("11", 2);
    assert_int_equal(pgf_event_key_changed(&ev), 1);
    new[1] = (struct pgf_value){.kind = PGF_VALUE_UNCHANGED_TOAST};
    assert_int_equal(pgf_event_key_changed(&ev), 0);
    assert_ptr_equal(pgf_event_key_value(&ev, 1), &old[1]);
    struct pgf_event del = {.op = PGF_OP_DELETE, .txn = &txn, .rel = &rel, .key = old, .before = old};
    assert_ptr_equal(pgf_event_key_value(&del, 1), &old[1]);
    /* An old image without the key column (an old key of other columns): no change seen. */
    struct pgf_value oldkey[3] = {{.kind = PGF_VALUE_ABSENT}, {.kind = PGF_VALUE_ABSENT}, pgf_value_text("a", 1)};
    new[1] = pgf_value_text("12", 2);
    ev.before = oldkey;
    assert_int_equal(pgf_event_key_changed(&ev), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_takes_primary_key), cmocka_unit_test(test_configured_columns),
        cmocka_unit_test(test_index_identity),         cmocka_unit_test(test_no_key_and_fallbacks),
        cmocka_unit_test(test_check_syntax),           cmocka_unit_test(test_event_key_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
