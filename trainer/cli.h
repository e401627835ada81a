/* cli.h: the subcommands of the `dapt` binary. Each takes (argc, argv) with
 * argv[0] the subcommand name, prints its own usage for --help, and returns
 * the process exit status (0 ok, 1 failure, 2 usage error). */
#ifndef DAPT_CLI_H
#define DAPT_CLI_H

int cmd_tokenize(int argc, char **argv); /* tokenizer/cmd_tokenize.c */
int cmd_inspect(int argc, char **argv);  /* data/cmd_inspect.c */
/* tools/law/cmd_law.c: fit, predict and apply the D-CPT scaling law. */
int cmd_law(int argc, char **argv);
/* trainer/cmd_logits.c: forward pass of a model on token ids; logits out. */
int cmd_logits(int argc, char **argv);
/* tools/gguf/cmd_export.c, cmd_import.c: GGUF (llama.cpp) export and import. */
int cmd_export(int argc, char **argv);
int cmd_import(int argc, char **argv);

int cmd_train(int argc, char **argv);  /* trainer/cli/train.c */
int cmd_sample(int argc, char **argv); /* trainer/sample.c */

#endif
