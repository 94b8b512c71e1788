/*
 * replay_main.c - runs a fuzz target over a saved corpus as a plain test.
 *
 * Every input that once mattered to a fuzzer (a crash, a new path) is kept in
 * tests/fuzz/corpus/<target>/ and replayed by every build, sanitized or not,
 * so a regression shows up in ctest without libFuzzer. Arguments are files or
 * directories; the test fails if a directory holds no inputs at all, so a
 * lost corpus cannot pass silently.
 */
#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REPLAY_INPUT_MAX (16u << 20)

static int
replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    uint8_t *data = malloc(REPLAY_INPUT_MAX);
    if (data == NULL) {
        fclose(f);
        return -1;
    }
    size_t n = fread(data, 1, REPLAY_INPUT_MAX, f);
    fclose(f);
    /* Copy into an exact-size allocation so ASan sees over-reads. */
    uint8_t *exact = malloc(n == 0 ? 1 : n);
    if (exact == NULL) {
        free(data);
        return -1;
    }
    memcpy(exact, data, n);
    free(data);
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    return 0;
}

int
main(int argc, char **argv)
{
    long replayed = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            perror(argv[i]);
            return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
            if (replay_file(argv[i]) != 0) {
                return 1;
            }
            replayed++;
            continue;
        }
        DIR *d = opendir(argv[i]);
        if (d == NULL) {
            perror(argv[i]);
            return 1;
        }
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.') {
                continue;
            }
            char path[4096];
            snprintf(path, sizeof(path), "%s/%s", argv[i], e->d_name);
            if (replay_file(path) != 0) {
                closedir(d);
                return 1;
            }
            replayed++;
        }
        closedir(d);
    }
    printf("replayed %ld inputs\n", replayed);
    return replayed > 0 ? 0 : 1;
}
