/*
 * store_int.h - the store handle, shared by store.c (writes, making the
 * mirror current), store_read.c (list, get, messages) and search.c.
 */
#ifndef JMIRROR_STORE_INT_H
#define JMIRROR_STORE_INT_H

#include "jmirror/store.h"
#include "mirror_int.h"

struct jm_store {
  char *root;            /* owned */
  jm_store_options opt;
  jm_journal *j;         /* the write path */
  jm_mirror *m;          /* the read path (read-write: it may ingest) */
  char **written;        /* conversations written since the last list/search */
  size_t nwritten, capwritten;
  int64_t search_steps;  /* SQLite VM steps of the last search's query:
                          * what it cost, for tests to bound */
};

/* Make the mirror's view of one conversation current (heal on read). */
int jm__store_current(jm_store *s, const char *id, jm_error *err);
/* ... of every conversation this store wrote (read-your-writes). */
int jm__store_flush_written(jm_store *s, jm_error *err);

/* 0 if the mirror has conversation `id`, else JM_ENOTFOUND saying so. */
int jm__store_exists(jm_store *s, const char *id, jm_error *err);

/* A column as a malloc'd NUL-terminated copy (NULL for SQL NULL); *len
 * gets its length if non-NULL.  Sets *oom on allocation failure. */
char *jm__col_dup(sqlite3_stmt *st, int col, size_t *len, int *oom);

#endif
