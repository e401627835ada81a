# The dapt binary answers --version and --help and rejects unknown commands.
# Every check here goes through tests/cli/expect.sh STATUS REGEX CMD...: the
# exact exit status and the message (stdout for status 0, stderr for a
# refusal), so neither a crash nor a silent success passes for a refusal.
set(expect ${CMAKE_CURRENT_LIST_DIR}/expect.sh)
add_test(NAME cli_version COMMAND ${expect} 0 "^dapt [0-9]+\\.[0-9]+\\.[0-9]+$" $<TARGET_FILE:dapt> --version)
set_tests_properties(cli_version PROPERTIES LABELS "c")
add_test(NAME cli_help COMMAND ${expect} 0 "^usage: dapt <command>" $<TARGET_FILE:dapt> --help)
set_tests_properties(cli_help PROPERTIES LABELS "c")
# an unknown command is a usage error (exit 2) that names it
add_test(NAME cli_unknown COMMAND ${expect} 2 "^dapt: unknown command 'frobnicate'" $<TARGET_FILE:dapt> frobnicate)
set_tests_properties(cli_unknown PROPERTIES LABELS "c")
# dist.backend = "nccl" is for GPU buffers: refused (exit 1), with the reason, on the cpu device
add_test(NAME cli_train_nccl_cpu
         COMMAND ${expect} 1 "dist.backend = \"nccl\" needs run.device = \"cuda\""
                 $<TARGET_FILE:dapt> train ${CMAKE_SOURCE_DIR}/tests/train/tiny.toml.in --dist.backend=nccl)
set_tests_properties(cli_train_nccl_cpu PROPERTIES LABELS "c")
# the commands' option parser: help, unknown options, missing values (exit 2)
add_test(NAME cli_options COMMAND ${CMAKE_CURRENT_LIST_DIR}/opt.sh $<TARGET_FILE:dapt>)
set_tests_properties(cli_options PROPERTIES LABELS "c")
# dapt plan: the Llama-3.1-8B figures docs/distributed.md quotes (ZeRO-1 over 8
# GPUs; ZeRO-3 over 8 GPUs at T = 8192 with recomputation)
add_test(NAME cli_plan_8b COMMAND ${expect} 0 "= peak +60\\.478 GiB"
         $<TARGET_FILE:dapt> plan ${CMAKE_SOURCE_DIR}/configs/plan-llama3-8b.toml --world 8)
set_tests_properties(cli_plan_8b PROPERTIES LABELS "c")
add_test(NAME cli_plan_8b_zero3 COMMAND ${expect} 0 "= peak +24\\.686 GiB"
         $<TARGET_FILE:dapt> plan ${CMAKE_SOURCE_DIR}/configs/plan-llama3-8b.toml
         --world 8 --dist.zero=3 --data.seq_len=8192 --train.recompute=block)
set_tests_properties(cli_plan_8b_zero3 PROPERTIES LABELS "c")
# The example commands of README.md and docs/data.md, taken from the
# markdown and run in an empty directory (tests/cli/docs_walk.py; HF
# tokenizers from the .venv make the BPE tokenizer directories they name)
add_test(NAME cli_docs_walk
         COMMAND ${DAPT_HF_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/docs_walk.py $<TARGET_FILE:dapt> ${CMAKE_SOURCE_DIR})
set_tests_properties(cli_docs_walk PROPERTIES LABELS py TIMEOUT 600)
