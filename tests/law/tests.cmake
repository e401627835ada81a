# `dapt law` end to end: fit / predict / recommend on a synthetic sweep and
# the exit status and message for bad results files (tests/law/cli.sh).
add_test(NAME law_cli COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/cli.sh $<TARGET_FILE:dapt>)
set_tests_properties(law_cli PROPERTIES LABELS "c")
