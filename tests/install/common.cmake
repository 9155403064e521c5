# common.cmake - helpers of the install test drivers (cmake -P scripts).

# quark_it_require(VAR...): fail unless every variable was passed with -D.
function(quark_it_require)
  foreach(_var IN LISTS ARGN)
    if(NOT DEFINED ${_var})
      message(FATAL_ERROR "${CMAKE_SCRIPT_MODE_FILE}: -D${_var}=... is required")
    endif()
  endforeach()
endfunction()

# quark_it_run(<what> COMMAND <cmd...> [TIMEOUT <s>] [OUTPUT_VARIABLE <var>])
# Run a command; on a non-zero exit (or a timeout) fail the test with the
# command line and everything it printed.
function(quark_it_run what)
  cmake_parse_arguments(PARSE_ARGV 1 R "" "TIMEOUT;OUTPUT_VARIABLE" "COMMAND")
  if(NOT R_TIMEOUT)
    set(R_TIMEOUT 240)
  endif()
  string(JOIN " " _cmdline ${R_COMMAND})
  message(STATUS "${what}: ${_cmdline}")
  execute_process(COMMAND ${R_COMMAND}
    RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _out
    TIMEOUT ${R_TIMEOUT})
  if(NOT _rc STREQUAL "0")
    # message() without a mode prints the output verbatim (FATAL_ERROR rewraps it).
    message("---- output of ${what} ----\n${_out}---- end of output of ${what} ----")
    message(FATAL_ERROR "install test: ${what} FAILED (exit status: ${_rc}); the command was\n"
                        "  ${_cmdline}\n(its output is above)")
  endif()
  if(R_OUTPUT_VARIABLE)
    set(${R_OUTPUT_VARIABLE} "${_out}" PARENT_SCOPE)
  endif()
endfunction()

# quark_it_expect_output(<what> <output> <regex>): fail unless output matches.
function(quark_it_expect_output what output regex)
  if(NOT output MATCHES "${regex}")
    message("---- output of ${what} ----\n${output}---- end of output of ${what} ----")
    message(FATAL_ERROR "install test: ${what} did not print what was expected "
                        "(regex: ${regex}; its output is above)")
  endif()
endfunction()

# quark_it_not_needed(<what> <binary> <library-prefix>): when readelf is
# available, fail if <binary> has a DT_NEEDED entry starting with the prefix
# (a statically linked program must not need libquark.so).
function(quark_it_not_needed what binary lib)
  find_program(_readelf NAMES readelf)
  if(NOT _readelf)
    message(STATUS "${what}: readelf not found, not checking its dynamic dependencies")
    return()
  endif()
  quark_it_run("readelf -d ${what}" COMMAND "${_readelf}" -d "${binary}" OUTPUT_VARIABLE _dyn)
  string(REGEX MATCH "\\(NEEDED\\)[^\n]*\\[${lib}[^]]*\\]" _hit "${_dyn}")
  if(_hit)
    message("---- readelf -d ${binary} ----\n${_dyn}---- end of readelf -d ----")
    message(FATAL_ERROR "install test: ${what} should be linked statically with Quark but "
                        "needs a shared library: ${_hit}")
  endif()
endfunction()
