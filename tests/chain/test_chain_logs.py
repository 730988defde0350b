"""Events are read in chunks a public RPC accepts: a refused range is read again in halves, and
an RPC that refuses even one block is named with the fix.

The RPC in front of the real anvil is a small forwarding proxy that caps ``eth_getLogs`` the
way public endpoints do (a JSON-RPC error for a span over its limit); everything else passes
through untouched."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from chain_world import World

from flock_pipeline.chain import AllianceClient, ChainSetupError, connect


class _CappedRpc(ThreadingHTTPServer):
    upstream: str
    max_span: int
    """Most blocks one eth_getLogs may span; 0 refuses every eth_getLogs."""
    spans: list[int]


class _Handler(BaseHTTPRequestHandler):
    server: _CappedRpc

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request: dict[str, Any] = json.loads(body)
        answer = self._refusal(request)
        if answer is None:
            reply = requests.post(self.server.upstream, data=body, timeout=30,
                                  headers={"Content-Type": "application/json"})  # fmt: skip
            data = reply.content
        else:
            data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _refusal(self, request: dict[str, Any]) -> dict[str, Any] | None:
        if request.get("method") != "eth_getLogs":
            return None
        (query,) = request["params"]
        span = int(query["toBlock"], 16) - int(query["fromBlock"], 16) + 1
        self.server.spans.append(span)
        if span <= self.server.max_span:
            return None
        error = {"code": -32005, "message": f"query exceeds max block range {self.server.max_span}"}
        return {"jsonrpc": "2.0", "id": request["id"], "error": error}

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def capped(world: World) -> Iterator[_CappedRpc]:
    if world.chain.kind != "anvil":
        pytest.skip("the capped RPC forwards to a JSON-RPC node")
    server = _CappedRpc(("127.0.0.1", 0), _Handler)
    server.upstream = str(world.chain.w3.provider.endpoint_uri)  # type: ignore[attr-defined]
    server.max_span, server.spans = 3, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _client(world: World, server: _CappedRpc) -> AllianceClient:
    host, port = server.server_address[:2]
    chain = connect(f"http://{host!s}:{port}", kind="anvil")
    return AllianceClient(chain, world.keeper.deployment, world.keeper.signer)


def test_a_refused_log_range_is_read_again_in_halves(world: World, capped: _CappedRpc) -> None:
    # Prepare: a round whose submissions sit in several blocks, far past the cap from block 0
    r = world.everyone_round()
    r.submit()
    direct = world.keeper.round_events(r.task_id, r.round, "UpdateSubmitted", 0)
    client = _client(world, capped)

    # Execute
    read = client.round_events(r.task_id, r.round, "UpdateSubmitted", 0)

    # Assert: the same events, through reads within the cap after the first refusal
    assert read == direct and len(read) == len(world.people)
    assert capped.spans[0] > capped.max_span  # the first read asked for everything
    first_accepted = next(i for i, s in enumerate(capped.spans) if s <= capped.max_span)
    assert all(s <= capped.max_span for s in capped.spans[first_accepted:])


def test_an_rpc_that_refuses_every_log_read_is_named_with_the_fix(
    world: World, capped: _CappedRpc
) -> None:
    r = world.everyone_round()
    capped.max_span = 0
    client = _client(world, capped)

    with pytest.raises(ChainSetupError) as info:
        client.round_events(r.task_id, r.round, "UpdateSubmitted", r.block)

    message = str(info.value)
    assert "refuses to return UpdateSubmitted events even for block" in message
    assert "query exceeds max block range 0" in message and "chain.url" in message
