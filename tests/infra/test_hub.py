"""infra.hub, the one resolver of model options: tiny-random, a local path, or a hub name the cache or a reachable hub
can give. The hub is a real socket on 127.0.0.1: a closed port (nothing listens) or a listening one."""
from __future__ import annotations

import socket
import time

import pytest

from infra.hub import TINY_RANDOM, HubUnavailable, hub_unreachable, model_source, require_hub


def closed_port_endpoint() -> str:
    """An http endpoint on 127.0.0.1 where nothing listens (a port bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def online(monkeypatch):
    """The hub as huggingface_hub sees it when HF_HUB_OFFLINE is not set; the endpoint is set per test."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return lambda endpoint: monkeypatch.setattr(constants, "ENDPOINT", endpoint)


def test_tiny_random_and_local_paths_never_touch_the_hub(tmp_path, online):
    online(closed_port_endpoint())
    assert model_source(TINY_RANDOM, "--llm") == TINY_RANDOM
    assert model_source(str(tmp_path), "--llm") == "local"
    from pipeline.contract.provenance import TINY_RANDOM as recorded

    assert recorded == TINY_RANDOM  # the contract word is this one


@pytest.mark.parametrize("name", ["/no/such/model", "./rel/model", "~/nowhere/x", "a/b/c"])
def test_a_missing_path_is_named_as_a_path_not_sent_to_the_hub(name):
    with pytest.raises(HubUnavailable, match=f"--llm {name}: no such local folder"):
        model_source(name, "--llm")


def test_offline_refuses_a_hub_name_at_once(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    t0 = time.perf_counter()
    with pytest.raises(HubUnavailable, match=r"^--tokenizer someorg/x: .*HF_HUB_OFFLINE.*pass the model's local folder"):
        model_source("someorg/x", "--tokenizer")
    assert time.perf_counter() - t0 < 2


def test_an_unreachable_endpoint_is_one_line_within_the_probe_timeout(online):
    endpoint = closed_port_endpoint()
    online(endpoint)
    t0 = time.perf_counter()
    with pytest.raises(HubUnavailable) as info:
        model_source("someorg/some-model", "--llm")
    assert time.perf_counter() - t0 < 5
    text = str(info.value)
    assert "\n" not in text and text.startswith("--llm someorg/some-model") and endpoint in text
    assert text.endswith("pass the model's local folder")


def test_a_listening_endpoint_lets_a_hub_name_through(online):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
        online(endpoint)
        assert hub_unreachable(endpoint) is None
        assert model_source("someorg/some-model", "--llm") == "hub"


def test_a_name_that_is_no_repo_id_is_refused_naming_the_option(online):
    online(closed_port_endpoint())
    with pytest.raises(HubUnavailable, match="--llm bad name!!: not a local path, nor a model name"):
        require_hub("bad name!!", "--llm")
