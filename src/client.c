/*
 * client.c - talking to jmirrord over its control socket.
 *
 * Plain blocking POSIX sockets with poll() timeouts: the callers (the
 * jmirror tool, the store's read-your-writes wait) are synchronous, and a
 * libuv loop per call would be more machinery than the job needs.
 * Protocol: one JSON object per line each way (docs/daemon.md).
 */
#include "internal.h"
#include "jmirror/daemon.h"
#include "jmirror/mirror.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_RESPONSE ((size_t)64 << 20)

struct jm_client {
  int fd;
  jm__buf in; /* bytes read past the last response */
};

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until `deadline` (-1 = none) for poll(). */
static int left(int64_t deadline) {
  if (deadline < 0)
    return -1;
  int64_t l = deadline - now_ms();
  return l > 0 ? (int)l : 0;
}

int jm_client_connect(const char *db_path, int timeout_ms, jm_client **out,
                      jm_error *err) {
  *out = NULL;
  char *path = jm_mirror_sibling(db_path, ".sock");
  if (path == NULL)
    return jm__errf(err, -ENOMEM, "out of memory");
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof sa.sun_path) {
    int rc = jm__errf(err, -ENAMETOOLONG,
                      "control socket path '%s' is too long for a Unix "
                      "socket; use a shorter --mirror path", path);
    free(path);
    return rc;
  }
  memcpy(sa.sun_path, path, strlen(path));
#ifdef SOCK_CLOEXEC /* atomic: no fork in between leaks it */
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
#else /* macOS: no SOCK_CLOEXEC; set just after, a fork may fall between */
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd >= 0)
    fcntl(fd, F_SETFD, FD_CLOEXEC);
#endif
  if (fd < 0) {
    int rc = jm__errno_f(err, errno, "cannot create socket");
    free(path);
    return rc;
  }
#ifdef SO_NOSIGPIPE
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
  (void)timeout_ms; /* a local connect either succeeds or fails at once */
  int rc = 0;
  while (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    if (errno == EINTR)
      continue;
    if (errno == ENOENT || errno == ECONNREFUSED || errno == ENOTSOCK)
      rc = jm__errf(err, JM_ENODAEMON, "no daemon is listening on '%s'",
                    path);
    else
      rc = jm__errno_f(err, errno, "cannot connect to '%s'", path);
    break;
  }
  free(path);
  if (rc != 0) {
    close(fd);
    return rc;
  }
  jm_client *c = calloc(1, sizeof *c);
  if (c == NULL) {
    close(fd);
    return jm__errf(err, -ENOMEM, "out of memory");
  }
  c->fd = fd;
  *out = c;
  return 0;
}

void jm_client_close(jm_client *c) {
  if (c == NULL)
    return;
  close(c->fd);
  jm__buf_release(&c->in);
  free(c);
}

static int send_all(jm_client *c, const char *p, size_t n, int64_t deadline,
                    jm_error *err) {
  int flags = 0;
#ifdef MSG_NOSIGNAL
  flags = MSG_NOSIGNAL;
#endif
  while (n > 0) {
    struct pollfd pf = {c->fd, POLLOUT, 0};
    int pr = poll(&pf, 1, left(deadline));
    if (pr == 0)
      return jm__errf(err, JM_ETIMEDOUT, "daemon did not accept the request");
    if (pr < 0 && errno == EINTR)
      continue;
    ssize_t w = send(c->fd, p, n, flags);
    if (w < 0) {
      if (errno == EINTR || errno == EAGAIN)
        continue;
      return jm__errno_f(err, errno, "cannot send to the daemon");
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Read until an LF; hand out the line, keep what follows. */
static int read_line(jm_client *c, char **out, int64_t deadline,
                     jm_error *err) {
  for (;;) {
    char *nl = c->in.len ? memchr(c->in.p, '\n', c->in.len) : NULL;
    if (nl != NULL) {
      size_t n = (size_t)(nl - c->in.p);
      *out = jm__strndup(c->in.p, n);
      memmove(c->in.p, nl + 1, c->in.len - n - 1);
      c->in.len -= n + 1;
      return *out ? 0 : jm__errf(err, -ENOMEM, "out of memory");
    }
    if (c->in.len > MAX_RESPONSE)
      return jm__errf(err, JM_EPROTO, "daemon response too long");
    struct pollfd pf = {c->fd, POLLIN, 0};
    int pr = poll(&pf, 1, left(deadline));
    if (pr == 0)
      return jm__errf(err, JM_ETIMEDOUT, "daemon did not answer in time");
    if (pr < 0) {
      if (errno == EINTR)
        continue;
      return jm__errno_f(err, errno, "cannot wait for the daemon");
    }
    if (jm__buf_reserve(&c->in, 65536) != 0)
      return jm__errf(err, -ENOMEM, "out of memory");
    ssize_t r = recv(c->fd, c->in.p + c->in.len, 65536, 0);
    if (r < 0 && (errno == EINTR || errno == EAGAIN))
      continue;
    if (r < 0)
      return jm__errno_f(err, errno, "cannot read from the daemon");
    if (r == 0)
      return jm__errf(err, JM_EPROTO, "daemon closed the connection");
    c->in.len += (size_t)r;
  }
}

int jm_client_request(jm_client *c, const char *request, char **response,
                      int timeout_ms, jm_error *err) {
  *response = NULL;
  int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
  int rc = send_all(c, request, strlen(request), deadline, err);
  if (rc == 0)
    rc = send_all(c, "\n", 1, deadline, err);
  if (rc == 0)
    rc = read_line(c, response, deadline, err);
  return rc;
}

int jm_daemon_wait(const char *db_path, const char *id, uint64_t offset,
                   int timeout_ms, jm_error *err) {
  jm_client *c;
  int rc = jm_client_connect(db_path, 1000, &c, err);
  if (rc != 0)
    return rc;
  json_t *req = json_pack("{s:s,s:s,s:I,s:i}", "cmd", "wait", "id", id,
                          "offset", (json_int_t)offset, "timeout_ms",
                          timeout_ms);
  char *line = req ? json_dumps(req, JSON_COMPACT) : NULL;
  json_decref(req);
  char *resp = NULL;
  if (line == NULL)
    rc = jm__errf(err, -ENOMEM, "out of memory");
  else
    rc = jm_client_request(c, line, &resp, timeout_ms + 2000, err);
  free(line);
  jm_client_close(c);
  if (rc != 0)
    return rc;
  json_t *r = json_loads(resp, 0, NULL);
  free(resp);
  if (r == NULL)
    return jm__errf(err, JM_EPROTO, "daemon sent a response that is not JSON");
  if (json_is_true(json_object_get(r, "ok")))
    rc = 0;
  else {
    const char *e = json_string_value(json_object_get(r, "error"));
    rc = jm__errf(err, e && strstr(e, "timed out") ? JM_ETIMEDOUT : JM_EPROTO,
                  "daemon: %s", e ? e : "request failed");
  }
  json_decref(r);
  return rc;
}
