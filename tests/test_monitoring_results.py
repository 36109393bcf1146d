"""Tests of MonitoredClient's ``results=`` rules (WrapResult) with fake clients: cursors, pages, blocks, copies."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from syncpool.monitoring import ClientStats, MonitoredClient, WrapResult, monitor_of, unwrap

CURSOR_RULES = {
    "cursor": WrapResult(methods=("execute", "executemany")),
    "cursor.copy": WrapResult(measure="block"),
}
PAGINATOR_RULES = {
    "get_paginator": WrapResult(methods=()),
    "get_paginator.paginate": WrapResult(measure="iteration", methods=("build_full_result",)),
}


class Boom(Exception):
    """A client error."""


class FakeClock:
    """A settable monotonic clock."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Cursor:
    """A psycopg-like cursor: a context manager whose execute() does the round trip and fetches are local."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.rows: list[tuple[int]] = []
        self.closed = False
        self.copied: list[bytes] = []

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.closed = True

    def execute(self, query: str, rows: int = 3) -> Cursor:
        if query == "fail":
            raise Boom("syntax error near password=hunter2")
        self.clock.now += 0.010
        self.rows = [(n,) for n in range(rows)]
        return self

    def executemany(self, query: str, params: list[Any]) -> None:
        self.clock.now += 0.001 * len(params)

    def fetchone(self) -> tuple[int] | None:
        return self.rows.pop(0) if self.rows else None

    def __iter__(self) -> Iterator[tuple[int]]:
        while self.rows:
            yield self.rows.pop(0)

    @contextlib.contextmanager
    def copy(self, statement: str) -> Iterator[list[bytes]]:
        self.clock.now += 0.001  # the COPY statement
        yield self.copied
        self.clock.now += 0.002  # the server's answer at the end


class Connection:
    """A psycopg-like connection."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.cursors: list[Cursor] = []

    def cursor(self) -> Cursor:
        cursor = Cursor(self.clock)
        self.cursors.append(cursor)
        return cursor

    def close(self) -> None:
        pass


class PageIterator:
    """A boto3-like page iterator: nothing happens until it is iterated, then one request per page."""

    def __init__(self, clock: FakeClock, pages: int, fail_at: int | None) -> None:
        self.clock = clock
        self.pages = pages
        self.fail_at = fail_at
        self.requests = 0
        self.finished = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            for number in range(self.pages):
                self.requests += 1
                self.clock.now += 0.020
                if number == self.fail_at:
                    raise Boom("throttled")
                yield {"Contents": [f"key-{number}"]}
        finally:
            self.finished = True

    def build_full_result(self) -> dict[str, Any]:
        return {"Contents": [key for page in self for key in page["Contents"]]}


class Paginator:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.iterators: list[PageIterator] = []

    def paginate(self, pages: int = 3, fail_at: int | None = None) -> PageIterator:
        iterator = PageIterator(self.clock, pages, fail_at)
        self.iterators.append(iterator)
        return iterator


class S3Like:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def get_paginator(self, operation: str) -> Paginator:
        return Paginator(self.clock)


def monitored_connection(**rules: Any) -> tuple[MonitoredClient, FakeClock]:
    clock = FakeClock()
    client = MonitoredClient(Connection(clock), sink=ClientStats("db", clock=clock), results=rules or CURSOR_RULES)
    return client, clock


def methods(client: Any) -> dict[str, Any]:
    return monitor_of(client).stats()["methods"]  # type: ignore[no-any-return]


def test_calls_on_a_cursor_entered_with_with_are_recorded() -> None:
    conn, _ = monitored_connection()
    with conn.cursor() as cur:
        assert isinstance(cur, Cursor) and not isinstance(cur, MonitoredClient)
        assert unwrap(cur) is unwrap(conn).cursors[0]
        assert monitor_of(cur) is conn.monitor
        assert cur.execute("SELECT 1", rows=2) is unwrap(cur)  # results of unlisted calls come back as they are
        assert cur.fetchone() == (0,)
        cur.executemany("INSERT", [1, 2, 3, 4])
        cur.execute("SELECT 2", rows=3)
        assert list(cur) == [(0,), (1,), (2,)]  # iterating the wrapped cursor iterates the cursor
    assert unwrap(cur).closed
    stats = methods(conn)
    assert set(stats) == {"cursor", "cursor.execute", "cursor.executemany"}
    assert stats["cursor"]["operations"] == 1
    assert stats["cursor.execute"]["operations"] == 2
    assert stats["cursor.execute"]["latency"]["sum"] == pytest.approx(0.020)
    assert stats["cursor.executemany"]["latency"]["max"] == pytest.approx(0.004)


def test_cursor_errors_are_counted_by_type_and_reraised_unchanged() -> None:
    conn, _ = monitored_connection()
    cur = conn.cursor()
    with pytest.raises(Boom, match="syntax error"):
        cur.execute("fail")
    stats = methods(conn)["cursor.execute"]
    assert stats["errors_by_type"] == {"Boom": 1} and stats["operations"] == 1
    assert "hunter2" not in repr(conn.stats())


def test_methods_left_out_pass_through_unrecorded_and_cached() -> None:
    conn, _ = monitored_connection()
    cur = conn.cursor()
    assert cur.fetchone is cur.fetchone  # a loop of fetchone() pays the proxy lookup once
    assert cur.fetchone() is None
    assert "cursor.fetchone" not in methods(conn)


def test_every_public_method_is_recorded_without_a_methods_list() -> None:
    conn, _ = monitored_connection(cursor=WrapResult())
    cur = conn.cursor()
    cur.execute("SELECT 1")
    cur.fetchone()
    assert {"cursor.execute", "cursor.fetchone"} <= set(methods(conn))


def test_a_block_is_one_operation_timed_from_enter_to_exit() -> None:
    conn, clock = monitored_connection()
    with conn.cursor() as cur:
        copy = cur.copy("COPY t FROM STDIN")
        assert methods(conn)["cursor.copy"]["operations"] == 0  # the call only prepares the block
        with copy as rows:
            assert rows is unwrap(cur).copied  # what the result's own __enter__ gives, not a proxy
            rows.append(b"1\n")
            clock.now += 0.5  # the caller's own work inside the block counts too
    stats = methods(conn)["cursor.copy"]
    assert stats["operations"] == 1 and stats["errors"] == 0
    assert stats["latency"]["sum"] == pytest.approx(0.503)


def test_a_block_that_raises_is_a_failed_operation() -> None:
    conn, _ = monitored_connection()
    cur = conn.cursor()
    with pytest.raises(Boom), cur.copy("COPY t FROM STDIN"):
        raise Boom("bad row")
    stats = methods(conn)["cursor.copy"]
    assert stats["operations"] == 1 and stats["errors_by_type"] == {"Boom": 1}


def test_a_block_whose_exit_suppresses_the_error_succeeded() -> None:
    conn, _ = monitored_connection(session=WrapResult(measure="block"))
    unwrap(conn).session = lambda: contextlib.suppress(Boom)
    with conn.session():
        raise Boom("ignored")
    assert methods(conn)["session"]["errors"] == 0 and methods(conn)["session"]["operations"] == 1


def test_a_block_whose_enter_fails_is_a_failed_operation() -> None:
    @contextlib.contextmanager
    def refuse() -> Iterator[None]:
        raise Boom("no")
        yield  # pragma: no cover

    conn, _ = monitored_connection(begin=WrapResult(measure="block"))
    unwrap(conn).begin = refuse
    with pytest.raises(Boom), conn.begin():
        pass  # pragma: no cover
    assert methods(conn)["begin"]["errors_by_type"] == {"Boom": 1}


def test_with_on_a_result_that_is_no_context_manager_fails_like_the_result() -> None:
    conn, _ = monitored_connection(cursor=WrapResult(), rows=WrapResult())
    unwrap(conn).rows = lambda: [1, 2]
    rows = conn.rows()
    assert list(rows) == [1, 2] and len(rows) == 2 and rows[0] == 1
    with pytest.raises(TypeError, match="context manager"), rows:
        pass  # pragma: no cover


def paginated() -> tuple[MonitoredClient, FakeClock]:
    clock = FakeClock()
    client = MonitoredClient(S3Like(clock), sink=ClientStats("s3", clock=clock), results=PAGINATOR_RULES)
    return client, clock


def test_each_page_is_one_operation_under_the_paginate_name() -> None:
    s3, _ = paginated()
    paginator = s3.get_paginator("list_objects_v2")
    assert isinstance(paginator, Paginator)
    pages = paginator.paginate(pages=3)
    assert isinstance(pages, PageIterator)
    assert methods(s3)["get_paginator.paginate"]["operations"] == 0  # preparing fetches nothing
    assert [page["Contents"] for page in pages] == [["key-0"], ["key-1"], ["key-2"]]
    stats = methods(s3)
    assert stats["get_paginator.paginate"]["operations"] == 3
    assert stats["get_paginator.paginate"]["latency"]["sum"] == pytest.approx(0.060)
    assert stats["get_paginator"]["operations"] == 1
    assert set(stats) == {"get_paginator", "get_paginator.paginate"}


def test_a_failing_page_is_a_failed_operation_and_the_error_propagates() -> None:
    s3, _ = paginated()
    fetched = []
    with pytest.raises(Boom, match="throttled"):
        for page in s3.get_paginator("list_objects_v2").paginate(pages=5, fail_at=2):
            fetched.append(page)
    stats = methods(s3)["get_paginator.paginate"]
    assert len(fetched) == 2
    assert stats["operations"] == 3 and stats["errors_by_type"] == {"Boom": 1}


def test_leaving_the_loop_early_closes_the_page_generator() -> None:
    s3, _ = paginated()
    paginator = s3.get_paginator("list_objects_v2")
    for _page in paginator.paginate(pages=10):
        break
    iterator = unwrap(paginator).iterators[0]
    assert iterator.finished and iterator.requests == 1
    assert methods(s3)["get_paginator.paginate"]["operations"] == 1


def test_listed_methods_of_an_iterated_result_are_recorded_as_calls() -> None:
    s3, _ = paginated()
    result = s3.get_paginator("list_objects_v2").paginate(pages=2).build_full_result()
    assert result == {"Contents": ["key-0", "key-1"]}
    stats = methods(s3)["get_paginator.paginate.build_full_result"]
    assert stats["operations"] == 1 and stats["latency"]["sum"] == pytest.approx(0.040)


class Elasticish:
    """An elasticsearch-like client: options() returns a reconfigured copy, calls live in namespaces too."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.indices = IndicesClient()

    def options(self, **changes: Any) -> Elasticish:
        return Elasticish(**changes)

    def search(self, index: str) -> dict[str, Any]:
        return {"index": index, "timeout": self.timeout}


class IndicesClient:
    def refresh(self, index: str) -> None:
        pass


def test_an_empty_prefix_records_a_copy_of_the_client_like_the_client() -> None:
    es = MonitoredClient(Elasticish(), name="es", results={"options": WrapResult(prefix="")})
    assert es.options(timeout=1.0).options(timeout=2.0).search("logs") == {"index": "logs", "timeout": 2.0}
    es.options(timeout=3.0).indices.refresh("logs")
    es.search("logs")
    stats = es.stats()["methods"]
    assert stats["search"]["operations"] == 2
    assert stats["options"]["operations"] == 3
    assert stats["indices.refresh"]["operations"] == 1


def test_results_of_namespaced_calls_follow_their_qualified_name() -> None:
    class Cat:
        def indices(self) -> Cursor:
            return Cursor(FakeClock())

    class WithCat:
        def __init__(self) -> None:
            self.cat = Cat()

    client = MonitoredClient(WithCat(), namespaces=["cat"], results={"cat.indices": WrapResult()})
    client.cat.indices().execute("x")
    assert {"cat.indices", "cat.indices.execute"} <= set(client.stats()["methods"])


def test_a_none_result_is_returned_as_none() -> None:
    conn, _ = monitored_connection(close=WrapResult())
    assert conn.close() is None
    assert methods(conn)["close"]["operations"] == 1


def test_counts_stay_exact_with_a_cursor_per_call_under_threads() -> None:
    conn, _ = monitored_connection()
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        for _ in range(500):
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                with cur.copy("COPY"):
                    pass

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = methods(conn)
    assert stats["cursor"]["operations"] == stats["cursor.execute"]["operations"] == 4000
    assert stats["cursor.copy"]["operations"] == 4000
    assert stats["cursor.copy"]["latency"]["count"] == 4000


def test_wrap_result_validates_its_options() -> None:
    with pytest.raises(ValueError, match="measure"):
        WrapResult(measure="pages")
    with pytest.raises(TypeError, match="methods"):
        WrapResult(methods="execute")
    with pytest.raises(TypeError, match="methods"):
        WrapResult(methods=[b"execute"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="prefix"):
        WrapResult(prefix=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        WrapResult(None)  # type: ignore[misc]  # keyword-only
    assert WrapResult(methods=["a", "b"]) == WrapResult(methods=("b", "a"))
    assert WrapResult(methods=["a"]).methods == frozenset({"a"})


@pytest.mark.parametrize("results", [[("cursor", WrapResult())], {"cursor": {"methods": ()}}, {1: WrapResult()}])
def test_results_must_map_names_to_wrap_results(results: Any) -> None:
    with pytest.raises(TypeError, match="results"):
        MonitoredClient(Connection(), results=results)


class SlottedCursor:
    """A cursor whose instances have no ``__dict__``, like psycopg's."""

    __slots__ = ("rows",)

    def __init__(self) -> None:
        self.rows: list[int] = []

    def __enter__(self) -> SlottedCursor:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        return None

    def execute(self, query: str) -> None:
        self.rows = [1, 2]

    def fetchone(self) -> int | None:
        return self.rows.pop(0) if self.rows else None


class SlottedConnection:
    def cursor(self) -> SlottedCursor:
        return SlottedCursor()


def test_slot_only_results_record_every_cursor_exactly_under_threads() -> None:
    conn = MonitoredClient(SlottedConnection(), results={"cursor": WrapResult(methods=("execute",))})
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        for _ in range(500):
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                assert cur.fetchone() == 1 and cur.fetchone() == 2 and cur.fetchone() is None

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = methods(conn)
    assert stats["cursor.execute"]["operations"] == stats["cursor"]["operations"] == 4000
    assert "cursor.fetchone" not in stats
    cur = conn.cursor()
    assert isinstance(cur, SlottedCursor) and type(unwrap(cur)) is SlottedCursor
    assert cur.execute.__name__ == "execute"


def test_clients_with_different_rules_on_one_result_class_stay_apart() -> None:
    executes = MonitoredClient(SlottedConnection(), results={"cursor": WrapResult(methods=("execute",))})
    fetches = MonitoredClient(SlottedConnection(), results={"cursor": WrapResult(methods=("fetchone",))})
    for _ in range(3):
        for client in (executes, fetches):
            cur = client.cursor()
            cur.execute("SELECT 1")
            cur.fetchone()
    assert set(methods(executes)) == {"cursor", "cursor.execute"}
    assert set(methods(fetches)) == {"cursor", "cursor.fetchone"}
    assert methods(executes)["cursor.execute"]["operations"] == methods(fetches)["cursor.fetchone"]["operations"] == 3


def test_a_call_measured_as_nothing_records_only_the_calls_on_its_result() -> None:
    conn, _ = monitored_connection(cursor=WrapResult(methods=("execute",), measure=None))
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
    assert set(methods(conn)) == {"cursor.execute"}
