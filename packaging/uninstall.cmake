# cmake --build build --target uninstall: removes every file and link the
# last `cmake --install` of this build tree put in place (its
# install_manifest.txt), then the directories that install created, if they
# are empty.
if(NOT EXISTS "${BUILD_DIR}/install_manifest.txt")
  message(FATAL_ERROR "nothing to uninstall: ${BUILD_DIR}/install_manifest.txt is missing (run cmake --install first)")
endif()
file(STRINGS "${BUILD_DIR}/install_manifest.txt" files)
foreach(f IN LISTS files)
  if(IS_SYMLINK "${f}" OR EXISTS "${f}")
    message(STATUS "Removing: ${f}")
    file(REMOVE "${f}")
  endif()
endforeach()
if(EXISTS "${BUILD_DIR}/install_directories.txt")
  file(STRINGS "${BUILD_DIR}/install_directories.txt" dirs)
  # Deepest first, so that a parent is empty once its children are gone.
  list(SORT dirs)
  list(REVERSE dirs)
  foreach(d IN LISTS dirs)
    file(GLOB left "${d}/*")
    if(IS_DIRECTORY "${d}" AND NOT left)
      message(STATUS "Removing: ${d}/")
      file(REMOVE_RECURSE "${d}")
    endif()
  endforeach()
endif()
