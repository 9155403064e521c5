# Install rules: the libraries, headers, the code generator, a CMake package
# (find_package(Quark) gives Quark::quark, Quark::quark_static and
# quark_generate()) and a pkg-config file (quark.pc).
include(CMakePackageConfigHelpers)

install(TARGETS quark quark_static EXPORT QuarkTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/quark
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.h")

set(QUARK_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/Quark)
install(EXPORT QuarkTargets NAMESPACE Quark:: DESTINATION ${QUARK_CMAKE_DIR})
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/QuarkConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/QuarkConfig.cmake
  INSTALL_DESTINATION ${QUARK_CMAKE_DIR}
  PATH_VARS CMAKE_INSTALL_BINDIR)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/QuarkConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES
  ${CMAKE_CURRENT_BINARY_DIR}/QuarkConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/QuarkConfigVersion.cmake
  ${CMAKE_CURRENT_LIST_DIR}/QuarkGenerate.cmake
  DESTINATION ${QUARK_CMAKE_DIR})

# quark.pc names the prefix it is installed to, which `cmake --install
# --prefix <dir>` (or a changed CMAKE_INSTALL_PREFIX) decides only at install
# time: configure everything else now, and the prefix when installing.
function(_quark_configure_pc)
  foreach(_dir LIBDIR INCLUDEDIR BINDIR)
    if(IS_ABSOLUTE "${CMAKE_INSTALL_${_dir}}")
      set(QUARK_PC_${_dir} "${CMAKE_INSTALL_${_dir}}")
    else()
      set(QUARK_PC_${_dir} "\${prefix}/${CMAKE_INSTALL_${_dir}}")
    endif()
  endforeach()
  set(QUARK_PC_PREFIX "@QUARK_PC_PREFIX@") # kept for the install-time pass
  configure_file(${CMAKE_CURRENT_FUNCTION_LIST_DIR}/quark.pc.in
    ${CMAKE_CURRENT_BINARY_DIR}/quark.pc.install-in @ONLY)
endfunction()
_quark_configure_pc()
install(CODE "
  set(QUARK_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
  configure_file(\"${CMAKE_CURRENT_BINARY_DIR}/quark.pc.install-in\"
                 \"${CMAKE_CURRENT_BINARY_DIR}/quark.pc\" @ONLY)")
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/quark.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
