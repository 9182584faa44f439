/*
 * fsutil.c - small file-system helpers that get the boring parts right.
 *
 * write-all-or-report (EINTR and short writes retried, a 0-byte write taken
 * as ENOSPC, as git's write_in_full does), O_CLOEXEC on every open, mkdir -p
 * with 0700 (each new entry synced, all of it undone on failure), directory
 * fsync, temp -> fsync -> rename -> fsync(dir) for files that replace
 * others, and a growable buffer.  Durability-relevant calls go
 * through the jm__sys seam (sys.c).
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int jm__open(const char *path, int flags, mode_t mode) {
  for (;;) {
    int fd = jm__sys.open(path, flags | O_CLOEXEC, mode);
    if (fd >= 0)
      return fd;
    if (errno != EINTR)
      return -errno;
  }
}

void jm__close(int fd) {
  if (fd >= 0)
    close(fd); /* an EINTR'd close has still closed the fd on Linux/macOS */
}

int jm__write_full(int fd, const void *buf, size_t n, size_t *written) {
  const char *p = buf;
  size_t done = 0;
  int rc = 0;
  while (done < n) {
    ssize_t w = jm__sys.write(fd, p + done, n - done);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      rc = -errno;
      break;
    }
    if (w == 0) {
      rc = -ENOSPC;
      break;
    }
    done += (size_t)w;
  }
  if (written)
    *written = done;
  return rc;
}

int jm__pwrite_full(int fd, const void *buf, size_t n, off_t off) {
  const char *p = buf;
  size_t done = 0;
  while (done < n) {
    ssize_t w = jm__sys.pwrite(fd, p + done, n - done, off + (off_t)done);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    if (w == 0)
      return -ENOSPC;
    done += (size_t)w;
  }
  return 0;
}

ssize_t jm__pread_full(int fd, void *buf, size_t n, off_t off) {
  char *p = buf;
  size_t done = 0;
  while (done < n) {
    ssize_t r = pread(fd, p + done, n - done, off + (off_t)done);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    if (r == 0)
      break; /* end of file */
    done += (size_t)r;
  }
  return (ssize_t)done;
}

uint64_t jm__last_lf(int fd, uint64_t size) {
  char buf[8192];
  uint64_t end = size;
  while (end > 0) {
    uint64_t start = end > sizeof buf ? end - sizeof buf : 0;
    ssize_t n = jm__pread_full(fd, buf, (size_t)(end - start), (off_t)start);
    if (n <= 0)
      return 0;
    for (ssize_t i = n - 1; i >= 0; i--)
      if (buf[i] == '\n')
        return start + (uint64_t)i + 1;
    end = start;
  }
  return 0;
}

int jm__fsync_dir(const char *dir) {
  int fd = jm__open(dir, O_RDONLY | O_DIRECTORY, 0);
  if (fd < 0)
    return fd;
  int rc = 0;
  if (jm__sys.fsync(fd) != 0) {
    /* Some file systems refuse fsync on a directory; that is not a loss. */
    if (errno != EINVAL && errno != ENOTSUP && errno != EBADF)
      rc = -errno;
  }
  jm__close(fd);
  return rc;
}

/* fsync the directory holding `path` (its last component's parent). */
static int sync_parent(char *path) {
  char *slash = strrchr(path, '/');
  if (slash == NULL)
    return jm__fsync_dir(".");
  if (slash == path)
    return jm__fsync_dir("/");
  *slash = '\0';
  int rc = jm__fsync_dir(path);
  *slash = '/';
  return rc;
}

/* Undo a failed jm__mkdirs: remove the `n` directories it created, the
 * deepest first (made[] holds their lengths in tmp).  A retry then creates
 * them again and syncs their parents; left in place, a directory whose
 * parent's sync failed would be taken as durable by the next call. */
static void unmake(char *tmp, const size_t *made, int n) {
  while (n-- > 0) {
    char saved = tmp[made[n]];
    tmp[made[n]] = '\0';
    rmdir(tmp); /* not empty (another writer got in): theirs now */
    tmp[made[n]] = saved;
  }
}

int jm__mkdirs(const char *path) {
  char *tmp = jm__strdup(path);
  size_t len = tmp ? strlen(tmp) : 0;
  size_t *made = tmp ? malloc((len + 1) * sizeof *made) : NULL;
  if (made == NULL) {
    free(tmp);
    return -ENOMEM;
  }
  int rc = 0, n_made = 0;
  for (size_t i = 1; i <= len && rc == 0; i++) {
    if (tmp[i] != '/' && tmp[i] != '\0')
      continue;
    char saved = tmp[i];
    tmp[i] = '\0';
    if (mkdir(tmp, 0700) == 0) {
      made[n_made++] = i;
      rc = sync_parent(tmp); /* the new entry made durable */
    } else if (errno != EEXIST)
      rc = -errno;
    if (rc == 0) {
      struct stat st;
      if (stat(tmp, &st) != 0)
        rc = -errno;
      else if (!S_ISDIR(st.st_mode))
        rc = -ENOTDIR;
    }
    tmp[i] = saved;
  }
  if (rc != 0)
    unmake(tmp, made, n_made);
  free(made);
  free(tmp);
  return rc;
}

char *jm__strdup(const char *s) {
  size_t n = strlen(s);
  return jm__strndup(s, n);
}

char *jm__strndup(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d == NULL)
    return NULL;
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

char *jm__asprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0)
    return NULL;
  char *s = malloc((size_t)n + 1);
  if (s == NULL)
    return NULL;
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return s;
}

char *jm__path_join(const char *a, const char *b) {
  size_t la = strlen(a);
  while (la > 1 && a[la - 1] == '/')
    la--;
  return jm__asprintf("%.*s/%s", (int)la, a, b);
}

int jm__write_file_atomic(const char *path, const void *buf, size_t n,
                          mode_t mode, jm_error *err) {
  char *tmp = jm__asprintf("%s.tmp.%ld", path, (long)getpid());
  char *dir = jm__strdup(path);
  if (tmp == NULL || dir == NULL) {
    free(tmp);
    free(dir);
    return jm__errf(err, -ENOMEM, "out of memory");
  }
  char *slash = strrchr(dir, '/');
  if (slash == NULL)
    strcpy(dir, ".");
  else if (slash == dir)
    slash[1] = '\0';
  else
    *slash = '\0';

  int rc;
  int fd = jm__open(tmp, O_WRONLY | O_CREAT | O_TRUNC, mode);
  if (fd < 0) {
    rc = jm__errno_f(err, -fd, "cannot create '%s'", tmp);
    goto out;
  }
  rc = jm__write_full(fd, buf, n, NULL);
  if (rc == 0 && jm__sys.fsync(fd) != 0)
    rc = -errno;
  jm__close(fd);
  if (rc != 0) {
    jm__errno_f(err, -rc, "cannot write '%s'", tmp);
    unlink(tmp);
    goto out;
  }
  if (jm__sys.rename(tmp, path) != 0) {
    rc = jm__errno_f(err, errno, "cannot rename '%s' to '%s'", tmp, path);
    unlink(tmp);
    goto out;
  }
  rc = jm__fsync_dir(dir);
  if (rc != 0)
    jm__errno_f(err, -rc, "cannot sync directory '%s'", dir);
out:
  free(tmp);
  free(dir);
  return rc;
}

/* jm__buf ---------------------------------------------------------------- */

int jm__buf_reserve(jm__buf *b, size_t extra) {
  if (b->cap - b->len > extra)
    return 0;
  size_t want = b->len + extra + 1;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < want) {
    if (cap > SIZE_MAX / 2)
      return -ENOMEM;
    cap *= 2;
  }
  char *p = realloc(b->p, cap);
  if (p == NULL)
    return -ENOMEM;
  b->p = p;
  b->cap = cap;
  return 0;
}

int jm__buf_append(jm__buf *b, const void *p, size_t n) {
  if (jm__buf_reserve(b, n) != 0)
    return -ENOMEM;
  if (n)
    memcpy(b->p + b->len, p, n);
  b->len += n;
  b->p[b->len] = '\0';
  return 0;
}

int jm__buf_printf(jm__buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0 || jm__buf_reserve(b, (size_t)n) != 0)
    return -ENOMEM;
  va_start(ap, fmt);
  vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return 0;
}

void jm__buf_release(jm__buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}
