/*
 * jm_ceiling.c - the ceiling of a full rebuild (benchmarks).
 *
 *   jm_ceiling SRC_DB DST_DB wal|off
 *
 * How fast can SQLite take the rows a rebuild produces, with nothing else
 * to do?  The already-folded rows of `conversations` and `messages` are read
 * from SRC_DB (a mirror built by jmirror) into memory first, untimed.  Then,
 * timed: a fresh DST_DB is created with the same CREATE TABLE / CREATE INDEX
 * statements (copied from SRC_DB's sqlite_master: no full-text index, no
 * triggers, no bookkeeping tables), and every row is inserted with prepared
 * statements in one transaction, in the source's rowid order.
 *
 *   wal  journal_mode=WAL, synchronous=NORMAL (the mirror's settings); the
 *        time runs to the end of a TRUNCATE checkpoint and close, so the rows
 *        are in the database file as after jmirror's rebuild;
 *   off  journal_mode=OFF, synchronous=OFF (what jmirror's scratch file uses).
 *
 * Both: foreign_keys off (SQLite's default), cache_size = -8192 (8 MiB, as
 * jmirror's rebuild).  Prints one JSON object: conversations, messages,
 * bytes (text held), load_seconds (untimed read), seconds (the figure),
 * commit_seconds (up to COMMIT).
 */
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, sqlite3 *db) {
  fprintf(stderr, "jm_ceiling: %s: %s\n", what, db ? sqlite3_errmsg(db) : "");
  exit(1);
}

/* All text and blob bytes live in one arena; values point into it by
 * offset (the arena moves as it grows). */
static char *arena;
static size_t arena_len, arena_cap;

static uint64_t arena_put(const void *p, size_t n) {
  if (arena_len + n > arena_cap) {
    size_t cap = arena_cap ? arena_cap : (size_t)1 << 24;
    while (cap < arena_len + n)
      cap *= 2;
    char *a = realloc(arena, cap);
    if (a == NULL) {
      fprintf(stderr, "jm_ceiling: out of memory (%zu bytes)\n", cap);
      exit(1);
    }
    arena = a;
    arena_cap = cap;
  }
  uint64_t off = arena_len;
  if (n)
    memcpy(arena + arena_len, p, n);
  arena_len += n;
  return off;
}

typedef struct val {
  int type; /* SQLITE_INTEGER, SQLITE_FLOAT, SQLITE_TEXT, SQLITE_BLOB,
               SQLITE_NULL */
  uint64_t len;
  union {
    sqlite3_int64 i;
    double d;
    uint64_t off;
  } u;
} val;

typedef struct table {
  const char *name;
  int ncol;
  char **cols;
  val *vals; /* rows * ncol */
  size_t rows, cap;
  char *insert_sql;
} table;

static void load(sqlite3 *src, table *t) {
  char sql[256];
  snprintf(sql, sizeof sql, "SELECT * FROM \"%s\" ORDER BY rowid", t->name);
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(src, sql, -1, &st, NULL) != SQLITE_OK)
    die(sql, src);
  t->ncol = sqlite3_column_count(st);
  t->cols = calloc((size_t)t->ncol, sizeof *t->cols);
  size_t need = strlen(t->name) + 64;
  for (int c = 0; c < t->ncol; c++) {
    t->cols[c] = strdup(sqlite3_column_name(st, c));
    need += strlen(t->cols[c]) + 8;
  }
  t->insert_sql = malloc(need);
  size_t n =
      (size_t)snprintf(t->insert_sql, need, "INSERT INTO \"%s\" (", t->name);
  for (int c = 0; c < t->ncol; c++)
    n += (size_t)snprintf(t->insert_sql + n, need - n, "%s\"%s\"", c ? "," : "",
                          t->cols[c]);
  n += (size_t)snprintf(t->insert_sql + n, need - n, ") VALUES (");
  for (int c = 0; c < t->ncol; c++)
    n += (size_t)snprintf(t->insert_sql + n, need - n, "%s?", c ? "," : "");
  snprintf(t->insert_sql + n, need - n, ")");
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (t->rows == t->cap) {
      t->cap = t->cap ? t->cap * 2 : 4096;
      t->vals = realloc(t->vals, t->cap * (size_t)t->ncol * sizeof *t->vals);
      if (t->vals == NULL) {
        fprintf(stderr, "jm_ceiling: out of memory\n");
        exit(1);
      }
    }
    val *row = t->vals + t->rows * (size_t)t->ncol;
    for (int c = 0; c < t->ncol; c++) {
      val *v = row + c;
      v->type = sqlite3_column_type(st, c);
      v->len = 0;
      switch (v->type) {
      case SQLITE_INTEGER: v->u.i = sqlite3_column_int64(st, c); break;
      case SQLITE_FLOAT: v->u.d = sqlite3_column_double(st, c); break;
      case SQLITE_TEXT: {
        const unsigned char *p = sqlite3_column_text(st, c);
        v->len = (uint64_t)sqlite3_column_bytes(st, c);
        v->u.off = arena_put(p, v->len);
        break;
      }
      case SQLITE_BLOB: {
        const void *p = sqlite3_column_blob(st, c);
        v->len = (uint64_t)sqlite3_column_bytes(st, c);
        v->u.off = arena_put(p, v->len);
        break;
      }
      default: break;
      }
    }
    t->rows++;
  }
  if (rc != SQLITE_DONE)
    die("reading the source", src);
  sqlite3_finalize(st);
}

/* The CREATE statements of the two tables and their indexes. */
static char **schema(sqlite3 *src, size_t *n) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(
          src,
          "SELECT sql FROM sqlite_master WHERE tbl_name IN ('conversations',"
          " 'messages') AND type IN ('table', 'index') AND sql IS NOT NULL"
          " ORDER BY type = 'index', tbl_name = 'messages', rowid",
          -1, &st, NULL) != SQLITE_OK)
    die("reading the schema", src);
  char **out = NULL;
  *n = 0;
  while (sqlite3_step(st) == SQLITE_ROW) {
    out = realloc(out, (*n + 1) * sizeof *out);
    out[(*n)++] = strdup((const char *)sqlite3_column_text(st, 0));
  }
  sqlite3_finalize(st);
  return out;
}

static void exec(sqlite3 *db, const char *sql) {
  char *msg = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
    fprintf(stderr, "jm_ceiling: %s: %s\n", sql, msg ? msg : "");
    exit(1);
  }
}

static void insert(sqlite3 *db, const table *t) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(db, t->insert_sql, -1, &st, NULL) != SQLITE_OK)
    die(t->insert_sql, db);
  for (size_t r = 0; r < t->rows; r++) {
    const val *row = t->vals + r * (size_t)t->ncol;
    for (int c = 0; c < t->ncol; c++) {
      const val *v = row + c;
      switch (v->type) {
      case SQLITE_INTEGER: sqlite3_bind_int64(st, c + 1, v->u.i); break;
      case SQLITE_FLOAT: sqlite3_bind_double(st, c + 1, v->u.d); break;
      case SQLITE_TEXT:
        sqlite3_bind_text64(st, c + 1, arena + v->u.off, v->len, SQLITE_STATIC,
                            SQLITE_UTF8);
        break;
      case SQLITE_BLOB:
        sqlite3_bind_blob64(st, c + 1, arena + v->u.off, v->len, SQLITE_STATIC);
        break;
      default: sqlite3_bind_null(st, c + 1);
      }
    }
    if (sqlite3_step(st) != SQLITE_DONE)
      die("insert", db);
    sqlite3_reset(st);
  }
  sqlite3_finalize(st);
}

static void unlink_db(const char *path) {
  static const char *const sfx[] = {"", "-wal", "-shm", "-journal"};
  char p[4096];
  for (size_t i = 0; i < sizeof sfx / sizeof *sfx; i++) {
    snprintf(p, sizeof p, "%s%s", path, sfx[i]);
    unlink(p);
  }
}

int main(int argc, char **argv) {
  if (argc != 4 ||
      (strcmp(argv[3], "wal") != 0 && strcmp(argv[3], "off") != 0)) {
    fprintf(stderr, "usage: jm_ceiling SRC_DB DST_DB wal|off\n");
    return 2;
  }
  int wal = strcmp(argv[3], "wal") == 0;
  sqlite3 *src;
  if (sqlite3_open_v2(argv[1], &src, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
    die(argv[1], src);
  double l0 = now_s();
  table conv = {.name = "conversations"}, msgs = {.name = "messages"};
  size_t nschema;
  char **ddl = schema(src, &nschema);
  load(src, &conv);
  load(src, &msgs);
  sqlite3_close(src);
  double load_s = now_s() - l0;

  unlink_db(argv[2]);
  double t0 = now_s();
  sqlite3 *db;
  if (sqlite3_open_v2(argv[2], &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                      NULL) != SQLITE_OK)
    die(argv[2], db);
  exec(db, wal ? "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
                 " PRAGMA cache_size = -8192"
               : "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;"
                 " PRAGMA cache_size = -8192");
  exec(db, "BEGIN");
  for (size_t i = 0; i < nschema; i++)
    exec(db, ddl[i]);
  insert(db, &conv);
  insert(db, &msgs);
  exec(db, "COMMIT");
  double commit_s = now_s() - t0;
  if (wal)
    exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
  if (sqlite3_close(db) != SQLITE_OK)
    die("close", db);
  double secs = now_s() - t0;
  printf("{\"mode\":\"%s\",\"conversations\":%zu,\"messages\":%zu,"
         "\"bytes\":%zu,\"load_seconds\":%.6f,\"seconds\":%.6f,"
         "\"commit_seconds\":%.6f}\n",
         argv[3], conv.rows, msgs.rows, arena_len, load_s, secs, commit_s);
  table *ts[] = {&conv, &msgs};
  for (size_t i = 0; i < 2; i++) {
    for (int c = 0; c < ts[i]->ncol; c++)
      free(ts[i]->cols[c]);
    free(ts[i]->cols);
    free(ts[i]->vals);
    free(ts[i]->insert_sql);
  }
  for (size_t i = 0; i < nschema; i++)
    free(ddl[i]);
  free(ddl);
  free(arena);
  return 0;
}
