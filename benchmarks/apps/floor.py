"""The HTTP floor: the least an ASGI app on uvicorn can do per request (read the body, answer constant JSON)."""

from __future__ import annotations

from typing import Any

ANSWER = b'{"predictions":[{"prediction":0.5,"label":"positive","confidence":0.5}]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})
