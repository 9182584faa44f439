/*
 * pipeline.h - the parallel parse / ordered fold pipeline (pipeline.c).
 *
 * The caller lists files (with a size snapshot each) and a sink; workers
 * parse, the calling thread receives, per file in list order:
 *   begin(f), then event()/bad() for every line in order, then
 *   end(f, offset just past the last LF, number of lines).
 * A sink callback returning non-zero stops everything and is returned.
 */
#ifndef JMIRROR_PIPELINE_H
#define JMIRROR_PIPELINE_H

#include "fold.h"

typedef struct jm__pl_file {
  char *id;          /* conversation id (owned by the caller) */
  char *path;        /* journal file (owned by the caller) */
  uint64_t size;     /* bytes to consider: a snapshot taken before the run */
  uint32_t nchunks;  /* set by the pipeline */
  void *user;        /* the caller's */
} jm__pl_file;

typedef struct jm__pl_sink {
  void *ctx;
  int (*begin)(void *ctx, jm__pl_file *f);
  int (*event)(void *ctx, jm__pl_file *f, const jm__fev *ev);
  int (*bad)(void *ctx, jm__pl_file *f, uint64_t line, uint64_t offset,
             jm_bad_reason reason, const char *msg);
  int (*end)(void *ctx, jm__pl_file *f, uint64_t offset, uint64_t lines);
  /* A worker could not read f: return the error to stop everything, or 0
   * to skip the rest of f (`begun`: begin(f) was already called). */
  int (*io_error)(void *ctx, jm__pl_file *f, int err, int begun);
  void (*progress)(void *ctx, uint64_t bytes); /* optional */
  int (*canceled)(void *ctx); /* optional: non-zero stops with JM_ECANCELED */
  /* Optional.  When set, a file of one chunk arrives folded by a worker
   * instead of as event()/bad() calls: between begin(f) and end(f), one
   * folded(f, fold, events, bad).  *fold was folded with no loader; the
   * sink takes what it holds (leave *fold empty, e.g. by moving it). */
  int (*folded)(void *ctx, jm__pl_file *f, jm__fold *fold, uint64_t events,
                uint64_t bad);
} jm__pl_sink;

int jm__pipeline_run(jm__pl_file *files, size_t nfiles, int threads,
                     size_t max_line, jm__pl_sink *sink);

#endif
