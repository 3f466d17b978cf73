# binding.cmake — the Node-API addon (lathe_engine_node.node), included by ../CMakeLists.txt
# only under cmake-js (`if(CMAKE_JS_VERSION)`). cmake-js passes the Node-API headers
# (node-api-headers) and node-addon-api's include folder in CMAKE_JS_INC, so nothing is
# downloaded, and sets CMAKE_LIBRARY_OUTPUT_DIRECTORY to build/Release, where ts/index.ts looks.
# Expects the target `lathe_engine_core` (the engine as a static library, built with -fPIC).

add_library(lathe_engine_node SHARED ${CMAKE_CURRENT_LIST_DIR}/binding.cpp ${CMAKE_JS_SRC})
set_target_properties(lathe_engine_node PROPERTIES
  PREFIX ""
  SUFFIX ".node"
  CXX_STANDARD 17
  CXX_STANDARD_REQUIRED ON
  CXX_VISIBILITY_PRESET hidden)
target_include_directories(lathe_engine_node PRIVATE ${CMAKE_JS_INC} ${CMAKE_CURRENT_LIST_DIR}/../include)
# NAPI_VERSION 8 matches package.json's "binary": {"napi_versions": [8]}. C++ exceptions stay on
# so that a Napi::Error thrown in the binding reaches JavaScript instead of aborting the process.
target_compile_definitions(lathe_engine_node PRIVATE NAPI_VERSION=8 NAPI_CPP_EXCEPTIONS NODE_ADDON_API_DISABLE_DEPRECATED)
if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  target_compile_options(lathe_engine_node PRIVATE -Wall -Wextra)
endif()
target_link_libraries(lathe_engine_node PRIVATE lathe_engine_core ${CMAKE_JS_LIB})
if(MSVC AND CMAKE_JS_NODELIB_DEF AND CMAKE_JS_NODELIB_TARGET)
  execute_process(COMMAND ${CMAKE_AR} /def:${CMAKE_JS_NODELIB_DEF} /out:${CMAKE_JS_NODELIB_TARGET} ${CMAKE_STATIC_LINKER_FLAGS})
endif()
