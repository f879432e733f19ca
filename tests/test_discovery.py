"""Endpoint discovery: endpoint syntax, the static list, the watched file."""

import asyncio
import json

import pytest

from fleetserve.fleet.balancer import EndpointSpec
from fleetserve.fleet.discovery import parse_endpoint
from fleetserve.fleet.discovery.file import FileDiscovery, read_endpoint_file, write_endpoint_file
from fleetserve.fleet.discovery.static import StaticDiscovery


def test_parse_endpoint():
    assert parse_endpoint("127.0.0.1:8100") == EndpointSpec("http://127.0.0.1:8100")
    assert parse_endpoint("http://pod-1:8100/;weight=2;max_inflight=64") == EndpointSpec("http://pod-1:8100", 2.0, 64)
    assert parse_endpoint("http://[::1]:81").url == "http://[::1]:81"
    for bad, msg in [("https://a:1", "only http"), ("http://a", "host and port"), ("http://a:1/v1", "without a path"),
                     ("a:1;weight=0", "positive"), ("a:1;speed=3", "unknown option"), ("a:x", "not a number")]:
        with pytest.raises(ValueError, match=msg):
            parse_endpoint(bad)


def test_static_discovery_yields_its_list_and_refuses_duplicates():
    async def first():
        gen = StaticDiscovery("http://a:1,b:2;weight=3").snapshots()
        return await gen.__anext__()

    snap = asyncio.run(first())
    assert snap == (EndpointSpec("http://a:1"), EndpointSpec("http://b:2", 3.0))
    with pytest.raises(ValueError, match="listed twice"):
        StaticDiscovery("a:1,http://a:1")
    with pytest.raises(ValueError, match="at least one"):
        StaticDiscovery(" , ")


def test_endpoint_file_format(tmp_path):
    f = tmp_path / "endpoints.json"
    write_endpoint_file(f, [{"url": "http://127.0.0.1:8101", "ready": True},
                            {"url": "http://127.0.0.1:8102", "ready": False},
                            {"url": "127.0.0.1:8103", "weight": 2, "max_inflight": 8}])
    assert read_endpoint_file(f) == (EndpointSpec("http://127.0.0.1:8101"),
                                     EndpointSpec("http://127.0.0.1:8103", 2.0, 8))
    f.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_endpoint_file(f)
    f.write_text(json.dumps({"endpoints": [{"host": "x"}]}))
    with pytest.raises(ValueError, match=r"endpoints\[0\] needs a string 'url'"):
        read_endpoint_file(f)


def test_file_discovery_follows_changes_and_keeps_the_last_good_set(tmp_path):
    f = tmp_path / "endpoints.json"

    async def run():
        seen = []
        gen = FileDiscovery(f, interval=0.02).snapshots()
        seen.append(await gen.__anext__())  # the file does not exist yet: empty
        write_endpoint_file(f, [{"url": "http://a:1"}])
        seen.append(await asyncio.wait_for(gen.__anext__(), 2))
        write_endpoint_file(f, [{"url": "http://a:1"}, {"url": "http://b:2"}])
        seen.append(await asyncio.wait_for(gen.__anext__(), 2))
        f.write_text('{"endpoints": [')  # a broken write is ignored ...
        await asyncio.sleep(0.1)
        write_endpoint_file(f, [{"url": "http://b:2"}])  # ... and the next good one is taken
        seen.append(await asyncio.wait_for(gen.__anext__(), 2))
        await gen.aclose()
        return seen

    seen = asyncio.run(run())
    assert [[s.url for s in snap] for snap in seen] == [[], ["http://a:1"], ["http://a:1", "http://b:2"],
                                                        ["http://b:2"]]
