/*
 * args.c - option parsing and error printing shared by the subcommands.
 *
 * getopt_long permutes arguments on glibc but not everywhere, and the CLI
 * takes options before and after operands (`append ID - --sync none`), so
 * the few lines of parsing live here and behave the same on every system.
 */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void cli_err(const char *fmt, ...) {
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  for (char *p = msg; *p; p++) /* one line, whatever the message held */
    if (*p == '\n' || *p == '\r')
      *p = ' ';
  fprintf(stderr, "jmirror: %s\n", msg);
}

int cli_fail(const jm_error *err) {
  if (err->msg[0])
    cli_err("%s", err->msg);
  else
    cli_err("%s", jm_strerror(err->code));
  return EXIT_FAIL;
}

int cli_usage(cli *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "jmirror %s: ", c->cmd);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n(see 'jmirror help %s')\n", c->cmd);
  va_end(ap);
  return EXIT_USAGE;
}

static int find_spec(const opt_spec *specs, const char *name, size_t n) {
  for (int i = 0; specs && specs[i].name; i++)
    if (strlen(specs[i].name) == n && strncmp(specs[i].name, name, n) == 0)
      return i;
  return -1;
}

int cli_parse(cli *c, int argc, char **argv, const opt_spec *specs,
              opt_result *out) {
  memset(out, 0, sizeof *out);
  out->operands = argv; /* slot n_operands <= i is one already read */
  int only_operands = 0;
  for (int i = 0; i < argc; i++) {
    char *a = argv[i];
    if (only_operands || a[0] != '-' || strcmp(a, "-") == 0) {
      argv[out->n_operands++] = a;
      continue;
    }
    if (strcmp(a, "--") == 0) {
      only_operands = 1;
      continue;
    }
    if (a[1] != '-')
      return cli_usage(c, "unknown option '%s'", a);
    const char *name = a + 2;
    const char *eq = strchr(name, '=');
    size_t n = eq ? (size_t)(eq - name) : strlen(name);
    int k = find_spec(specs, name, n);
    if (k < 0)
      return cli_usage(c, "unknown option '--%.*s'", (int)n, name);
    if (specs[k].takes_value) {
      if (eq)
        out->values[k] = eq + 1;
      else if (i + 1 < argc)
        out->values[k] = argv[++i];
      else
        return cli_usage(c, "option '--%s' needs a value", specs[k].name);
    } else {
      if (eq)
        return cli_usage(c, "option '--%s' takes no value", specs[k].name);
      out->values[k] = "";
    }
  }
  return 0;
}

int cli_parse_uint(cli *c, const char *opt, const char *s,
                   unsigned long long *out) {
  char *end;
  errno = 0;
  if (s[0] < '0' || s[0] > '9')
    return cli_usage(c, "option '--%s' needs a number, not '%s'", opt, s);
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0')
    return cli_usage(c, "option '--%s' needs a number, not '%s'", opt, s);
  *out = v;
  return 0;
}

char *cli_asprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (s == NULL) {
    fprintf(stderr, "jmirror: out of memory\n");
    exit(EXIT_FAIL);
  }
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return s;
}
