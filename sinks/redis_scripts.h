/* redis_scripts.h - the Lua scripts pgfanout itself runs on Redis (contrib/redis/ Lua files,
 * embedded at build time), with their SHA1 digests.  The connection loads every script in its
 * handshake (SCRIPT LOAD), and commands call them with EVALSHA; a server that lost them (a
 * restart, SCRIPT FLUSH) answers NOSCRIPT, which the connection treats as transient: it
 * reconnects, loads them again, and everything unacknowledged is sent again. */
#ifndef PGFANOUT_REDIS_SCRIPTS_H
#define PGFANOUT_REDIS_SCRIPTS_H

#include <stddef.h>

enum redis_script {
    REDIS_SCRIPT_RAISE = 0,    /* contrib/redis/raise.lua */
    REDIS_SCRIPT_CACHEOPS,     /* contrib/redis/cacheops_invalidate.lua */
    REDIS_SCRIPT_COUNT
};

/* Returns the script's source text. */
const char *redis_script_text(enum redis_script s);

/* Returns the script's SHA1 as 40 lowercase hex digits, what EVALSHA names it by. */
const char *redis_script_sha(enum redis_script s);

#endif
