/*
 * main.c - the jmirror command: global options, then one subcommand.
 *
 *   jmirror [--root DIR] <command> [arguments]
 *   jmirror --help | help <command> | --version
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

const command cli_commands[] = {
  {"append", "append events to a conversation's journal",
   "usage: jmirror [--root DIR] append <conversation_id> [EVENT_JSON | -]\n"
   "                              [--sync always|batch|none]\n"
   "\n"
   "Validate an event against the journal format and append it to\n"
   "journal/<conversation_id>.jsonl.  \"ts\" is filled in when absent.\n"
   "With '-' (or no EVENT_JSON) events are read from standard input, one\n"
   "per line: each is validated and appended on its own, refused lines are\n"
   "reported by input line number, and a summary line is printed.\n"
   "\n"
   "  --sync always   sync to stable storage before returning\n"
   "  --sync batch    group commit: sync within 100 ms (default)\n"
   "  --sync none     leave it to the operating system\n"
   "\n"
   "Exit: 0 all appended; 1 an event was refused or an I/O error; 2 usage.\n",
   cmd_append, 1},
  {NULL, NULL, NULL, NULL, 0},
};

static const command *find(const char *name) {
  for (const command *c = cli_commands; c->name; c++)
    if (strcmp(c->name, name) == 0)
      return c;
  return NULL;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: jmirror [--root DIR] <command> [arguments]\n"
          "\n"
          "Append-only JSONL conversation journals with a SQLite mirror.\n"
          "\n"
          "Commands:\n");
  for (const command *c = cli_commands; c->name; c++)
    fprintf(f, "  %-10s %s\n", c->name, c->summary);
  fprintf(f,
          "\n"
          "The root is --root, else $JMIRROR_ROOT, else the platform default\n"
          "(~/Library/Application Support/jmirror on macOS,\n"
          "$XDG_DATA_HOME/jmirror or ~/.local/share/jmirror on Linux).\n"
          "\n"
          "Exit codes: 0 success, 1 failure (error, refused input, drift),\n"
          "2 usage error.  'jmirror help <command>' for details.\n");
}

static int help(const char *name) {
  if (name == NULL) {
    usage(stdout);
    return EXIT_OK;
  }
  const command *c = find(name);
  if (c == NULL) {
    cli_err("unknown command '%s' (see 'jmirror --help')", name);
    return EXIT_USAGE;
  }
  fputs(c->usage, stdout);
  return EXIT_OK;
}

int main(int argc, char **argv) {
  cli ctx = {0};
  int i = 1;
  for (; i < argc && argv[i][0] == '-'; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
      return help(NULL);
    if (strcmp(a, "--version") == 0) {
      printf("jmirror %s\n", JM_VERSION_STRING);
      return EXIT_OK;
    }
    if (strcmp(a, "--root") == 0 && i + 1 < argc)
      ctx.root_flag = argv[++i];
    else if (strncmp(a, "--root=", 7) == 0)
      ctx.root_flag = a + 7;
    else {
      cli_err("unknown option '%s' (see 'jmirror --help')", a);
      return EXIT_USAGE;
    }
  }
  if (i >= argc) {
    usage(stderr);
    return EXIT_USAGE;
  }
  const char *name = argv[i++];
  if (strcmp(name, "help") == 0)
    return help(i < argc ? argv[i] : NULL);
  const command *c = find(name);
  if (c == NULL) {
    cli_err("unknown command '%s' (see 'jmirror --help')", name);
    return EXIT_USAGE;
  }
  for (int k = i; k < argc; k++)
    if (strcmp(argv[k], "--help") == 0)
      return help(name);
  ctx.cmd = name;
  if (c->needs_root) {
    jm_error err;
    jm_error_clear(&err);
    if (jm_root_resolve(ctx.root_flag, &ctx.root, &err) != 0)
      return cli_fail(&err);
  }
  int rc = c->run(&ctx, argc - i, argv + i);
  free(ctx.root);
  return rc;
}
