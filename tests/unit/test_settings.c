/* test_settings.c - the settings table against what is generated from it or written beside it:
 * the table is well formed, --help names every setting with its default, and
 * pgfanout.example.yaml (argv[1]) has every setting, no key the table lacks, and shows each
 * default as the table has it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <getopt.h>

#include "cdc/cli.h"
#include "cdc/config.h"
#include "cdc/layers.h"
#include "cdc/print_config.h"
#include "cdc/settings.h"

static const char *example_path;

/* Returns text printed by print(out) into a malloc'd string.  (Not inlined: GCC 12 then takes
 * the result for a pointer to the local that open_memstream filled.) */
static __attribute__((noinline)) char *capture(void (*print)(FILE *out, void *ctx), void *ctx)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    print(f, ctx);
    fclose(f);
    return buf;
}

/* Keys, flags, short flags and variables are unique; keys have at most one '.'; every
 * default parses; choices and overridden settings exist. */
static void test_table_is_well_formed(void **state)
{
    (void)state;
    static struct pgf_options opts;
    for (size_t i = 0; i < pgf_nsettings; i++) {
        const struct pgf_setting *s = &pgf_settings[i];
        const char *dot = strchr(s->key, '.');
        if (dot && strchr(dot + 1, '.'))
            fail_msg("%s: one level of sections only", s->key);
        if (s->help == NULL || s->help[0] == '\0')
            fail_msg("%s: no help line", s->key);
        char why[256], env_i[96], env_j[96];
        if (s->def && pgf_setting_parse(s, s->def, &opts, why, sizeof why) != 0)
            fail_msg("%s: default '%s' does not parse: %s", s->key, s->def, why);
        if ((s->type == PGF_T_CHOICE) != (s->choices != NULL))
            fail_msg("%s: choices are for PGF_T_CHOICE", s->key);
        for (int k = 0; k < 2 && s->type == PGF_T_HOSTPORT; k++)
            if (pgf_setting_find(s->sets[k]) < 0)
                fail_msg("%s overrides %s, which is not in the table", s->key, s->sets[k]);
        for (size_t j = 0; j < i; j++) {
            const struct pgf_setting *t = &pgf_settings[j];
            if (strcmp(s->key, t->key) == 0 || (s->flag && t->flag && strcmp(s->flag, t->flag) == 0) ||
                (s->short_flag && s->short_flag == t->short_flag))
                fail_msg("%s and %s share a key or flag", s->key, t->key);
            if (!(s->flags & PGF_S_NOENV) && !(t->flags & PGF_S_NOENV) &&
                strcmp(pgf_setting_env(s, env_i, sizeof env_i), pgf_setting_env(t, env_j, sizeof env_j)) == 0)
                fail_msg("%s and %s share the variable %s", s->key, t->key, env_i);
        }
    }
}

/* pgf_cli_usage as capture's callback. */
static void print_usage(FILE *out, void *ctx)
{
    (void)ctx;
    pgf_cli_usage(out);
}

/* Where setting s is named in --help ("--slot NAME", "PGFANOUT_REDIS_DB=", "redis.rules ("),
 * or NULL. */
static const char *help_entry(const char *help, const struct pgf_setting *s)
{
    char want[160], env[96];
    if (s->flag && s->short_flag)
        snprintf(want, sizeof want, "\n  -%c, --%s%s", s->short_flag, s->flag, s->arg ? " " : "");
    else if (s->flag)
        snprintf(want, sizeof want, "\n      --%s%s", s->flag, s->arg ? " " : "");
    else if (!(s->flags & PGF_S_NOENV))
        snprintf(want, sizeof want, "\n      %s=", pgf_setting_env(s, env, sizeof env));
    else
        snprintf(want, sizeof want, "\n      %s (", s->key);
    size_t wlen = strlen(want);
    for (const char *at = strstr(help, want); at; at = strstr(at + 1, want)) {
        /* "--slot" must not match "--slot-x": a value, a blank or the end of the line follows. */
        char next = at[wlen];
        if (s->arg || !s->flag || next == ' ' || next == '\n')
            return help + (at - help) + 1;
    }
    return NULL;
}

/* Returns the end of the --help entry starting at at: its first line and the lines indented
 * to the help column after it. */
static const char *entry_end(const char *at)
{
    const char *eol = strchr(at, '\n');
    while (eol && strncmp(eol + 1, "                           ", 27) == 0)
        eol = strchr(eol + 1, '\n');
    return eol ? eol : at + strlen(at);
}

/* Every setting is in --help, by its flag, else its variable, else its key; each default
 * shown is the table's, in that setting's own entry. */
static void test_help_names_every_setting(void **state)
{
    (void)state;
    char *help = capture(print_usage, NULL);
    for (size_t i = 0; i < pgf_nsettings; i++) {
        const struct pgf_setting *s = &pgf_settings[i];
        const char *at = help_entry(help, s);
        if (at == NULL)
            fail_msg("--help does not name %s:\n%s", s->key, help);
        const char *end = entry_end(at);
        char want[300];
        snprintf(want, sizeof want, "(default: %s)", s->def ? s->def : "");
        const char *found = strstr(at, want);
        int shown = found && found < end;
        if (s->def && s->def[0] && s->type != PGF_T_BOOL && !shown)
            fail_msg("--help's entry for %s lacks %s:\n%.*s", s->key, want, (int)(end - at), at);
        const char *any = strstr(at, "(default: ");
        if (!(s->def && s->def[0]) && any && any < end)
            fail_msg("--help shows a default for %s, which has none", s->key);
    }
    free(help);
}

/* True when the example mentions section.key commented out ("  # username: cdc"). */
static int commented_in_example(const char *text, const char *key)
{
    const char *dot = strchr(key, '.');
    if (dot == NULL)
        return 0;
    char section[64], line[160];
    snprintf(section, sizeof section, "\n%.*s:", (int)(dot - key), key);
    snprintf(line, sizeof line, "\n  # %s:", dot + 1);
    const char *start = strstr(text, section);
    if (start == NULL)
        return 0;
    for (const char *p = strstr(start + 1, "\n"); p; p = strchr(p + 1, '\n')) {
        if (p[1] >= 'a' && p[1] <= 'z') /* the next section */
            return 0;
        if (strncmp(p, line, strlen(line)) == 0)
            return 1;
    }
    return 0;
}

/* Reads a whole file into a malloc'd string. */
static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        fail_msg("cannot read %s", path);
    char *buf = calloc(1, 1 << 16);
    assert_non_null(buf);
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    fclose(f);
    assert_true(n > 0 && n < (1 << 16) - 1);
    return buf;
}

/* The example loads (so it has no key the table lacks), and names every setting of the file,
 * set or commented out; each commented-out key of a section is in the table too. */
static void test_example_has_every_setting(void **state)
{
    (void)state;
    struct pgf_config *cfg = NULL;
    char err[1024];
    if (pgf_config_load(example_path, &cfg, err, sizeof err) != 0)
        fail_msg("%s", err);
    char *text = read_file(example_path);
    for (size_t i = 0; i < pgf_nsettings; i++) {
        const struct pgf_setting *s = &pgf_settings[i];
        if (s->flags & PGF_S_NOFILE)
            continue;
        if (pgf_config_line_of(example_path, s->key) == 0 && !commented_in_example(text, s->key))
            fail_msg("%s is not in %s", s->key, example_path);
    }
    for (const char *p = strstr(text, "\n  # "); p; p = strstr(p + 1, "\n  # ")) {
        size_t n = strspn(p + 5, "abcdefghijklmnopqrstuvwxyz_");
        if (n == 0 || p[5 + n] != ':')
            continue;
        const char *sec = p; /* the section this comment sits in */
        while (sec > text && !(sec[-1] == '\n' && sec[0] >= 'a' && sec[0] <= 'z'))
            sec--;
        char key[128];
        snprintf(key, sizeof key, "%.*s.%.*s", (int)strcspn(sec, ":"), sec, (int)n, p + 5);
        if (pgf_setting_find(key) < 0)
            fail_msg("%s has %s (commented out), which the settings table lacks", example_path, key);
    }
    free(text);
    pgf_config_free(cfg);
}

/* Runs pgf_options_parse over argv with no PGFANOUT_* variables; returns the effective
 * settings' --check-config text, its comments dropped. */
static char *effective_values(int argc, char **argv)
{
    static struct pgf_options opts;
    struct pgf_config *cfg = NULL;
    optind = 0; /* glibc: scan a new argument vector from the start */
    if (pgf_options_parse(argc, argv, &opts, &cfg) != 0)
        fail_msg("pgfanout %s refused these settings (its message is above)", argc > 1 ? argv[argc - 1] : "");
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    pgf_options_print(f, &opts, 0);
    fclose(f);
    pgf_config_free(cfg);
    /* Keep each line up to its comment: "  slot: "pgfanout"  # default" -> "  slot: "pgfanout"". */
    char *w = buf;
    for (char *r = buf; *r;) {
        char *eol = strchr(r, '\n'), *hash = strstr(r, "  # ");
        size_t keep = hash && hash < eol ? (size_t)(hash - r) : (size_t)(eol - r);
        if (r[0] != '#') {
            memmove(w, r, keep);
            w += keep;
            *w++ = '\n';
        }
        r = eol + 1;
    }
    *w = '\0';
    return buf;
}

/* The example's values are the table's defaults: the effective settings print the same with
 * the example as with no file at all. */
static void test_example_shows_the_defaults(void **state)
{
    (void)state;
    extern char **environ;
    for (char **e = environ; *e;)
        if (strncmp(*e, "PGFANOUT_", 9) == 0) {
            char name[256];
            snprintf(name, sizeof name, "%.*s", (int)strcspn(*e, "="), *e);
            unsetenv(name);
        } else {
            e++;
        }
    char name[] = "pgfanout", flag[] = "--config", path[4096];
    snprintf(path, sizeof path, "%s", example_path);
    char *argv0[] = {name, NULL};
    char *argv1[] = {name, flag, path, NULL};
    char *defaults = effective_values(1, argv0), *example = effective_values(3, argv1);
    if (strcmp(defaults, example) != 0) {
        const char *d = defaults, *x = example;
        while (*d && *d == *x)
            d++, x++;
        while (d > defaults && d[-1] != '\n')
            d--, x--;
        fail_msg("%s does not show the default: it gives\n%.*s\nwhere the table gives\n%.*s", example_path,
                 (int)strcspn(x, "\n"), x, (int)strcspn(d, "\n"), d);
    }
    free(defaults);
    free(example);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s pgfanout.example.yaml\n", argv[0]);
        return 2;
    }
    example_path = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_is_well_formed),
        cmocka_unit_test(test_help_names_every_setting),
        cmocka_unit_test(test_example_has_every_setting),
        cmocka_unit_test(test_example_shows_the_defaults),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
