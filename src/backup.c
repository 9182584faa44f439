/*
 * backup.c - consistent, incremental copies of the journal (jmirror backup).
 *
 * DEST/
 *   journal/<id>.jsonl   each file as of its last complete line
 *   mirror/mirror.db     optional: a VACUUM INTO snapshot (consistent)
 *   MANIFEST.json        what the backup vouches for, written last
 *
 * The manifest lists, per file, the bytes the backup holds, their SHA-256,
 * and the hash state at the last 64-byte boundary, so the next run hashes
 * only what it appends.  It is written last, atomically (temp, fsync,
 * rename, fsync dir), after every file it lists is synced: a manifest never
 * points at bytes that are not on disk, and a run that fails or is killed
 * leaves the previous manifest, describing the previous complete backup.
 *
 * Incremental: a file already in the backup gets only its new bytes, after
 * a check that the bytes it already holds still match the root (size, the
 * first 4 KiB, the 64 KiB before the old end: the drift checks of the
 * mirror).  A file that no longer matches is copied whole and reported:
 * into journal/.<id>.jsonl.copy, renamed over the old copy only once
 * everything else is done, just before the manifest, so that until then
 * the old copy is still there for the old manifest (a crash between those
 * renames and the manifest's is the one window where the old manifest no
 * longer matches such a file).  The mirror snapshot is replaced the same
 * way.  Bytes beyond the manifest's count (left by an interrupted run)
 * are cut off first.  A failed run cuts its appends back, and drops its
 * whole copies.  Conversations gone
 * from the root stay in the backup (a backup must not lose history because
 * the root lost it), listed with "gone": true.
 *
 * Nothing of the root is ever written: prepare() refuses, before the first
 * byte is copied, a DEST inside the root, a DEST/journal leading back into
 * it, a DEST/journal file that is a symbolic link or the root's own inode,
 * and a manifest naming another root; every write goes through O_NOFOLLOW
 * descriptors checked again with fstat, and a copy with other hard links
 * is replaced by a new file rather than changed.  The leftovers of a
 * killed run (manifest temp files, whole copies) are removed first.
 */
#include "internal.h"
#include "jmirror/backup.h"
#include "jmirror/jmirror.h"
#include "jmirror/journal.h"
#include "mirror_int.h"
#include "sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define COPY_BLOCK ((size_t)1 << 20)
#define HEAD_SPAN 4096
#define TAIL_SPAN 65536

typedef struct entry {
  char *path;        /* "journal/<id>.jsonl" */
  uint64_t bytes;    /* vouched for */
  char sha[65];
  uint64_t at;       /* resume point: a multiple of 64 */
  char state[65];    /* hash state at `at` ("" if none) */
  int gone;          /* listed as gone from the root */
  int seen;          /* still in the root this run */
} entry;

typedef struct undo {
  int fd;            /* an appended DEST file, open (-1: a whole copy) */
  uint64_t size;     /* its size before this run appended */
  char *tmp, *path;  /* a whole copy, renamed over path at the end */
} undo;

typedef struct bk {
  const char *root, *dest;
  char *dest_journal;
  const jm_backup_options *opt;
  jm_backup_stats *st;
  jm_error *err;
  entry *prev;       /* the previous manifest, sorted by path */
  size_t nprev;
  json_t *files;     /* the new manifest's entries */
  undo *undos;
  size_t nundo, capundo;
  char *buf;         /* COPY_BLOCK bytes */
  uint64_t done, total;
  char **ids;        /* the root's conversations, sorted */
  size_t nids, capids;
  int committed;     /* the new manifest is in place: nothing to undo */
  int64_t manifest_mtime_ns; /* of the previous manifest (0: none) */
  char real_root[PATH_MAX]; /* realpath of the root, recorded in the manifest */
  jm_mirror *mirror; /* --with-mirror: opened before anything is written */
} bk;

/* The previous manifest ------------------------------------------------------- */

static int cmp_entry(const void *a, const void *b) {
  return strcmp(((const entry *)a)->path, ((const entry *)b)->path);
}

/* "journal/<valid id>.jsonl", nothing else (a manifest is input too). */
static int valid_path(const char *p) {
  size_t n = strlen(p);
  return n > 14 && strncmp(p, "journal/", 8) == 0 &&
         strcmp(p + n - 6, ".jsonl") == 0 &&
         jm_id_check(p + 8, n - 14, NULL) == 0;
}

static void entry_from(json_t *f, entry *e) {
  memset(e, 0, sizeof *e);
  const char *p = json_string_value(json_object_get(f, "path"));
  const char *sha = json_string_value(json_object_get(f, "sha256"));
  json_t *r = json_object_get(f, "resume");
  e->path = p && valid_path(p) ? jm__strdup(p) : NULL;
  e->bytes = (uint64_t)json_integer_value(json_object_get(f, "bytes"));
  snprintf(e->sha, sizeof e->sha, "%s", sha ? sha : "");
  e->at = (uint64_t)json_integer_value(json_object_get(r, "at"));
  const char *state = json_string_value(json_object_get(r, "state"));
  snprintf(e->state, sizeof e->state, "%s", state ? state : "");
  e->gone = json_is_true(json_object_get(f, "gone"));
}

/* Load DEST/MANIFEST.json.  -ENOENT if none, JM_ECORRUPT if unreadable. */
static int load_manifest(const char *dest, json_t **out, jm_error *err) {
  char *path = jm__path_join(dest, "MANIFEST.json");
  if (path == NULL)
    return jm__errf(err, -ENOMEM, "out of memory");
  json_error_t e;
  *out = json_load_file(path, JSON_REJECT_DUPLICATES, &e);
  int rc = 0;
  if (*out == NULL) {
    struct stat st;
    rc = stat(path, &st) != 0 ? -ENOENT
                               : jm__errf(err, JM_ECORRUPT,
                                          "backup manifest '%s' is damaged: "
                                          "%s", path, e.text);
  } else if (!json_is_array(json_object_get(*out, "files")) ||
             !json_is_string(json_object_get(*out, "format")) ||
             strcmp(json_string_value(json_object_get(*out, "format")),
                    "jmirror-backup") != 0) {
    json_decref(*out);
    *out = NULL;
    rc = jm__errf(err, JM_ECORRUPT, "'%s' is not a jmirror backup manifest",
                  path);
  }
  free(path);
  return rc;
}

/* A DEST holds the backup of one root: a manifest naming another root is
 * refused, never merged into (its files would be cut back or copied over
 * with another root's conversations of the same id).  Manifests recorded
 * the root as given before they recorded its real path: a relative one
 * cannot be told apart and is accepted. */
static int same_root(bk *b, json_t *m, jm_error *err) {
  const char *was = json_string_value(json_object_get(m, "root"));
  if (was == NULL || was[0] != '/')
    return 0;
  char r[PATH_MAX];
  const char *cmp = realpath(was, r) ? r : was;
  if (strcmp(cmp, b->real_root) == 0)
    return 0;
  return jm__errf(err, JM_EUSAGE,
                  "'%s' holds a backup of another root '%s', not of '%s': "
                  "choose another backup directory (or remove "
                  "'%s/MANIFEST.json' to make it a backup of this root)",
                  b->dest, was, b->real_root, b->dest);
}

static int prev_entries(bk *b, jm_error *err) {
  json_t *m = NULL;
  int rc = load_manifest(b->dest, &m, err);
  if (rc == -ENOENT)
    return 0;
  if (rc != 0) {
    /* A damaged manifest vouches for nothing: copy everything again. */
    if (b->opt->report)
      b->opt->report(b->opt->report_ctx, "MANIFEST.json", err->msg);
    jm_error_clear(err);
    return 0;
  }
  if ((rc = same_root(b, m, err)) != 0) {
    json_decref(m);
    return rc;
  }
  char *mp = jm__path_join(b->dest, "MANIFEST.json");
  struct stat ms;
  if (mp && stat(mp, &ms) == 0) {
    jm__file_state fs;
    jm__file_state_of(&ms, &fs);
    b->manifest_mtime_ns = fs.mtime_ns;
  }
  free(mp);
  json_t *files = json_object_get(m, "files");
  b->prev = calloc(json_array_size(files) + 1, sizeof *b->prev);
  if (b->prev == NULL) {
    json_decref(m);
    return jm__errf(err, -ENOMEM, "out of memory");
  }
  size_t i;
  json_t *f;
  json_array_foreach(files, i, f) {
    entry_from(f, &b->prev[b->nprev]);
    if (b->prev[b->nprev].path)
      b->nprev++;
  }
  qsort(b->prev, b->nprev, sizeof *b->prev, cmp_entry);
  json_decref(m);
  return 0;
}

static entry *find_prev(bk *b, const char *path) {
  entry key = {(char *)path, 0, "", 0, "", 0, 0};
  return b->nprev ? bsearch(&key, b->prev, b->nprev, sizeof *b->prev,
                            cmp_entry)
                  : NULL;
}

/* Copying and hashing ------------------------------------------------------------ */

/* Do src and dst hold the same bytes in [off, off+n)? */
static int same_range(bk *b, int src, int dst, uint64_t off, size_t n) {
  char *a = b->buf, *c = b->buf + COPY_BLOCK / 2;
  if (n > COPY_BLOCK / 2)
    n = COPY_BLOCK / 2;
  return jm__pread_full(src, a, n, (off_t)off) == (ssize_t)n &&
         jm__pread_full(dst, c, n, (off_t)off) == (ssize_t)n &&
         memcmp(a, c, n) == 0;
}

/* The mirror's drift checks: first 4 KiB and the 64 KiB before `base`. */
static int still_matches(bk *b, int src, int dst, uint64_t base) {
  size_t head = base < HEAD_SPAN ? (size_t)base : HEAD_SPAN;
  uint64_t tail = base > TAIL_SPAN ? base - TAIL_SPAN : 0;
  return same_range(b, src, dst, 0, head) &&
         same_range(b, src, dst, tail, (size_t)(base - tail));
}

static int copy_range(bk *b, int src, int dst, uint64_t from, uint64_t to,
                      const char *path) {
  while (from < to) {
    size_t n = to - from < COPY_BLOCK ? (size_t)(to - from) : COPY_BLOCK;
    ssize_t r = jm__pread_full(src, b->buf, n, (off_t)from);
    if (r != (ssize_t)n)
      return jm__errf(b->err, r < 0 ? (int)r : -EIO,
                      "cannot read the journal of '%s'", path);
    int rc = jm__pwrite_full(dst, b->buf, n, (off_t)from);
    if (rc != 0)
      return jm__errno_f(b->err, -rc, "cannot write '%s/%s'", b->dest, path);
    from += n;
    b->st->bytes_copied += n;
  }
  return 0;
}

/* SHA-256 of fd's [from, to) continuing c; saves the state at the last
 * 64-byte boundary into at/state. */
static int hash_range(bk *b, int fd, jm_sha256 *c, uint64_t from, uint64_t to,
                      uint64_t *at, char state[65]) {
  uint64_t boundary = to - to % 64;
  while (from < to) {
    uint64_t lim = from < boundary ? boundary : to;
    size_t n = lim - from < COPY_BLOCK ? (size_t)(lim - from) : COPY_BLOCK;
    ssize_t r = jm__pread_full(fd, b->buf, n, (off_t)from);
    if (r != (ssize_t)n)
      return r < 0 ? (int)r : -EIO;
    jm_sha256_update(c, b->buf, n);
    from += n;
    if (from == boundary) {
      jm_sha256_save(c, state);
      *at = boundary;
    }
  }
  return 0;
}

static int add_undo(bk *b, int fd, uint64_t size, const char *tmp,
                    const char *path) {
  if (b->nundo == b->capundo) {
    size_t cap = b->capundo ? b->capundo * 2 : 64;
    undo *u = realloc(b->undos, cap * sizeof *u);
    if (u == NULL)
      return -ENOMEM;
    b->undos = u;
    b->capundo = cap;
  }
  undo u = {fd, size, tmp ? jm__strdup(tmp) : NULL,
            path ? jm__strdup(path) : NULL};
  if (tmp && (u.tmp == NULL || u.path == NULL)) {
    free(u.tmp);
    free(u.path);
    return -ENOMEM;
  }
  b->undos[b->nundo++] = u;
  return 0;
}

/* An append to a file the previous manifest lists: keep a descriptor, so
 * that a failed run can cut it back to its old size. */
static int undo_append(bk *b, int dst, uint64_t size, const char *dp) {
  int fd = fcntl(dst, F_DUPFD_CLOEXEC, 0);
  if (fd < 0)
    return jm__errno_f(b->err, errno, "cannot duplicate the descriptor of "
                       "'%s'", dp);
  if (add_undo(b, fd, size, NULL, NULL) != 0) {
    jm__close(fd);
    return jm__errf(b->err, -ENOMEM, "out of memory");
  }
  return 0;
}

/* One file ------------------------------------------------------------------------- */

typedef struct onefile {
  const char *id;
  char path[JM_ID_MAX + 16]; /* "journal/<id>.jsonl" */
  int src, dst;
  uint64_t copy_len;         /* the root's bytes up to its last LF */
  uint64_t base;             /* bytes of the backup's copy kept */
  int whole;                 /* copied whole, into a temporary file */
  int shared;                /* the backup's copy has other hard links */
  entry *e;
} onefile;

static void note(bk *b, const char *id, const char *what) {
  if (b->opt->report)
    b->opt->report(b->opt->report_ctx, id, what);
}

/* Does the backup's copy still hold the bytes its manifest vouches for?
 * Asked only of a copy changed since the manifest was written (by a run
 * that was killed: its appends, or a whole copy renamed in just before the
 * kill), whose kept bytes would otherwise be trusted on the strength of
 * the head and tail checks against the root alone, and its hash resumed
 * from a state that no longer describes them.  Reads them all. */
static int still_vouched(bk *b, onefile *f, const struct stat *ds) {
  jm__file_state fs;
  jm__file_state_of(ds, &fs);
  if ((uint64_t)ds->st_size == f->base && fs.mtime_ns < b->manifest_mtime_ns)
    return 1; /* untouched since the manifest */
  jm_sha256 c;
  jm_sha256_init(&c);
  uint64_t at = 0;
  char state[65] = "", hex[65];
  unsigned char d[32];
  if (hash_range(b, f->dst, &c, 0, f->base, &at, state) != 0)
    return 0;
  jm_sha256_final(&c, d);
  jm_sha256_hex(d, hex);
  return strcmp(hex, f->e->sha) == 0;
}

/* The backup's copy must never be the root's file (a hard link to it, or
 * reached through a symbolic link): writing or cutting it back would change
 * the ground truth.  A copy that shares its inode with another file (a
 * hard-linked snapshot of an earlier backup, as `cp -al` or rsync
 * --link-dest make) is never changed in place either: plan() copies it
 * whole into a new file, which the rename at the end puts in its place. */
static int check_not_shared(bk *b, onefile *f, const struct stat *ss,
                            const char *dp) {
  struct stat ds;
  if (fstat(f->dst, &ds) != 0)
    return jm__errno_f(b->err, errno, "cannot stat '%s'", dp);
  if (ds.st_dev == ss->st_dev && ds.st_ino == ss->st_ino)
    return jm__errf(b->err, JM_EUSAGE,
                    "'%s' is the root's own journal file (a hard link?): "
                    "refusing to write into it", dp);
  f->shared = ds.st_nlink > 1;
  return 0;
}

/* Decide how much of the backup's copy can be kept. */
static int plan(bk *b, onefile *f) {
  struct stat ds;
  if (fstat(f->dst, &ds) != 0)
    return jm__errno_f(b->err, errno, "cannot stat '%s/%s'", b->dest, f->path);
  uint64_t dsize = (uint64_t)ds.st_size;
  f->base = f->e ? f->e->bytes : 0;
  const char *why = NULL;
  if (f->shared)
    why = "copied whole: the backup's copy is a hard link shared with "
          "another file, which must not change";
  else if (f->e && dsize < f->base)
    why = "copied whole: the backup's copy is shorter than its manifest says";
  else if (f->e && f->base > f->copy_len)
    why = "copied whole: it is shorter in the root than in the backup";
  else if (f->e && f->base > 0 && !still_matches(b, f->src, f->dst, f->base))
    why = "copied whole: the bytes the backup held no longer match the root";
  else if (f->e && f->base > 0 && !still_vouched(b, f, &ds))
    why = "copied whole: the backup's copy no longer matches its manifest";
  if (why) {
    note(b, f->id, why);
    b->st->recopied++;
    f->base = 0;
    f->e = NULL; /* its hash state is no use now */
    f->whole = 1;
    return 0;    /* the old copy stays as it is until the manifest */
  }
  if (dsize != f->base && jm__sys.ftruncate(f->dst, (off_t)f->base) != 0)
    return jm__errno_f(b->err, errno, "cannot truncate '%s/%s'", b->dest,
                       f->path);
  return 0;
}

/* The manifest entry of a file now holding copy_len bytes. */
static int finish_entry(bk *b, onefile *f) {
  jm_sha256 c;
  jm_sha256_init(&c);
  uint64_t from = 0, at = 0;
  char state[65] = "";
  if (f->e && f->e->state[0] && f->e->at <= f->base &&
      jm_sha256_load(&c, f->e->state, f->e->at) == 0) {
    from = at = f->e->at; /* only the new bytes (and < 64 before them) */
    snprintf(state, sizeof state, "%s", f->e->state);
  } else
    jm_sha256_init(&c);
  int rc = hash_range(b, f->dst, &c, from, f->copy_len, &at, state);
  if (rc != 0)
    return jm__errno_f(b->err, -rc, "cannot read '%s/%s'", b->dest, f->path);
  unsigned char d[32];
  char hex[65];
  jm_sha256_final(&c, d);
  jm_sha256_hex(d, hex);
  json_t *j = json_pack("{s:s,s:I,s:s,s:{s:I,s:s}}", "path", f->path, "bytes",
                        (json_int_t)f->copy_len, "sha256", hex, "resume", "at",
                        (json_int_t)at, "state", state);
  if (j == NULL || json_array_append_new(b->files, j) != 0)
    return jm__errf(b->err, -ENOMEM, "out of memory");
  b->st->bytes_total += f->copy_len;
  return 0;
}

static int backup_file(bk *b, const char *id) {
  onefile f;
  memset(&f, 0, sizeof f);
  f.id = id;
  f.dst = -1;
  snprintf(f.path, sizeof f.path, "journal/%s.jsonl", id);
  char *sp = jm_journal_path(b->root, id);
  char *dp = jm__path_join(b->dest, f.path);
  char *tp = jm__asprintf("%s/.%s.jsonl.copy", b->dest_journal, id);
  int rc = 0;
  if (sp == NULL || dp == NULL || tp == NULL) {
    rc = jm__errf(b->err, -ENOMEM, "out of memory");
    goto out;
  }
  f.src = jm__open(sp, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0);
  if (f.src == -ENOENT)
    goto out; /* gone since the scan: the next backup will say so */
  if (f.src < 0) {
    rc = jm__errno_f(b->err, -f.src, "cannot open '%s'", sp);
    goto out;
  }
  struct stat ss;
  fstat(f.src, &ss);
  f.copy_len = jm__last_lf(f.src, (uint64_t)ss.st_size);
  f.e = find_prev(b, f.path);
  if (f.e)
    f.e->seen = 1;
  f.dst = jm__open(dp, O_RDWR | O_CREAT | O_NOFOLLOW, 0600);
  if (f.dst < 0) {
    rc = jm__errno_f(b->err, -f.dst, "cannot open '%s'", dp);
    goto out;
  }
  if ((rc = check_not_shared(b, &f, &ss, dp)) != 0)
    goto out;
  if ((rc = plan(b, &f)) != 0)
    goto out;
  if (f.whole) { /* beside the old copy, which the old manifest describes */
    jm__close(f.dst);
    unlink(tp); /* a fresh file: never one that may be linked elsewhere */
    f.dst = jm__open(tp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
    if (f.dst < 0) {
      rc = jm__errno_f(b->err, -f.dst, "cannot create '%s'", tp);
      goto out;
    }
    if (add_undo(b, -1, 0, tp, dp) != 0) {
      unlink(tp);
      rc = jm__errf(b->err, -ENOMEM, "out of memory");
      goto out;
    }
  }
  int grew = f.copy_len > f.base;
  if (grew && f.e && !f.whole && (rc = undo_append(b, f.dst, f.base, dp)) != 0)
    goto out;
  if (grew && (rc = copy_range(b, f.src, f.dst, f.base, f.copy_len, f.path)))
    goto out;
  if ((grew || f.whole) && jm__sys.fsync(f.dst) != 0) {
    rc = jm__errno_f(b->err, errno, "cannot sync '%s'", f.whole ? tp : dp);
    goto out;
  }
  if ((rc = finish_entry(b, &f)) != 0)
    goto out;
  b->st->new_files += find_prev(b, f.path) == NULL;
  b->st->appended += grew && f.e != NULL;
  b->st->unchanged += !grew && f.e != NULL;
  b->st->files++;
out:
  b->done += f.copy_len;
  if (b->opt->progress)
    b->opt->progress(b->opt->progress_ctx, b->done, b->total);
  jm__close(f.src);
  jm__close(f.dst);
  free(sp);
  free(dp);
  free(tp);
  return rc;
}

/* Files the root no longer has: kept, listed as gone. */
static int keep_gone(bk *b) {
  for (size_t i = 0; i < b->nprev; i++) {
    entry *e = &b->prev[i];
    if (e->seen)
      continue;
    char *dp = jm__path_join(b->dest, e->path);
    struct stat st;
    int have = dp && stat(dp, &st) == 0 && (uint64_t)st.st_size >= e->bytes;
    free(dp);
    if (!have)
      continue;
    json_t *j = json_pack("{s:s,s:I,s:s,s:{s:I,s:s},s:b}", "path", e->path,
                          "bytes", (json_int_t)e->bytes, "sha256", e->sha,
                          "resume", "at", (json_int_t)e->at, "state", e->state,
                          "gone", 1);
    if (j == NULL || json_array_append_new(b->files, j) != 0)
      return jm__errf(b->err, -ENOMEM, "out of memory");
    if (!e->gone) { /* reported by id, like every other file */
      char id[JM_ID_MAX + 1];
      snprintf(id, sizeof id, "%.*s", (int)(strlen(e->path) - 14),
               e->path + 8);
      note(b, id, "kept: gone from the root");
    }
    b->st->kept++;
    b->st->files++;
    b->st->bytes_total += e->bytes;
  }
  return 0;
}

/* Is the existing directory `dir` the root, inside it, or the same
 * directory as `also` (NULL: none) by another path (a symbolic link, a bind
 * mount)?  1 yes, 0 no, or -errno. */
static int leads_back(const char *real_root, const char *dir,
                      const char *also) {
  char d[PATH_MAX];
  if (realpath(dir, d) == NULL)
    return -errno;
  size_t n = strlen(real_root);
  if (strcmp(real_root, d) == 0 ||
      (strncmp(real_root, d, n) == 0 && d[n] == '/'))
    return 1;
  struct stat as, ds;
  return also && stat(also, &as) == 0 && stat(d, &ds) == 0 &&
         as.st_dev == ds.st_dev && as.st_ino == ds.st_ino;
}

/* DEST/journal or DEST/mirror, now created, must not lead back into the
 * root (or to the live mirror's directory): a symlink there would have
 * the backup write, cut back, or rename over the ground truth itself. */
static int check_dest_dir(bk *b, const char *dir, const char *also) {
  int rc = leads_back(b->real_root, dir, also);
  if (rc < 0)
    return jm__errno_f(b->err, -rc, "cannot resolve '%s'", dir);
  if (rc > 0)
    return jm__errf(b->err, JM_EUSAGE,
                    "'%s' leads into the root '%s' (a symbolic link or a "
                    "mount?): refusing to back the root up into itself",
                    dir, b->root);
  return 0;
}

/* The mirror snapshot --------------------------------------------------------------- */

static int hash_file(const char *path, uint64_t *size, char hex[65],
                     char *buf) {
  int fd = jm__open(path, O_RDONLY, 0);
  if (fd < 0)
    return fd;
  jm_sha256 c;
  jm_sha256_init(&c);
  ssize_t n;
  uint64_t off = 0;
  while ((n = jm__pread_full(fd, buf, COPY_BLOCK, (off_t)off)) > 0) {
    jm_sha256_update(&c, buf, (size_t)n);
    off += (uint64_t)n;
  }
  jm__close(fd);
  if (n < 0)
    return (int)n;
  unsigned char d[32];
  jm_sha256_final(&c, d);
  jm_sha256_hex(d, hex);
  *size = off;
  return 0;
}

/* --with-mirror: the mirror is opened (read-only) before anything is
 * written, so that a root without one fails with DEST untouched. */
static int open_mirror(bk *b) {
  jm_mirror_options mo = {.db_path = b->opt->db_path, .read_only = 1};
  int rc = jm_mirror_open(&b->mirror, b->root, &mo, b->err);
  if (rc == -ENOENT) {
    char *db = jm_mirror_resolve_path(b->root, &mo);
    rc = jm__errf(b->err, -ENOENT, "no mirror to snapshot at '%s' (run "
                  "'jmirror ingest' first, or back up without --with-mirror)",
                  db ? db : "?");
    free(db);
  }
  if (rc != 0)
    b->mirror = NULL;
  return rc;
}

/* VACUUM INTO a temp file (created 0600 first: it holds every conversation)
 * and sync it: never a raw copy of a live mirror.  It replaces the old
 * snapshot with the whole copies, just before the manifest. */
static int snapshot_mirror(bk *b, json_t **out) {
  jm_mirror *m = b->mirror;
  int rc = 0;
  char *dir = jm__path_join(b->dest, "mirror");
  char *tmp = dir ? jm__path_join(dir, "mirror.db.tmp") : NULL;
  char *tjournal = tmp ? jm__asprintf("%s-journal", tmp) : NULL;
  char *fin = dir ? jm__path_join(dir, "mirror.db") : NULL;
  sqlite3_stmt *st = NULL;
  if (!dir || !tmp || !tjournal || !fin) {
    rc = jm__errf(b->err, -ENOMEM, "out of memory");
    goto out;
  }
  if ((rc = jm__mkdirs(dir)) != 0) {
    rc = jm__errno_f(b->err, -rc, "cannot create '%s'", dir);
    goto out;
  }
  char *live = jm__strdup(m->db_path), *slash = live ? strrchr(live, '/') : 0;
  if (slash)
    *slash = '\0';
  rc = check_dest_dir(b, dir, slash ? live : NULL);
  free(live);
  if (rc != 0)
    goto out;
  unlink(tmp);
  unlink(tjournal); /* a killed run's: never rolled back into a new one */
  int fd = jm__open(tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
  if (fd < 0) {
    rc = jm__errno_f(b->err, -fd, "cannot create '%s'", tmp);
    goto out;
  }
  jm__close(fd);
  if (sqlite3_prepare_v2(m->db, "VACUUM INTO ?1", -1, &st, NULL) != SQLITE_OK) {
    rc = jm__sql_err(m, b->err, "cannot snapshot the mirror");
    goto fail;
  }
  sqlite3_bind_text(st, 1, tmp, -1, SQLITE_STATIC);
  int s = sqlite3_step(st);
  if (s != SQLITE_DONE) {
    rc = jm__errf(b->err, (s & 0xff) == SQLITE_FULL ? -ENOSPC : JM_ESQLITE,
                  "cannot snapshot the mirror into '%s': %s", tmp,
                  (s & 0xff) == SQLITE_FULL ? "No space left on device"
                                            : sqlite3_errmsg(m->db));
    goto fail;
  }
  fd = jm__open(tmp, O_RDONLY, 0);
  rc = fd < 0 || jm__sys.fsync(fd) != 0 ? -EIO : 0;
  jm__close(fd);
  if (rc != 0) {
    jm__errno_f(b->err, -rc, "cannot sync the mirror snapshot '%s'", tmp);
    goto fail;
  }
  char hex[65];
  uint64_t size = 0;
  if ((rc = hash_file(tmp, &size, hex, b->buf)) != 0) {
    rc = jm__errno_f(b->err, -rc, "cannot read '%s'", tmp);
    goto fail;
  }
  if (add_undo(b, -1, 0, tmp, fin) != 0) {
    rc = jm__errf(b->err, -ENOMEM, "out of memory");
    goto fail;
  }
  b->st->mirror_bytes = size;
  *out = json_pack("{s:s,s:I,s:s}", "path", "mirror/mirror.db", "bytes",
                   (json_int_t)size, "sha256", hex);
  goto out;
fail:
  unlink(tmp);
  unlink(tjournal);
out:
  sqlite3_finalize(st);
  free(dir);
  free(tmp);
  free(tjournal);
  free(fin);
  return rc;
}

/* Put the whole copies (and the snapshot) in place of the old ones, each
 * directory synced: the last step before the manifest is renamed. */
static int commit_copies(bk *b) {
  for (size_t i = 0; i < b->nundo; i++) {
    undo *u = &b->undos[i];
    if (u->tmp == NULL)
      continue;
    if (jm__sys.rename(u->tmp, u->path) != 0)
      return jm__errno_f(b->err, errno, "cannot rename '%s' to '%s'", u->tmp,
                         u->path);
    free(u->tmp);
    u->tmp = NULL;
    char *slash = strrchr(u->path, '/');
    *slash = '\0';
    int rc = jm__fsync_dir(u->path);
    if (rc != 0)
      return jm__errno_f(b->err, -rc, "cannot sync '%s'", u->path);
    *slash = '/';
  }
  return 0;
}

/* Set-up and the whole run ------------------------------------------------------------ */

/* Where `path` will be once created: the real path of its longest
 * existing prefix, with the rest appended. */
static int resolve_future(const char *path, char out[PATH_MAX]) {
  char *p = jm__strdup(path);
  if (p == NULL)
    return -ENOMEM;
  char *cut = NULL;
  int rc = -ENOENT;
  for (;;) {
    char tmp[PATH_MAX];
    if (realpath(p[0] ? p : "/", tmp) != NULL) {
      rc = snprintf(out, PATH_MAX, "%s%s%s", tmp, cut ? "/" : "",
                    cut ? path + (cut - p) + 1 : "") >= PATH_MAX
               ? -ENAMETOOLONG
               : 0;
      break;
    }
    char *slash = strrchr(p, '/');
    if (slash == NULL) { /* relative, nothing exists: from the cwd */
      if (realpath(".", tmp) == NULL)
        break;
      rc = snprintf(out, PATH_MAX, "%s/%s", tmp, path) >= PATH_MAX
               ? -ENAMETOOLONG
               : 0;
      break;
    }
    *slash = '\0';
    cut = slash;
  }
  free(p);
  return rc;
}

/* One backup into a DEST at a time: flock on DEST/.lock, exclusive, not
 * waited for.  A --check (`check`) never writes: it opens DEST/.lock
 * read-only, if it is there, and holds it shared, so that no backup
 * renames files or the manifest under it; a backup running now is not
 * waited for either (its files are in flux). */
static int lock_dest(const char *dest, int check, int *fd, jm_error *err) {
  char *p = jm__path_join(dest, ".lock");
  if (p == NULL)
    return jm__errf(err, -ENOMEM, "out of memory");
  *fd = check ? jm__open(p, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0)
              : jm__open(p, O_RDWR | O_CREAT, 0600);
  int rc = 0;
  if (*fd < 0 && !check)
    rc = jm__errno_f(err, -*fd, "cannot open '%s'", p);
  else if (*fd >= 0 && flock(*fd, (check ? LOCK_SH : LOCK_EX) | LOCK_NB))
    rc = errno != EWOULDBLOCK
             ? jm__errno_f(err, errno, "cannot lock '%s'", p)
         : check ? jm__errf(err, JM_ELOCKED, "a backup into '%s' is running: "
                            "check it once it has finished", dest)
                 : jm__errf(err, JM_ELOCKED, "another backup into '%s' (or "
                            "a --check of it) is running", dest);
  free(p);
  return rc;
}

/* DEST must not be the root or inside it (a backup of itself): decided
 * before anything is created. */
static int check_dest(const char *r, const char *root, const char *dest,
                      jm_error *err) {
  char d[PATH_MAX];
  int rc = resolve_future(dest, d);
  if (rc != 0)
    return jm__errno_f(err, -rc, "cannot resolve '%s'", dest);
  size_t n = strlen(r);
  if (strcmp(r, d) == 0 || (strncmp(r, d, n) == 0 && d[n] == '/'))
    return jm__errf(err, JM_EUSAGE,
                    "backup directory '%s' is inside the root '%s': choose "
                    "a directory outside it", dest, root);
  if ((rc = jm__mkdirs(dest)) != 0)
    return jm__errno_f(err, -rc, "cannot create backup directory '%s'", dest);
  if (access(dest, W_OK) != 0)
    return jm__errno_f(err, errno, "cannot write to backup directory '%s'",
                       dest);
  return 0;
}

/* Before anything is copied: no file of DEST/journal that this run would
 * write may be a symbolic link or the root's own file (a hard-link copy
 * of the root, `cp -al ROOT DEST`).  backup_file() checks each again on
 * the descriptor it writes (O_NOFOLLOW, fstat); this is so that such a
 * DEST is refused with nothing changed at all. */
static int check_dest_files(bk *b) {
  for (size_t i = 0; i < b->nids; i++) {
    char *sp = jm_journal_path(b->root, b->ids[i]);
    char *dp = jm__asprintf("%s/%s.jsonl", b->dest_journal, b->ids[i]);
    struct stat ss, ds;
    int rc = 0;
    if (sp == NULL || dp == NULL)
      rc = jm__errf(b->err, -ENOMEM, "out of memory");
    else if (lstat(dp, &ds) != 0)
      ; /* not there yet (or unreadable: the copy says why) */
    else if (S_ISLNK(ds.st_mode))
      rc = jm__errf(b->err, JM_EUSAGE, "'%s' is a symbolic link: refusing "
                    "to write through it (remove it)", dp);
    else if (stat(sp, &ss) == 0 && ss.st_dev == ds.st_dev &&
             ss.st_ino == ds.st_ino)
      rc = jm__errf(b->err, JM_EUSAGE,
                    "'%s' is the root's own journal file (a hard link?): "
                    "refusing to write into it", dp);
    free(sp);
    free(dp);
    if (rc != 0)
      return rc;
  }
  return 0;
}

/* What an interrupted run left that no manifest vouches for: its
 * MANIFEST.json.tmp.<pid> and journal/.<id>.jsonl.copy files.  Only ever
 * called with DEST locked, so none of them belongs to a running backup. */
static void remove_leftovers(bk *b) {
  const char *dirs[2] = {b->dest, b->dest_journal};
  for (int k = 0; k < 2; k++) {
    DIR *d = opendir(dirs[k]);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
      const char *n = de->d_name;
      size_t len = strlen(n);
      int ours = k == 0 ? strncmp(n, "MANIFEST.json.tmp.", 18) == 0
                        : n[0] == '.' && len > 12 &&
                              strcmp(n + len - 11, ".jsonl.copy") == 0;
      if (ours)
        unlinkat(dirfd(d), n, 0);
    }
    if (d)
      closedir(d);
  }
}

static int collect_id(void *ctx, const char *id) {
  bk *b = ctx;
  if (b->nids == b->capids) {
    size_t cap = b->capids ? b->capids * 2 : 256;
    char **v = realloc(b->ids, cap * sizeof *v);
    if (v == NULL)
      return -ENOMEM;
    b->ids = v;
    b->capids = cap;
  }
  if ((b->ids[b->nids] = jm__strdup(id)) == NULL)
    return -ENOMEM;
  char *p = jm_journal_path(b->root, id);
  struct stat st;
  if (p && stat(p, &st) == 0)
    b->total += (uint64_t)st.st_size;
  free(p);
  b->nids++;
  return 0;
}

/* The manifest: written to a temporary file and synced first (a full disk
 * fails here, with the old copies still in place), then the whole copies
 * are put in place, then it is renamed over the old manifest. */
static int write_manifest(bk *b, json_t *mirror) {
  char ts[JM_TS_LEN + 1];
  jm_ts_now(ts);
  int rc = 0;
  json_t *m = json_pack("{s:s,s:i,s:s,s:s,s:s,s:O,s:o?}", "format",
                        "jmirror-backup", "version", 1, "created_at", ts,
                        "jmirror", JM_VERSION_STRING, "root", b->real_root,
                        "files", b->files, "mirror", mirror);
  char *s = m ? json_dumps(m, JSON_INDENT(1)) : NULL;
  json_decref(m);
  char *path = jm__path_join(b->dest, "MANIFEST.json");
  char *tmp =
      jm__asprintf("%s/MANIFEST.json.tmp.%ld", b->dest, (long)getpid());
  if (s == NULL || path == NULL || tmp == NULL) {
    rc = jm__errf(b->err, -ENOMEM, "out of memory");
    goto out;
  }
  int fd = jm__open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    rc = jm__errno_f(b->err, -fd, "cannot create '%s'", tmp);
    goto out;
  }
  rc = jm__write_full(fd, s, strlen(s), NULL);
  if (rc == 0 && jm__sys.fsync(fd) != 0)
    rc = -errno;
  jm__close(fd);
  if (rc != 0) {
    jm__errno_f(b->err, -rc, "cannot write '%s'", tmp);
    unlink(tmp);
    goto out;
  }
  if ((rc = commit_copies(b)) != 0) {
    unlink(tmp);
    goto out;
  }
  if ((rc = jm__fsync_dir(b->dest_journal)) != 0) {
    jm__errno_f(b->err, -rc, "cannot sync '%s'", b->dest_journal);
    unlink(tmp);
    goto out;
  }
  if (jm__sys.rename(tmp, path) != 0) {
    rc = jm__errno_f(b->err, errno, "cannot rename '%s' to '%s'", tmp, path);
    unlink(tmp);
    goto out;
  }
  b->committed = 1; /* even if the sync below fails: it vouches for them */
  if ((rc = jm__fsync_dir(b->dest)) != 0)
    jm__errno_f(b->err, -rc, "cannot sync '%s'", b->dest);
out:
  free(s);
  free(path);
  free(tmp);
  return rc;
}

static void bk_free(bk *b, int failed) {
  for (size_t i = 0; i < b->nundo; i++) {
    undo *u = &b->undos[i];
    if (failed && !b->committed && u->fd >= 0) /* not vouched for: cut back */
      if (jm__sys.ftruncate(u->fd, (off_t)u->size) == 0)
        jm__sys.fsync(u->fd);
    if (u->tmp) /* a whole copy never put in place */
      unlink(u->tmp);
    jm__close(u->fd);
    free(u->tmp);
    free(u->path);
  }
  free(b->undos);
  for (size_t i = 0; i < b->nprev; i++)
    free(b->prev[i].path);
  free(b->prev);
  for (size_t i = 0; i < b->nids; i++)
    free(b->ids[i]);
  free(b->ids);
  json_decref(b->files);
  free(b->buf);
  free(b->dest_journal);
  jm_mirror_close(b->mirror);
}

/* Everything before the first byte is copied: the checks that refuse a
 * DEST (each before whatever it guards is written), the lock, the previous
 * manifest, the root's conversations. */
static int prepare(bk *b, int *lock_fd) {
  int rc = 0;
  if (b->dest == NULL || b->dest[0] == '\0')
    rc = jm__errf(b->err, JM_EUSAGE, "the backup directory is an empty "
                  "string: give a directory outside the root");
  else if (!b->files || !b->buf || !b->dest_journal)
    rc = jm__errf(b->err, -ENOMEM, "out of memory");
  else if (realpath(b->root, b->real_root) == NULL)
    rc = jm__errno_f(b->err, errno, "cannot find the root '%s'", b->root);
  if (rc == 0 && b->opt->with_mirror)
    rc = open_mirror(b);
  if (rc == 0)
    rc = check_dest(b->real_root, b->root, b->dest, b->err);
  if (rc == 0)
    rc = lock_dest(b->dest, 0, lock_fd, b->err);
  if (rc == 0 && (rc = jm__mkdirs(b->dest_journal)) != 0)
    jm__errno_f(b->err, -rc, "cannot create '%s'", b->dest_journal);
  char *rj = rc == 0 ? jm__path_join(b->root, "journal") : NULL;
  if (rc == 0)
    rc = rj ? check_dest_dir(b, b->dest_journal, rj)
            : jm__errf(b->err, -ENOMEM, "out of memory");
  free(rj);
  if (rc == 0)
    rc = prev_entries(b, b->err);
  if (rc == 0) {
    rc = jm_journal_scan(b->root, collect_id, b, NULL, b->err);
    if (rc == -ENOENT) { /* no journal yet: an empty backup */
      jm_error_clear(b->err);
      rc = 0;
    }
  }
  if (rc == 0)
    rc = check_dest_files(b);
  if (rc == 0) /* DEST is accepted: what a killed run left can go */
    remove_leftovers(b);
  return rc;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int jm_backup(const char *root, const char *dest, const jm_backup_options *opt,
              jm_backup_stats *st, jm_error *err) {
  jm_backup_options none = {0};
  jm_backup_stats tmp;
  if (st == NULL)
    st = &tmp;
  memset(st, 0, sizeof *st);
  double t0 = now_s();
  bk b = {0};
  b.root = root;
  b.dest = dest;
  b.opt = opt ? opt : &none;
  b.st = st;
  b.err = err;
  b.files = json_array();
  b.buf = malloc(COPY_BLOCK);
  b.dest_journal = dest ? jm__path_join(dest, "journal") : NULL;
  int lock_fd = -1;
  int rc = prepare(&b, &lock_fd);
  /* The mirror's snapshot before the journal's copy: the mirror never runs
   * ahead of the journal, so the journal copied after it holds every line
   * the snapshot has rows for (and maybe more, which a replay adds). */
  json_t *mirror = NULL;
  if (rc == 0 && b.opt->with_mirror)
    rc = snapshot_mirror(&b, &mirror);
  for (size_t i = 0; rc == 0 && i < b.nids; i++)
    rc = backup_file(&b, b.ids[i]);
  if (rc == 0)
    rc = keep_gone(&b);
  if (rc == 0)
    rc = write_manifest(&b, mirror);
  else
    json_decref(mirror);
  bk_free(&b, rc != 0);
  jm__close(lock_fd); /* releases the flock */
  st->seconds = now_s() - t0;
  return rc;
}

/* Checking a backup ------------------------------------------------------------------ */

typedef struct checker {
  const char *dest;
  void (*report)(void *ctx, const char *path, const char *problem);
  void *ctx;
  jm_progress_fn progress;
  void *progress_ctx;
  uint64_t done, total;
  char *buf;
  jm_backup_check_result *out;
} checker;

static void problem(checker *c, const char *path, const char *fmt, ...)
    JM__PRINTF(3, 4);

static void problem(checker *c, const char *path, const char *fmt, ...) {
  if (c->report == NULL)
    return;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  c->report(c->ctx, path, msg);
}

/* Hash the first `bytes` bytes of DEST/path and compare. 1 ok, 0 bad. */
static int check_one(checker *c, const char *path, uint64_t bytes,
                     const char *sha) {
  char *p = jm__path_join(c->dest, path);
  int fd = p ? jm__open(p, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0) : -ENOMEM;
  free(p);
  if (fd < 0) {
    problem(c, path, "missing: %s", strerror(-fd));
    return 0;
  }
  struct stat st;
  fstat(fd, &st);
  if ((uint64_t)st.st_size < bytes) {
    problem(c, path, "has %llu bytes, the manifest says %llu",
            (unsigned long long)st.st_size, (unsigned long long)bytes);
    jm__close(fd);
    return 0;
  }
  if ((uint64_t)st.st_size > bytes)
    problem(c, path, "note: %llu bytes beyond the manifest (left by an "
            "interrupted backup; the next backup removes them)",
            (unsigned long long)((uint64_t)st.st_size - bytes));
  jm_sha256 h;
  jm_sha256_init(&h);
  uint64_t off = 0;
  while (off < bytes) {
    size_t n = bytes - off < COPY_BLOCK ? (size_t)(bytes - off) : COPY_BLOCK;
    if (jm__pread_full(fd, c->buf, n, (off_t)off) != (ssize_t)n)
      break;
    jm_sha256_update(&h, c->buf, n);
    off += n;
    c->done += n;
    if (c->progress)
      c->progress(c->progress_ctx, c->done, c->total);
  }
  jm__close(fd);
  unsigned char d[32];
  char hex[65];
  jm_sha256_final(&h, d);
  jm_sha256_hex(d, hex);
  if (off < bytes || strcmp(hex, sha) != 0) {
    problem(c, path, "SHA-256 differs from the manifest (damaged copy)");
    return 0;
  }
  return 1;
}

static int listed(json_t *files, const char *path) {
  size_t i;
  json_t *f;
  json_array_foreach(files, i, f) {
    const char *p = json_string_value(json_object_get(f, "path"));
    if (p && strcmp(p, path) == 0)
      return 1;
  }
  return 0;
}

/* Files in DEST/journal that the manifest does not list. */
static void find_extra(checker *c, json_t *files) {
  char *jd = jm__path_join(c->dest, "journal");
  DIR *d = jd ? opendir(jd) : NULL;
  struct dirent *de;
  while (d && (de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.')
      continue;
    char path[512];
    snprintf(path, sizeof path, "journal/%s", de->d_name);
    if (!listed(files, path)) {
      c->out->extra++;
      problem(c, path, "not in the manifest (not part of this backup)");
    }
  }
  if (d)
    closedir(d);
  free(jd);
}

static int check_locked(const char *dest,
                        void (*report)(void *ctx, const char *path,
                                       const char *problem),
                        void *ctx, jm_progress_fn progress,
                        void *progress_ctx, jm_backup_check_result *out,
                        jm_error *err) {
  json_t *m = NULL;
  int rc = load_manifest(dest, &m, err);
  if (rc == -ENOENT)
    return jm__errf(err, JM_ENOTFOUND,
                    "'%s' holds no backup (no MANIFEST.json)", dest);
  if (rc != 0)
    return rc;
  checker c = {dest, report, ctx, progress, progress_ctx, 0, 0,
               malloc(COPY_BLOCK), out};
  json_t *files = json_object_get(m, "files");
  size_t i;
  json_t *f;
  json_array_foreach(files, i, f)
    c.total += (uint64_t)json_integer_value(json_object_get(f, "bytes"));
  json_array_foreach(files, i, f) {
    const char *p = json_string_value(json_object_get(f, "path"));
    const char *sha = json_string_value(json_object_get(f, "sha256"));
    out->files++;
    if (p == NULL || sha == NULL || !valid_path(p)) {
      out->bad++;
      problem(&c, p ? p : "?", "malformed manifest entry");
      continue;
    }
    if (c.buf && check_one(&c, p, (uint64_t)json_integer_value(
                                       json_object_get(f, "bytes")),
                           sha))
      out->ok++;
    else
      out->bad++;
  }
  json_t *mir = json_object_get(m, "mirror");
  if (json_is_object(mir) && c.buf)
    out->mirror = check_one(&c, "mirror/mirror.db",
                            (uint64_t)json_integer_value(
                                json_object_get(mir, "bytes")),
                            json_is_string(json_object_get(mir, "sha256"))
                                ? json_string_value(json_object_get(mir, "sha256"))
                                : "");
  find_extra(&c, files);
  free(c.buf);
  json_decref(m);
  return 0;
}

int jm_backup_check(const char *dest,
                    void (*report)(void *ctx, const char *path,
                                   const char *problem),
                    void *ctx, jm_progress_fn progress, void *progress_ctx,
                    jm_backup_check_result *out, jm_error *err) {
  jm_backup_check_result tmp;
  if (out == NULL)
    out = &tmp;
  memset(out, 0, sizeof *out);
  out->mirror = -1;
  if (dest == NULL || dest[0] == '\0')
    return jm__errf(err, JM_EUSAGE, "the backup directory is an empty "
                    "string: give the directory to check");
  int lock_fd = -1;
  int rc = lock_dest(dest, 1, &lock_fd, err);
  if (rc == 0)
    rc = check_locked(dest, report, ctx, progress, progress_ctx, out, err);
  jm__close(lock_fd);
  return rc;
}
