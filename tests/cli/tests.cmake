# The dapt binary answers --version and --help and rejects unknown commands.
add_test(NAME cli_version COMMAND dapt --version)
set_tests_properties(cli_version PROPERTIES LABELS "c" PASS_REGULAR_EXPRESSION "^dapt [0-9]+\\.[0-9]+\\.[0-9]+")
add_test(NAME cli_help COMMAND dapt --help)
set_tests_properties(cli_help PROPERTIES LABELS "c" PASS_REGULAR_EXPRESSION "usage: dapt <command>")
add_test(NAME cli_unknown COMMAND dapt frobnicate)
set_tests_properties(cli_unknown PROPERTIES LABELS "c" WILL_FAIL TRUE)
