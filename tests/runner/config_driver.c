/* config_driver.c: prints the resolved config (config_to_toml) of a config
 * file plus overrides, for tests/runner/test_toml_compat.py; exit 1 with the
 * error message on stderr when the config is refused. Not part of `dapt`. */
#include <stdio.h>
#include <stdlib.h>

#include "trainer/config.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: config_driver FILE [--section.key=value ...]\n");
        return 2;
    }
    Config c;
    char err[2048];
    int rc = config_from_args(&c, argv[1], argc - 2, argv + 2, err, sizeof err);
    if (rc) fprintf(stderr, "%s\n", err);
    else {
        char *t = config_to_toml(&c);
        if (t) fputs(t, stdout);
        rc = !t;
        free(t);
    }
    config_free(&c);
    return rc;
}
