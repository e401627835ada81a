# tests/eval: `dapt eval` (trainer/tasks.h). The task-file parser's refusals
# are tests/c/test_tasks.c (label "c"); here the scores against HF
# transformers and tokenizers on tiny random models (label "py", the .venv
# of tools/setup), a llama with a BOS tokenizer and a GPT-2 without one.
foreach(case llama gpt2)
  add_test(NAME eval_hf_${case}
           COMMAND sh -c "if [ ! -x \"$0\" ]; then echo \"$0 not found: run tools/setup to make the .venv\" >&2; exit 1; fi; exec \"$0\" \"$@\""
                   ${DAPT_HF_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/eval/test_eval_hf.py ${case}
                   $<TARGET_FILE:dapt>)
  set_tests_properties(eval_hf_${case} PROPERTIES LABELS py)
endforeach()
# a bad task file is refused with FILE:LINE before any model is loaded
# (tests/cli/expect.sh: exit status 1 and the message on stderr)
add_test(NAME eval_cli_bad_tasks
         COMMAND ${CMAKE_SOURCE_DIR}/tests/cli/expect.sh 1 "tests.cmake:1: not valid JSON"
                 $<TARGET_FILE:dapt> eval ${CMAKE_CURRENT_SOURCE_DIR}/eval
                 --tasks ${CMAKE_CURRENT_SOURCE_DIR}/eval/tests.cmake)
set_tests_properties(eval_cli_bad_tasks PROPERTIES LABELS c)
