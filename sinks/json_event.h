/* json_event.h - one change as a JSON object (jansson), the stdout sink's line format. */
#ifndef PGFANOUT_JSON_EVENT_H
#define PGFANOUT_JSON_EVENT_H

#include <jansson.h>
#include <stdint.h>

#include "decoders/event.h"
#include "sinks/sink.h"

/* Returns a new JSON value for one column value of the given type, rendered from its typed
 * form (pgf_value_convert): null, true/false, an integer, a real, "NaN"/"Infinity"/"-Infinity",
 * "\x" hex for bytes, or PostgreSQL's text form as a string.  Returns NULL for unchanged TOAST,
 * if the text is not valid UTF-8, or when memory runs out.  Caller owns the result. */
json_t *pgf_json_value(const struct pgf_value *v, uint32_t type_oid);

/* Returns a new JSON object for one event (see README "JSON format"), or NULL with a reason
 * in errbuf.  Caller owns the result. */
json_t *pgf_json_event(const struct pgf_event *ev, char *errbuf, size_t errlen);

#endif
