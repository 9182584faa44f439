/*
 * replay_main.c - run a fuzz target over files, without libFuzzer.
 *
 *   fuzz_reader_replay FILE_OR_DIR...
 *
 * Every input in fixtures/fuzz/<target>/ (seeds, and every crash a fuzzer
 * ever found) runs through the target in every build, sanitizers included,
 * as a TAP test: a regression cannot come back unnoticed.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int n;

static void one(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return;
  size_t cap = 1 << 16, len = 0, r;
  uint8_t *buf = malloc(cap);
  while (buf && (r = fread(buf + len, 1, cap - len, f)) > 0)
    if ((len += r) == cap)
      buf = realloc(buf, cap *= 2);
  fclose(f);
  if (buf == NULL)
    return;
  LLVMFuzzerTestOneInput(buf, len);
  free(buf);
  printf("ok %d - %s\n", ++n, path);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) != 0)
      continue;
    if (!S_ISDIR(st.st_mode)) {
      one(argv[i]);
      continue;
    }
    DIR *d = opendir(argv[i]);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
      if (e->d_name[0] == '.')
        continue;
      char p[4096];
      snprintf(p, sizeof p, "%s/%s", argv[i], e->d_name);
      one(p);
    }
    if (d)
      closedir(d);
  }
  printf("1..%d\n", n);
  return 0;
}
