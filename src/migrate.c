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

/* A full disk is -ENOSPC here as everywhere (jm__sql_err); a file SQLite
 * finds damaged is JM_ECORRUPT (the mirror's owner may make it anew); else
 * SQLite's. */
static int sql_code(sqlite3 *db) {
  int ec = sqlite3_errcode(db) & 0xff;
  if (ec == SQLITE_FULL)
    return -ENOSPC;
  return ec == SQLITE_CORRUPT || ec == SQLITE_NOTADB ? JM_ECORRUPT
                                                     : JM_ESQLITE;
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

/* The highest version in _migrations into *v (0: none); an SQLite result
 * code.  A damaged table must not read as "version 0": the first migration
 * would then run again over the tables it made. */
static int read_version(sqlite3 *db, int *v) {
  sqlite3_stmt *st;
  *v = 0;
  int s = sqlite3_prepare_v2(db, "SELECT max(version) FROM _migrations", -1,
                             &st, NULL);
  if (s != SQLITE_OK)
    return s;
  if ((s = sqlite3_step(st)) == SQLITE_ROW)
    *v = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  return s == SQLITE_ROW || s == SQLITE_DONE ? SQLITE_OK : s;
}

int jm__schema_version(sqlite3 *db) {
  int v;
  read_version(db, &v);
  return v;
}

static int version_or_fail(sqlite3 *db, int *v, const char *path,
                           jm_error *err) {
  if (read_version(db, v) == SQLITE_OK)
    return 0;
  return jm__errf(err, sql_code(db), "mirror '%s': cannot read its schema "
                  "version: %s", path, sqlite3_errmsg(db));
}

static int apply_one(sqlite3 *db, const jm__migration *m, const char *path,
                     jm_error *err) {
  int rc = exec(db, "BEGIN IMMEDIATE", path, err);
  if (rc)
    return rc;
  int have;
  if ((rc = version_or_fail(db, &have, path, err)) != 0)
    goto rollback;
  if (have >= m->version)
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
  int have;
  if ((rc = version_or_fail(db, &have, path, err)) != 0)
    return rc;
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
