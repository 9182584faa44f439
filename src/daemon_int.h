/*
 * daemon_int.h - jmirrord's state, shared by daemon.c (loop, watching,
 * scheduling), jobs.c (the SQLite work on the thread pool) and control.c
 * (the control socket).
 *
 * Threads: everything here belongs to the loop thread, except a running
 * job, which owns the mirror connection and its own jm__job struct until
 * its after-work callback runs on the loop thread again.
 */
#ifndef JMIRROR_DAEMON_INT_H
#define JMIRROR_DAEMON_INT_H

#include <jansson.h>
#include <uv.h>

#include "internal.h"
#include "mirror_int.h"
#include "jmirror/daemon.h"
#include "jmirror/journal.h"
#include "jmirror/mirror.h"

/* What the daemon knows of one conversation (loop thread only). */
typedef struct jm__cstate {
  struct jm__cstate *next;  /* hash chain */
  struct jm__cstate *dnext; /* dirty list */
  char *id;                 /* owned */
  uint64_t size;            /* file size at the last stat */
  uint64_t offset;          /* bytes ingested (from the mirror) */
  int dirty;                /* on the dirty list */
  int failed;               /* last ingest failed: retried by the timer
                             * until one succeeds */
} jm__cstate;

typedef struct jm__client jm__client;

/* A control request that needs the mirror (replay, verify, ingest). */
typedef struct jm__request {
  struct jm__request *next; /* FIFO of pending requests */
  jm__client *client;       /* holds a reference */
  json_t *req;              /* the parsed request (owned) */
} jm__request;

/* A `wait` that has not been satisfied yet. */
typedef struct jm__waiter {
  struct jm__waiter *next;
  jm__client *client; /* holds a reference */
  char *id;
  uint64_t offset;
  uv_timer_t timer;   /* its timeout; freed in the close callback */
  struct jm__daemon *d;
} jm__waiter;

typedef enum {
  JM__JOB_INGEST,
  JM__JOB_RECONCILE,
  JM__JOB_REQUEST,
  JM__JOB_INDEX, /* a slice of the full-text index, when nothing else waits */
} jm__job_kind;

typedef struct jm__job_item {
  char *id;
  int rc;
  jm_ingest_result res;
  char msg[JM_ERROR_MSG_MAX];
} jm__job_item;

typedef struct jm__job {
  uv_work_t work;
  struct jm__daemon *d;
  jm__job_kind kind;
  /* ingest: ids in, results out (n_done processed within the budget) */
  int defer_index;            /* first stop indexing new rows one by one */
  jm__job_item *items;
  size_t n, n_done;
  /* reconcile: files seen and removed ids, collected on the worker */
  jm_file_status *files;      /* ids are owned copies */
  size_t nfiles, capfiles;
  char **removed;
  size_t nremoved, capremoved;
  jm_catchup_stats cst;
  /* request: the request and its response */
  jm__request *r;
  json_t *response;
  /* index */
  jm_search_progress sp;
  /* any job: the mirror's file was replaced, reopened and rebuilt first */
  int reopened;
  jm_rebuild_stats rebuilt;
  int rc;
  jm_error err;
} jm__job;

typedef struct jm__daemon {
  uv_loop_t *loop;
  jm_daemon_options opt;
  char *root, *journal_dir, *db_path, *sock_path; /* owned */
  jm_mirror *m;
  /* Which files the mirror connection has open (copied from m whenever no
   * job runs), so that the loop thread can tell, with a stat, that the
   * path names another file now (jm__mirror_replaced). */
  uint64_t db_dev, db_ino, wal_ino;
  uv_fs_event_t *watch;      /* on journal/, or NULL */
  uv_fs_event_t *root_watch; /* on the root while journal/ is missing */
  uint64_t journal_ino, journal_dev;
  uv_timer_t reconcile_timer; /* the long, unref'd one */
  uv_timer_t retry_timer;     /* armed only after a failure */
  uv_timer_t poll_timer;      /* armed only if even the root is missing */
  unsigned retry_ms;          /* current back-off */
  size_t nfailing;            /* conversations with `failed` set */
  uv_signal_t sig_term, sig_int, sig_hup;
  uv_pipe_t server;
  int server_open;
  jm__client *clients;        /* open control connections (control.c) */
  /* conversations */
  jm__cstate **buckets;
  size_t nbuckets, ncstates;
  jm__cstate *dirty_head, *dirty_tail;
  int want_reconcile;         /* a full scan is due */
  int index_done;             /* the full-text index covers every row */
  int defer_index;            /* big backlog: defer indexing first */
  /* work */
  jm__job *job;               /* the running job, or NULL */
  jm__request *req_head, *req_tail;
  jm__waiter *waiters;
  /* status */
  uint64_t events, bad_lines, ignored_files, ingests;
  uint64_t replays;       /* replay requests carried out */
  uint64_t drift_replays; /* conversations replayed because their file
                           * no longer matched what was ingested */
  uint64_t start_ms;
  char last_error[JM_ERROR_MSG_MAX];
  int stopping;
  int exit_code;
} jm__daemon;

/* daemon.c */
void jm__log(jm__daemon *d, int level, const char *fmt, ...) JM__PRINTF(3, 4);
void jm__schedule(jm__daemon *d);
jm__cstate *jm__cstate_get(jm__daemon *d, const char *id, int create);
void jm__mark_dirty(jm__daemon *d, const char *id);
void jm__request_reconcile(jm__daemon *d);
uint64_t jm__bytes_behind(jm__daemon *d);
void jm__enqueue_request(jm__daemon *d, jm__request *r);
void jm__add_waiter(jm__daemon *d, jm__client *c, const char *id,
                    uint64_t offset, int timeout_ms);
uint64_t jm__now_ms(void);
int jm__mirror_replaced(jm__daemon *d);

/* jobs.c: run on the thread pool; finish on the loop */
void jm__job_run(uv_work_t *w);

/* control.c */
int jm__control_start(jm__daemon *d, jm_error *err);
void jm__control_stop(jm__daemon *d);
void jm__respond(jm__client *c, json_t *resp); /* steals resp */
void jm__client_ref(jm__client *c);
void jm__client_unref(jm__client *c);
int jm__client_alive(const jm__client *c);
json_t *jm__status_json(jm__daemon *d);

#endif
