"""Tests of syncpool.monitoring: exact counts under threads, errors, proxy behaviour, decorators, rates."""

from __future__ import annotations

import inspect
import threading
from typing import Any

import pytest

from syncpool.histogram import RELATIVE_ERROR
from syncpool.monitoring import ClientStats, MonitoredClient, monitor_of, monitored, unwrap

ALWAYS = ("operations", "errors", "ops_per_sec", "error_rate")


class Boom(Exception):
    """A client error."""


class IndicesClient:
    """An elasticsearch-like namespace."""

    def __init__(self) -> None:
        self.created: list[str] = []

    def create(self, index: str) -> dict[str, Any]:
        self.created.append(index)
        return {"acknowledged": True, "index": index}


class FakeClient:
    """A client with methods, data attributes, a namespace and context-manager support."""

    region = "eu-west-1"

    def __init__(self) -> None:
        self.indices = IndicesClient()
        self.closed = False
        self.entered = 0

    def get(self, key: str, default: Any = None) -> Any:
        return (key, default)

    def fail(self, error: BaseException) -> None:
        raise error

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> FakeClient:
        self.entered += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class FakeClock:
    """A settable monotonic clock."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_calls_pass_through_and_are_counted() -> None:
    client = MonitoredClient(FakeClient(), name="fake")
    assert client.get("k", default=3) == ("k", 3)
    assert client.get("j") == ("j", None)
    stats = client.stats()
    assert stats["name"] == "fake"
    assert stats["operations"] == 2 and stats["errors"] == 0 and stats["error_rate"] == 0.0
    assert stats["methods"]["get"]["operations"] == 2
    assert stats["latency"]["count"] == 2
    assert stats["ops_per_sec"] > 0


def test_empty_stats_have_the_four_keys() -> None:
    stats = MonitoredClient(FakeClient()).stats()
    for key in ALWAYS:
        assert key in stats
    assert stats["operations"] == 0 and stats["error_rate"] == 0.0 and stats["methods"] == {}
    assert stats["name"] == "FakeClient"


def test_errors_are_counted_and_reraised_unchanged() -> None:
    client = MonitoredClient(FakeClient())
    error = Boom("nope")
    with pytest.raises(Boom) as caught:
        client.fail(error)
    assert caught.value is error
    with pytest.raises(KeyError):
        client.fail(KeyError("k"))
    client.get("fine")
    stats = client.stats()
    assert stats["operations"] == 3 and stats["errors"] == 2
    assert stats["error_rate"] == pytest.approx(2 / 3)
    assert stats["errors_by_type"] == {"Boom": 1, "KeyError": 1}
    assert stats["methods"]["fail"]["errors_by_type"] == {"Boom": 1, "KeyError": 1}
    assert stats["methods"]["fail"]["error_rate"] == 1.0
    assert stats["methods"]["get"]["errors"] == 0


def test_error_labels_hold_only_the_type_name() -> None:
    client = MonitoredClient(FakeClient())
    with pytest.raises(Boom):
        client.fail(Boom("password=hunter2"))
    assert "hunter2" not in repr(client.stats())


def test_exact_counts_under_16_threads() -> None:
    client = MonitoredClient(FakeClient(), name="hammer")
    threads_count, calls = 16, 3000
    barrier = threading.Barrier(threads_count)

    def hammer(worker: int) -> None:
        barrier.wait()
        for i in range(calls):
            if i % 10 == 0:
                try:
                    client.fail(Boom())
                except Boom:
                    pass
            elif i % 2:
                client.get(i)
            else:
                client.indices.create(f"i{worker}")

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = client.stats()
    total = threads_count * calls
    assert stats["operations"] == total
    assert stats["errors"] == total // 10
    methods = stats["methods"]
    assert methods["fail"]["operations"] == total // 10
    assert methods["get"]["operations"] == total // 2
    assert methods["indices.create"]["operations"] == total - total // 10 - total // 2
    assert stats["latency"]["count"] == total
    assert len(unwrap(client).indices.created) == methods["indices.create"]["operations"]


def test_many_wrappers_feed_one_sink_exactly() -> None:
    sink = ClientStats("pool")
    wrappers = [MonitoredClient(FakeClient(), name="pool", sink=sink) for _ in range(4)]

    def hammer(client: MonitoredClient) -> None:
        for i in range(2500):
            client.get(i)

    threads = [threading.Thread(target=hammer, args=(wrappers[n % 4],)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sink.stats()["operations"] == 16 * 2500
    assert all(wrapper.monitor is sink for wrapper in wrappers)
    assert wrappers[0].stats()["operations"] == 16 * 2500


def test_stats_snapshot_is_consistent_while_hammered() -> None:
    client = MonitoredClient(FakeClient())
    stop = threading.Event()

    def hammer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                client.fail(Boom()) if i % 3 == 0 else client.get(i)
            except Boom:
                pass

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        previous = 0
        for _ in range(50):
            stats = client.stats()
            assert stats["errors"] <= stats["operations"]
            assert stats["latency"]["count"] == stats["operations"]
            assert stats["operations"] >= previous
            previous = stats["operations"]
            for method in stats["methods"].values():
                assert method["latency"]["count"] == method["operations"]
                assert method["errors"] <= method["operations"]
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def test_latency_percentiles_within_histogram_error() -> None:
    clock = FakeClock()
    sink = ClientStats("timed", clock=clock)

    class Slow:
        def __init__(self) -> None:
            self.durations = iter([0.010] * 50 + [0.100] * 40 + [1.0] * 10)

        def call(self) -> None:
            clock.now += next(self.durations)

    client = MonitoredClient(Slow(), sink=sink)
    for _ in range(100):
        client.call()
    latency = client.stats()["methods"]["call"]["latency"]
    assert latency["count"] == 100
    assert latency["p50"] == pytest.approx(0.010, rel=RELATIVE_ERROR)
    assert latency["p90"] == pytest.approx(0.100, rel=RELATIVE_ERROR)
    assert latency["p99"] == pytest.approx(1.0, rel=RELATIVE_ERROR)
    assert latency["max"] == pytest.approx(1.0)
    assert latency["sum"] == pytest.approx(0.5 + 4.0 + 10.0)


def test_recent_window_rate() -> None:
    clock = FakeClock(5000.0)
    sink = ClientStats("w", clock=clock, window=60)
    client = MonitoredClient(FakeClient(), sink=sink)
    for _ in range(120):  # 120 calls in the first second
        client.get(1)
    clock.now += 30.0
    for _ in range(60):
        client.get(2)
    clock.now += 29.0
    stats = client.stats()
    assert stats["operations"] == 180
    assert stats["ops_per_sec"] == pytest.approx(180 / 59.0)
    assert stats["ops_per_sec_recent"] == pytest.approx(180 / 59.0)  # uptime < window: over the uptime
    clock.now += 20.0  # the first burst leaves the 60 s window
    stats = client.stats()
    assert stats["ops_per_sec_recent"] == pytest.approx(60 / 60.0)
    assert stats["methods"]["get"]["ops_per_sec_recent"] == pytest.approx(1.0)
    assert stats["ops_per_sec"] == pytest.approx(180 / 79.0)
    clock.now += 120.0
    assert client.stats()["ops_per_sec_recent"] == 0.0


def test_window_must_be_positive_int() -> None:
    with pytest.raises(ValueError, match="window"):
        ClientStats(window=0)


def test_reset() -> None:
    client = MonitoredClient(FakeClient())
    client.get(1)
    with pytest.raises(Boom):
        client.fail(Boom())
    client.reset()
    stats = client.stats()
    assert stats["operations"] == 0 and stats["errors"] == 0 and stats["errors_by_type"] == {}
    client.get(1)
    assert client.stats()["operations"] == 1


def test_nested_namespace_records_dotted_name() -> None:
    client = MonitoredClient(FakeClient())
    assert client.indices.create("logs") == {"acknowledged": True, "index": "logs"}
    assert client.indices is client.indices  # cached
    assert isinstance(client.indices, IndicesClient)
    assert unwrap(client.indices) is unwrap(client).indices
    assert client.stats()["methods"]["indices.create"]["operations"] == 1


def test_explicit_namespaces() -> None:
    client = MonitoredClient(FakeClient(), namespaces=())
    assert type(client.indices) is IndicesClient  # no longer wrapped
    client = MonitoredClient(FakeClient(), namespaces=["indices"])
    client.indices.create("x")
    assert "indices.create" in client.stats()["methods"]


def test_attributes_pass_through() -> None:
    raw = FakeClient()
    client = MonitoredClient(raw)
    assert client.region == "eu-west-1"
    client.region = "us-east-1"
    assert raw.region == "us-east-1"
    client.extra = 5
    assert raw.extra == 5
    del client.extra
    assert not hasattr(raw, "extra")
    with pytest.raises(AttributeError):
        client.missing  # noqa: B018
    raw._hidden = lambda: "private"
    assert client._hidden is raw._hidden  # private names are not wrapped
    client._hidden()
    assert "_hidden" not in client.stats()["methods"]


def test_replacing_a_method_through_the_proxy_drops_the_cache() -> None:
    raw = FakeClient()
    client = MonitoredClient(raw)
    client.get(1)
    client.get = lambda *a: "patched"
    assert client.get(1) == "patched"
    assert client.stats()["methods"]["get"]["operations"] == 2


def test_method_wrappers_are_cached_and_keep_metadata() -> None:
    raw = FakeClient()
    client = MonitoredClient(raw)
    assert client.get is client.get
    assert client.get.__name__ == "get" and client.get.__qualname__ == "FakeClient.get"
    assert inspect.signature(client.get) == inspect.signature(raw.get)
    assert client.get.__self__ is raw  # called on the client itself, never on the proxy


def test_classes_on_the_client_are_not_wrapped() -> None:
    class WithExceptions(FakeClient):
        NotFound = Boom

    client = MonitoredClient(WithExceptions())
    assert client.NotFound is Boom


def test_context_manager_returns_wrapper() -> None:
    raw = FakeClient()
    with MonitoredClient(raw) as client:
        assert isinstance(client, MonitoredClient)
        client.get(1)
    assert raw.entered == 1 and raw.closed

    class Plain:
        def ping(self) -> int:
            return 1

    with MonitoredClient(Plain()) as plain:
        assert plain.ping() == 1


def test_isinstance_and_unwrap() -> None:
    raw = FakeClient()
    client = MonitoredClient(raw)
    assert client.wrapped is raw and client.__wrapped__ is raw
    assert unwrap(client) is raw
    assert unwrap(MonitoredClient(client)) is raw
    assert unwrap(raw) is raw
    assert isinstance(client, FakeClient)  # via __class__
    assert isinstance(client, MonitoredClient)
    assert type(client) is MonitoredClient


def test_dunder_delegation_and_repr() -> None:
    client = MonitoredClient([1, 2, 3], name="list")
    assert len(client) == 3 and list(client) == [1, 2, 3] and 2 in client and client[0] == 1 and bool(client)
    assert not MonitoredClient([])
    assert "list" in repr(client)
    assert {"stats", "reset", "append"} <= set(dir(client))
    client.append(4)
    assert client.stats()["methods"]["append"]["operations"] == 1


def test_monitored_function() -> None:
    @monitored
    def double(x: int) -> int:
        if x < 0:
            raise Boom(x)
        return 2 * x

    assert double(2) == 4
    with pytest.raises(Boom):
        double(-1)
    assert double.__name__ == "double"
    stats = monitor_of(double).stats()
    assert stats["operations"] == 2 and stats["errors"] == 1
    assert stats["methods"]["double"]["operations"] == 2


def test_monitored_function_with_options_and_shared_sink() -> None:
    sink = ClientStats("shared")

    @monitored(sink=sink)
    def one() -> int:
        return 1

    @monitored(name="ignored-when-sink-given", sink=sink)
    def two() -> int:
        return 2

    one(), two(), two()
    assert sink.stats()["methods"]["two"]["operations"] == 2
    assert sink.stats()["operations"] == 3


def test_monitored_class() -> None:
    @monitored(name="repo")
    class Repository:
        def __init__(self) -> None:
            self.items: list[int] = []

        def add(self, item: int) -> None:
            self.items.append(item)

        @staticmethod
        def version() -> str:
            return "1"

        @classmethod
        def create(cls) -> Repository:
            return cls()

        def _internal(self) -> None:
            pass

    repo = Repository.create()
    repo.add(1)
    Repository().add(2)
    repo._internal()
    assert Repository.version() == "1"
    assert isinstance(repo, Repository) and repo.items == [1]
    stats = monitor_of(repo).stats()
    assert stats["name"] == "repo"
    assert set(stats["methods"]) == {"add", "version", "create"}
    assert stats["methods"]["add"]["operations"] == 2
    assert monitor_of(Repository) is monitor_of(repo)


def test_monitored_rejects_non_callables() -> None:
    with pytest.raises(TypeError):
        monitored(42)
    with pytest.raises(TypeError):
        monitor_of(object())


def test_client_stats_histograms_and_repr() -> None:
    client = MonitoredClient(FakeClient(), name="h")
    client.get(1)
    client.indices.create("x")
    histograms = client.monitor.histograms()
    assert set(histograms) == {"get", "indices.create"}
    assert histograms["get"].count == 1
    assert "h" in repr(client.monitor)


def test_boto3_s3_client_with_moto() -> None:
    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    from botocore.exceptions import ClientError

    with moto.mock_aws():
        raw = boto3.client(
            "s3", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
        )
        s3 = MonitoredClient(raw, name="s3")
        s3.create_bucket(Bucket="bucket-one")
        s3.put_object(Bucket="bucket-one", Key="k", Body=b"data")
        assert s3.get_object(Bucket="bucket-one", Key="k")["Body"].read() == b"data"
        with pytest.raises(s3.exceptions.NoSuchKey):
            s3.get_object(Bucket="bucket-one", Key="missing")
        with pytest.raises(ClientError):
            s3.head_object(Bucket="bucket-one", Key="missing")
        assert s3.meta.region_name == "us-east-1"
        assert isinstance(s3, type(raw))
        stats = s3.stats()
    assert stats["operations"] == 5 and stats["errors"] == 2
    assert stats["errors_by_type"] == {"NoSuchKey": 1, "ClientError": 1}
    assert stats["methods"]["put_object"]["operations"] == 1
    assert "testing" not in repr(stats)


def test_copy_of_a_proxy_shares_target_and_sink() -> None:
    import copy

    client = MonitoredClient(FakeClient())
    clone = copy.copy(client)
    assert unwrap(clone) is unwrap(client)
    clone.get(1)
    assert client.stats()["operations"] == 1


def test_changes_count_only_what_came_after_the_mark_and_reset_nothing() -> None:
    from syncpool.monitoring import ClientStats, MonitoredClient

    class Client:
        def ping(self) -> None: ...

        def fail(self) -> None:
            raise ValueError("no")

    sink = ClientStats("marks")
    client = MonitoredClient(Client(), sink=sink)
    for _ in range(3):
        client.ping()
    first, mark = sink.changes(None)
    assert first["operations"] == 3
    client.ping()
    with pytest.raises(ValueError):
        client.fail()
    second, _ = sink.changes(mark)
    assert second["operations"] == 2 and second["errors"] == 1 and second["errors_by_type"] == {"ValueError": 1}
    assert second["methods"]["ping"]["operations"] == 1 and second["methods"]["fail"]["operations"] == 1
    assert sink.stats()["operations"] == 5  # nothing was reset
