# `dapt law` end to end: fit / predict / recommend on a synthetic sweep and
# the exit status and message for bad results files (tests/law/cli.sh).
add_test(NAME law_cli COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/cli.sh $<TARGET_FILE:dapt>)
set_tests_properties(law_cli PROPERTIES LABELS "c")
# tools/law/plot.py (Debian python3-matplotlib).
add_test(NAME law_plot COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/plot.sh $<TARGET_FILE:dapt> ${DAPT_PYTHON})
set_tests_properties(law_plot PROPERTIES LABELS "py")
# `dapt law sweep` end to end: tiny training runs, results.jsonl, skipping,
# --print, bad sweep files (tests/law/sweep.sh).
add_test(NAME law_sweep_cli ${FULL} COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/sweep.sh $<TARGET_FILE:dapt> ${DAPT_PYTHON})
set_tests_properties(law_sweep_cli PROPERTIES LABELS "c" TIMEOUT 600)
# tools/law/holdout.py on a synthetic sweep (tests/law/holdout.sh).
add_test(NAME law_holdout ${FULL} COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/holdout.sh $<TARGET_FILE:dapt> ${DAPT_PYTHON})
set_tests_properties(law_holdout PROPERTIES LABELS "py" TIMEOUT 600)
