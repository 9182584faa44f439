/*
 * test.h - the unit-test harness: a list of cases per file, each run in its
 * own process with a timeout, results as TAP so meson counts every case.
 *
 *   static void test_foo(void) { ASSERT_EQ(1, 1); }
 *   static const test_case cases[] = { TEST_CASE(test_foo), {0} };
 *   int main(int argc, char **argv) { return test_main(argc, argv, cases); }
 *
 * `./t` runs all cases (forked); `./t test_foo` runs one in-process (for gdb).
 * Asserts print both sides and the location, then exit the case's process.
 */
#ifndef JM_TEST_H
#define JM_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct test_case {
  const char *name;
  void (*fn)(void);
  int timeout_s; /* 0 = default (60 s) */
} test_case;

#define TEST_CASE(fn) {#fn, fn, 0}
#define TEST_CASE_T(fn, secs) {#fn, fn, secs}

int test_main(int argc, char **argv, const test_case *cases);

/* A fresh private temp directory, removed when the case ends. */
const char *test_tmpdir(void);
/* rm -rf */
void test_rmtree(const char *path);
/* Read a whole file (malloc'd, NUL-terminated); NULL if missing. */
char *test_read_file(const char *path, size_t *len);
/* Write a whole file (creating dirs is the caller's job). */
void test_write_file(const char *path, const void *buf, size_t len);
/* printf into a static rotating buffer (for building paths in tests). */
const char *test_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

void test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

#define ASSERT(cond)                                                          \
  do {                                                                        \
    if (!(cond))                                                              \
      test_fail(__FILE__, __LINE__, "ASSERT(%s)", #cond);                     \
  } while (0)

#define ASSERT_EQ(a, b)                                                       \
  do {                                                                        \
    long long a_ = (long long)(a), b_ = (long long)(b);                       \
    if (a_ != b_)                                                             \
      test_fail(__FILE__, __LINE__, "ASSERT_EQ(%s, %s): %lld != %lld", #a,    \
                #b, a_, b_);                                                  \
  } while (0)

#define ASSERT_NE(a, b)                                                       \
  do {                                                                        \
    long long a_ = (long long)(a), b_ = (long long)(b);                       \
    if (a_ == b_)                                                             \
      test_fail(__FILE__, __LINE__, "ASSERT_NE(%s, %s): both %lld", #a, #b,   \
                a_);                                                          \
  } while (0)

#define ASSERT_STR_EQ(a, b)                                                   \
  do {                                                                        \
    const char *a_ = (a), *b_ = (b);                                          \
    if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                      \
      test_fail(__FILE__, __LINE__, "ASSERT_STR_EQ(%s, %s): \"%s\" != \"%s\"", \
                #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");              \
  } while (0)

#define ASSERT_STR_CONTAINS(hay, needle)                                      \
  do {                                                                        \
    const char *h_ = (hay), *n_ = (needle);                                   \
    if (h_ == NULL || strstr(h_, n_) == NULL)                                 \
      test_fail(__FILE__, __LINE__, "ASSERT_STR_CONTAINS(%s): \"%s\" lacks "  \
                "\"%s\"", #hay, h_ ? h_ : "(null)", n_);                      \
  } while (0)

#define ASSERT_MEM_EQ(a, alen, b, blen)                                       \
  do {                                                                        \
    size_t al_ = (alen), bl_ = (blen);                                        \
    if (al_ != bl_ || memcmp((a), (b), al_) != 0)                             \
      test_fail(__FILE__, __LINE__,                                           \
                "ASSERT_MEM_EQ(%s, %s): %zu bytes \"%.*s\" != %zu bytes "     \
                "\"%.*s\"", #a, #b, al_, (int)(al_ > 200 ? 200 : al_),        \
                (const char *)(a), bl_, (int)(bl_ > 200 ? 200 : bl_),         \
                (const char *)(b));                                           \
  } while (0)

#define ASSERT_OK(expr)                                                       \
  do {                                                                        \
    long long r_ = (long long)(expr);                                         \
    if (r_ != 0)                                                              \
      test_fail(__FILE__, __LINE__, "ASSERT_OK(%s): returned %lld", #expr,    \
                r_);                                                          \
  } while (0)

#endif
