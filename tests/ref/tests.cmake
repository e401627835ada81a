# PyTorch reference tests: tests/ref/refdrv (dapt) against tests/ref/check.py
# (torch autograd), one ctest test per case.
add_executable(refdrv ${CMAKE_CURRENT_LIST_DIR}/refdrv.c)
target_link_libraries(refdrv PRIVATE ${dapt_libs})
foreach(case gpt2_tied gpt2_untied llama_mha llama_gqa llama_qkv_bias llama_qk_norm
             llama_rope_llama3 llama_rope_linear)
  set(cfg "")
  if(case STREQUAL "llama_rope_linear") # the llama3 case covers the scaled frequencies quickly
    set(cfg ${FULL})
  endif()
  add_test(NAME ref_${case} ${cfg}
           COMMAND ${DAPT_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/check.py
                   --driver $<TARGET_FILE:refdrv> --case ${case})
  set_tests_properties(ref_${case} PROPERTIES LABELS py)
endforeach()
# MoE cases (tests/ref/check_moe.py): each LBL mode, accumulation semantics
foreach(case moe_global moe_micro moe_none)
  add_test(NAME ref_${case}
           COMMAND ${DAPT_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/check_moe.py
                   --driver $<TARGET_FILE:refdrv> --case ${case})
  set_tests_properties(ref_${case} PROPERTIES LABELS py)
endforeach()
# document-masked attention and RoPE at per-document positions (CPU ops)
# against PyTorch with an explicit block-diagonal causal mask
add_test(NAME ref_docmask
         COMMAND ${DAPT_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/check_docmask.py
                 --driver $<TARGET_FILE:test_docmask>)
set_tests_properties(ref_docmask PROPERTIES LABELS py)
