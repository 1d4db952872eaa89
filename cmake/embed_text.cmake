# Writes a C file that holds a text file as a byte array, so the binary carries a script
# (contrib/redis/*.lua) without reading files at run time.
# Usage: cmake -DIN=file -DOUT=file.c -DNAME=symbol -P embed_text.cmake
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" nhex)
math(EXPR nbytes "${nhex} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE "${OUT}"
  "/* Generated from ${IN} by cmake/embed_text.cmake; do not edit. */\n"
  "#include <stddef.h>\n"
  "const char ${NAME}[] = {${bytes}0};\n"
  "const size_t ${NAME}_len = ${nbytes};\n")
