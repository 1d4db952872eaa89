"""Checks the rooms' include arrows: decoders/ includes nothing from cdc/ or sinks/, sinks/
nothing from cdc/, common/ nothing from the other rooms; and every .c file that has a header
of its own includes it first.  Reads the #include lines of every source file; exits 1 naming
each offending line."""
import os
import re
import sys

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", ".."))
# Which rooms each room may not include from: arrows only run downward.
FORBIDDEN = {
    "decoders": ("cdc", "sinks"),
    "sinks": ("cdc",),
    "common": ("cdc", "sinks", "decoders"),
}
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')


def problems():
    """Yields one line per broken rule."""
    for room in ("cdc", "sinks", "decoders", "common"):
        folder = os.path.join(ROOT, room)
        for name in sorted(os.listdir(folder)):
            if not name.endswith((".c", ".h")):
                continue
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
            includes = [(n, m.group(1)) for n, line in enumerate(lines, 1) if (m := INCLUDE.match(line))]
            for n, inc in includes:
                if inc.split("/")[0] in FORBIDDEN.get(room, ()):
                    yield f"{room}/{name}:{n}: includes {inc}, but {room}/ may not include from {inc.split('/')[0]}/"
            own = f"{room}/{name[:-2]}.h"
            if name.endswith(".c") and os.path.exists(os.path.join(ROOT, own)):
                first = next((line.strip() for line in lines if line.lstrip().startswith("#") and "include" in line),
                             None)
                if first != f'#include "{own}"':
                    yield f"{room}/{name}: its first include is {first!r}, not its own header \"{own}\""


def main():
    found = list(problems())
    for p in found:
        print(p)
    checked = sum(1 for room in ("cdc", "sinks", "decoders", "common")
                  for n in os.listdir(os.path.join(ROOT, room)) if n.endswith((".c", ".h")))
    print(f"rooms: {checked} files checked, {len(found)} problem(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
