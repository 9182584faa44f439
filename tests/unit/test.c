/*
 * test.c - the runner behind test.h.
 *
 * Each case runs in a forked child with alarm() as its timeout, so a crash,
 * a hang or a leaked fd in one case cannot spoil another, and the output is
 * TAP ("ok 3 - test_name") for meson's per-case counting.
 */
#define _XOPEN_SOURCE 700
#include "test.h"

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmp_path[4096];

static int rm_one(const char *p, const struct stat *st, int type,
                  struct FTW *f) {
  (void)st;
  (void)type;
  (void)f;
  chmod(p, 0700); /* tests make read-only dirs on purpose */
  remove(p);
  return 0;
}

void test_rmtree(const char *path) {
  nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS);
}

const char *test_tmpdir(void) {
  if (tmp_path[0])
    return tmp_path;
  const char *base = getenv("TMPDIR");
  snprintf(tmp_path, sizeof tmp_path, "%s/jmtest.XXXXXX",
           base && base[0] ? base : "/tmp");
  if (mkdtemp(tmp_path) == NULL) {
    perror("mkdtemp");
    exit(2);
  }
  return tmp_path;
}

char *test_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  size_t r;
  while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
    n += r;
    if (cap - n - 1 == 0)
      buf = realloc(buf, cap *= 2);
  }
  fclose(f);
  buf[n] = '\0';
  if (len)
    *len = n;
  return buf;
}

void test_write_file(const char *path, const void *buf, size_t len) {
  FILE *f = fopen(path, "wb");
  if (f == NULL || fwrite(buf, 1, len, f) != len) {
    perror(path);
    exit(2);
  }
  fclose(f);
}

const char *test_fmt(const char *fmt, ...) {
  static char bufs[8][4096];
  static int next;
  char *b = bufs[next++ % 8];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(b, sizeof bufs[0], fmt, ap);
  va_end(ap);
  return b;
}

void test_fail(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "# %s:%d: ", file, line);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  fflush(stderr);
  if (tmp_path[0] && !getenv("JM_TEST_KEEP"))
    test_rmtree(tmp_path);
  _exit(1);
}

static int run_in_child(const test_case *t) {
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    return 0;
  }
  if (pid == 0) {
    alarm(t->timeout_s ? (unsigned)t->timeout_s : 60);
    t->fn();
    if (tmp_path[0] && !getenv("JM_TEST_KEEP"))
      test_rmtree(tmp_path);
    fflush(NULL);
    exit(0);
  }
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
    ;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
    return 1;
  if (WIFSIGNALED(status))
    fprintf(stderr, "# %s: killed by signal %d%s\n", t->name, WTERMSIG(status),
            WTERMSIG(status) == SIGALRM ? " (timeout)" : "");
  return 0;
}

int test_main(int argc, char **argv, const test_case *cases) {
  int n = 0;
  while (cases[n].name)
    n++;
  if (argc > 1) {
    for (int i = 0; i < n; i++)
      if (strcmp(cases[i].name, argv[1]) == 0) {
        cases[i].fn();
        if (tmp_path[0] && !getenv("JM_TEST_KEEP"))
          test_rmtree(tmp_path);
        printf("ok - %s\n", cases[i].name);
        return 0;
      }
    fprintf(stderr, "no test named %s\n", argv[1]);
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("1..%d\n", n);
  int failed = 0;
  for (int i = 0; i < n; i++) {
    int ok = run_in_child(&cases[i]);
    printf("%s %d - %s\n", ok ? "ok" : "not ok", i + 1, cases[i].name);
    failed += !ok;
  }
  return failed ? 1 : 0;
}
