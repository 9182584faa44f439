/*
 * mtest.h - helpers for the mirror tests (test_fold.c, test_ingest.c,
 * test_migrate.c): journal files written byte for byte, mirrors opened and
 * locked, and the rows read back through a separate SQLite connection, as
 * any reader of the mirror would see them.
 *
 * Every helper asserts success (test_fail on an error), so a case reads as
 * the steps it takes.
 */
#ifndef JM_MTEST_H
#define JM_MTEST_H

#include <stddef.h>
#include <stdint.h>

#include "jmirror/jmirror.h"

/* A growable byte buffer for building journal files. */
typedef struct mt_buf {
  char *p;
  size_t len, cap;
} mt_buf;

void mt_put(mt_buf *b, const void *p, size_t n);
void mt_puts(mt_buf *b, const char *s);
void mt_printf(mt_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Append s with every ' turned into " (JSON in C without the escaping),
 * then a LF. */
void mt_line(mt_buf *b, const char *s);
void mt_buf_free(mt_buf *b);

/* "<tmpdir>/<name>" with <name>/journal created (0700); static storage
 * that lives for the case. */
const char *mt_root(const char *name);
/* "<root>/journal/<id>.jsonl" (rotating static buffer). */
const char *mt_jpath(const char *root, const char *id);
/* Replace the file's contents / append to it (one write each). */
void mt_write(const char *root, const char *id, const void *p, size_t n);
void mt_append(const char *root, const char *id, const void *p, size_t n);

/* Open (creating) and lock the mirror of root.  db_path NULL = default;
 * max_line 0 = default. */
jm_mirror *mt_open(const char *root, const char *db_path, size_t max_line);
/* Ingest id until no limit stops it; returns the number of calls. */
int mt_ingest(jm_mirror *m, const char *id, const jm_ingest_limits *lim);
void mt_replay(jm_mirror *m, const char *id, int threads);
void mt_rebuild(jm_mirror *m, int threads);
/* Verify everything; asserts every conversation is ok; returns checked. */
uint64_t mt_verify_ok(jm_mirror *m);

/*
 * Run a query (fmt as sqlite3_mprintf: %Q quotes a string) on a fresh
 * read-only connection to db and render the result:
 * columns joined by '|', rows by '\n'; NULL as "NULL", text raw (control
 * and non-ASCII bytes as \xNN).  Returns a pointer valid until the next
 * 8 calls.
 */
const char *mt_q(const char *db, const char *fmt, ...);
/* The same for a single integer result. */
long long mt_qi(const char *db, const char *fmt, ...);

/* The raw bytes of the first column of the first row (malloc'd, NUL added;
 * NULL for SQL NULL or no row); *len may be NULL. */
char *mt_qraw(const char *db, size_t *len, const char *fmt, ...);

/*
 * Every row of conversations, messages, bad_lines, and sources (offset and
 * line count only: the rest describes the file, not its lines), ordered,
 * each value rendered exactly (type and bytes).  malloc'd.
 */
char *mt_dump(const char *db);
/* Assert two dumps are equal; on failure show the first differing line. */
#define MT_SAME(a, b, wa, wb) mt_same_dump_at(__FILE__, __LINE__, a, b, wa, wb)
void mt_same_dump_at(const char *file, int line, const char *a, const char *b,
                     const char *what_a, const char *what_b);

/* A small deterministic PRNG (splitmix64). */
typedef struct mt_rng {
  uint64_t s;
} mt_rng;
uint64_t mt_next(mt_rng *r);
/* Uniform in [0, n). */
uint64_t mt_below(mt_rng *r, uint64_t n);

#endif
