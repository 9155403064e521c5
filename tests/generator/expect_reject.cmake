# tests/generator/expect_reject.cmake - runs protoc with protoc-gen-quark on
# one bad .proto file and checks that it is rejected with a useful message.
#
#   cmake -DPROTOC=... -DPLUGIN=... -DPROTO=bad/x.proto [-DEXTRA_PROTOS=a.proto,b.proto]
#         [-DPROTOC_GEN_C=...] [-DPROTO_INCLUDE=/usr/include] -DOUT_DIR=... -P expect_reject.cmake
#
# The expectations live in the .proto itself, one per line:
#   // expect: <text that protoc's stderr must contain>
# (no ';' in them: CMake would split the line). protoc must exit non-zero.
# It runs like quark_generate does: --quark_out before --c_out.

foreach(_var PROTOC PLUGIN PROTO OUT_DIR)
  if(NOT DEFINED ${_var})
    message(FATAL_ERROR "expect_reject.cmake: -D${_var}=... is required")
  endif()
endforeach()

file(STRINGS "${PROTO}" _lines REGEX "^// expect: ")
set(_expects)
foreach(_line IN LISTS _lines)
  string(REGEX REPLACE "^// expect: " "" _e "${_line}")
  list(APPEND _expects "${_e}")
endforeach()
if(NOT _expects)
  message(FATAL_ERROR "${PROTO} has no '// expect: ' line")
endif()

get_filename_component(_dir "${PROTO}" DIRECTORY)
set(_protos "${PROTO}")
if(EXTRA_PROTOS)
  string(REPLACE "," ";" _extra "${EXTRA_PROTOS}")
  foreach(_p IN LISTS _extra)
    list(APPEND _protos "${_dir}/${_p}")
  endforeach()
endif()
set(_args "--plugin=protoc-gen-quark=${PLUGIN}")
if(PROTOC_GEN_C)
  list(APPEND _args "--plugin=protoc-gen-c=${PROTOC_GEN_C}")
endif()
list(APPEND _args "--quark_out=${OUT_DIR}" "--c_out=${OUT_DIR}" "-I${_dir}")
if(PROTO_INCLUDE)
  list(APPEND _args "-I${PROTO_INCLUDE}")
endif()

file(REMOVE_RECURSE "${OUT_DIR}")
file(MAKE_DIRECTORY "${OUT_DIR}")
execute_process(
  COMMAND "${PROTOC}" ${_args} ${_protos}
  RESULT_VARIABLE _rc
  OUTPUT_VARIABLE _out
  ERROR_VARIABLE _err)
message(STATUS "protoc exited with ${_rc}; stderr:\n${_err}")

if(_rc EQUAL 0)
  message(FATAL_ERROR "protoc accepted ${PROTO}, it must reject it")
endif()
set(_missing)
foreach(_e IN LISTS _expects)
  string(FIND "${_err}" "${_e}" _pos)
  if(_pos EQUAL -1)
    list(APPEND _missing "'${_e}'")
  endif()
endforeach()
if(_missing)
  list(JOIN _missing "\n  " _missing)
  message(FATAL_ERROR "protoc's error output lacks:\n  ${_missing}")
endif()
