# tests/runner: HF transformers parity tests (label "py") and their C driver.
# The oracle runs in the project's virtualenv (tools/setup makes .venv with a
# pinned transformers over Debian's torch). Without it the tests FAIL with a
# message saying to run tools/setup; they never pass vacuously.
# (DAPT_HF_PYTHON, the .venv's python, is set in the root CMakeLists.txt so
# that every tests/*/tests.cmake sees it on the first configure.)

add_executable(hf_driver ${CMAKE_CURRENT_SOURCE_DIR}/runner/hf_driver.c)
target_link_libraries(hf_driver PRIVATE ${dapt_libs})

foreach(case import_llama_gqa import_llama_tied import_qwen2 import_gpt2 import_mistral import_llama_bf16
             import_gpt2_f16 import_qwen2_bf16_sharded import_llama_sharded
             ckpt_llama ckpt_llama_tied ckpt_qwen2 ckpt_gpt2 ckpt_llama_sharded
             import_mixtral import_mixtral_1layer ckpt_mixtral)
  # quick set: one import per architecture, the sharded import, two checkpoints
  set(cfg ${FULL})
  if(case MATCHES "^(import_(llama_gqa|qwen2|gpt2|mixtral|llama_sharded)|ckpt_(llama|mixtral))$")
    set(cfg "")
  endif()
  add_test(NAME hf_${case} ${cfg}
           COMMAND sh -c "if [ ! -x \"$0\" ]; then echo \"$0 not found: run tools/setup to make the .venv with transformers\" >&2; exit 1; fi; exec \"$0\" \"$@\""
                   ${DAPT_HF_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/runner/test_hf_parity.py ${case}
                   $<TARGET_FILE:hf_driver>)
  set_tests_properties(hf_${case} PROPERTIES LABELS py)
endforeach()

# The newer architectures (Llama 3.x rope_scaling, Qwen3) against transformers
# 4.51.3 on torch 2.5.1 in tools/setup's .venv-hf (DAPT_HF_NEW_PYTHON, root
# CMakeLists.txt); without it they are skipped (exit 77), not failed: the
# rest of the suite does not need that 5 GB venv. Quick set: the llama3
# import (logits and inverse frequencies), Qwen3's gradients, a Qwen3
# checkpoint read by transformers.
foreach(case import_llama31 import_llama_linear import_qwen3 import_qwen3_tied grads_llama31
             grads_qwen3 grads_qwen3_tied ckpt_qwen3 ckpt_qwen3_tied ckpt_llama3 ckpt_llama_linear)
  set(cfg ${FULL})
  if(case MATCHES "^(import_llama31|grads_qwen3|ckpt_qwen3)$")
    set(cfg "")
  endif()
  add_test(NAME hf_arch_${case} ${cfg}
           COMMAND sh -c "if [ ! -x \"$0\" ]; then echo \"$0 not found: run tools/setup to make .venv-hf (transformers 4.51.3)\"; exit 77; fi; exec \"$0\" \"$@\""
                   ${DAPT_HF_NEW_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/runner/test_hf_arch.py ${case}
                   $<TARGET_FILE:hf_driver>)
  set_tests_properties(hf_arch_${case} PROPERTIES LABELS py SKIP_RETURN_CODE 77)
endforeach()

# Python's tomllib (standard library, Python >= 3.11) reads dapt's configs alike.
add_executable(config_driver ${CMAKE_CURRENT_SOURCE_DIR}/runner/config_driver.c)
target_link_libraries(config_driver PRIVATE ${dapt_libs})
add_test(NAME toml_compat
         COMMAND ${DAPT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/runner/test_toml_compat.py
                 $<TARGET_FILE:config_driver> ${CMAKE_SOURCE_DIR})
set_tests_properties(toml_compat PROPERTIES LABELS py)
