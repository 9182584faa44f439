/*
 * mtest.c - helpers for the mirror tests (see mtest.h).
 */
#include "mtest.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

/* Buffers ------------------------------------------------------------------ */

void mt_put(mt_buf *b, const void *p, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (b->len + n + 1 > cap)
      cap *= 2;
    b->p = realloc(b->p, cap);
    if (b->p == NULL)
      test_fail(__FILE__, __LINE__, "out of memory");
    b->cap = cap;
  }
  if (n)
    memcpy(b->p + b->len, p, n);
  b->len += n;
  b->p[b->len] = '\0';
}

void mt_puts(mt_buf *b, const char *s) { mt_put(b, s, strlen(s)); }

void mt_printf(mt_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *tmp = malloc((size_t)n + 1);
  va_start(ap, fmt);
  vsnprintf(tmp, (size_t)n + 1, fmt, ap);
  va_end(ap);
  mt_put(b, tmp, (size_t)n);
  free(tmp);
}

void mt_line(mt_buf *b, const char *s) {
  size_t at = b->len;
  mt_puts(b, s);
  for (size_t i = at; i < b->len; i++)
    if (b->p[i] == '\'')
      b->p[i] = '"';
  mt_put(b, "\n", 1);
}

void mt_buf_free(mt_buf *b) {
  free(b->p);
  memset(b, 0, sizeof *b);
}

/* Files -------------------------------------------------------------------- */

const char *mt_root(const char *name) {
  static char bufs[16][1024];
  static int next;
  char *r = bufs[next++ % 16];
  snprintf(r, sizeof bufs[0], "%s/%s", test_tmpdir(), name);
  if (mkdir(r, 0700) != 0 && errno != EEXIST)
    test_fail(__FILE__, __LINE__, "mkdir %s: %s", r, strerror(errno));
  char j[1100];
  snprintf(j, sizeof j, "%s/journal", r);
  if (mkdir(j, 0700) != 0 && errno != EEXIST)
    test_fail(__FILE__, __LINE__, "mkdir %s: %s", j, strerror(errno));
  return r;
}

const char *mt_jpath(const char *root, const char *id) {
  return test_fmt("%s/journal/%s.jsonl", root, id);
}

static void write_at(const char *root, const char *id, const void *p,
                     size_t n, int flags) {
  const char *path = mt_jpath(root, id);
  int fd = open(path, O_WRONLY | O_CREAT | flags, 0600);
  if (fd < 0)
    test_fail(__FILE__, __LINE__, "open %s: %s", path, strerror(errno));
  const char *c = p;
  while (n > 0) {
    ssize_t w = write(fd, c, n);
    if (w <= 0)
      test_fail(__FILE__, __LINE__, "write %s: %s", path, strerror(errno));
    c += w;
    n -= (size_t)w;
  }
  close(fd);
}

void mt_write(const char *root, const char *id, const void *p, size_t n) {
  write_at(root, id, p, n, O_TRUNC);
}

void mt_append(const char *root, const char *id, const void *p, size_t n) {
  write_at(root, id, p, n, O_APPEND);
}

/* Mirrors ------------------------------------------------------------------ */

jm_mirror *mt_open(const char *root, const char *db_path, size_t max_line) {
  jm_mirror_options opt = {.db_path = db_path, .read_only = 0, .max_line = max_line};
  jm_mirror *m = NULL;
  jm_error err;
  jm_error_clear(&err);
  if (jm_mirror_open(&m, root, &opt, &err) != 0)
    test_fail(__FILE__, __LINE__, "jm_mirror_open(%s): %s", root, err.msg);
  if (jm_mirror_lock(m, 0, "test", &err) != 0)
    test_fail(__FILE__, __LINE__, "jm_mirror_lock: %s", err.msg);
  return m;
}

int mt_ingest(jm_mirror *m, const char *id, const jm_ingest_limits *lim) {
  jm_ingest_result r;
  jm_error err;
  int calls = 0;
  do {
    jm_error_clear(&err);
    if (jm_mirror_ingest(m, id, lim, &r, &err) != 0)
      test_fail(__FILE__, __LINE__, "jm_mirror_ingest(%s): %s", id, err.msg);
    calls++;
    if (calls > 10000000)
      test_fail(__FILE__, __LINE__, "ingest of %s never ends", id);
  } while (r.more);
  return calls;
}

void mt_replay(jm_mirror *m, const char *id, int threads) {
  jm_error err;
  jm_error_clear(&err);
  if (jm_mirror_replay(m, id, threads, NULL, &err) != 0)
    test_fail(__FILE__, __LINE__, "jm_mirror_replay(%s): %s", id, err.msg);
}

void mt_rebuild(jm_mirror *m, int threads) {
  jm_error err;
  jm_error_clear(&err);
  if (jm_mirror_rebuild(m, threads, NULL, NULL, NULL, &err) != 0)
    test_fail(__FILE__, __LINE__, "jm_mirror_rebuild: %s", err.msg);
}

static int verify_cb(void *ctx, const jm_verify_item *it) {
  (void)ctx;
  if (it->state != JM_VERIFY_OK)
    test_fail(__FILE__, __LINE__, "verify: '%s' is %s: %s", it->id,
              it->state == JM_VERIFY_BEHIND ? "behind" : "drift", it->detail);
  return 0;
}

uint64_t mt_verify_ok(jm_mirror *m) {
  jm_verify_summary sum;
  jm_error err;
  jm_error_clear(&err);
  if (jm_mirror_verify(m, NULL, 0, 2, verify_cb, NULL, NULL, NULL, &sum,
                       &err) != 0)
    test_fail(__FILE__, __LINE__, "jm_mirror_verify: %s", err.msg);
  ASSERT_EQ(sum.ok, sum.checked);
  return sum.checked;
}

/* Reading rows -------------------------------------------------------------- */

static sqlite3 *ro_open(const char *db) {
  sqlite3 *h = NULL;
  if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
    test_fail(__FILE__, __LINE__, "cannot open %s: %s", db,
              h ? sqlite3_errmsg(h) : "?");
  sqlite3_busy_timeout(h, 10000);
  return h;
}

/* Render one value.  exact: with its type, text quoted and escaped. */
static void render(mt_buf *b, sqlite3_stmt *st, int col, int exact) {
  switch (sqlite3_column_type(st, col)) {
  case SQLITE_NULL:
    mt_puts(b, "NULL");
    return;
  case SQLITE_INTEGER:
    mt_printf(b, "%lld", (long long)sqlite3_column_int64(st, col));
    return;
  case SQLITE_FLOAT:
    mt_printf(b, "%.17g", sqlite3_column_double(st, col));
    return;
  case SQLITE_BLOB: {
    const unsigned char *p = sqlite3_column_blob(st, col);
    int n = sqlite3_column_bytes(st, col);
    mt_puts(b, "x'");
    for (int i = 0; i < n; i++)
      mt_printf(b, "%02x", p[i]);
    mt_puts(b, "'");
    return;
  }
  default: {
    const unsigned char *p = sqlite3_column_blob(st, col);
    int n = sqlite3_column_bytes(st, col);
    if (exact)
      mt_puts(b, "\"");
    for (int i = 0; i < n; i++) {
      unsigned char c = p[i];
      if (c < 0x20 || c >= 0x7f || (exact && (c == '"' || c == '\\')))
        mt_printf(b, "\\x%02x", c);
      else
        mt_put(b, &c, 1);
    }
    if (exact)
      mt_puts(b, "\"");
  }
  }
}

static void run_query(sqlite3 *h, const char *sql, int exact, mt_buf *out) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK)
    test_fail(__FILE__, __LINE__, "prepare %s: %s", sql, sqlite3_errmsg(h));
  int s, rows = 0;
  while ((s = sqlite3_step(st)) == SQLITE_ROW) {
    if (rows++)
      mt_puts(out, "\n");
    for (int i = 0; i < sqlite3_column_count(st); i++) {
      if (i)
        mt_puts(out, "|");
      render(out, st, i, exact);
    }
  }
  if (s != SQLITE_DONE)
    test_fail(__FILE__, __LINE__, "step %s: %s", sql, sqlite3_errmsg(h));
  sqlite3_finalize(st);
  if (out->p == NULL)
    mt_puts(out, "");
}

const char *mt_q(const char *db, const char *fmt, ...) {
  static char *ring[8];
  static int next;
  va_list ap;
  va_start(ap, fmt);
  char *sql = sqlite3_vmprintf(fmt, ap);
  va_end(ap);
  sqlite3 *h = ro_open(db);
  mt_buf b = {0};
  run_query(h, sql, 0, &b);
  sqlite3_close(h);
  sqlite3_free(sql);
  int k = next++ % 8;
  free(ring[k]);
  ring[k] = b.p;
  return b.p;
}

long long mt_qi(const char *db, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *sql = sqlite3_vmprintf(fmt, ap);
  va_end(ap);
  sqlite3 *h = ro_open(db);
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK ||
      sqlite3_step(st) != SQLITE_ROW)
    test_fail(__FILE__, __LINE__, "%s: %s", sql, sqlite3_errmsg(h));
  long long v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(h);
  sqlite3_free(sql);
  return v;
}

char *mt_qraw(const char *db, size_t *len, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *sql = sqlite3_vmprintf(fmt, ap);
  va_end(ap);
  sqlite3 *h = ro_open(db);
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK)
    test_fail(__FILE__, __LINE__, "%s: %s", sql, sqlite3_errmsg(h));
  char *out = NULL;
  if (sqlite3_step(st) == SQLITE_ROW &&
      sqlite3_column_type(st, 0) != SQLITE_NULL) {
    const void *p = sqlite3_column_blob(st, 0);
    size_t n = (size_t)sqlite3_column_bytes(st, 0);
    out = malloc(n + 1);
    memcpy(out, p ? p : "", n);
    out[n] = '\0';
    if (len)
      *len = n;
  }
  sqlite3_finalize(st);
  sqlite3_close(h);
  sqlite3_free(sql);
  return out;
}

char *mt_dump(const char *db) {
  static const char *const q[] = {
      "SELECT * FROM conversations ORDER BY id",
      "SELECT * FROM messages ORDER BY conversation_id, seq",
      "SELECT * FROM bad_lines ORDER BY conversation_id, line",
      ("SELECT conversation_id, byte_offset, lines FROM sources"
       " ORDER BY conversation_id"),
  };
  sqlite3 *h = ro_open(db);
  mt_buf b = {0};
  for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
    mt_printf(&b, "-- %s\n", q[i]);
    run_query(h, q[i], 1, &b);
    mt_puts(&b, "\n");
  }
  sqlite3_close(h);
  return b.p;
}

void mt_same_dump_at(const char *file, int line, const char *a, const char *b,
                     const char *what_a, const char *what_b) {
  if (strcmp(a, b) == 0)
    return;
  const char *pa = a, *pb = b;
  int ln = 1;
  for (;;) {
    const char *ea = strchr(pa, '\n'), *eb = strchr(pb, '\n');
    size_t na = ea ? (size_t)(ea - pa) : strlen(pa);
    size_t nb = eb ? (size_t)(eb - pb) : strlen(pb);
    if (na != nb || memcmp(pa, pb, na) != 0)
      test_fail(file, line,
                "dumps differ at line %d:\n  %s: %.*s\n  %s: %.*s", ln,
                what_a, (int)(na > 600 ? 600 : na), pa, what_b,
                (int)(nb > 600 ? 600 : nb), pb);
    if (!ea || !eb)
      test_fail(file, line, "dumps differ in length (%s vs %s)", what_a,
                what_b);
    pa = ea + 1;
    pb = eb + 1;
    ln++;
  }
}

/* Randomness ------------------------------------------------------------------ */

uint64_t mt_next(mt_rng *r) {
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t mt_below(mt_rng *r, uint64_t n) { return n ? mt_next(r) % n : 0; }
