/* state.c - the state document as JSON (jansson), and the state file store. */
#include "cdc/state.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/lsn.h"

/* Frees an array of n strings; NULL is fine. */
static void free_strv(char **v, int n)
{
    if (v == NULL)
        return;
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Clears s; see state.h. */
void pgf_state_clear(struct pgf_state *s)
{
    for (size_t i = 0; i < s->ntables; i++) {
        struct pgf_state_table *t = &s->tables[i];
        free(t->schema);
        free(t->table);
        free(t->where);
        free_strv(t->from, t->nkey);
        free_strv(t->to, t->nkey);
        free_strv(t->last_key, t->nkey);
    }
    free(s->tables);
    memset(s, 0, sizeof *s);
}

/* Returns a JSON array of n strings, or JSON null for a NULL array. */
static json_t *strv_json(char *const *v, int n)
{
    if (v == NULL)
        return json_null();
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, v[i] ? json_string(v[i]) : json_null());
    return a;
}

/* Returns the document; see state.h. */
char *pgf_state_to_json(const struct pgf_state *s)
{
    char lsn[PGF_LSN_BUFSZ];
    json_t *doc = json_pack("{s:i, s:s, s:s, s:s, s:b}", "version", 1, "system_id", s->system_id, "slot", s->slot,
                            "confirmed_lsn", pgf_lsn_format(s->confirmed_lsn, lsn), "initial_done", s->initial_done);
    if (doc == NULL)
        return NULL;
    if (s->job[0]) {
        json_t *tables = json_array();
        for (size_t i = 0; i < s->ntables; i++) {
            const struct pgf_state_table *t = &s->tables[i];
            json_t *o = json_pack("{s:s, s:s, s:o, s:o, s:o, s:o, s:b, s:I, s:I}", "schema", t->schema, "table",
                                  t->table, "where", t->where ? json_string(t->where) : json_null(), "from",
                                  strv_json(t->from, t->nkey), "to", strv_json(t->to, t->nkey), "last_key",
                                  strv_json(t->last_key, t->nkey), "done", t->done, "rows", (json_int_t)t->rows,
                                  "chunks", (json_int_t)t->chunks);
            json_array_append_new(tables, o);
        }
        json_object_set_new(doc, "snapshot",
                            json_pack("{s:s, s:o}", "job", s->job, "tables", tables));
    }
    char *out = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return out;
}

/* Reads a JSON array of strings (or null) into *out; returns 0, or -1 when it is neither. */
static int json_strv(json_t *a, char ***out, int *n)
{
    *out = NULL;
    if (a == NULL || json_is_null(a))
        return 0;
    if (!json_is_array(a) || (*n >= 0 && (int)json_array_size(a) != *n))
        return -1;
    *n = (int)json_array_size(a);
    char **v = calloc((size_t)*n + 1, sizeof *v);
    if (v == NULL)
        return -1;
    for (int i = 0; i < *n; i++) {
        json_t *e = json_array_get(a, (size_t)i);
        if (!json_is_string(e) || (v[i] = strdup(json_string_value(e))) == NULL) {
            free_strv(v, i);
            return -1;
        }
    }
    *out = v;
    return 0;
}

/* Parses a document; see state.h. */
int pgf_state_from_json(const char *json, size_t len, struct pgf_state *s, char *err, size_t errlen)
{
    pgf_state_clear(s);
    json_error_t jerr;
    json_t *doc = json_loadb(json, len, 0, &jerr);
    if (doc == NULL) {
        snprintf(err, errlen, "it is not JSON (%s at line %d)", jerr.text, jerr.line);
        return -1;
    }
    const char *sysid = NULL, *slot = NULL, *lsn = NULL;
    json_t *snap = NULL;
    int version = 0;
    if (json_unpack_ex(doc, &jerr, 0, "{s:i, s:s, s:s, s:s, s?b, s?o}", "version", &version, "system_id", &sysid,
                       "slot", &slot, "confirmed_lsn", &lsn, "initial_done", &s->initial_done, "snapshot", &snap) != 0 ||
        version != 1) {
        snprintf(err, errlen, "it is not a pgfanout state document of version 1 (%s)",
                 version > 1 ? "a newer pgfanout wrote it" : jerr.text);
        json_decref(doc);
        return -1;
    }
    snprintf(s->system_id, sizeof s->system_id, "%s", sysid);
    snprintf(s->slot, sizeof s->slot, "%s", slot);
    if (pgf_lsn_parse(lsn, &s->confirmed_lsn) != 0) {
        snprintf(err, errlen, "its confirmed_lsn \"%s\" is not an LSN", lsn);
        json_decref(doc);
        return -1;
    }
    if (snap) {
        const char *job = NULL;
        json_t *tables = NULL;
        if (json_unpack_ex(snap, &jerr, 0, "{s:s, s:o}", "job", &job, "tables", &tables) != 0 ||
            !json_is_array(tables)) {
            snprintf(err, errlen, "its snapshot part is malformed (%s)", jerr.text);
            json_decref(doc);
            return -1;
        }
        snprintf(s->job, sizeof s->job, "%s", job);
        s->ntables = json_array_size(tables);
        s->tables = calloc(s->ntables ? s->ntables : 1, sizeof *s->tables);
        for (size_t i = 0; s->tables && i < s->ntables; i++) {
            struct pgf_state_table *t = &s->tables[i];
            const char *schema, *table;
            json_t *where = NULL, *from = NULL, *to = NULL, *last = NULL;
            json_int_t rows = 0, chunks = 0;
            t->nkey = -1;
            if (json_unpack_ex(json_array_get(tables, i), &jerr, 0, "{s:s, s:s, s?o, s?o, s?o, s?o, s:b, s:I, s:I}",
                               "schema", &schema, "table", &table, "where", &where, "from", &from, "to", &to,
                               "last_key", &last, "done", &t->done, "rows", &rows, "chunks", &chunks) != 0 ||
                (where && !json_is_null(where) && !json_is_string(where)) || json_strv(from, &t->from, &t->nkey) ||
                json_strv(to, &t->to, &t->nkey) || json_strv(last, &t->last_key, &t->nkey)) {
                snprintf(err, errlen, "snapshot table %zu is malformed (%s)", i + 1, jerr.text);
                json_decref(doc);
                pgf_state_clear(s);
                return -1;
            }
            if (t->nkey < 0)
                t->nkey = 0;
            t->schema = strdup(schema);
            t->table = strdup(table);
            t->where = json_is_string(where) ? strdup(json_string_value(where)) : NULL;
            t->rows = (uint64_t)rows;
            t->chunks = (uint64_t)chunks;
        }
        if (s->tables == NULL) {
            snprintf(err, errlen, "out of memory");
            json_decref(doc);
            pgf_state_clear(s);
            return -1;
        }
    }
    json_decref(doc);
    return 0;
}

/* The state file store. */
struct file_store {
    struct pgf_state_store base;
    struct event_base *loop;
    char path[1024], tmp[1024], dir[1024];
    struct event *ev_done; /* reports a finished save from the loop, never inside save() */
    pgf_state_saved_cb done;
    void *arg;
    char err[2048];
};

/* Reads the file; see pgf_state_store_ops.load. */
static int file_load(struct pgf_state_store *st, char **json, size_t *len, char *err, size_t errlen)
{
    struct file_store *f = (struct file_store *)st;
    FILE *fp = fopen(f->path, "rb");
    if (fp == NULL) {
        if (errno == ENOENT)
            return 1;
        snprintf(err, errlen, "cannot open %s: %s", f->path, strerror(errno));
        return -1;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, fp)) > 0) {
        n += got;
        if (n == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (nb == NULL)
                free(buf);
            buf = nb;
        }
    }
    int bad = buf == NULL || ferror(fp);
    fclose(fp);
    if (bad) {
        free(buf);
        snprintf(err, errlen, "cannot read %s", f->path);
        return -1;
    }
    *json = buf;
    *len = n;
    return 0;
}

/* Hands a finished save's outcome to its callback. */
static void on_file_saved(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct file_store *f = arg;
    pgf_state_saved_cb done = f->done;
    f->done = NULL;
    if (done)
        done(f->arg, f->err[0] ? f->err : NULL);
}

/* Writes the file atomically: a reader (or a crash) sees the old document or the new one. */
static int file_write(struct file_store *f, const char *json, size_t len)
{
    int fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return snprintf(f->err, sizeof f->err, "cannot write %s: %s", f->tmp, strerror(errno)), -1;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, json + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            snprintf(f->err, sizeof f->err, "cannot write %s: %s", f->tmp, strerror(errno));
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0)
        return snprintf(f->err, sizeof f->err, "cannot sync %s: %s", f->tmp, strerror(errno)), -1;
    if (rename(f->tmp, f->path) != 0)
        return snprintf(f->err, sizeof f->err, "cannot rename %s: %s", f->tmp, strerror(errno)), -1;
    /* The rename itself is durable only once the directory is. */
    int dfd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

/* Saves; see pgf_state_store_ops.save.  A small file's write and fsync are the one wait this
 * store puts on the loop, once per acknowledged chunk. */
static int file_save(struct pgf_state_store *st, const char *json, size_t len, pgf_state_saved_cb done, void *arg,
                     char *err, size_t errlen)
{
    struct file_store *f = (struct file_store *)st;
    if (f->done) {
        snprintf(err, errlen, "a save of %s is still under way", f->path);
        return -1;
    }
    f->err[0] = '\0';
    file_write(f, json, len);
    f->done = done;
    f->arg = arg;
    event_active(f->ev_done, EV_TIMEOUT, 0);
    return 0;
}

/* Nothing stays pending once save() returned. */
static int file_flush(struct pgf_state_store *st, int timeout_ms)
{
    (void)timeout_ms;
    struct file_store *f = (struct file_store *)st;
    if (f->done)
        on_file_saved(-1, 0, f);
    return 0;
}

/* Frees the store. */
static void file_close(struct pgf_state_store *st)
{
    struct file_store *f = (struct file_store *)st;
    if (f->ev_done)
        event_free(f->ev_done);
    free(f);
}

static const struct pgf_state_store_ops file_ops = {"file", file_load, file_save, file_flush, file_close};

/* Opens the file store; see state.h. */
struct pgf_state_store *pgf_state_file_open(struct event_base *base, const char *dir, const char *slot, char *err,
                                            size_t errlen)
{
    struct stat sb;
    int e = stat(dir, &sb) != 0 ? errno : 0;
    if (e != 0 || !S_ISDIR(sb.st_mode)) {
        snprintf(err, errlen, "state_dir %s is not a directory%s%s. Create it, or point state_dir (--state-dir) at "
                 "a directory on a volume that outlives the container", dir, e ? ": " : "", e ? strerror(e) : "");
        return NULL;
    }
    if (access(dir, W_OK | X_OK) != 0) {
        snprintf(err, errlen, "state_dir %s is not writable by pgfanout: %s. Fix its owner or mode", dir,
                 strerror(errno));
        return NULL;
    }
    struct file_store *f = calloc(1, sizeof *f);
    if (f == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    f->base.ops = &file_ops;
    f->loop = base;
    if (strlen(dir) + strlen(slot) + 16 > sizeof f->path) {
        free(f);
        snprintf(err, errlen, "state_dir %.200s is too long a path", dir);
        return NULL;
    }
    snprintf(f->dir, sizeof f->dir, "%s", dir);
    snprintf(f->path, sizeof f->path, "%.900s/%.100s.json", dir, slot);
    snprintf(f->tmp, sizeof f->tmp, "%.900s/.%.100s.json.tmp", dir, slot);
    snprintf(f->base.where, sizeof f->base.where, "state file %.480s", f->path);
    if ((f->ev_done = event_new(base, -1, 0, on_file_saved, f)) == NULL) {
        free(f);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    return &f->base;
}
