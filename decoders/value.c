/* value.c - type OID to value class. */
#include "decoders/value.h"

/* Returns the value class for a type OID; domains over int stay TEXT on purpose,
 * because pgoutput sends the domain's OID and we do not look through it. */
enum pgf_vclass pgf_value_class(uint32_t type_oid)
{
    switch (type_oid) {
    case PGF_OID_BOOL:
        return PGF_VCLASS_BOOL;
    case PGF_OID_INT2:
    case PGF_OID_INT4:
    case PGF_OID_INT8:
    case PGF_OID_OID:
        return PGF_VCLASS_INT;
    case PGF_OID_FLOAT4:
    case PGF_OID_FLOAT8:
        return PGF_VCLASS_FLOAT;
    default:
        return PGF_VCLASS_TEXT;
    }
}
