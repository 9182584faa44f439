/*
 * test_migrate.c - schema migrations (src/migrate.c) on real mirrors.
 *
 * The built-in list (jm__migrations) plus one migration of the test's own
 * (version n+1: a column, a table, an index) stands in for the next release:
 * rows survive it, it is recorded once, this build then refuses the mirror
 * with advice, a failing migration leaves nothing behind, and processes
 * migrating the same file at once apply every version exactly once.
 */
#include "mtest.h"
#include "test.h"

#include "migrate.h"
#include "mirror_int.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXTRA_SQL                                                             \
  "ALTER TABLE messages ADD COLUMN extra TEXT;\n"                             \
  "CREATE TABLE test_extra (k TEXT PRIMARY KEY, v INTEGER NOT NULL);\n"       \
  "CREATE INDEX messages_by_extra ON messages (conversation_id, extra);\n"

/* The built-in list plus one more: n+1 entries (static storage). */
static const jm__migration *with_extra(const char *sql, int *n) {
  static jm__migration list[64];
  ASSERT(jm__n_migrations > 0 && jm__n_migrations < 63);
  for (int i = 0; i < jm__n_migrations; i++)
    list[i] = jm__migrations[i];
  list[jm__n_migrations] = (jm__migration){
      jm__migrations[jm__n_migrations - 1].version + 1, "test_extra", sql};
  *n = jm__n_migrations + 1;
  return list;
}

static sqlite3 *rw_open(const char *path) {
  sqlite3 *db;
  jm_error err;
  jm_error_clear(&err);
  if (jm__db_open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &db,
                  &err) != 0)
    test_fail(__FILE__, __LINE__, "open %s: %s", path, err.msg);
  return db;
}

/* A mirror with some rows in it; returns its root. */
static const char *populated(const char *name, char db[1024]) {
  const char *root = mt_root(name);
  mt_buf b = {0};
  for (int i = 0; i < 50; i++)
    mt_printf(&b,
              "{\"type\":\"message\",\"id\":\"m%d\",\"role\":\"user\","
              "\"content\":\"c%d\",\"meta\":{\"i\":%d},"
              "\"ts\":\"2026-01-01T00:00:%02dZ\"}\n%s",
              i, i, i, i % 60, i % 10 == 3 ? "{bad\n" : "");
  mt_write(root, "c1", b.p, b.len);
  mt_write(root, "c2", b.p, b.len / 2);
  jm_mirror *m = mt_open(root, NULL, 0);
  mt_ingest(m, "c1", NULL);
  mt_ingest(m, "c2", NULL);
  snprintf(db, 1024, "%s", jm_mirror_db_path(m));
  jm_mirror_close(m);
  mt_buf_free(&b);
  return root;
}

/* The rows, by the columns of the built-in schema. */
static char *rows(const char *db) {
  mt_buf b = {0};
  mt_puts(&b, mt_q(db, "SELECT * FROM conversations ORDER BY id"));
  mt_puts(&b, mt_q(db, "SELECT conversation_id, id, seq, role, content,"
                       " meta, status, created_at, updated_at FROM messages"
                       " ORDER BY conversation_id, seq"));
  mt_puts(&b, mt_q(db, "SELECT * FROM bad_lines ORDER BY 1, 2"));
  mt_puts(&b, mt_q(db, "SELECT conversation_id, byte_offset, lines, file_size"
                       " FROM sources ORDER BY 1"));
  return b.p;
}

static void test_extra_migration_keeps_rows(void) {
  char db[1024];
  const char *root = populated("m1", db);
  char *before = rows(db);
  ASSERT(mt_qi(db, "SELECT count(*) FROM messages") > 60);
  ASSERT(mt_qi(db, "SELECT count(*) FROM bad_lines") > 5);
  ASSERT_EQ(mt_qi(db, "SELECT count(*) FROM _migrations"), jm__n_migrations);

  int n;
  const jm__migration *list = with_extra(EXTRA_SQL, &n);
  sqlite3 *h = rw_open(db);
  jm_error err;
  jm_error_clear(&err);
  ASSERT_OK(jm__migrate(h, list, n, db, &err));
  ASSERT_EQ(jm__schema_version(h), list[n - 1].version);
  /* a second run is a no-op */
  ASSERT_OK(jm__migrate(h, list, n, db, &err));
  sqlite3_close(h);

  ASSERT_EQ(mt_qi(db, "SELECT count(*) FROM _migrations"), n);
  ASSERT_EQ(mt_qi(db, "SELECT count(DISTINCT version) FROM _migrations"), n);
  ASSERT_STR_EQ(mt_q(db, "SELECT version, name FROM _migrations WHERE"
                         " version = %d",
                     list[n - 1].version),
                test_fmt("%d|test_extra", list[n - 1].version));
  ASSERT_EQ(mt_qi(db, "SELECT count(*) FROM pragma_table_info('messages')"
                      " WHERE name = 'extra'"),
            1);
  ASSERT_EQ(mt_qi(db, "SELECT count(*) FROM sqlite_master WHERE"
                      " (type = 'index' AND name = 'messages_by_extra') OR"
                      " (type = 'table' AND name = 'test_extra')"),
            2);
  char *after = rows(db);
  ASSERT_STR_EQ(after, before);
  ASSERT_STR_EQ(mt_q(db, "PRAGMA integrity_check"), "ok");

  /* this build does not know version n+1: it refuses, with advice, and
   * touches nothing */
  for (int ro = 0; ro <= 1; ro++) {
    jm_mirror_options opt = {.db_path = NULL, .read_only = ro, .max_line = 0};
    jm_mirror *m = NULL;
    jm_error_clear(&err);
    ASSERT_EQ(jm_mirror_open(&m, root, &opt, &err), JM_ESCHEMA);
    ASSERT(m == NULL);
    ASSERT_EQ(err.code, JM_ESCHEMA);
    ASSERT_STR_CONTAINS(err.msg, "jmirror replay --all");
    ASSERT_STR_CONTAINS(err.msg, test_fmt("schema version %d",
                                          list[n - 1].version));
    ASSERT_STR_CONTAINS(err.msg, db);
  }
  ASSERT_EQ(mt_qi(db, "SELECT count(*) FROM _migrations"), n);
  char *still = rows(db);
  ASSERT_STR_EQ(still, before);
  free(before);
  free(after);
  free(still);
}

/* A migration that fails part-way leaves neither its changes nor its row. */
static void test_failed_migration_rolls_back(void) {
  char db[1024];
  populated("m2", db);
  char *before = rows(db);
  int n;
  const jm__migration *list = with_extra(
      "CREATE TABLE half_done (x);\n"
      "ALTER TABLE messages ADD COLUMN extra TEXT;\n"
      "INSERT INTO no_such_table VALUES (1);\n",
      &n);
  sqlite3 *h = rw_open(db);
  jm_error err;
  jm_error_clear(&err);
  ASSERT_EQ(jm__migrate(h, list, n, db, &err), JM_ESQLITE);
  ASSERT_STR_CONTAINS(err.msg, "test_extra");
  ASSERT_STR_CONTAINS(err.msg, "no_such_table");
  sqlite3_close(h);
  ASSERT_EQ(mt_qi(db, "SELECT count(*) FROM _migrations"), n - 1);
  ASSERT_EQ(mt_qi(db, "SELECT count(*) FROM sqlite_master WHERE"
                      " name = 'half_done'"),
            0);
  ASSERT_EQ(mt_qi(db, "SELECT count(*) FROM pragma_table_info('messages')"
                      " WHERE name = 'extra'"),
            0);
  char *after = rows(db);
  ASSERT_STR_EQ(after, before);
  /* and the mirror still opens and works */
  jm_mirror *m = mt_open(test_fmt("%s/m2", test_tmpdir()), NULL, 0);
  mt_verify_ok(m);
  jm_mirror_close(m);
  free(before);
  free(after);
}

/* A mirror made by an older build (only the first migration) is brought
 * up to date by jm_mirror_open, keeping its rows. */
static void test_open_migrates_older(void) {
  const char *root = mt_root("old");
  const char *db = test_fmt("%s/old.db", root);
  sqlite3 *h = rw_open(db);
  jm_error err;
  jm_error_clear(&err);
  ASSERT_OK(jm__migrate(h, jm__migrations, 1, db, &err));
  ASSERT_EQ(jm__schema_version(h), jm__migrations[0].version);
  ASSERT_EQ(sqlite3_exec(h,
                         "INSERT INTO conversations (id, title) VALUES"
                         " ('kept', 'from before')",
                         NULL, NULL, NULL),
            SQLITE_OK);
  sqlite3_close(h);
  jm_mirror *m = mt_open(root, db, 0);
  jm_mirror_close(m);
  ASSERT_EQ(mt_qi(db, "SELECT count(*) FROM _migrations"), jm__n_migrations);
  ASSERT_EQ(mt_qi(db, "SELECT max(version) FROM _migrations"),
            jm__migrations[jm__n_migrations - 1].version);
  ASSERT_STR_EQ(mt_q(db, "SELECT id, title FROM conversations"),
                "kept|from before");
}

/*
 * Several processes migrate one database at the same moment (released
 * together from a pipe): every version is applied exactly once.  The extra
 * migration's ALTER TABLE fails if run twice, so a double apply is an
 * error in some child as well as a duplicate row.
 */
static void race(const char *db, int wal, int nproc) {
  int n;
  const jm__migration *list = with_extra(EXTRA_SQL, &n);
  int gate[2];
  ASSERT_OK(pipe(gate));
  pid_t pids[16];
  for (int i = 0; i < nproc; i++) {
    pids[i] = fork();
    ASSERT(pids[i] >= 0);
    if (pids[i] == 0) {
      close(gate[1]);
      char c;
      if (read(gate[0], &c, 1) != 0)
        _exit(3);
      sqlite3 *h;
      jm_error err;
      jm_error_clear(&err);
      if (jm__db_open(db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &h,
                      &err) != 0) {
        fprintf(stderr, "# child: %s\n", err.msg);
        _exit(1);
      }
      if (wal)
        sqlite3_exec(h, "PRAGMA journal_mode = WAL", NULL, NULL, NULL);
      int rc = jm__migrate(h, list, n, db, &err);
      if (rc != 0)
        fprintf(stderr, "# child %d: %s\n", i, err.msg);
      sqlite3_close(h);
      _exit(rc != 0);
    }
  }
  close(gate[0]);
  close(gate[1]); /* go */
  for (int i = 0; i < nproc; i++) {
    int st;
    ASSERT_EQ(waitpid(pids[i], &st, 0), pids[i]);
    ASSERT(WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), 0);
  }
  ASSERT_EQ(mt_qi(db, "SELECT count(*) FROM _migrations"), n);
  ASSERT_EQ(mt_qi(db, "SELECT count(DISTINCT version) FROM _migrations"), n);
  ASSERT_EQ(mt_qi(db, "SELECT min(version) = 1 AND max(version) = %d FROM"
                      " _migrations",
                  list[n - 1].version),
            1);
  ASSERT_EQ(mt_qi(db, "SELECT count(*) FROM pragma_table_info('messages')"
                      " WHERE name = 'extra'"),
            1);
  ASSERT_STR_EQ(mt_q(db, "PRAGMA integrity_check"), "ok");
}

static void test_concurrent_migrations(void) {
  for (int round = 0; round < 24; round++) {
    const char *root = mt_root(test_fmt("race%d", round));
    const char *db = test_fmt("%s/mirror.db", root);
    int wal = round % 2;
    if (round % 4 >= 2) {
      /* from a current mirror with rows: they race on n+1 only */
      jm_mirror *m = mt_open(root, db, 0);
      const char *line =
          "{\"type\":\"message\",\"id\":\"m\",\"role\":\"user\","
          "\"content\":\"x\",\"ts\":\"2026-01-01T00:00:00Z\"}\n";
      mt_write(root, "c1", line, strlen(line));
      mt_ingest(m, "c1", NULL);
      jm_mirror_close(m);
      ASSERT_EQ(mt_qi(db, "SELECT count(*) FROM messages"), 1);
      wal = 1; /* a mirror is WAL */
    }
    race(db, wal, 2 + round % 5);
    if (round % 4 >= 2)
      ASSERT_EQ(mt_qi(db, "SELECT count(*) FROM messages"), 1);
  }
}

static const test_case cases[] = {
    TEST_CASE(test_extra_migration_keeps_rows),
    TEST_CASE(test_failed_migration_rolls_back),
    TEST_CASE(test_open_migrates_older),
    TEST_CASE(test_concurrent_migrations),
    {0},
};

int main(int argc, char **argv) { return test_main(argc, argv, cases); }
