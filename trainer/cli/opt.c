/* opt.c: the option parser of the dapt commands (opt.h). */
#include "trainer/cli/opt.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/util.h"

static void vmessage(const CliSpec *spec, const char *fmt, va_list ap) {
    fprintf(stderr, "dapt %s: ", spec->cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int cli_usage_error(const CliSpec *spec, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmessage(spec, fmt, ap);
    va_end(ap);
    return CLI_USAGE;
}

int cli_fail(const CliSpec *spec, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmessage(spec, fmt, ap);
    va_end(ap);
    return 1;
}

int cli_usage(const CliSpec *spec) {
    fputs(spec->usage, stderr);
    return CLI_USAGE;
}

static int unknown_option(const CliSpec *spec, const char *a, size_t len) {
    const char *best = NULL;
    size_t best_d = (size_t)-1;
    for (const CliOpt *o = spec->opts; o && o->name; o++) {
        size_t d = edit_distance(a, len, o->name);
        if (d < best_d) best_d = d, best = o->name;
    }
    if (best && best_d <= 2 + len / 4)
        return cli_usage_error(spec, "unknown option %.*s (did you mean %s?)", (int)len, a, best);
    return cli_usage_error(spec, "unknown option %.*s (see `dapt %s --help`)", (int)len, a,
                           spec->cmd);
}

int cli_parse(const CliSpec *spec, int argc, char **argv, int first, const char **pos, int *n_pos) {
    *n_pos = 0;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(spec->usage, stdout);
            return CLI_HELP;
        }
        if (a[0] != '-' || !strcmp(a, "-")) {
            if (spec->max_pos >= 0 && *n_pos >= spec->max_pos)
                return cli_usage_error(spec, "unexpected argument '%s' (see `dapt %s --help`)", a,
                                       spec->cmd);
            pos[(*n_pos)++] = a;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        if (spec->overrides && memchr(a, '.', len)) {
            spec->overrides[(*spec->n_overrides)++] = argv[i];
            continue;
        }
        CliOpt *o = spec->opts;
        for (; o && o->name; o++)
            if (strlen(o->name) == len && !strncmp(o->name, a, len)) break;
        if (!o || !o->name) return unknown_option(spec, a, len);
        o->seen++;
        if (o->takes_value) {
            if (eq)
                o->value = eq + 1;
            else if (i + 1 < argc)
                o->value = argv[++i];
            else
                return cli_usage_error(spec, "%s needs a value (see `dapt %s --help`)", o->name,
                                       spec->cmd);
        } else if (eq) {
            return cli_usage_error(spec, "%s takes no value", o->name);
        }
    }
    return CLI_OK;
}

int cli_format(const CliSpec *spec, int argc, char **argv, const char *format) {
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        fputs(spec->usage, stdout);
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], format)) return -1;
    cli_usage_error(spec, "the only format is %s", format);
    return cli_usage(spec);
}

CliOpt *cli_opt(const CliSpec *spec, const char *name) {
    for (CliOpt *o = spec->opts; o->name; o++)
        if (!strcmp(o->name, name)) return o;
    fprintf(stderr, "dapt %s: internal error: no option %s in the table\n", spec->cmd, name);
    abort();
}

int cli_u64(const CliSpec *spec, const CliOpt *o, uint64_t lo, uint64_t hi, uint64_t *out) {
    if (!o->value) return CLI_OK;
    const char *v = o->value;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end || v[0] == '-' || x < lo || x > hi)
        return cli_usage_error(spec, "%s %s: expected an integer in [%llu, %llu]", o->name, v,
                               (unsigned long long)lo, (unsigned long long)hi);
    *out = x;
    return CLI_OK;
}
