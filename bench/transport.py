"""An asyncio transport for driving uvicorn's protocol in process: bench.inprocess, bench.protocol."""

from __future__ import annotations


class Transport:
    """Just enough of an asyncio transport: what is written is kept until read, nothing is sent."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        """A loopback peer and server address, as uvicorn asks for them."""
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def write(self, data: bytes) -> None:
        """Keep what the protocol writes."""
        self.written += data

    def is_closing(self) -> bool:
        """Whether the protocol closed it."""
        return self.closed

    def close(self) -> None:
        """Mark it closed."""
        self.closed = True

    def pause_reading(self) -> None:
        """Nothing to pause: data comes only when the bench feeds it."""

    def resume_reading(self) -> None:
        """Nothing to resume."""
