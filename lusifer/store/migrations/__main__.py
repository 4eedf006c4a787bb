"""`python -m lusifer.store.migrations revision "message"`: write the next migration.

For developers, after changing ``lusifer/store/tables.py``."""

from __future__ import annotations

import sys

from lusifer.store.migrate import new_revision


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "revision":
        print('usage: python -m lusifer.store.migrations revision "what changed"', file=sys.stderr)
        return 2
    print(new_revision(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
