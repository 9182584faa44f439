/*
 * jmirror/journal.h - appending events to journal/<conversation_id>.jsonl.
 *
 * The journal is the ground truth.  jm_journal_append() validates an event
 * against the format before it touches the disk, then writes it as one line
 * with one write() under an exclusive flock() of the file, so writers in
 * other threads and processes never interleave.  A failed append leaves the
 * file at its previous size.
 *
 * Thread safety: one jm_journal may be shared by threads; its appends are
 * serialised by a mutex.  Writers in other processes coordinate by flock().
 */
#ifndef JMIRROR_JOURNAL_H
#define JMIRROR_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "reader.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum jm_sync {
  JM_SYNC_NONE = 0,   /* leave it to the OS; nothing promised on power loss */
  JM_SYNC_BATCH = 1,  /* group commit: synced within the batch window */
  JM_SYNC_ALWAYS = 2, /* synced before append returns (F_FULLFSYNC on macOS) */
} jm_sync;

/* Parse "always" / "batch" / "none".  0 or JM_EUSAGE. */
int jm_sync_parse(const char *s, jm_sync *out);
const char *jm_sync_name(jm_sync s);

typedef struct jm_journal_options {
  jm_sync sync;              /* default JM_SYNC_BATCH (0-initialised: NONE!) */
  unsigned batch_window_ms;  /* batch: longest wait before a sync; 0 = 100 */
  size_t max_line;           /* 0 = JM_MAX_LINE_DEFAULT */
} jm_journal_options;

/* Defaults: batch, 100 ms window, 64 MiB lines. */
void jm_journal_options_init(jm_journal_options *opt);

typedef struct jm_journal jm_journal;

/*
 * Open a writer on `root` (creates <root>/journal with mode 0700 if needed).
 * On success *out owns the writer: release it with jm_journal_close().
 */
int jm_journal_open(jm_journal **out, const char *root,
                    const jm_journal_options *opt, jm_error *err);

/*
 * Sync everything a batch-mode writer has not synced yet, report any sync
 * failure since the last call, then free the writer.  Returns 0 or the
 * first deferred sync error.  Safe on NULL.
 */
int jm_journal_close(jm_journal *j, jm_error *err);

/* Batch mode: sync now.  Reports a deferred failure of an earlier sync. */
int jm_journal_sync(jm_journal *j, jm_error *err);

typedef struct jm_append_info {
  uint64_t offset;        /* byte offset where the event's line starts */
  uint64_t end;           /* just past its LF (the file size afterwards) */
  int repaired_tail;      /* 1 if a torn tail was first closed with an LF */
  int created;            /* 1 if this append created the file */
  char ts[JM_TS_LEN + 1]; /* the event's normalised ts as written */
} jm_append_info;

/*
 * Validate `json` (len bytes: one JSON object, no trailing newline needed)
 * as an event of conversation `conv_id`, fill in "ts" when absent, normalise
 * it when present, and append it.  `info` may be NULL.
 * Errors: JM_EID, JM_EEVENT (err->msg names the member and the rule, and
 * nothing was written), -errno from the file system (the file is back at
 * its old size).
 */
int jm_journal_append(jm_journal *j, const char *conv_id, const char *json,
                      size_t len, jm_append_info *info, jm_error *err);

/* The same for an event built with jansson; `event` is not modified. */
int jm_journal_append_json(jm_journal *j, const char *conv_id,
                           const struct json_t *event, jm_append_info *info,
                           jm_error *err);

/* Counters, for tests and benchmarks. */
typedef struct jm_journal_stats {
  uint64_t appends; /* events written */
  uint64_t syncs;   /* file syncs issued (always + batch) */
} jm_journal_stats;
void jm_journal_get_stats(jm_journal *j, jm_journal_stats *out);

/* ------------------------------------------------------------------ */
/* Roots.                                                               */

/*
 * Resolve the journal root: `flag` if non-NULL, else $JMIRROR_ROOT, else
 * the platform default (~/Library/Application Support/jmirror on macOS,
 * $XDG_DATA_HOME/jmirror or ~/.local/share/jmirror elsewhere).
 * *out is malloc'd; the caller frees it.
 */
int jm_root_resolve(const char *flag, char **out, jm_error *err);

/* "<root>/journal/<id>.jsonl", malloc'd; NULL if out of memory. */
char *jm_journal_path(const char *root, const char *conv_id);

#ifdef __cplusplus
}
#endif
#endif
