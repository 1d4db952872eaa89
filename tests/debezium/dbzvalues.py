"""The value Debezium 3.6 (JsonConverter, schemas.enable=false) writes for a PostgreSQL value,
derived from the value's text (as workload.read_table gives it) and the column's type, under a
connector's handling modes.  The rules were read off tests/fixtures/debezium; they are written
out here independently (arithmetic on the text, not a copy of Debezium's output), so that a
consumer's result can be checked against PostgreSQL itself.

    expected(pg_type, text, options) -> a JSON value, or Alternatives(...) where Debezium's
                                        output depends on the path (snapshot or stream)

options are connector options: decimal.handling.mode, time.precision.mode,
binary.handling.mode (Debezium's defaults when absent).
"""
import base64
import datetime
import decimal
import re

# PostgreSQL's JDBC driver's infinity timestamps (PGStatement.DATE_POSITIVE_INFINITY and
# DATE_NEGATIVE_INFINITY, milliseconds).  Debezium writes them as they are where it writes
# microseconds, and divided by 1000 where it writes milliseconds.
PG_POS_INFINITY = 9223372036825200000
PG_NEG_INFINITY = -9223372036832400000
# date 'infinity': the stream (pgoutput text) and the snapshot (JDBC) disagree.
DATE_POS_INFINITY = (-2147472692, -622191234)

# An interval month is 365.25/12 days in Debezium's numeric intervals.
MONTH_MICROS = 2629800 * 1000000
DAY_MICROS = 86400 * 1000000
EPOCH = datetime.date(1970, 1, 1)


class Alternatives(tuple):
    """Debezium writes one of these values (which one depends on the path)."""


def _modes(options):
    o = options or {}
    return (o.get("decimal.handling.mode", "precise"), o.get("time.precision.mode", "adaptive"),
            o.get("binary.handling.mode", "bytes"))


def _precision(pg_type, default=6):
    m = re.search(r"\((\d+)\)", pg_type)
    return int(m.group(1)) if m else default


def _unscaled_bytes(n):
    """Java's BigInteger.toByteArray(): minimal big-endian two's complement."""
    length = 1
    while not -(1 << (8 * length - 1)) <= n < (1 << (8 * length - 1)):
        length += 1
    return n.to_bytes(length, "big", signed=True)


def _b64(b):
    return base64.b64encode(b).decode()


def _time_micros(text):
    h, m, s = text.split(":")
    sec, _, frac = s.partition(".")
    return ((int(h) * 60 + int(m)) * 60 + int(sec)) * 1000000 + int((frac + "000000")[:6])


def _frac_trim(micros):
    """'.ffffff' with trailing zeros dropped, '' for none (Java's ISO_LOCAL_TIME)."""
    if micros == 0:
        return ""
    return "." + f"{micros:06d}".rstrip("0")


def _timetz(text):
    m = re.fullmatch(r"(\d\d:\d\d:\d\d(?:\.\d+)?)([+-]\d\d)(?::(\d\d))?(?::(\d\d))?", text)
    if not m:
        raise ValueError(f"timetz {text!r}")
    micros = _time_micros(m.group(1))
    sign = -1 if m.group(2).startswith("-") else 1
    off = abs(int(m.group(2))) * 3600 + int(m.group(3) or 0) * 60 + int(m.group(4) or 0)
    utc = (micros - sign * off * 1000000) % DAY_MICROS
    secs, us = divmod(utc, 1000000)
    return f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}{_frac_trim(us)}Z"


def _timestamp_micros(text):
    """'YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM]]' (ISO DateStyle) -> micros since the epoch."""
    m = re.fullmatch(r"(\d{4,})-(\d\d)-(\d\d) (\d\d:\d\d:\d\d(?:\.\d+)?)([+-]\d\d(?::\d\d)?)?",
                     text)
    if not m:
        raise ValueError(f"timestamp {text!r}")
    days = (datetime.date(int(m.group(1)), int(m.group(2)), int(m.group(3))) - EPOCH).days
    micros = days * DAY_MICROS + _time_micros(m.group(4))
    if m.group(5):
        sign = -1 if m.group(5).startswith("-") else 1
        hh, _, mm = m.group(5)[1:].partition(":")
        micros -= sign * (int(hh) * 3600 + int(mm or 0) * 60) * 1000000
    return micros


def _interval_micros(text):
    """IntervalStyle=postgres text -> Debezium's numeric interval (months of 30.4375 days)."""
    months = days = micros = 0
    rest = text
    for num, unit in re.findall(r"([+-]?\d+) (years?|mons?|days?)", text):
        n = int(num)
        if unit.startswith("year"):
            months += 12 * n
        elif unit.startswith("mon"):
            months += n
        else:
            days += n
    rest = re.sub(r"[+-]?\d+ (years?|mons?|days?)", "", text).strip()
    if rest:
        neg = rest.startswith("-")
        micros = _time_micros(rest.lstrip("+-"))
        micros = -micros if neg else micros
    return months * MONTH_MICROS + days * DAY_MICROS + micros


def parse_array(text):
    """A one-dimensional PostgreSQL array literal -> list of str or None."""
    if not (text.startswith("{") and text.endswith("}")):
        raise ValueError(f"array {text!r}")
    body, out, i = text[1:-1], [], 0
    if not body:
        return out
    while i <= len(body):
        if i < len(body) and body[i] == '"':
            i += 1
            s = []
            while body[i] != '"':
                if body[i] == "\\":
                    i += 1
                s.append(body[i])
                i += 1
            i += 1
            out.append("".join(s))
        else:
            j = body.find(",", i)
            j = len(body) if j < 0 else j
            tok = body[i:j]
            out.append(None if tok == "NULL" else tok)
            i = j
        i += 1  # the comma
    return out


def expected(pg_type, text, options=None):
    """The value Debezium writes for a column of pg_type (format_type() spelling) whose
    value is text (None for NULL), under the connector options."""
    if text is None:
        return None
    dec_mode, time_mode, bin_mode = _modes(options)
    t = pg_type
    if t in ("smallint", "integer", "bigint"):
        return int(text)
    if t == "boolean":
        return text in ("t", "true")
    if t in ("real", "double precision"):
        v = float(text)
        return v if v == v and abs(v) != float("inf") else {"nan": "NaN", "inf": "Infinity",
                                                             "-inf": "-Infinity"}[str(v)]
    if t.startswith("numeric"):
        constrained = "(" in t
        if text == "NaN":
            return {"precise": None, "string": "NAN", "double": "NaN"}[dec_mode]
        d = decimal.Decimal(text)
        if dec_mode == "string":
            return text
        if dec_mode == "double":
            return float(d)
        scale = int(re.search(r",\s*(\d+)\)", t).group(1)) if constrained \
            else max(0, -d.as_tuple().exponent)
        unscaled = int(d.scaleb(scale, decimal.Context(prec=1000)))
        b64 = _b64(_unscaled_bytes(unscaled))
        return b64 if constrained else {"scale": scale, "value": b64}
    if t == "integer[]":
        return [None if x is None else int(x) for x in parse_array(text)]
    if t == "text[]":
        return parse_array(text)
    if t.startswith(("text", "character", "json", "uuid")) or t == "dbz_mood":
        return text
    if t == "date":
        if text == "infinity":
            return Alternatives(DATE_POS_INFINITY)
        y, m, d = map(int, text.split("-"))
        return (datetime.date(y, m, d) - EPOCH).days
    if t.startswith("time") and "without" in t and not t.startswith("timestamp"):
        micros = _time_micros(text)
        if time_mode == "connect" or _precision(t) <= 3:
            return micros // 1000
        return micros
    if t.startswith("time") and "with time zone" in t and not t.startswith("timestamp"):
        return _timetz(text)
    if t.startswith("timestamp") and "without" in t:
        millis = time_mode == "connect" or _precision(t) <= 3
        if text in ("infinity", "-infinity"):
            v = PG_POS_INFINITY if text == "infinity" else PG_NEG_INFINITY
        else:
            v = _timestamp_micros(text)
        return v // 1000 if millis else v
    if t.startswith("timestamp") and "with time zone" in t:
        if text in ("infinity", "-infinity"):
            return text
        micros = _timestamp_micros(text)
        dt = datetime.datetime(1970, 1, 1) + datetime.timedelta(microseconds=micros)
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if t == "interval":
        return _interval_micros(text)
    if t == "bytea":
        raw = bytes.fromhex(text[2:])
        return raw.hex() if bin_mode == "hex" else _b64(raw)
    raise ValueError(f"no Debezium rule for type {pg_type!r}")
