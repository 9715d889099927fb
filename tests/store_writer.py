"""Put bindings in a loop and print each bot name after put() returned.

Usage: store_writer.py DATA_DIR PREFIX COUNT MAX_SECONDS. Prints "ready" once the store is open,
then stops after COUNT bindings or MAX_SECONDS, whichever comes first.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from relay_plugin.core.store import BindingStore, BotBinding


def main(argv: list[str]) -> int:
    """Write bindings named PREFIX0, PREFIX1, ... to the store in DATA_DIR."""
    data_dir, prefix, count, max_seconds = Path(argv[0]), argv[1], int(argv[2]), float(argv[3])
    deadline = time.monotonic() + max_seconds
    with BindingStore(data_dir) as store:
        print("ready", flush=True)
        for index in range(count):
            if time.monotonic() > deadline:
                return 3
            name = f"{prefix}{index}"
            url = f"https://bots.example.com/{index}"
            store.put(BotBinding("T1", "C1", name, url, created_by="writer"))
            print(name, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
