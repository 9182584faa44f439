/*
 * cli.h - what the jmirror subcommands share: argument parsing, printing
 * errors, the command table.
 *
 * Tools are thin: parse arguments, call the library, print one line per
 * error ("jmirror: <what failed and where>") and exit with a documented code.
 */
#ifndef JMIRROR_CLI_H
#define JMIRROR_CLI_H

#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "jmirror/jmirror.h"

/* Exit codes (docs/cli.md). */
enum {
  EXIT_OK = 0,      /* did what was asked */
  EXIT_FAIL = 1,    /* an error, a refused input, or drift found */
  EXIT_USAGE = 2,   /* bad arguments: nothing was done */
};

/* The global context every command receives. */
typedef struct cli {
  const char *root_flag; /* --root as given, or NULL */
  const char *mirror_flag; /* --mirror as given, or NULL */
  char *root;            /* resolved root (owned by main) */
  const char *cmd;       /* the command's name */
} cli;

typedef struct command {
  const char *name;
  const char *summary; /* one line for `jmirror --help` */
  const char *usage;   /* full text for `jmirror help <name>` */
  int (*run)(cli *c, int argc, char **argv);
  int needs_root;      /* resolve the root before running */
} command;

/* A tiny portable option parser: "--name value", "--name=value", flags,
 * and "--" to end options.  Options and operands may be mixed. */
typedef struct opt_spec {
  const char *name;  /* without dashes */
  int takes_value;   /* 1: needs a value */
} opt_spec;

typedef struct opt_result {
  const char *values[16]; /* per spec index: value, "" for a flag, or NULL */
  char **operands;        /* positional arguments in order: argv's own
                           * slots, moved to its front (any number) */
  int n_operands;
} opt_result;

/* Returns 0, or prints "jmirror <cmd>: ..." and returns EXIT_USAGE.
 * Reorders argv: the operands end up first, in order (as getopt does). */
int cli_parse(cli *c, int argc, char **argv, const opt_spec *specs,
              opt_result *out);

/* Print "jmirror: <fmt>" to stderr (one line). */
void cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print "jmirror: <err->msg>" (or jm_strerror) and return EXIT_FAIL. */
int cli_fail(const jm_error *err);
/* Usage error for command c: "jmirror <cmd>: <msg>" + hint, EXIT_USAGE. */
int cli_usage(cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* malloc'd printf; exits with a message if out of memory. */
char *cli_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Parse a non-negative integer option; EXIT_USAGE on junk. */
int cli_parse_uint(cli *c, const char *opt, const char *s,
                   unsigned long long *out);

/* Open the mirror of c->root (read_only: never creates or migrates). */
int cli_open_mirror(cli *c, int read_only, jm_mirror **out);

/* Progress on a TTY (progress.c). */
typedef struct progress {
  const char *label;
  int tty;      /* stderr is a terminal: draw */
  int shown;    /* something was drawn: clear it at the end */
  double t0, last;
} progress;
void progress_init(progress *p, const char *label);
void progress_cb(void *ctx, uint64_t done, uint64_t total);
void progress_done(progress *p);

/* Print a JSON value as one line on stdout, then release it. */
struct json_t;
void cli_print_json(struct json_t *j);

/* Hand a request to jmirrord if it holds the mirror (cmd_status.c):
 * 1 done (*resp: its answer), 0 no daemon, <0 -(exit code) after an
 * error was printed. */
int cli_delegate(cli *c, struct json_t *req, struct json_t **resp);

/* The commands. */
int cmd_append(cli *c, int argc, char **argv);
int cmd_replay(cli *c, int argc, char **argv);
int cmd_verify(cli *c, int argc, char **argv);
int cmd_errors(cli *c, int argc, char **argv);
int cmd_ingest(cli *c, int argc, char **argv);
int cmd_status(cli *c, int argc, char **argv);
int cmd_service(cli *c, int argc, char **argv);
int cmd_new(cli *c, int argc, char **argv);
int cmd_add(cli *c, int argc, char **argv);
int cmd_rename(cli *c, int argc, char **argv);
int cmd_delete(cli *c, int argc, char **argv);
int cmd_restore(cli *c, int argc, char **argv);
int cmd_ls(cli *c, int argc, char **argv);
int cmd_show(cli *c, int argc, char **argv);
int cmd_search(cli *c, int argc, char **argv);
int cmd_backup(cli *c, int argc, char **argv);

extern const command cli_commands[];

#endif
