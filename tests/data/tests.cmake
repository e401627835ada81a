# Data and tokenizer tests that need files and other commands (the zstd,
# gzip and sentencepiece CLIs): `dapt tokenize` and `dapt inspect` end to end.
add_test(NAME data_cli COMMAND ${CMAKE_CURRENT_LIST_DIR}/cli_data.sh $<TARGET_FILE:dapt>)
set_tests_properties(data_cli PROPERTIES LABELS c)
