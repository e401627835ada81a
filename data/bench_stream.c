/* data/bench_stream.c: throughput of the mixture stream on the calling
 * thread (decode + mix + batch assembly), for tools/bench-data. Not a test:
 * it prints a rate and checks nothing but errors.
 *
 * usage: bench_data_stream --domain GLOB --general GLOB [--seq-len T]
 *        [--batch B] [--tokens N] [--prefetch P] [--fraction F] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "data/stream.h"

static double clock_s(clockid_t id) {
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    const char *dom = NULL, *gen = NULL;
    long T = 1024, B = 64, prefetch = 0;
    double tokens = 0, frac = 0.3;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--domain")) dom = v;
        else if (!strcmp(a, "--general")) gen = v;
        else if (!strcmp(a, "--seq-len")) T = atol(v);
        else if (!strcmp(a, "--batch")) B = atol(v);
        else if (!strcmp(a, "--tokens")) tokens = atof(v);
        else if (!strcmp(a, "--prefetch")) prefetch = atol(v);
        else if (!strcmp(a, "--fraction")) frac = atof(v);
        else {
            fprintf(stderr, "bench_data_stream: unknown option %s\n", a);
            return 2;
        }
    }
    if (!dom || !gen || T < 1 || B < 1 || tokens <= 0) {
        fprintf(stderr, "usage: bench_data_stream --domain GLOB --general GLOB --tokens N "
                        "[--seq-len T] [--batch B] [--prefetch P] [--fraction F]\n");
        return 2;
    }
    long steps = (long)(tokens / (double)(B * (T + 1))) + 1;
    const char *dg[] = {dom}, *gg[] = {gen};
    StreamSourceConfig src[] = {{"domain", STREAM_DOMAIN, dg, 1, NULL, 0, 0},
                                {"general", STREAM_GENERAL, gg, 1, NULL, 0, 0}};
    MixPoint sched[] = {{0, frac}};
    StreamConfig cfg = {.sources = src, .n_sources = 2, .schedule = sched, .n_schedule = 1,
                        .seq_len = (uint32_t)T, .global_batch = (uint32_t)B, .total_steps = (uint64_t)steps,
                        .seed = 1, .prefetch = (int)prefetch};
    char err[1024];
    Stream *s;
    if (stream_open(&s, &cfg, err, sizeof err)) {
        fprintf(stderr, "bench_data_stream: %s\n", err);
        return 1;
    }
    uint32_t *tok = malloc((size_t)B * (T + 1) * sizeof *tok);
    int32_t *ids = malloc((size_t)B * sizeof *ids);
    uint64_t sum = 0;
    double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    for (long step = 0; step < steps; step++) {
        if (stream_next_batch(s, (uint64_t)step, 0, 1, tok, ids, err, sizeof err)) {
            fprintf(stderr, "bench_data_stream: %s\n", err);
            return 1;
        }
        sum += tok[step % (B * (T + 1))]; /* keep the copy observable */
    }
    double dt = clock_s(CLOCK_MONOTONIC) - t0, cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
    double n = (double)steps * B * (T + 1);
    printf("stream: %ld steps x %ld samples x %ld tokens = %.0f tokens in %.3f s (%.3f CPU-s): "
           "%.2f M tokens/s, %.2f M tokens per CPU-s (prefetch %ld, domain epochs %.2f, general epochs %.2f, "
           "checksum %llu)\n",
           steps, B, T + 1, n, dt, cpu, n / dt / 1e6, n / cpu / 1e6, prefetch, stream_source_epochs(s, 0, (uint64_t)steps - 1),
           stream_source_epochs(s, 1, (uint64_t)steps - 1), (unsigned long long)sum);
    free(tok);
    free(ids);
    stream_close(s);
    return 0;
}
