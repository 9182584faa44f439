/*
 * sys.c - the system-call table (fault seam) behind every durable write.
 *
 * Why a table: the promises "a failed append leaves the file at its old
 * size" and "an fsync failure is never acknowledged" can only be tested by
 * making open/write/fsync/ftruncate/rename fail on demand.  SQLite does the
 * same with its aSyscall[] array.  clock_gettime is here too: "setting the
 * wall clock cannot stretch the batch window" is tested by stepping it.  Tests swap entries; jm__sys_reset() puts
 * the real calls back.
 *
 * fsync here means "the data is on stable storage": on macOS plain fsync()
 * only reaches the drive's cache, so F_FULLFSYNC is used, falling back to
 * fsync() on file systems that do not support it (SMB, some FUSE).
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static int real_open(const char *path, int flags, mode_t mode) {
  return open(path, flags, mode);
}

static ssize_t real_write(int fd, const void *buf, size_t n) {
  return write(fd, buf, n);
}

static ssize_t real_pwrite(int fd, const void *buf, size_t n, off_t off) {
  return pwrite(fd, buf, n, off);
}

static int real_fsync(int fd) {
#if defined(__APPLE__) && defined(F_FULLFSYNC)
  if (fcntl(fd, F_FULLFSYNC) == 0)
    return 0;
  /* ENOTSUP/ENOTTY/EINVAL: the file system has no full-sync; use fsync. */
  if (errno != ENOTSUP && errno != ENOTTY && errno != EINVAL)
    return -1;
#endif
  return fsync(fd);
}

static int real_ftruncate(int fd, off_t len) { return ftruncate(fd, len); }

static int real_rename(const char *from, const char *to) {
  return rename(from, to);
}

static int real_clock_gettime(clockid_t id, struct timespec *ts) {
  return clock_gettime(id, ts);
}

jm__sys_table jm__sys = {
  real_open,      real_write,  real_pwrite,       real_fsync,
  real_ftruncate, real_rename, real_clock_gettime,
};

void jm__sys_reset(void) {
  jm__sys.open = real_open;
  jm__sys.write = real_write;
  jm__sys.pwrite = real_pwrite;
  jm__sys.fsync = real_fsync;
  jm__sys.ftruncate = real_ftruncate;
  jm__sys.rename = real_rename;
  jm__sys.clock_gettime = real_clock_gettime;
}
