/* cli.h: the subcommands of the `dapt` binary, one file each in trainer/cli/.
 * Each takes (argc, argv) with argv[0] the subcommand name, parses its
 * options with opt.h, prints its own usage for --help, and returns the
 * process exit status (0 ok, 1 failure, 2 usage error). */
#ifndef DAPT_CLI_CLI_H
#define DAPT_CLI_CLI_H

int cmd_train(int argc, char **argv);    /* continued pretraining from a config */
int cmd_tokenize(int argc, char **argv); /* encode corpora into .tok.zst shards */
int cmd_inspect(int argc, char **argv);  /* describe and verify a shard or GGUF file */
int cmd_law(int argc, char **argv);      /* fit, predict and apply the D-CPT law */
int cmd_logits(int argc, char **argv);   /* forward pass on token ids; logits out */
int cmd_export(int argc, char **argv);   /* a model to GGUF (llama.cpp) */
int cmd_import(int argc, char **argv);   /* a GGUF file to a checkpoint */
int cmd_sample(int argc, char **argv);   /* text generation */
int cmd_plan(int argc, char **argv);     /* the memory a training config needs */
int cmd_eval(int argc, char **argv);     /* tasks scored by log-likelihood */
int cmd_merge(int argc, char **argv);    /* merge models (trainer/merge.h) */

#endif
