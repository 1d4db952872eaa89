# Regenerates the descriptor set from proto/ and fails if the committed one differs.
execute_process(COMMAND ${PROTOC} --descriptor_set_out=${OUT} --include_source_info -I${SRC}
                        ${SRC}/pgfanout/v1/event.proto RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "protoc failed")
endif()
file(SHA256 ${OUT} want)
file(SHA256 ${SRC}/pgfanout.v1.desc have)
if(NOT want STREQUAL have)
  message(FATAL_ERROR "proto/pgfanout.v1.desc is stale: run protoc --descriptor_set_out=proto/pgfanout.v1.desc --include_source_info -Iproto proto/pgfanout/v1/event.proto")
endif()
