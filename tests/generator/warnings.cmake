# warnings.cmake - compile the code protoc-gen-quark generated with gcc and
# with clang at -Wall -Wextra -Werror (and the stricter set the build uses for
# it): generated code that warns would break every user who builds with
# -Werror, whatever the compiler.
#   cmake -DFILES="a.quark.c|b.quark.c" -DINCLUDES="dir|dir" -P warnings.cmake
string(REPLACE "|" ";" FILES "${FILES}")
string(REPLACE "|" ";" INCLUDES "${INCLUDES}")
set(_flags -std=c11 -fsyntax-only -Wall -Wextra -Werror -Wpedantic -Wshadow
    -Wmissing-prototypes -Wstrict-prototypes -Wwrite-strings -Wundef)
set(_incs)
foreach(_d IN LISTS INCLUDES)
  list(APPEND _incs -I${_d})
endforeach()
set(_failed 0)
foreach(_cc gcc clang)
  find_program(_path_${_cc} ${_cc})
  if(NOT _path_${_cc})
    message(SEND_ERROR "${_cc} is not installed: apt-get install ${_cc} (scripts/test.sh installs "
                       "both compilers); generated code must compile cleanly with gcc and clang")
    set(_failed 1)
    continue()
  endif()
  foreach(_f IN LISTS FILES)
    execute_process(COMMAND ${_path_${_cc}} ${_flags} ${_incs} ${_f}
                    RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
    if(NOT _rc EQUAL 0)
      message(SEND_ERROR "${_cc}: ${_f} does not compile cleanly:\n${_out}")
      set(_failed 1)
    else()
      message(STATUS "${_cc}: ${_f}: clean")
    endif()
  endforeach()
endforeach()
if(_failed)
  message(FATAL_ERROR "generated code warns (see above)")
endif()
