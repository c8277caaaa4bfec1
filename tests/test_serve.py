"""`mivl serve`: the OpenAI-compatible server, driven by the official openai client against a
server this test starts on a free localhost port (and stops)."""
import base64
import io
import socket
import threading
import time

import numpy as np
import pytest

openai = pytest.importorskip("openai", reason="the openai client is a dev dependency")
uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is the serve extra")

from mivl.edge import Session  # noqa: E402
from mivl.edge.multiview import CAMERAS  # noqa: E402
from mivl.serve.app import Server, create_app  # noqa: E402

IMG = np.random.default_rng(3).integers(0, 256, (96, 128, 3), dtype=np.uint8)
KEY = "test-key-123"


def data_uri(arr) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(bundle_dir):
    """(base_url, Server, Session): a uvicorn server in a thread on 127.0.0.1."""
    session = Session(bundle_dir("qwen2", "fp32"), device="cpu", threads=2)
    srv = Server(session, "tiny-qwen2", api_key=KEY, queue_size=2, max_body=2 << 20)
    port = free_port()
    config = uvicorn.Config(create_app(srv), host="127.0.0.1", port=port, log_level="error")
    uv = uvicorn.Server(config)
    t = threading.Thread(target=uv.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1", srv, session
    uv.should_exit = True
    t.join(10)
    session.close()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server[0], api_key=KEY, max_retries=0, timeout=60)


def test_plain_answer_equals_session(server, client):
    _, _, session = server
    r = client.chat.completions.create(model="tiny-qwen2", messages=[{"role": "user", "content": "Hello there"}],
                                       max_tokens=6, temperature=0)
    expected = session.ask("Hello there", max_new_tokens=6)
    assert r.choices[0].message.content == expected.text
    assert r.model_extra["mivl"]["token_ids"] == expected.token_ids
    assert r.usage.completion_tokens == 6 and r.usage.prompt_tokens == expected.timings.prompt_tokens
    assert r.choices[0].finish_reason == "length"


def test_image_streamed_equals_session(server, client):
    _, _, session = server
    msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_uri(IMG)}},
                                         {"type": "text", "text": "Describe."}]}]
    stream = client.chat.completions.create(model="tiny-qwen2", messages=msgs, max_tokens=6, stream=True,
                                            stream_options={"include_usage": True}, seed=3)
    pieces, usage, ext = [], None, None
    for ch in stream:
        if ch.choices:
            pieces.append(ch.choices[0].delta.content or "")
            ext = (ch.model_extra or {}).get("mivl") or ext
        if ch.usage:
            usage = ch.usage
    expected = session.ask("Describe.", images=[IMG], max_new_tokens=6)
    assert "".join(pieces) == expected.text and ext["token_ids"] == expected.token_ids
    assert usage.completion_tokens == 6


def test_six_cameras_extension_and_system_and_history(server, client):
    _, _, session = server
    cams = {c: data_uri(np.roll(IMG, k * 9, axis=1)) for k, c in enumerate(CAMERAS)}
    r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Which camera?"}],
                                       max_tokens=4, extra_body={"mivl": {"cameras": cams}})
    frames = {c: np.roll(IMG, k * 9, axis=1) for k, c in enumerate(CAMERAS)}
    assert r.model_extra["mivl"]["token_ids"] == session.ask("Which camera?", cameras=frames, max_new_tokens=4).token_ids
    r = client.chat.completions.create(model="m", max_tokens=3, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "And?"}])
    assert r.model_extra["mivl"]["token_ids"] == session.ask(
        "And?", history=[("Hi", "Hello.")], system="Be brief.", max_new_tokens=3).token_ids


@pytest.mark.parametrize("kwargs,words", [
    (dict(messages=[]), "messages must be a non-empty list"),
    (dict(messages=[{"role": "user", "content": "x"}], temperature=-1), "temperature"),
    (dict(messages=[{"role": "user", "content": "x"}], seed=-5), "seed must be within"),
    (dict(messages=[{"role": "user", "content": "x"}], n=2), "n must be 1"),
    (dict(messages=[{"role": "user", "content": "x"}], stop=["a"]), "stop is not supported"),
    (dict(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.jpg"}}]}]),
     "does not fetch URLs"),
    (dict(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "/etc/hostname"}}]}]),
     "local file paths are off"),
    (dict(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]),
     "image"),
    (dict(messages=[{"role": "assistant", "content": "x"}]), "must follow a user message"),
    (dict(messages=[{"role": "user", "content": "x"}], extra_body={"mivl": {"cameras": {"CAM_FRONT": "x"}}}),
     "exactly the six cameras"),
    (dict(messages=[{"role": "user", "content": "word " * 5000}]), "context"),
])
def test_bad_requests_are_400_with_the_sdk_message(client, kwargs, words):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="m", max_tokens=2, **kwargs)
    assert words in e.value.body["message"], e.value.body


def test_auth_body_limit_models_health(server, client):
    base, _, _ = server
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base, api_key="wrong", max_retries=0).models.list()
    assert [m.id for m in client.models.list().data] == ["tiny-qwen2"]
    big = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * (3 << 20)}}]}]
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="m", messages=big, max_tokens=1)
    assert e.value.status_code == 413
    import httpx

    h = httpx.get(base.replace("/v1", "/health"), timeout=10).json()
    assert h["status"] == "ok" and h["busy"] is False


def test_concurrent_clients_and_a_full_queue(server, client):
    results, errors = [], []

    def one(i):
        try:
            r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"Count {i}"}],
                                               max_tokens=20)
            results.append(r.usage.completion_tokens)
        except openai.RateLimitError:
            errors.append(429)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    # one generating, queue of 2: the rest are told 429 at once; every accepted request completes
    assert len(results) + len(errors) == 6 and len(results) >= 3 and 429 in errors
    assert all(n == 20 for n in results)


def test_client_disconnect_mid_stream_frees_the_engine(server, client):
    _, srv, _ = server
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Tell a long story"}],
                                            max_tokens=2000, stream=True)
    next(iter(stream))
    stream.close()                      # the client goes away
    t0 = time.monotonic()
    r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Next"}], max_tokens=2)
    assert r.usage.completion_tokens == 2 and time.monotonic() - t0 < 30
    assert not srv.slot.locked()
