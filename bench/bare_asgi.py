"""bench/bare.py's handler as a Litestar ASGI route: what Litestar's HTTP handler pipeline costs.

The same server, validator and answer as `bench.bare`, but the handler gets the ASGI scope,
`receive` and `send` instead of a `Request`, and sends its answer itself: no signature model,
no `Response`. Against `bare litestar` in `task bench --systems "bare litestar" "bare asgi"`,
the difference is what `weather_api.ingest.Ingest` saves by serving the POST routes this way.
"""

from __future__ import annotations

from litestar import Litestar, asgi
from litestar.types import Receive, Scope, Send

from weather_api.model import Validator
from weather_api.settings import Settings

_validator = Validator(Settings().municipalities)
_ANSWER = b'{"status":"success","id":"0"}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_ANSWER))]


@asgi("/api/weather", copy_scope=False)
async def ingest(scope: Scope, receive: Receive, send: Send) -> None:  # noqa: ARG001
    """Validate and answer as bench.bare does, reading the body from `receive`."""
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    _validator.one(body)
    await send({"type": "http.response.start", "status": 201, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _ANSWER})


app = Litestar([ingest], logging_config=None)
