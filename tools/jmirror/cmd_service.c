/*
 * cmd_service.c - `jmirror service install|uninstall|print [--launchd |
 * --systemd] [--daemon PATH]`: run jmirrord for the current user.
 *
 * macOS: a LaunchAgent, ~/Library/LaunchAgents/io.jmirror.jmirrord.plist:
 *   RunAtLoad, KeepAlive only after a failure (SuccessfulExit = false),
 *   ProcessType Background, LowPriorityIO, stderr to
 *   ~/Library/Logs/jmirrord.log.
 * Linux: a systemd user unit, ~/.config/systemd/user/jmirrord.service
 *   ($XDG_CONFIG_HOME respected): Restart=on-failure, low CPU and I/O
 *   priority, stderr to the journal.
 * `print` shows the file without writing it (the tests validate it with
 * xmllint and systemd-analyze).  The files name the root explicitly, so
 * the service keeps using the root it was installed for.
 */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef __APPLE__
#include <mach-o/dyld.h>
#endif

#define LABEL "io.jmirror.jmirrord"

/* jmirrord beside this jmirror binary, else "jmirrord" (from PATH). */
static char *daemon_path(void) {
  char self[PATH_MAX] = "";
#ifdef __APPLE__
  uint32_t n = sizeof self;
  if (_NSGetExecutablePath(self, &n) != 0)
    self[0] = '\0';
#else
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  self[n > 0 ? n : 0] = '\0';
#endif
  char real[PATH_MAX];
  if (self[0] && realpath(self, real) != NULL) {
    char *slash = strrchr(real, '/');
    if (slash) {
      strcpy(slash + 1, "jmirrord");
      if (access(real, X_OK) == 0)
        return strdup(real);
    }
  }
  return strdup("jmirrord");
}

static const char *home(void) {
  const char *h = getenv("HOME");
  return h && h[0] ? h : "/";
}

/* XML text: escape the five special characters. */
static void xml(FILE *f, const char *s) {
  for (; *s; s++)
    switch (*s) {
    case '&': fputs("&amp;", f); break;
    case '<': fputs("&lt;", f); break;
    case '>': fputs("&gt;", f); break;
    case '"': fputs("&quot;", f); break;
    case '\'': fputs("&apos;", f); break;
    default: fputc(*s, f);
    }
}

static void write_plist(FILE *f, const char *daemon, const char *root,
                        const char *mirror) {
  fputs("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" "
        "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n"
        "<plist version=\"1.0\">\n<dict>\n"
        "  <key>Label</key>\n  <string>" LABEL "</string>\n"
        "  <key>ProgramArguments</key>\n  <array>\n    <string>", f);
  xml(f, daemon);
  fputs("</string>\n    <string>--root</string>\n    <string>", f);
  xml(f, root);
  fputs("</string>\n", f);
  if (mirror) {
    fputs("    <string>--mirror</string>\n    <string>", f);
    xml(f, mirror);
    fputs("</string>\n", f);
  }
  fputs("  </array>\n"
        "  <key>RunAtLoad</key>\n  <true/>\n"
        "  <key>KeepAlive</key>\n  <dict>\n"
        "    <key>SuccessfulExit</key>\n    <false/>\n  </dict>\n"
        "  <key>ProcessType</key>\n  <string>Background</string>\n"
        "  <key>LowPriorityIO</key>\n  <true/>\n"
        "  <key>StandardErrorPath</key>\n  <string>", f);
  xml(f, home());
  fputs("/Library/Logs/jmirrord.log</string>\n</dict>\n</plist>\n", f);
}

/* systemd unit values: quote, escaping '\\', '"' and '%' (a specifier). */
static void unit_arg(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '\\' || *s == '"')
      fputc('\\', f);
    if (*s == '%')
      fputc('%', f);
    fputc(*s, f);
  }
  fputc('"', f);
}

static void write_unit(FILE *f, const char *daemon, const char *root,
                       const char *mirror) {
  fputs("[Unit]\n"
        "Description=jmirror indexer: keeps the SQLite mirror in step with "
        "the journal\n\n"
        "[Service]\n"
        "Type=simple\n"
        "ExecStart=", f);
  unit_arg(f, daemon);
  fputs(" --root ", f);
  unit_arg(f, root);
  if (mirror) {
    fputs(" --mirror ", f);
    unit_arg(f, mirror);
  }
  fputs("\nRestart=on-failure\n"
        "RestartSec=2\n"
        "Nice=10\n"
        "IOSchedulingClass=idle\n"
        "# stderr goes to the journal: journalctl --user -u jmirrord\n\n"
        "[Install]\n"
        "WantedBy=default.target\n", f);
}

static char *service_file(int launchd) {
  if (launchd)
    return cli_asprintf("%s/Library/LaunchAgents/" LABEL ".plist", home());
  const char *xdg = getenv("XDG_CONFIG_HOME");
  if (xdg && xdg[0] == '/')
    return cli_asprintf("%s/systemd/user/jmirrord.service", xdg);
  return cli_asprintf("%s/.config/systemd/user/jmirrord.service", home());
}

static int mkdir_parents(char *path) {
  for (char *p = path + 1; *p; p++)
    if (*p == '/') {
      *p = '\0';
      if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        *p = '/';
        return -1;
      }
      *p = '/';
    }
  return 0;
}

static int install(cli *c, int launchd, const char *daemon) {
  char *path = service_file(launchd);
  if (mkdir_parents(path) != 0) {
    cli_err("cannot create the directory of '%s': %s", path, strerror(errno));
    free(path);
    return EXIT_FAIL;
  }
  char *tmp = cli_asprintf("%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (f == NULL) {
    cli_err("cannot write '%s': %s", tmp, strerror(errno));
    free(path);
    free(tmp);
    return EXIT_FAIL;
  }
  (launchd ? write_plist : write_unit)(f, daemon, c->root, c->mirror_flag);
  int bad = fclose(f) != 0 || rename(tmp, path) != 0;
  if (bad) {
    cli_err("cannot write '%s': %s", path, strerror(errno));
    unlink(tmp);
  } else if (launchd)
    printf("wrote %s\nstart it now with:\n  launchctl bootstrap gui/%ld %s\n",
           path, (long)getuid(), path);
  else
    printf("wrote %s\nstart it now with:\n  systemctl --user daemon-reload && "
           "systemctl --user enable --now jmirrord\n",
           path);
  free(path);
  free(tmp);
  return bad ? EXIT_FAIL : EXIT_OK;
}

static int uninstall(int launchd) {
  char *path = service_file(launchd);
  if (launchd)
    printf("stop it first if it runs:\n  launchctl bootout gui/%ld %s\n",
           (long)getuid(), path);
  else
    printf("stop it first if it runs:\n  systemctl --user disable --now "
           "jmirrord\n");
  int rc = EXIT_OK;
  if (unlink(path) != 0 && errno != ENOENT) {
    cli_err("cannot remove '%s': %s", path, strerror(errno));
    rc = EXIT_FAIL;
  } else
    printf("removed %s\n", path);
  free(path);
  return rc;
}

int cmd_service(cli *c, int argc, char **argv) {
  static const opt_spec specs[] = {
      {"launchd", 0}, {"systemd", 0}, {"daemon", 1}, {NULL, 0}};
  opt_result o;
  int rc = cli_parse(c, argc, argv, specs, &o);
  if (rc)
    return rc;
  if (o.n_operands != 1)
    return cli_usage(c, "say install, uninstall or print");
#ifdef __APPLE__
  int launchd = o.values[1] == NULL;
#else
  int launchd = o.values[0] != NULL;
#endif
  if (o.values[0] && o.values[1])
    return cli_usage(c, "--launchd or --systemd, not both");
  char *daemon = o.values[2] ? strdup(o.values[2]) : daemon_path();
  const char *what = o.operands[0];
  if (strcmp(what, "print") == 0) {
    (launchd ? write_plist : write_unit)(stdout, daemon, c->root,
                                         c->mirror_flag);
    rc = EXIT_OK;
  } else if (strcmp(what, "install") == 0)
    rc = install(c, launchd, daemon);
  else if (strcmp(what, "uninstall") == 0)
    rc = uninstall(launchd);
  else
    rc = cli_usage(c, "unknown action '%s' (install, uninstall, print)", what);
  free(daemon);
  return rc;
}
