/* utf8.h - UTF-8 validation and repair for strings handed to strict consumers. Pure, no I/O. */
#ifndef PGFANOUT_UTF8_H
#define PGFANOUT_UTF8_H

#include <stddef.h>

/* Returns 1 when the n bytes at s are well-formed UTF-8 (no overlong forms, surrogates or
 * code points past U+10FFFF; NUL is allowed), else 0. */
int pgf_utf8_valid(const char *s, size_t n);

/* Returns the length of s (n bytes) once pgf_utf8_repair has replaced each malformed byte. */
size_t pgf_utf8_repaired_len(const char *s, size_t n);

/* Writes s (n bytes) to out with every byte that does not start a well-formed sequence
 * replaced by U+FFFD; out holds pgf_utf8_repaired_len(s, n) bytes.  Returns that length. */
size_t pgf_utf8_repair(const char *s, size_t n, char *out);

#endif
