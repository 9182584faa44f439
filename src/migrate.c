/*
 * migrate.c - applying the numbered schema migrations.
 *
 * Rules (docs/mirror.md, "Migrations"):
 *  - migrations are the files src/migrations/NNNN_name.sql, embedded in the
 *    binaries at build time, numbered from 0001 without gaps, never
 *    renumbered or edited once released;
 *  - each runs in its own BEGIN IMMEDIATE transaction together with its row
 *    in _migrations, so a crash leaves it applied or not, never half;
 *  - whether a version is applied is decided inside that transaction, so
 *    two processes opening the same mirror cannot both apply it;
 *  - a mirror that records a version this binary does not have was made by
 *    a newer jmirror: refuse (JM_ESCHEMA) rather than guess, and say how to
 *    recover: the mirror is derived, `jmirror replay --all` rebuilds it.
 */
#include "migrate.h"
#include "internal.h"

#include <errno.h>
#include <stdio.h>

/* A full disk is -ENOSPC here as everywhere (jm__sql_err); else SQLite's. */
static int sql_code(sqlite3 *db) {
  return (sqlite3_errcode(db) & 0xff) == SQLITE_FULL ? -ENOSPC : JM_ESQLITE;
}

static int exec(sqlite3 *db, const char *sql, const char *path,
                jm_error *err) {
  char *msg = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK)
    return 0;
  int rc = jm__errf(err, sql_code(db), "mirror '%s': %s", path,
                    msg ? msg : sqlite3_errmsg(db));
  sqlite3_free(msg);
  return rc;
}

int jm__schema_version(sqlite3 *db) {
  sqlite3_stmt *st;
  int v = 0;
  if (sqlite3_prepare_v2(db, "SELECT max(version) FROM _migrations", -1, &st,
                         NULL) != SQLITE_OK)
    return 0;
  if (sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  return v;
}

static int apply_one(sqlite3 *db, const jm__migration *m, const char *path,
                     jm_error *err) {
  int rc = exec(db, "BEGIN IMMEDIATE", path, err);
  if (rc)
    return rc;
  if (jm__schema_version(db) >= m->version)
    return exec(db, "COMMIT", path, err); /* someone else applied it */
  rc = exec(db, m->sql, path, err);
  if (rc) {
    jm__errf(err, sql_code(db), "mirror '%s': migration %04d_%s failed: %s",
             path, m->version, m->name, sqlite3_errmsg(db));
    goto rollback;
  }
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(db,
                         "INSERT INTO _migrations(version, name, applied_at) "
                         "VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
                         -1, &st, NULL) != SQLITE_OK) {
    rc = jm__errf(err, sql_code(db), "mirror '%s': %s", path,
                  sqlite3_errmsg(db));
    goto rollback;
  }
  sqlite3_bind_int(st, 1, m->version);
  sqlite3_bind_text(st, 2, m->name, -1, SQLITE_STATIC);
  int s = sqlite3_step(st);
  sqlite3_finalize(st);
  if (s != SQLITE_DONE) {
    rc = jm__errf(err, sql_code(db), "mirror '%s': %s", path,
                  sqlite3_errmsg(db));
    goto rollback;
  }
  return exec(db, "COMMIT", path, err);
rollback:
  sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  return rc;
}

int jm__migrate(sqlite3 *db, const jm__migration *list, int n,
                const char *path, jm_error *err) {
  int rc = exec(db,
                "CREATE TABLE IF NOT EXISTS _migrations ("
                " version INTEGER PRIMARY KEY,"
                " name TEXT NOT NULL,"
                " applied_at TEXT NOT NULL)",
                path, err);
  if (rc)
    return rc;
  int have = jm__schema_version(db);
  int known = n > 0 ? list[n - 1].version : 0;
  if (have > known)
    return jm__errf(err, JM_ESCHEMA,
                    "mirror '%s' has schema version %d but this jmirror "
                    "knows only up to %d: upgrade jmirror, or rebuild the "
                    "mirror with 'jmirror replay --all'",
                    path, have, known);
  for (int i = 0; i < n; i++) {
    if (list[i].version <= have)
      continue;
    rc = apply_one(db, &list[i], path, err);
    if (rc)
      return rc;
  }
  return 0;
}
