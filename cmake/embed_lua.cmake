# Writes a C header with each Lua script of contrib/redis as a string pgf_lua_<name>[]:
# cmake -DOUT=<header> -DSCRIPTS=<path>,<path> -P embed_lua.cmake
set(body "/* Generated from contrib/redis Lua files by cmake/embed_lua.cmake; do not edit. */\n")
string(REPLACE "," ";" SCRIPTS "${SCRIPTS}")
foreach(path ${SCRIPTS})
  get_filename_component(name ${path} NAME_WE)
  file(READ ${path} text)
  string(REPLACE "\\" "\\\\" text "${text}")
  string(REPLACE "\"" "\\\"" text "${text}")
  string(REPLACE "\n" "\\n\"\n    \"" text "${text}")
  string(APPEND body "static const char pgf_lua_${name}[] =\n    \"${text}\";\n")
endforeach()
file(WRITE ${OUT}.tmp "${body}")
execute_process(COMMAND ${CMAKE_COMMAND} -E copy_if_different ${OUT}.tmp ${OUT})
