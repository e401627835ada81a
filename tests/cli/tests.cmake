# The dapt binary answers --version and --help and rejects unknown commands.
add_test(NAME cli_version COMMAND dapt --version)
set_tests_properties(cli_version PROPERTIES LABELS "c" PASS_REGULAR_EXPRESSION "^dapt [0-9]+\\.[0-9]+\\.[0-9]+")
add_test(NAME cli_help COMMAND dapt --help)
set_tests_properties(cli_help PROPERTIES LABELS "c" PASS_REGULAR_EXPRESSION "usage: dapt <command>")
add_test(NAME cli_unknown COMMAND dapt frobnicate)
set_tests_properties(cli_unknown PROPERTIES LABELS "c" WILL_FAIL TRUE)
# dist.backend = "nccl" is for GPU buffers: refused, with the reason, on the cpu device
add_test(NAME cli_train_nccl_cpu
         COMMAND dapt train ${CMAKE_SOURCE_DIR}/tests/train/tiny.toml.in --dist.backend=nccl)
set_tests_properties(cli_train_nccl_cpu PROPERTIES LABELS "c"
                     PASS_REGULAR_EXPRESSION "dist.backend = \"nccl\" needs run.device = \"cuda\"")
# the commands' option parser: help, unknown options, missing values (exit 2)
add_test(NAME cli_options COMMAND ${CMAKE_CURRENT_LIST_DIR}/opt.sh $<TARGET_FILE:dapt>)
set_tests_properties(cli_options PROPERTIES LABELS "c")
# dapt plan: the Llama-3.1-8B figures docs/distributed.md quotes (ZeRO-1 over 8
# GPUs; ZeRO-3 over 8 GPUs at T = 8192 with recomputation)
add_test(NAME cli_plan_8b COMMAND dapt plan ${CMAKE_SOURCE_DIR}/configs/plan-llama3-8b.toml --world 8)
set_tests_properties(cli_plan_8b PROPERTIES LABELS "c"
                     PASS_REGULAR_EXPRESSION "= peak +60\\.478 GiB")
add_test(NAME cli_plan_8b_zero3 COMMAND dapt plan ${CMAKE_SOURCE_DIR}/configs/plan-llama3-8b.toml
         --world 8 --dist.zero=3 --data.seq_len=8192 --train.recompute=block)
set_tests_properties(cli_plan_8b_zero3 PROPERTIES LABELS "c"
                     PASS_REGULAR_EXPRESSION "= peak +24\\.686 GiB")
