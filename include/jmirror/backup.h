/*
 * jmirror/backup.h - consistent, incremental copies of the journal.
 *
 * A backup directory DEST holds journal/<id>.jsonl copies and MANIFEST.json
 * (and with the mirror option, mirror/mirror.db: a consistent snapshot,
 * never a raw copy of a live database).  The manifest is written last and
 * atomically: it describes a complete backup, and whatever an interrupted
 * run left behind is not vouched for (the next run cuts it off or copies
 * the file again).  docs/backups.md has the why and the restore drill.
 */
#ifndef JMIRROR_BACKUP_H
#define JMIRROR_BACKUP_H

#include <stdint.h>

#include "error.h"
#include "mirror.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct jm_backup_options {
  int with_mirror;          /* also snapshot the mirror (VACUUM INTO) */
  const char *db_path;      /* mirror override (NULL: the default) */
  jm_progress_fn progress;  /* bytes done of total; may be NULL */
  void *progress_ctx;
  /* Notable files ("copied whole: ..."); may be NULL. */
  void (*report)(void *ctx, const char *id, const char *what);
  void *report_ctx;
} jm_backup_options;

typedef struct jm_backup_stats {
  uint64_t files;          /* journal files the backup holds now */
  uint64_t new_files;      /* copied for the first time */
  uint64_t appended;       /* grown by their new bytes */
  uint64_t unchanged;      /* nothing new */
  uint64_t recopied;       /* no longer matched the backup: copied whole */
  uint64_t kept;           /* gone from the root, kept in the backup */
  uint64_t bytes_copied;   /* journal bytes written to DEST by this run */
  uint64_t bytes_total;    /* journal bytes the backup holds */
  uint64_t mirror_bytes;   /* size of the mirror snapshot (0: none) */
  double seconds;
} jm_backup_stats;

/*
 * Back up `root` into `dest` (created if missing).  Each journal file is
 * copied up to its last complete line while writers and the daemon run.
 * Into an existing backup only the new bytes of each file are appended,
 * after checking that the bytes already there still match the root's
 * (size, first 4 KiB, the 64 KiB before the old end); a file that no longer
 * matches is copied whole and reported.  On failure (disk full, ...) the
 * appended bytes are cut back and the previous manifest stays: DEST is the
 * previous complete backup.  Refused with JM_EUSAGE and nothing written
 * (docs/backups.md): an empty DEST, DEST inside the root, a DEST/journal
 * or DEST/mirror leading back into the root, a DEST/journal file that is
 * a symbolic link or the root's own file, a manifest naming another root.
 * A copy with other hard links is replaced by a new file, never changed.
 * --with-mirror: the snapshot is taken before the journal is copied (the
 * backup's journal holds every line it has rows for); no mirror is an
 * error before anything is written.
 */
int jm_backup(const char *root, const char *dest, const jm_backup_options *opt,
              jm_backup_stats *st, jm_error *err);

typedef struct jm_backup_check_result {
  uint64_t files;    /* listed in the manifest */
  uint64_t ok;       /* present, with the listed bytes and SHA-256 */
  uint64_t bad;      /* missing, short, or another hash */
  uint64_t extra;    /* in DEST/journal but not in the manifest */
  int mirror;        /* -1 none in the manifest, 1 ok, 0 bad */
} jm_backup_check_result;

/*
 * Verify a backup against its manifest: every byte is read and hashed.
 * Read-only; holds DEST/.lock shared (JM_ELOCKED while a backup into DEST
 * runs).  report(ctx, path, problem) for every problem; may be NULL.
 * Returns 0 when the check ran (see *out), or an error (no manifest,
 * unreadable, locked).
 */
int jm_backup_check(const char *dest,
                    void (*report)(void *ctx, const char *path,
                                   const char *problem),
                    void *ctx, jm_progress_fn progress, void *progress_ctx,
                    jm_backup_check_result *out, jm_error *err);

#ifdef __cplusplus
}
#endif
#endif
