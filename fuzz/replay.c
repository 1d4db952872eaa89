/* replay.c - a main for the fuzz targets without libFuzzer: runs LLVMFuzzerTestOneInput once
 * on each file named, so a gcc or sanitizer build's ctest replays fuzz/regressions on every
 * run, with no clang needed.
 *
 * Usage: replay_TARGET FILE...   Exits 0; a finding aborts through the sanitizers. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads each file whole and hands it to the target; returns 0, or 1 if a file is unreadable. */
int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (f == NULL) {
            fprintf(stderr, "replay: cannot open %s\n", argv[i]);
            return 1;
        }
        uint8_t *buf = NULL;
        size_t len = 0, cap = 0, n;
        do {
            if (len == cap) {
                uint8_t *p = realloc(buf, cap = cap ? 2 * cap : 4096);
                if (p == NULL) {
                    free(buf);
                    fclose(f);
                    return 1;
                }
                buf = p;
            }
            n = fread(buf + len, 1, cap - len, f);
            len += n;
        } while (n > 0);
        fclose(f);
        /* An exact-size copy, so that ASan catches a read past the input's end. */
        uint8_t *exact = malloc(len ? len : 1);
        if (exact == NULL) {
            free(buf);
            return 1;
        }
        for (size_t k = 0; k < len; k++)
            exact[k] = buf[k];
        free(buf);
        LLVMFuzzerTestOneInput(exact, len);
        free(exact);
        printf("replayed %s (%zu bytes)\n", argv[i], len);
    }
    return 0;
}
