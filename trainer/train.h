/* train.h: the continued-pretraining run behind `dapt train`
 * (trainer/cli/train.c parses the command line and calls train_run).
 *
 * A run: setup (model from init_from or a checkpoint, data stream, run
 * directory, collectives: trainer/comm.h), then the loop of optimizer
 * steps with evaluation, checkpoints and metrics (trainer/metrics.h),
 * stopping after the last step, on a non-finite loss or gradient
 * (train.on_nonfinite), or after the step during which SIGINT/SIGTERM
 * arrived on some rank (with a checkpoint). */
#ifndef DAPT_TRAIN_H
#define DAPT_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/config.h"
#include "trainer/dist.h"

typedef struct {
    Config cfg;
    Dist *dist; /* the job's process group (dist_init) */
    int resume; /* continue from the newest complete checkpoint in RUN */
    /* a new run in a RUN that holds one: move the old RUN aside to
     * RUN.old-YYYYMMDD-HHMMSS (without it such a RUN is refused) */
    int overwrite;
} TrainArgs;

/* Runs the training of a->cfg on this rank of a->dist. 0 when the run
 * finished or stopped on a signal with a checkpoint; 1 on failure, with a
 * message in err ("" when another rank, or a line already printed on
 * stderr, reports it: a failed checkpoint, a non-finite step). Progress goes
 * to stdout. A NCCL failure ends the job (dist_abort, trainer/comm.h). */
int train_run(const TrainArgs *a, char *err, size_t err_len);

/* Windows of T + 1 tokens (rows of them) -> inputs and next-token
 * targets (rows x T each). bos >= 0 (a tokenizer that starts every document
 * with BOS): a BOS right after an EOS is not a target (-1, ignored: the
 * next document's BOS is not predicted from the previous one's EOS). */
void train_split_windows(const uint32_t *win, int rows, int T, int eos, int bos, int32_t *inp,
                         int32_t *tgt);

#endif
