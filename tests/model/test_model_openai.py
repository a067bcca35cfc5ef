"""OpenAI-compatible engine against a small fake server on 127.0.0.1 (real HTTP, SSE streaming)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("openai")

from model.base import ContextTooLong, Generation, ModelNotFound, RemoteEngineError
from model.openai_engine import OpenAIEngine

ARCH = dict(
    n_layers=4,
    hidden_size=64,
    n_heads=4,
    n_kv_heads=2,
    vocab_size=1000,
    n_experts=16,
    top_k=2,
    expert_ffn_size=32,
    shared_ffn_size=64,
    dense_ffn_size=512,
)


class FakeOpenAI(BaseHTTPRequestHandler):
    """Enough of vLLM's API: /v1/models, /v1/chat/completions (stream + usage), /tokenize."""

    def log_message(self, *args):  # keep test output clean
        pass

    def _json(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/v1/models":
            self._json(
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": m, "object": "model", "created": 0, "owned_by": "t", "max_model_len": 2048}
                        for m in ("sparq-moe", "slow", "broken")
                    ],
                },
            )
        else:
            self._json(404, {"error": {"message": "no route"}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/tokenize":
            self._json(200, {"count": len(body["prompt"].split())})
            return
        model = body.get("model")
        if model == "slow":
            time.sleep(3)
        if model == "broken":
            self._json(500, {"error": {"message": "engine crashed", "type": "server_error"}})
            return
        if model not in ("sparq-moe", "slow"):
            self._json(404, {"error": {"message": f"model {model} does not exist", "type": "NotFoundError"}})
            return
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()

        def ev(obj):
            self.wfile.write(f"data: {json.dumps(obj)}\n\n".encode())
            self.wfile.flush()

        base = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": model}
        ev({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
        for piece in ("Par", "is"):
            ev({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        ev({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        ev(
            {
                **base,
                "choices": [],
                "usage": {"prompt_tokens": 42, "completion_tokens": 3, "total_tokens": 45},
            }
        )
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


MSGS = [{"role": "user", "content": "Where is the Eiffel Tower?"}]


def test_stream_with_server_usage_and_modelled_accounting(server):
    eng = OpenAIEngine("sparq-moe", base_url=server, timeout_s=5, **ARCH)
    assert eng.info.context_window == 2048  # from /v1/models max_model_len
    assert eng.info.n_experts_used == 2 and eng.info.n_moe_layers == 4
    items = list(eng.stream(MSGS, max_tokens=16))
    assert items[:-1] == ["Par", "is"]
    gen = items[-1]
    assert isinstance(gen, Generation) and gen.text == "Paris" and gen.finish_reason == "stop"
    s = gen.stats
    assert (s.prompt_tokens, s.completion_tokens) == (42, 3)
    assert s.accounting == "modelled" and s.expert_histogram is None
    assert 0 < s.active_params_per_token < eng.info.total_params
    assert s.flops_prefill < s.dense_flops_prefill
    eng.close()


def test_token_count_uses_server_tokenizer(server):
    eng = OpenAIEngine("sparq-moe", base_url=server, timeout_s=5, context_window=64)
    assert eng.count_tokens("one two three") == 3
    assert eng.count_chat_tokens([{"role": "user", "content": "one two three"}]) == 3 + 4 + 3


def test_context_too_long_before_request(server):
    eng = OpenAIEngine("sparq-moe", base_url=server, timeout_s=5, context_window=32)
    with pytest.raises(ContextTooLong) as ei:
        eng.generate([{"role": "user", "content": "word " * 40}], max_tokens=8)
    assert ei.value.window == 32


def test_slow_server_times_out(server):
    eng = OpenAIEngine("slow", base_url=server, timeout_s=0.5, context_window=2048)
    t0 = time.monotonic()
    with pytest.raises(RemoteEngineError, match="timed out after 0.5 s"):
        eng.generate(MSGS, max_tokens=8)
    assert time.monotonic() - t0 < 2.5


def test_server_error_is_named(server):
    eng = OpenAIEngine("broken", base_url=server, timeout_s=5, context_window=2048)
    with pytest.raises(RemoteEngineError, match="HTTP 500"):
        eng.generate(MSGS, max_tokens=8)


def test_unknown_model(server):
    with pytest.raises(ModelNotFound, match="not served"):
        OpenAIEngine("nope", base_url=server, timeout_s=5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(RemoteEngineError, match="unreachable"):
        OpenAIEngine("sparq-moe", base_url=url, timeout_s=2)
    eng = OpenAIEngine("sparq-moe", base_url=url, timeout_s=2, context_window=128)
    with pytest.raises(RemoteEngineError, match="unreachable"):
        eng.generate(MSGS, max_tokens=4)
