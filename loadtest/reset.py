"""`task loadtest:reset -- --yes`: empty the weather data, so a demo or a verified run starts at 0.

Deletes every key under the prefix (`weather:*`: aggregates, series, recent reports and
Idempotency-Key records) with SCAN and UNLINK, in batches, without blocking Valkey. The function
library stays loaded (no FLUSHALL, no FUNCTION FLUSH): the running service keeps working, and
registers its municipalities again (all weathers at 0) at its next periodic `prepare` or report.

Refuses to do anything without --yes. Exit codes: 0 done, 2 refused or no Valkey.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from valkey.exceptions import ValkeyError

from loadtest.store import NoValkey, connect, redacted, resolve_url

BATCH = 500


def glob_escape(text: str) -> str:
    """`text` as a literal in a SCAN MATCH pattern (a prefix may be `{weather}`, or worse)."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def weather_keys(client: Any, prefix: str) -> Iterator[str]:  # noqa: ANN401
    """Every key under `prefix:` (SCAN: never blocks the server for long)."""
    yield from client.scan_iter(match=f"{glob_escape(prefix)}:*", count=BATCH)


def reset(client: Any, prefix: str) -> int:  # noqa: ANN401
    """Delete the keys under `prefix:`; returns how many."""
    deleted, batch = 0, []
    for key in weather_keys(client, prefix):
        batch.append(key)
        if len(batch) >= BATCH:
            deleted += client.unlink(*batch)
            batch = []
    if batch:
        deleted += client.unlink(*batch)
    return deleted


def libraries(client: Any) -> list[str]:  # noqa: ANN401
    """Names of the loaded function libraries (reported, and left alone)."""
    # FUNCTION LIST answers one flat [name, value, ...] list per library.
    entries = [dict(zip(e[::2], e[1::2], strict=True)) if isinstance(e, list) else e for e in client.function_list()]
    return sorted(str(entry["library_name"]) for entry in entries)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.reset", description=__doc__.split("\n\n")[0])
    parser.add_argument("--yes", action="store_true", help="really delete the weather data")
    parser.add_argument("--valkey-url", help="default: WEATHER_VALKEY_URL, else $WEATHER_DATA_DIR/valkey.url")
    parser.add_argument("--prefix", help="key prefix (default: WEATHER_KEY_PREFIX, else weather)")
    args = parser.parse_args(argv)
    env = os.environ if env is None else env
    prefix = args.prefix or env.get("WEATHER_KEY_PREFIX") or "weather"
    try:
        url = resolve_url(args.valkey_url, env)
        client = connect(url)
        try:
            if not args.yes:
                count = sum(1 for _ in weather_keys(client, prefix))
                print(  # noqa: T201
                    f"reset: would delete {count} keys {prefix}:* in {redacted(url)}; "
                    "nothing done: confirm with --yes (task loadtest:reset -- --yes)",
                    file=sys.stderr,
                )
                return 2
            deleted = reset(client, prefix)
            kept = libraries(client)
        finally:
            client.close()  # type: ignore[no-untyped-call]
    except (NoValkey, ValkeyError) as exc:
        print(f"reset: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    print(  # noqa: T201
        f"reset: deleted {deleted} keys {prefix}:* in {redacted(url)}; "
        f"function libraries kept: {', '.join(kept) or 'none'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
