/* test_law_data.c: sweep results are read from JSONL and CSV, absent losses
 * are allowed, and every kind of bad row is rejected with a message naming
 * the file and the line. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/c/check.h"
#include "tools/law/law.h"


static void test_good_jsonl(void) {
    const char *text = "{\"N\": 1e8, \"D\": 2e9, \"r_domain\": 0.25, \"loss_general\": 3.1, "
                       "\"loss_domain\": 2.7}\n"
                       "\n"
                       "# a comment line\n"
                       "{\"N\": 1e8, \"D\": 4e9, \"r_domain\": 0, \"loss_general\": 3.0, "
                       "\"run\": \"extra keys are ignored\"}\n"
                       "{\"N\": 2e8, \"D\": 2e9, \"r_domain\": 1, \"loss_general\": null, "
                       "\"loss_domain\": 2.5}\n";
    LawData d;
    char err[LAW_ERR_LEN];
    CHECK(law_data_parse("ok.jsonl", text, &d, err, sizeof err) == 0, "%s", err);
    CHECK(d.n == 3, "n = %d", d.n);
    if (d.n == 3) {
        CHECK(d.rows[0].N == 1e8 && d.rows[0].D == 2e9 && d.rows[0].r_domain == 0.25 &&
                  d.rows[0].loss_general == 3.1 && d.rows[0].loss_domain == 2.7,
              "row 0 values");
        CHECK(d.rows[1].has_general && !d.rows[1].has_domain && d.rows[1].line == 4,
              "row 1: line %d", d.rows[1].line);
        CHECK(!d.rows[2].has_general && d.rows[2].has_domain && d.rows[2].line == 5, "row 2");
    }
    law_data_free(&d);
}

static void test_good_csv(void) {
    const char *text = "\xEF\xBB\xBFN,D,r_domain,loss_general,loss_domain,domain,k1,k2\n"
                       "1e8, 2e9, 0.5, 3.1, 2.7, med, 2.9, 0.1\n"
                       "1e8,4e9,0.5,,2.6,med,2.9,0.1\r\n"
                       "1e8,4e9,0.5,3.0,2.6,law,3.2,0.2\n";
    LawData d;
    char err[LAW_ERR_LEN];
    CHECK(law_data_parse("ok.csv", text, &d, err, sizeof err) == 0, "%s", err);
    CHECK(d.n == 3, "n = %d", d.n);
    if (d.n == 3) {
        CHECK(d.rows[0].has_k && d.rows[0].k1 == 2.9 && !strcmp(d.rows[0].domain, "med"), "row 0");
        CHECK(!d.rows[1].has_general && d.rows[1].loss_domain == 2.6, "row 1");
        CHECK(!strcmp(d.rows[2].domain, "law") && d.rows[2].k2 == 0.2, "row 2");
    }
    law_data_free(&d);
}

/* Each bad input must fail with a message containing `want` (file:line and
 * what was wrong). */
static void expect_error(const char *name, const char *text, const char *want1, const char *want2) {
    LawData d;
    char err[LAW_ERR_LEN] = "";
    int rc = law_data_parse(name, text, &d, err, sizeof err);
    CHECK(rc == -1, "%s accepted: %s", name, text);
    CHECK(strstr(err, want1) && strstr(err, want2), "%s: message '%s' lacks '%s' / '%s'", name, err,
          want1, want2);
    CHECK(d.rows == NULL && d.n == 0, "%s: rows not freed on error", name);
}

#define ROW1                                                                                       \
    "{\"N\": 1e8, \"D\": 1e9, \"r_domain\": 0.5, \"loss_general\": 3, \"loss_domain\": 2}\n"

static void test_bad_inputs(void) {
    expect_error("nan.jsonl",
                 ROW1 "{\"N\": 1e8, \"D\": 2e9, \"r_domain\": 0.5, \"loss_domain\": NaN}\n",
                 "nan.jsonl:2:", "NaN");
    expect_error("nan.csv", "N,D,r_domain,loss_general\n1e8,1e9,0.5,nan\n",
                 "nan.csv:2:", "loss_general is NaN");
    expect_error("inf.csv", "N,D,r_domain,loss_domain\n1e8,1e9,0.5,inf\n",
                 "inf.csv:2:", "infinite");
    expect_error("neg.jsonl", ROW1 ROW1 "x", "neg.jsonl:3:", "not a valid JSON");
    expect_error("neg.jsonl",
                 ROW1 "{\"N\": 1e8, \"D\": 2e9, \"r_domain\": 0.5, \"loss_general\": -3}\n",
                 "neg.jsonl:2:", "loss_general = -3 must be > 0");
    expect_error("zero.jsonl", "{\"N\": 1e8, \"D\": 2e9, \"r_domain\": 0.5, \"loss_domain\": 0}\n",
                 "zero.jsonl:1:", "loss_domain = 0 must be > 0");
    expect_error("r.jsonl", "{\"N\": 1e8, \"D\": 2e9, \"r_domain\": 1.5, \"loss_domain\": 2}\n",
                 "r.jsonl:1:", "r_domain = 1.5 is outside [0, 1]");
    expect_error("r.csv", "N,D,r_domain,loss_domain\n1e8,1e9,-0.1,2\n",
                 "r.csv:2:", "outside [0, 1]");
    expect_error("n.jsonl", "{\"N\": 0, \"D\": 2e9, \"r_domain\": 0.5, \"loss_domain\": 2}\n",
                 "n.jsonl:1:", "N = 0 must be > 0");
    expect_error("d.csv", "N,D,r_domain,loss_domain\n1e8,-5,0.5,2\n",
                 "d.csv:2:", "D = -5 must be > 0");
    expect_error("dup.jsonl", ROW1 "\n" ROW1, "dup.jsonl:3:", "duplicate row");
    expect_error("dup.jsonl", ROW1 "\n" ROW1, "as line 1", "duplicate");
    expect_error("miss.jsonl", "{\"D\": 2e9, \"r_domain\": 0.5, \"loss_domain\": 2}\n",
                 "miss.jsonl:1:", "missing field \"N\"");
    expect_error("type.jsonl", "{\"N\": \"big\", \"D\": 2e9, \"r_domain\": 0.5}\n",
                 "type.jsonl:1:", "\"N\" is not a number");
    expect_error("noloss.jsonl", "{\"N\": 1e8, \"D\": 2e9, \"r_domain\": 0.5}\n",
                 "noloss.jsonl:1:", "neither loss_general nor loss_domain");
    expect_error("k.jsonl",
                 "{\"N\": 1e8, \"D\": 2e9, \"r_domain\": 0.5, \"loss_domain\": 2, \"k1\": 3}\n",
                 "k.jsonl:1:", "k1 and k2 must be given together");
    expect_error("k.csv",
                 "N,D,r_domain,loss_domain,domain,k1,k2\n1,1,0.5,2,med,3,0.1\n2,1,0.5,2,med,3,"
                 "0.2\n",
                 "k.csv:3:", "differ from line 2");
    expect_error("cells.csv", "N,D,r_domain,loss_domain\n1e8,1e9,0.5\n",
                 "cells.csv:2:", "3 cells but the header has 4");
    expect_error("hdr.csv", "N,D,loss_domain\n1e8,1e9,2\n", "hdr.csv:1:", "\"r_domain\"");
    expect_error("num.csv", "N,D,r_domain,loss_domain\n1e8,1e9,half,2\n",
                 "num.csv:2:", "\"half\" is not a number");
    expect_error("empty.jsonl", "\n# nothing\n", "empty.jsonl", "no observations");
}

static void test_load_file(void) {
    char path[] = "/tmp/test_law_dataXXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    const char *text = ROW1;
    CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text), "write");
    close(fd);
    LawData d;
    char err[LAW_ERR_LEN];
    CHECK(law_data_load(path, &d, err, sizeof err) == 0, "%s", err);
    CHECK(d.n == 1 && !strcmp(d.path, path), "n %d path %s", d.n, d.path);
    law_data_free(&d);
    unlink(path);
    CHECK(law_data_load(path, &d, err, sizeof err) == -1, "missing file accepted");
    CHECK(strstr(err, path) && strstr(err, "cannot open"), "message: %s", err);
}

int main(void) {
    test_good_jsonl();
    test_good_csv();
    test_bad_inputs();
    test_load_file();
    return CHECK_DONE();
}
