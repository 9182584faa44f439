/*
 * migrate.h - the numbered schema migrations embedded at build time
 * (src/migrations/NNNN_name.sql -> migrations.c by embed.py).
 */
#ifndef JMIRROR_MIGRATE_H
#define JMIRROR_MIGRATE_H

#include <sqlite3.h>

#include "jmirror/error.h"

typedef struct jm__migration {
  int version;      /* from the file name; 1, 2, 3, ... without gaps */
  const char *name; /* the rest of the file name, without .sql */
  const char *sql;  /* the whole file */
} jm__migration;

extern const jm__migration jm__migrations[];
extern const int jm__n_migrations;

/*
 * Bring `db` up to the last of `list` (n entries): each missing migration
 * runs in its own transaction and is recorded in _migrations.  A database
 * that records a version beyond the list is JM_ESCHEMA (newer than this
 * program); one SQLite finds damaged (its tables unreadable) is
 * JM_ECORRUPT.  `path` is only used in messages.
 */
int jm__migrate(sqlite3 *db, const jm__migration *list, int n,
                const char *path, jm_error *err);

/* Highest version recorded in _migrations (0 if none). */
int jm__schema_version(sqlite3 *db);

#endif
