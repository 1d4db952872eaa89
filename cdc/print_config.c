/* print_config.c - --check-config's printer. */
#include "cdc/print_config.h"

#include <string.h>

#include <libpq-fe.h>

#include "common/lsn.h"
#include "cdc/settings.h"

/* Prints a YAML scalar in double quotes with escapes. */
static void print_quoted(FILE *out, const char *v)
{
    fputc('"', out);
    for (; *v; v++) {
        if (*v == '"' || *v == '\\')
            fputc('\\', out);
        fputc(*v, out);
    }
    fputc('"', out);
}

/* Prints a DSN with its password replaced; libpq parses both key=value and URI forms. */
static void print_dsn(FILE *out, const char *dsn)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(dsn, &err);
    if (opts == NULL) {
        fputs("\"(not a valid connection string)\"", out);
        PQfreemem(err);
        return;
    }
    char buf[2048];
    size_t n = 0;
    buf[0] = '\0';
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (o->val && o->val[0] && n < sizeof buf)
            n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%s=%s", n ? " " : "", o->keyword,
                                  strstr(o->keyword, "password") ? "*****" : o->val); /* also sslpassword */
    PQconninfoFree(opts);
    print_quoted(out, buf);
}

/* True for librdkafka settings that hold secrets. */
static int secret_kafka_key(const char *kv)
{
    const char *eq = strchr(kv, '=');
    size_t len = eq ? (size_t)(eq - kv) : strlen(kv);
    char key[128];
    snprintf(key, sizeof key, "%.*s", (int)len, kv);
    return strstr(key, "password") || strstr(key, "secret") || strstr(key, "sasl.oauthbearer.config") ||
           strstr(key, "ssl.key.pem");
}

/* Prints a string setting: quoted, or null when unset. */
static void print_str(FILE *out, const char *v)
{
    if (v)
        print_quoted(out, v);
    else
        fputs("null", out);
}

/* Prints a value's '# source' comment: default, config file, environment, or flag (naming the
 * flag when it is not the setting's own, as --redis for redis.host). */
static void print_source(FILE *out, const struct pgf_setting *s, const struct pgf_origin *o)
{
    static const char *const names[] = {"default", "config file", "environment", "flag"};
    fprintf(out, "  # %s", names[o->layer]);
    if (o->layer == PGF_FROM_FLAG && (s->flag == NULL || strcmp(o->name + 2, s->flag) != 0))
        fprintf(out, " %s", o->name);
    fputc('\n', out);
}

/* Prints one setting's value and source; field is where it lands in opts. */
static void print_value(FILE *out, const struct pgf_setting *s, const struct pgf_options *opts, const void *field,
                        size_t nrules)
{
    const char *str = NULL;
    if (s->type == PGF_T_DSN || s->type == PGF_T_STR || s->type == PGF_T_CHOICE || s->type == PGF_T_ADDR ||
        s->type == PGF_T_HOSTPORT || s->type == PGF_T_PASSWORD || s->type == PGF_T_PRESET)
        memcpy(&str, field, sizeof str); /* a pointer, for the types that land as one */
    char lsn[PGF_LSN_BUFSZ];
    switch (s->type) {
    case PGF_T_DSN: print_dsn(out, str ? str : ""); break;
    case PGF_T_STR:
    case PGF_T_CHOICE:
    case PGF_T_ADDR:
    case PGF_T_HOSTPORT: print_str(out, str); break;
    case PGF_T_BOOL: fputs(*(const int *)field ? "true" : "false", out); break;
    case PGF_T_SECONDS_OFF:
        fprintf(out, "%g", *(const int *)field / 1000.0);
        break;
    case PGF_T_SECONDS:
        if (*(const int *)field)
            fprintf(out, "%g", *(const int *)field / 1000.0);
        else
            fputs("null", out);
        break;
    case PGF_T_BYTES: fprintf(out, "%zu", *(const size_t *)field); break;
    case PGF_T_LSN:
        if (opts->has_endpos)
            fprintf(out, "\"%s\"", pgf_lsn_format(*(const uint64_t *)field, lsn));
        else
            fputs("null", out);
        break;
    case PGF_T_SINKS: {
        static const char *const names[] = {"stdout", "kafka", "redis", "null"};
        unsigned sinks = *(const unsigned *)field;
        fputc('[', out);
        for (unsigned i = 0, n = 0; i < sizeof names / sizeof *names; i++)
            if (sinks & (1u << i))
                fprintf(out, "%s%s", n++ ? ", " : "", names[i]);
        fputc(']', out);
        break;
    }
    case PGF_T_UINT:
    case PGF_T_PORT: fprintf(out, "%u", *(const unsigned *)field); break;
    case PGF_T_CONF: {
        /* The items, each redacted when its key names a secret, without source comments. */
        const struct pgf_conf_list *list = field;
        fputc('\n', out);
        for (size_t k = 0; k < list->n; k++) {
            const char *eq = strchr(list->item[k], '=');
            fprintf(out, "    - \"%.*s=%s\"\n", (int)(eq - list->item[k]), list->item[k],
                    secret_kafka_key(list->item[k]) ? "*****" : eq + 1);
        }
        return;
    }
    case PGF_T_PASSWORD:
        /* Never the value: only that there is one, and where it comes from. */
        fprintf(out, "%s\n", str ? "\"*****\"  # environment PGFANOUT_REDIS_PASSWORD"
                             : opts->redis.password_file ? "\"*****\"  # password_file" : "null  # none");
        return;
    case PGF_T_PRESET: fputs(str ? "on" : "off", out); break;
    case PGF_T_RULES: fprintf(out, "%zu", nrules); break;
    }
    print_source(out, s, &opts->origin[s - pgf_settings]);
}

/* Prints the effective settings; see print_config.h. */
void pgf_options_print(FILE *out, const struct pgf_options *opts, size_t nrules)
{
    fputs("# pgfanout effective configuration: flags > environment > config file > defaults.\n", out);
    char section[32] = "";
    for (size_t i = 0; i < pgf_nsettings; i++) {
        const struct pgf_setting *s = &pgf_settings[i];
        if (s->flags & PGF_S_CLI)
            continue;
        const char *dot = strchr(s->key, '.');
        char sec[32] = "";
        if (dot)
            snprintf(sec, sizeof sec, "%.*s", (int)(dot - s->key), s->key);
        if (sec[0] && strcmp(sec, section) != 0)
            fprintf(out, "%s:\n", sec);
        snprintf(section, sizeof section, "%s", sec);
        fprintf(out, "%s%s:%s", dot ? "  " : "", dot ? dot + 1 : s->key, s->type == PGF_T_CONF ? "" : " ");
        print_value(out, s, opts, (const char *)opts + s->off, nrules);
    }
}
