# tests/merge: `dapt merge` (trainer/merge.h) against NumPy statements of each
# method written from the papers in test_merge.py, the merged model in
# transformers and `dapt logits`, and the refusals (through
# tests/cli/expect.sh: exit status and message). Python from tools/setup's .venv.
set(merge_dir ${CMAKE_CURRENT_SOURCE_DIR}/merge)
set(merge_need_venv "if [ ! -x \"$0\" ]; then echo \"$0 not found: run tools/setup to make the .venv\" >&2; exit 1; fi; exec \"$0\" \"$@\"")
set(merge_expect ${CMAKE_SOURCE_DIR}/tests/cli/expect.sh)
foreach(case linear task_arithmetic ties dare della config layers gguf logits moe refusals)
  add_test(NAME merge_${case}
           COMMAND sh -c "${merge_need_venv}" ${DAPT_HF_PYTHON} ${merge_dir}/test_merge.py
                   $<TARGET_FILE:dapt> ${merge_expect} ${case})
  set_tests_properties(merge_${case} PROPERTIES LABELS py)
endforeach()
# usage errors (no Python)
add_test(NAME merge_cli_bad_method
         COMMAND ${merge_expect} 2 "--method 'slerp' is not one of linear, task_arithmetic" $<TARGET_FILE:dapt>
                 merge out a b --method slerp)
add_test(NAME merge_cli_weights_count
         COMMAND ${merge_expect} 2 "--weights has 1 items for 2 models" $<TARGET_FILE:dapt>
                 merge out a b --method linear --weights 1)
set_tests_properties(merge_cli_bad_method merge_cli_weights_count PROPERTIES LABELS c)
# the chat-vector recipe end to end on dapt checkpoints (docs/merge.md's table)
add_test(NAME merge_e2e COMMAND ${merge_dir}/merge_e2e.sh $<TARGET_FILE:dapt>)
set_tests_properties(merge_e2e PROPERTIES LABELS py)
