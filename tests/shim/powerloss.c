/*
 * powerloss.c - an LD_PRELOAD shim for the crash and fault tests (Linux).
 *
 * It wraps write, pwrite, pwrite64, fsync, fdatasync, ftruncate(64) and
 * close of the program it is preloaded into, and does two things, each
 * only for files under a directory named in the environment:
 *
 * 1. Records what is durable (JM_SHIM_DIR + JM_SHIM_STATE).
 *    The model of a power loss used by tests/e2e/test_crash.py:
 *      - after fsync(fd) or fdatasync(fd) returns 0, the file's bytes up to
 *        its size *at the start of that call* are on stable storage (POSIX:
 *        the call covers every write that returned before it);
 *      - after fsync of a directory returns 0, the entries it held at the
 *        start of the call exist after a power loss (a new file whose
 *        directory was never synced may vanish);
 *      - everything else may be lost: the bytes after the synced size may
 *        be gone, or partly there (any prefix of them), or replaced by
 *        zeros (a size update that reached the disk before the data).
 *    For each file it keeps, in JM_SHIM_STATE, "<relpath>.synced" holding
 *    the greatest synced size (20 decimal digits, updated under flock so
 *    that concurrent processes never move it backwards) and, for each
 *    directory entry made durable, an empty "<relpath>.dirent".  relpath
 *    is the path under JM_SHIM_DIR with '/' written as '%2F'.  The test
 *    then "loses power" by cutting every file to what the model allows.
 *    Limits: only append-only files are modelled (a journal; not SQLite's
 *    in-place page writes, which the tests never cut); an ftruncate is
 *    taken as durable at once; rename is not tracked; the model is the
 *    POSIX promise, stricter than ext4's data=ordered (which never shows
 *    zeros) and looser than a disk that lies about flushes (nothing can
 *    test that from user space).
 *
 * 2. Injects faults (JM_FAULT_DIR + JM_FAULT_CTL).
 *    Before each write/pwrite/fsync/fdatasync/close of a file under
 *    JM_FAULT_DIR, the first word of the file JM_FAULT_CTL says what to do
 *    (read on every call, so a test can switch faults on and off while the
 *    program runs; a missing file is "ok"):
 *      ok          pass through
 *      enospc      writes fail with ENOSPC, nothing written
 *      eio         writes fail with EIO, nothing written
 *      short       a write writes half its bytes and returns that count;
 *                  the next write fails with ENOSPC (the disk filled up)
 *      fsync-eio   fsync/fdatasync do the real sync, then report EIO (a
 *                  writeback error); nothing is recorded as durable
 *      close-eio   close closes, then reports EIO
 *    "word@N" lets the first N matching calls of this process pass first.
 *    Every injected fault appends one line "pid op path" to JM_FAULT_LOG,
 *    so that a test can tell that the fault was reached.
 *
 * Built by meson as a shared_module; tests find it in $JM_SHIM.
 */
/* Plain names: with 64-bit file offsets the headers would rename pwrite
 * and ftruncate to their *64 twins, which are wrapped separately. */
#undef _FILE_OFFSET_BITS
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef int (*fd_fn)(int);
typedef int (*trunc_fn)(int, off_t);

static write_fn real_write_p;
static pwrite_fn real_pwrite_p, real_pwrite64_p;
static fd_fn real_fsync_p, real_fdatasync_p, real_close_p;
static trunc_fn real_ftruncate_p, real_ftruncate64_p;

/* The next definition of `name` (libc's, or a sanitizer's interceptor). */
static void *next(const char *name) {
  void *p = dlsym(RTLD_NEXT, name);
  if (p == NULL)
    abort(); /* cannot happen with glibc */
  return p;
}

/* The real calls, looked up on first use. */
static write_fn real_write(void) {
  if (real_write_p == NULL)
    real_write_p = (write_fn)next("write");
  return real_write_p;
}
static pwrite_fn real_pwrite(void) {
  if (real_pwrite_p == NULL)
    real_pwrite_p = (pwrite_fn)next("pwrite");
  return real_pwrite_p;
}
static pwrite_fn real_pwrite64(void) {
  if (real_pwrite64_p == NULL)
    real_pwrite64_p = (pwrite_fn)next("pwrite64");
  return real_pwrite64_p;
}
static fd_fn real_fsync(void) {
  if (real_fsync_p == NULL)
    real_fsync_p = (fd_fn)next("fsync");
  return real_fsync_p;
}
static fd_fn real_fdatasync(void) {
  if (real_fdatasync_p == NULL)
    real_fdatasync_p = (fd_fn)next("fdatasync");
  return real_fdatasync_p;
}
static fd_fn real_close(void) {
  if (real_close_p == NULL)
    real_close_p = (fd_fn)next("close");
  return real_close_p;
}
static trunc_fn real_ftruncate(void) {
  if (real_ftruncate_p == NULL)
    real_ftruncate_p = (trunc_fn)next("ftruncate");
  return real_ftruncate_p;
}
static trunc_fn real_ftruncate64(void) {
  if (real_ftruncate64_p == NULL)
    real_ftruncate64_p = (trunc_fn)next("ftruncate64");
  return real_ftruncate64_p;
}

/* Paths ----------------------------------------------------------------------- */

/* The path of fd (readlink of /proc/self/fd/N); 0 if unknown or deleted. */
static int fd_path(int fd, char out[PATH_MAX]) {
  char link[64];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, out, PATH_MAX - 1);
  if (n <= 0)
    return 0;
  out[n] = '\0';
  if (n > 10 && strcmp(out + n - 10, " (deleted)") == 0)
    return 0;
  return 1;
}

/* Is `path` `dir` or under it?  *rel points at the part after "dir/". */
static int under(const char *path, const char *dir, const char **rel) {
  if (dir == NULL || dir[0] == '\0')
    return 0;
  size_t n = strlen(dir);
  while (n > 1 && dir[n - 1] == '/')
    n--;
  if (strncmp(path, dir, n) != 0 || (path[n] != '/' && path[n] != '\0'))
    return 0;
  *rel = path[n] == '/' ? path + n + 1 : path + n;
  return 1;
}

/* "<state>/<rel with / as %2F><suffix>" */
static int state_file(const char *rel, const char *suffix, char out[PATH_MAX]) {
  const char *state = getenv("JM_SHIM_STATE");
  if (state == NULL || state[0] == '\0')
    return 0;
  size_t k = (size_t)snprintf(out, PATH_MAX, "%s/", state);
  for (const char *p = rel; *p && k + 4 < PATH_MAX; p++) {
    if (*p == '/') {
      memcpy(out + k, "%2F", 3);
      k += 3;
    } else
      out[k++] = *p;
  }
  out[k] = '\0';
  return snprintf(out + k, PATH_MAX - k, "%s", suffix) < (int)(PATH_MAX - k);
}

/* Faults ---------------------------------------------------------------------- */

static int passed; /* matching calls let through because of "@N" */

/* The fault in force for a call on fd that `applies` to it, or "": the
 * first word of JM_FAULT_CTL, minus the "@N" calls still to let through. */
static void fault_word(int fd, int (*applies)(const char *), char word[32],
                       char path[PATH_MAX]) {
  word[0] = '\0';
  const char *ctl = getenv("JM_FAULT_CTL");
  const char *dir = getenv("JM_FAULT_DIR");
  const char *rel;
  if (ctl == NULL || !fd_path(fd, path) || !under(path, dir, &rel))
    return;
  int c = open(ctl, O_RDONLY | O_CLOEXEC);
  if (c < 0)
    return;
  char buf[64];
  ssize_t n = pread(c, buf, sizeof buf - 1, 0);
  real_close()(c);
  if (n <= 0)
    return;
  buf[n] = '\0';
  buf[strcspn(buf, " \t\r\n")] = '\0';
  char *at = strchr(buf, '@');
  long skip = 0;
  if (at) {
    *at = '\0';
    skip = strtol(at + 1, NULL, 10);
  }
  if (!applies(buf))
    return;
  if (passed < skip) {
    passed++;
    return;
  }
  snprintf(word, 32, "%s", buf);
}

static int is_write_fault(const char *w) {
  return strcmp(w, "enospc") == 0 || strcmp(w, "eio") == 0 ||
         strcmp(w, "short") == 0;
}

static int is_sync_fault(const char *w) { return strcmp(w, "fsync-eio") == 0; }

static int is_close_fault(const char *w) { return strcmp(w, "close-eio") == 0; }

static void fault_log(const char *op, const char *path) {
  const char *log = getenv("JM_FAULT_LOG");
  if (log == NULL || log[0] == '\0')
    return;
  int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return;
  char line[PATH_MAX + 64];
  int n = snprintf(line, sizeof line, "%ld %s %s\n", (long)getpid(), op, path);
  if (n > (int)sizeof line)
    n = (int)sizeof line;
  real_write()(fd, line, (size_t)n);
  real_close()(fd);
}

static int short_pending; /* "short": the next write fails with ENOSPC */

/* Decide a write of n bytes: -1 with errno set (fail), else the number of
 * bytes to pass to the real call. */
static ssize_t write_fault(int fd, size_t n, const char *op) {
  char word[32], path[PATH_MAX];
  fault_word(fd, is_write_fault, word, path);
  if (word[0] == '\0') {
    short_pending = 0;
    return (ssize_t)n;
  }
  if (strcmp(word, "enospc") == 0 || strcmp(word, "eio") == 0 ||
      (strcmp(word, "short") == 0 && short_pending)) {
    short_pending = 0;
    fault_log(op, path);
    errno = word[1] == 'i' ? EIO : ENOSPC;
    return -1;
  }
  if (strcmp(word, "short") == 0 && n > 1) {
    short_pending = 1;
    fault_log(op, path);
    return (ssize_t)(n / 2);
  }
  return (ssize_t)n;
}

/* Durability records ------------------------------------------------------------ */

/* Raise "<rel>.synced" to `size` if it is lower (flock'd: processes race). */
static void record_synced(const char *rel, off_t size) {
  char p[PATH_MAX];
  if (!state_file(rel, ".synced", p))
    return;
  int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return;
  while (flock(fd, LOCK_EX) != 0 && errno == EINTR)
    ;
  char buf[32] = {0};
  long long old = 0;
  if (pread(fd, buf, sizeof buf - 1, 0) > 0)
    old = atoll(buf);
  if ((long long)size > old) {
    /* Fixed width: one small pwrite, never a torn number. */
    int n = snprintf(buf, sizeof buf, "%020lld\n", (long long)size);
    real_pwrite()(fd, buf, (size_t)n, 0);
  }
  real_close()(fd); /* also drops the lock */
}

/* A file cut below its synced size is synced only up to the cut: bytes
 * written after it are new. */
static void after_truncate(int fd, off_t len) {
  char path[PATH_MAX], p[PATH_MAX];
  const char *rel;
  if (getenv("JM_SHIM_STATE") == NULL || !fd_path(fd, path) ||
      !under(path, getenv("JM_SHIM_DIR"), &rel) ||
      !state_file(rel, ".synced", p))
    return;
  int e = errno;
  int sf = open(p, O_RDWR | O_CLOEXEC);
  if (sf >= 0) {
    while (flock(sf, LOCK_EX) != 0 && errno == EINTR)
      ;
    char buf[32] = {0};
    if (pread(sf, buf, sizeof buf - 1, 0) > 0 && atoll(buf) > (long long)len) {
      int n = snprintf(buf, sizeof buf, "%020lld\n", (long long)len);
      real_pwrite()(sf, buf, (size_t)n, 0);
    }
    real_close()(sf);
  }
  errno = e;
}

static void record_dirent(const char *rel) {
  char p[PATH_MAX];
  if (!state_file(rel, ".dirent", p))
    return;
  int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd >= 0)
    real_close()(fd);
}

/* What a successful sync of fd will make durable, taken before the call. */
typedef struct pending {
  int tracked;          /* under JM_SHIM_DIR */
  int is_dir;
  off_t size;           /* a file's size at the start of the sync */
  char rel[PATH_MAX];   /* its path under JM_SHIM_DIR */
  char **names;         /* a directory's entries at the start */
  size_t n;
} pending;

static void before_sync(int fd, pending *p) {
  memset(p, 0, sizeof *p);
  char path[PATH_MAX];
  const char *rel;
  struct stat st;
  if (getenv("JM_SHIM_STATE") == NULL || !fd_path(fd, path) ||
      !under(path, getenv("JM_SHIM_DIR"), &rel) || fstat(fd, &st) != 0)
    return;
  p->tracked = 1;
  snprintf(p->rel, sizeof p->rel, "%s", rel);
  p->size = st.st_size;
  p->is_dir = S_ISDIR(st.st_mode);
  if (!p->is_dir)
    return;
  DIR *d = opendir(path);
  struct dirent *de;
  size_t cap = 0;
  while (d && (de = readdir(d)) != NULL) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
      continue;
    if (p->n == cap) {
      cap = cap ? cap * 2 : 16;
      char **v = realloc(p->names, cap * sizeof *v);
      if (v == NULL)
        break;
      p->names = v;
    }
    if ((p->names[p->n] = strdup(de->d_name)) != NULL)
      p->n++;
  }
  if (d)
    closedir(d);
}

static void after_sync(pending *p, int ok) {
  if (p->tracked && ok) {
    if (!p->is_dir)
      record_synced(p->rel, p->size);
    for (size_t i = 0; i < p->n; i++) {
      char rel[PATH_MAX];
      snprintf(rel, sizeof rel, "%s%s%s", p->rel, p->rel[0] ? "/" : "",
               p->names[i]);
      record_dirent(rel);
    }
  }
  for (size_t i = 0; i < p->n; i++)
    free(p->names[i]);
  free(p->names);
}

static int sync_common(int fd, fd_fn real, const char *op) {
  char word[32], path[PATH_MAX];
  fault_word(fd, is_sync_fault, word, path);
  pending p;
  before_sync(fd, &p);
  int rc = real(fd);
  int e = errno;
  if (rc == 0 && word[0] != '\0') {
    fault_log(op, path);
    rc = -1;
    e = EIO;
  }
  after_sync(&p, rc == 0);
  errno = e;
  return rc;
}

/* The wrappers --------------------------------------------------------------------- */

ssize_t write(int fd, const void *buf, size_t n) {
  ssize_t k = write_fault(fd, n, "write");
  if (k < 0)
    return -1;
  return real_write()(fd, buf, (size_t)k);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
  ssize_t k = write_fault(fd, n, "pwrite");
  if (k < 0)
    return -1;
  return real_pwrite()(fd, buf, (size_t)k, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
  ssize_t k = write_fault(fd, n, "pwrite");
  if (k < 0)
    return -1;
  return real_pwrite64()(fd, buf, (size_t)k, off);
}

int fsync(int fd) {
  return sync_common(fd, real_fsync(), "fsync");
}

int fdatasync(int fd) {
  return sync_common(fd, real_fdatasync(), "fdatasync");
}

int ftruncate(int fd, off_t len) {
  int rc = real_ftruncate()(fd, len);
  if (rc == 0)
    after_truncate(fd, len);
  return rc;
}

int ftruncate64(int fd, off_t len) {
  int rc = real_ftruncate64()(fd, len);
  if (rc == 0)
    after_truncate(fd, len);
  return rc;
}

int close(int fd) {
  char word[32], path[PATH_MAX];
  fault_word(fd, is_close_fault, word, path);
  int rc = real_close()(fd);
  if (rc == 0 && word[0] != '\0') {
    fault_log("close", path);
    errno = EIO;
    return -1;
  }
  return rc;
}
