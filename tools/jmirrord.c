/*
 * jmirrord.c - the indexer daemon's command line.  All the work is in
 * src/daemon.c; this parses options and prints the one error line.
 *
 *   jmirrord [--root DIR] [--mirror DB] [--log-level error|warn|info|debug]
 *            [-v] [--reconcile-interval SECONDS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jmirror/jmirror.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: jmirrord [--root DIR] [--mirror DB] [--log-level LEVEL] [-v]\n"
          "                [--reconcile-interval SECONDS]\n"
          "\n"
          "Keep the SQLite mirror up to date with the journal files, in the\n"
          "foreground (run it under launchd or systemd --user; see\n"
          "'jmirror service install').\n"
          "\n"
          "  --root DIR        journal root (else $JMIRROR_ROOT, else the\n"
          "                    platform default, as for jmirror)\n"
          "  --mirror DB       mirror database (else $JMIRROR_MIRROR, else\n"
          "                    <root>/mirror/mirror.db)\n"
          "  --log-level L     error (default), warn, info or debug; -v = info\n"
          "  --reconcile-interval S  full rescan period, at least 600 s\n"
          "\n"
          "Signals: SIGTERM/SIGINT stop cleanly (exit 0); SIGHUP rescans.\n"
          "Exit: 0 stopped by a signal; 1 error (another daemon running, ...);\n"
          "2 usage.\n");
}

static int level_of(const char *s) {
  static const char *const names[] = {"error", "warn", "info", "debug"};
  for (int i = 0; i < 4; i++)
    if (strcmp(s, names[i]) == 0)
      return i;
  return -1;
}

/* "--name value" or "--name=value"; advances *i. */
static const char *value(int argc, char **argv, int *i, const char *name) {
  size_t n = strlen(name);
  if (strncmp(argv[*i], name, n) != 0)
    return NULL;
  if (argv[*i][n] == '=')
    return argv[*i] + n + 1;
  if (argv[*i][n] == '\0' && *i + 1 < argc)
    return argv[++*i];
  return NULL;
}

int main(int argc, char **argv) {
  jm_daemon_options opt;
  memset(&opt, 0, sizeof opt);
  opt.log_level = JM_LOG_WARN;
  const char *root = NULL, *v;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(argv[i], "--version") == 0) {
      printf("jmirrord %s\n", JM_VERSION_STRING);
      return 0;
    } else if (strcmp(argv[i], "-v") == 0)
      opt.log_level = JM_LOG_INFO;
    else if ((v = value(argc, argv, &i, "--root")))
      root = v;
    else if ((v = value(argc, argv, &i, "--mirror")))
      opt.db_path = v;
    else if ((v = value(argc, argv, &i, "--log-level"))) {
      if ((opt.log_level = level_of(v)) < 0) {
        fprintf(stderr, "jmirrord: unknown log level '%s'\n", v);
        return 2;
      }
    } else if ((v = value(argc, argv, &i, "--reconcile-interval")))
      opt.reconcile_s = (unsigned)strtoul(v, NULL, 10);
    else {
      fprintf(stderr, "jmirrord: unknown argument '%s' (see --help)\n",
              argv[i]);
      return 2;
    }
  }
  jm_error err;
  jm_error_clear(&err);
  char *r = NULL;
  if (jm_root_resolve(root, &r, &err) != 0) {
    fprintf(stderr, "jmirrord: %s\n", err.msg);
    return 1;
  }
  opt.root = r;
  int rc = jm_daemon_run(&opt, &err);
  free(r);
  if (rc != 0) {
    fprintf(stderr, "jmirrord: %s\n", err.msg[0] ? err.msg : jm_strerror(rc));
    return 1;
  }
  return 0;
}
