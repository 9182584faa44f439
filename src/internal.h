/*
 * internal.h - what the library's modules share and nothing else sees.
 *
 * Shared internals carry a double underscore (jm__); a file-local helper is
 * static.  The public faces live in include/jmirror/.
 */
#ifndef JMIRROR_INTERNAL_H
#define JMIRROR_INTERNAL_H

#include <stdarg.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "jmirror/error.h"
#include "jmirror/reader.h"

#if defined(__GNUC__)
#define JM__PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define JM__PRINTF(a, b)
#endif

#define JM__ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* error.c ----------------------------------------------------------- */
int jm__errf(jm_error *err, int code, const char *fmt, ...) JM__PRINTF(3, 4);
/* "<what>: <strerror(errnum)>", code -errnum. */
int jm__errno_f(jm_error *err, int errnum, const char *fmt, ...)
    JM__PRINTF(3, 4);

/* sys.c: the fault seam ---------------------------------------------- */
/*
 * Every system call that decides durability goes through this table so that
 * tests can make it fail (ENOSPC, EIO, short writes) without mocking the
 * file system.  Production code never changes it.
 */
typedef struct jm__sys_table {
  int (*open)(const char *path, int flags, mode_t mode);
  ssize_t (*write)(int fd, const void *buf, size_t n);
  ssize_t (*pwrite)(int fd, const void *buf, size_t n, off_t off);
  int (*fsync)(int fd);     /* full barrier: F_FULLFSYNC on macOS */
  int (*ftruncate)(int fd, off_t len);
  int (*rename)(const char *from, const char *to);
  /* the batch syncer's clock: tests step the wall clock through it */
  int (*clock_gettime)(clockid_t id, struct timespec *ts);
} jm__sys_table;

extern jm__sys_table jm__sys;
void jm__sys_reset(void); /* back to the real calls (tests) */

/* fsutil.c ------------------------------------------------------------ */
/* Write all of buf: retries EINTR and short writes; a 0-byte write is
 * ENOSPC.  Returns 0 or -errno; *written says how much reached the file. */
int jm__write_full(int fd, const void *buf, size_t n, size_t *written);
int jm__pwrite_full(int fd, const void *buf, size_t n, off_t off);
ssize_t jm__pread_full(int fd, void *buf, size_t n, off_t off);
int jm__fsync_dir(const char *dir);
/* Offset just past the last LF in fd's first `size` bytes (0 if none). */
uint64_t jm__last_lf(int fd, uint64_t size);
/* mkdir -p with mode 0700 for every component created, each new entry
 * synced in its parent; on failure what it created is removed. 0 or -errno. */
int jm__mkdirs(const char *path);
/* open() through the seam, O_CLOEXEC added, EINTR retried. fd or -errno. */
int jm__open(const char *path, int flags, mode_t mode);
void jm__close(int fd);
/* Join a and b with one '/'.  Returns a malloc'd string or NULL. */
char *jm__path_join(const char *a, const char *b);
char *jm__strdup(const char *s);
char *jm__strndup(const char *s, size_t n);
char *jm__asprintf(const char *fmt, ...) JM__PRINTF(1, 2);
/* Write a whole file atomically: temp, fsync, rename, fsync dir. */
int jm__write_file_atomic(const char *path, const void *buf, size_t n,
                          mode_t mode, jm_error *err);

/* utf8.c -------------------------------------------------------------- */
/* 1 if s[0..n) is strict UTF-8 (RFC 3629: no overlongs, no surrogates). */
int jm__utf8_valid(const char *s, size_t n, size_t *bad_at);

/* id.c ------------------------------------------------------------------ */
/* Write a fresh time-ordered random id (26 chars + NUL). */
int jm__id_generate(char out[27]);

/* event.c -------------------------------------------------------------- */
struct json_t;
/* Stage 1 of jm_event_parse: length, UTF-8, JSON, depth, object, dups.
 * Returns a new reference or NULL with *bad (or *oom) set. */
struct json_t *jm__event_load(const char *line, size_t len, size_t max_line,
                              jm_bad *bad, int *oom);
/* Stage 2: the member rules.  On JM_EVENT_OK ev borrows root (ev->root =
 * root, no new reference); on JM_EVENT_BAD root is untouched. */
int jm__event_validate(struct json_t *root, const char *conv_id, jm_event *ev,
                       jm_bad *bad);

/* reader.c: a line starting at or beyond `offset` is not handed out (the
 * reader answers NEED_MORE there).  Used to split a file between workers. */
void jm__reader_stop_at(jm_reader *r, uint64_t offset);

/* Growable byte buffer ---------------------------------------------------- */
typedef struct jm__buf {
  char *p;    /* owned; NUL-terminated when len > 0 or after buf_cstr */
  size_t len; /* bytes in use */
  size_t cap; /* bytes allocated */
} jm__buf;

int jm__buf_reserve(jm__buf *b, size_t extra);
int jm__buf_append(jm__buf *b, const void *p, size_t n);
int jm__buf_printf(jm__buf *b, const char *fmt, ...) JM__PRINTF(2, 3);
void jm__buf_release(jm__buf *b);

#endif
