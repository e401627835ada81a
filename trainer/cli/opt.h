/* opt.h: the one option parser of the dapt commands (trainer/cli/).
 *
 * A command lists its long options in a table ending with {NULL}; an option
 * takes a value (`--name VALUE` or `--name=VALUE`) or is a flag (`--name`).
 * Every other argument is a positional, except `-h`/`--help` (the command's
 * help on stdout). Messages name the command: "dapt CMD: unknown option --x
 * (did you mean --y?)". Usage errors exit with status 2, failures with 1.
 */
#ifndef DAPT_CLI_OPT_H
#define DAPT_CLI_OPT_H

#include <stdint.h>

typedef struct {
    const char *name;  /* "--out" */
    int takes_value;   /* 1: --name VALUE / --name=VALUE; 0: a flag */
    const char *value; /* the last value given; NULL when not given */
    int seen;          /* how many times it was given */
} CliOpt;

typedef struct {
    const char *cmd;   /* "tokenize", "law fit": messages start "dapt CMD: " */
    const char *usage; /* the help text, printed for --help */
    CliOpt *opts;      /* the options, ending with {NULL} */
    int max_pos;       /* positionals accepted; -1: any number */
    /* commands that take config overrides (`--section.key=value`, checked
     * by the config layer): each such argument lands here, in order; NULL
     * when the command takes none (room for argc entries) */
    char **overrides;
    int *n_overrides;
} CliSpec;

enum { CLI_OK = 0, CLI_HELP = 1, CLI_USAGE = 2 };

/* Parses argv[first..argc): options into spec->opts, positionals into pos
 * (room for max_pos entries, or argc when max_pos is -1) and their count
 * into *n_pos. Returns CLI_OK,
 * CLI_HELP after printing the usage on stdout, or CLI_USAGE after printing
 * what was wrong on stderr. */
int cli_parse(const CliSpec *spec, int argc, char **argv, int first, const char **pos, int *n_pos);

/* `dapt CMD FORMAT ...` where FORMAT is the only format there is: -1 when
 * argv[1] is it (options and positionals start at argv[2]), else the exit
 * status: 0 after printing the usage for --help/-h, 2 after saying "the
 * only format is FORMAT". */
int cli_format(const CliSpec *spec, int argc, char **argv, const char *format);

/* The option called name (which the table must list). */
CliOpt *cli_opt(const CliSpec *spec, const char *name);

/* "dapt CMD: MESSAGE" on stderr; the return values are the exit statuses
 * (cli_usage_error 2, cli_fail 1). cli_usage prints the usage on stderr
 * and returns 2. */
int cli_usage_error(const CliSpec *spec, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int cli_fail(const CliSpec *spec, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cli_usage(const CliSpec *spec);

/* The value of option o as a decimal integer in [lo, hi]; on a bad value,
 * prints "dapt CMD: --name VALUE: expected an integer in [lo, hi]" and
 * returns CLI_USAGE. Leaves *out alone when the option was not given. */
int cli_u64(const CliSpec *spec, const CliOpt *o, uint64_t lo, uint64_t hi, uint64_t *out);

#endif
