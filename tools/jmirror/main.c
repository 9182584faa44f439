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
  {"new", "create a conversation; prints its id",
   "usage: jmirror new [--title T] [--brain B] [--id ID] [--meta JSON]\n"
   "\n"
   "Append a conversation.created event to a new journal file and print\n"
   "the conversation's id (generated, time-ordered, unless --id).\n"
   "Exit: 0; 1 if it exists or on an error; 2 usage.\n",
   cmd_new, 1},
  {"add", "add a message to a conversation; prints its id",
   "usage: jmirror add <conversation_id> --role R (--content TEXT | -)\n"
   "                   [--parent ID] [--id ID] [--brain B] [--thinking T]\n"
   "                   [--meta JSON]\n"
   "\n"
   "Append a complete message.  With '-' the content is read from standard\n"
   "input (one trailing newline dropped).  R is user, assistant, system or\n"
   "tool.  Prints the message id (generated unless --id).\n"
   "Exit: 0; 1 if the conversation does not exist or on an error; 2 usage.\n",
   cmd_add, 1},
  {"rename", "set a conversation's title",
   "usage: jmirror rename <conversation_id> <title>\n"
   "Appends a conversation.updated event.  Exit: 0; 1 error; 2 usage.\n",
   cmd_rename, 1},
  {"delete", "mark a conversation deleted (its journal stays)",
   "usage: jmirror delete <conversation_id>\n"
   "Appends a conversation.deleted event: the conversation is hidden from\n"
   "ls and search (see --deleted) and can be restored; nothing is erased.\n"
   "Exit: 0; 1 error; 2 usage.\n",
   cmd_delete, 1},
  {"restore", "undo delete",
   "usage: jmirror restore <conversation_id>\n"
   "Appends a conversation.restored event.  Exit: 0; 1 error; 2 usage.\n",
   cmd_restore, 1},
  {"ls", "list conversations, newest first",
   "usage: jmirror ls [--brain B] [--limit N] [--cursor C] [--deleted]\n"
   "                  [--json]\n"
   "\n"
   "Newest first by last update: time, message count, id, title.  50 per\n"
   "page (--limit); the last line gives the --cursor of the next page.\n"
   "--deleted includes deleted conversations.\n"
   "Exit: 0; 1 error; 2 usage.\n",
   cmd_ls, 1},
  {"show", "print a conversation's transcript",
   "usage: jmirror show <conversation_id> [--json] [--thinking] [--limit N]\n"
   "                    [--after SEQ]\n"
   "\n"
   "A readable transcript: role, time and content of every message in\n"
   "conversation order; thinking is folded away unless --thinking.  --json\n"
   "prints the full rows (parent_id healed, parent_id_written as stored).\n"
   "The conversation is brought up to date with its journal first.\n"
   "Exit: 0; 1 if it does not exist or on an error; 2 usage.\n",
   cmd_show, 1},
  {"search", "find messages containing words",
   "usage: jmirror search <words...> [--conversation ID] [--limit N]\n"
   "                      [--deleted] [--json]\n"
   "\n"
   "Messages containing every word as a substring (any script: Korean,\n"
   "Japanese, Chinese and emoji included; ASCII case-insensitive), best\n"
   "first, with a snippet; matches are highlighted on a terminal and put\n"
   "in [brackets] otherwise.\n"
   "Exit: 0 (also with no match); 1 error; 2 usage.\n",
   cmd_search, 1},
  {"replay", "rebuild conversations from their journal files",
   "usage: jmirror replay <conversation_id>... [--threads N] [--json]\n"
   "       jmirror replay --all [--threads N] [--json]\n"
   "\n"
   "Wipe the conversations' rows and replay their journal files, each in\n"
   "one transaction.  --all rebuilds the whole mirror into a fresh file and\n"
   "copies it into the live mirror in one step, so readers never see a\n"
   "half-built mirror.  Parsing and folding run on every core (--threads\n"
   "to limit); one thread writes the mirror.\n"
   "An id with no journal file is an error (exit 1); any rows it had are\n"
   "removed.  --all refuses to run when journal/ is missing.\n"
   "\n"
   "Shows progress on a terminal; prints a summary line (or JSON).\n"
   "Exit: 0 done; 1 an error; 2 usage.\n",
   cmd_replay, 1},
  {"verify", "check the mirror against the journal",
   "usage: jmirror verify [<conversation_id>...] [--repair] [--json]\n"
   "                      [--verbose] [--threads N]\n"
   "\n"
   "Fold each journal file again, independently of the mirror, and compare\n"
   "every row and column and the ingested offsets.  Each conversation is\n"
   "ok, behind (not yet ingested up to its last complete line) or drift\n"
   "(with what differs).  Read-only unless --repair, which replays the\n"
   "drifted conversations, catches up the ones behind, and verifies again.\n"
   "Lines are printed for conversations that are not ok (all with\n"
   "--verbose or when ids are given), then a summary.\n"
   "\n"
   "Exit: 0 no drift (behind is not drift); 1 drift found and not\n"
   "repaired, or an error; 2 usage.\n",
   cmd_verify, 1},
  {"ingest", "bring the mirror up to date (without a daemon)",
   "usage: jmirror ingest [<conversation_id>...] [--json]\n"
   "\n"
   "Read what was appended since the mirror last looked: every journal file\n"
   "whose size or identity changed (unchanged files cost one stat), or just\n"
   "the given conversations.  Files that no longer match what was ingested\n"
   "are replayed; conversations whose file is gone lose their rows.  This is\n"
   "what jmirrord does continuously; use it when no daemon runs.\n"
   "Exit: 0 done; 1 an error; 2 usage.\n",
   cmd_ingest, 1},
  {"status", "show what the daemon and the mirror are doing",
   "usage: jmirror status [--json]\n"
   "\n"
   "Ask jmirrord (over its control socket) for its state: files tracked,\n"
   "bytes not yet ingested, events ingested, bad lines, last error, uptime.\n"
   "With no daemon running, read the same facts from the mirror and\n"
   "journal/ and say so.  Also shows whether the mirror is excluded from\n"
   "backups (CACHEDIR.TAG; the Time Machine attribute on macOS).\n"
   "Exit: 0; 1 on an error; 2 usage.\n",
   cmd_status, 1},
  {"backup", "copy the journal consistently into a backup directory",
   "usage: jmirror backup DEST [--with-mirror] [--json]\n"
   "       jmirror backup --check DEST [--json]\n"
   "\n"
   "Copy every journal file, up to its last complete line, into\n"
   "DEST/journal while writers and the daemon run, then write\n"
   "DEST/MANIFEST.json (bytes and SHA-256 of each file) last and\n"
   "atomically.  Into an existing backup only new bytes are appended, after\n"
   "checking that the bytes already there still match; a file that does\n"
   "not is copied whole and reported.  Files gone from the root are kept.\n"
   "--with-mirror adds a consistent snapshot of the mirror (VACUUM INTO).\n"
   "--check reads every byte of DEST and compares it with the manifest.\n"
   "A failed run leaves DEST as the previous complete backup.\n"
   "\n"
   "The root is never written.  Refused, nothing changed (exit 2): a DEST\n"
   "inside the root; a DEST/journal or DEST/mirror that leads into the\n"
   "root (symbolic link, bind mount); journal files of DEST that are the\n"
   "root's own (a hard-link copy of the root); a symbolic link where a\n"
   "file of DEST/journal would be written; a DEST whose manifest names\n"
   "another root (remove DEST/MANIFEST.json if the root was moved).\n"
   "Files of DEST hard-linked to an earlier backup are replaced whole,\n"
   "never changed in place.\n"
   "One backup or --check of a DEST at a time.  See docs/backups.md.\n"
   "Exit: 0 done (check: all match); 1 an error or a mismatch; 2 usage.\n",
   cmd_backup, 1},
  {"service", "install jmirrord as a login service (launchd/systemd)",
   "usage: jmirror service install|uninstall|print [--launchd|--systemd]\n"
   "                              [--daemon PATH]\n"
   "\n"
   "Write (or remove, or just print) the file that runs jmirrord for the\n"
   "current user on this root: a LaunchAgent on macOS\n"
   "(~/Library/LaunchAgents/io.jmirror.jmirrord.plist), a systemd user\n"
   "unit elsewhere (~/.config/systemd/user/jmirrord.service).  The\n"
   "daemon path defaults to the jmirrord beside this jmirror.  Prints the\n"
   "command that starts (or stops) it.\n"
   "Exit: 0; 1 on an error; 2 usage.\n",
   cmd_service, 1},
  {"errors", "list bad lines recorded in the mirror",
   "usage: jmirror errors [<conversation_id>] [--json]\n"
   "\n"
   "List the journal lines that broke the format: conversation, line\n"
   "number, byte offset, reason (too_long, invalid_utf8, invalid_json,\n"
   "not_object, duplicate_key, unsupported_version, conversation_mismatch,\n"
   "missing_member, bad_ts, wrong_type) and a message.  The mirror is\n"
   "brought up to date first (by jmirrord when it runs), so lines\n"
   "appended since the last ingest are listed too.  An id with no journal\n"
   "file is an error.\n"
   "Exit: 0; 1 on an error; 2 usage.\n",
   cmd_errors, 1},
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
          "usage: jmirror [--root DIR] [--mirror DB] <command> [arguments]\n"
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
          "The mirror is --mirror, else $JMIRROR_MIRROR, else\n"
          "<root>/mirror/mirror.db.\n"
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
    else if (strcmp(a, "--mirror") == 0 && i + 1 < argc)
      ctx.mirror_flag = argv[++i];
    else if (strncmp(a, "--mirror=", 9) == 0)
      ctx.mirror_flag = a + 9;
    else if (strcmp(a, "--root") == 0 || strcmp(a, "--mirror") == 0) {
      cli_err("option '%s' needs a path", a);
      return EXIT_USAGE;
    } else {
      cli_err("unknown option '%s' (see 'jmirror --help')", a);
      return EXIT_USAGE;
    }
    if ((ctx.root_flag && ctx.root_flag[0] == '\0') ||
        (ctx.mirror_flag && ctx.mirror_flag[0] == '\0')) {
      cli_err("option '%s' needs a non-empty path", a);
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
