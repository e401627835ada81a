/* cli.h: `dapt train`, the one subcommand defined outside trainer/cli/ (in
 * trainer/train.c); the dispatch table in trainer/cli/main.c calls it with
 * argv[0] = "train" and returns its value as the exit status (0 ok,
 * 1 failure, 2 usage error). */
#ifndef DAPT_CLI_H
#define DAPT_CLI_H

int cmd_train(int argc, char **argv);

#endif
