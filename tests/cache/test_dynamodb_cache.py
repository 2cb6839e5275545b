"""GIVEN a DynamoDBCache on moto WHEN LangGraph's cache operations run on it THEN it serves
what was set, per namespace, until the entry's TTL, in DynamoDB's batch sizes, and the same
as LangGraph's own InMemoryCache on any sequence of operations."""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, TypedDict

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langgraph.cache.memory import InMemoryCache
from langgraph.graph import START, StateGraph
from langgraph.types import CachePolicy

from functions import clock as clock_module
from functions.cache import CacheTableMissingError, DynamoDBCache
from functions.cache.dynamodb import EXPIRES_AT, MAX_ITEM_BYTES, item_key
from tests.cache.conftest import CacheFactory
from tests.clocks import FakeClock

pytestmark = pytest.mark.integration

NS = ("__pregel_ns_writes", "graphs.demo.lookup", "lookup")
OTHER = ("__pregel_ns_writes", "graphs.demo.lookup", "other")


class Counting:
    """A boto3 client that counts the requests it makes, by operation."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def batch_get_item(self, **kwargs: Any) -> Any:
        self.calls["BatchGetItem"] = self.calls.get("BatchGetItem", 0) + 1
        assert len(kwargs["RequestItems"]) == 1
        (request,) = kwargs["RequestItems"].values()
        assert len(request["Keys"]) <= 100, "BatchGetItem takes at most 100 keys"
        return self._client.batch_get_item(**kwargs)

    def batch_write_item(self, **kwargs: Any) -> Any:
        self.calls["BatchWriteItem"] = self.calls.get("BatchWriteItem", 0) + 1
        (requests,) = kwargs["RequestItems"].values()
        assert len(requests) <= 25, "BatchWriteItem takes at most 25 items"
        return self._client.batch_write_item(**kwargs)


class Unprocessing(Counting):
    """Leaves half of each batch unprocessed the first ``times`` times, as a throttled
    DynamoDB does."""

    def __init__(self, client: Any, times: int = 2) -> None:
        super().__init__(client)
        self.times = {"get": times, "write": times}

    def batch_get_item(self, **kwargs: Any) -> Any:
        ((table, request),) = kwargs["RequestItems"].items()
        keys = request["Keys"]
        if self.times["get"] <= 0 or len(keys) < 2:
            return super().batch_get_item(**kwargs)
        self.times["get"] -= 1
        half = len(keys) // 2
        response = super().batch_get_item(RequestItems={table: {**request, "Keys": keys[:half]}})
        response["UnprocessedKeys"] = {table: {**request, "Keys": keys[half:]}}
        return response

    def batch_write_item(self, **kwargs: Any) -> Any:
        ((table, requests),) = kwargs["RequestItems"].items()
        if self.times["write"] <= 0 or len(requests) < 2:
            return super().batch_write_item(**kwargs)
        self.times["write"] -= 1
        half = len(requests) // 2
        response = super().batch_write_item(RequestItems={table: requests[:half]})
        response["UnprocessedItems"] = {table: requests[half:]}
        return response


class Failing:
    """Every batch request fails with ``code`` (after botocore's retries, as it would)."""

    def __init__(self, client: Any, code: str) -> None:
        self._client = client
        self.code = code

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def _fail(self, operation: str) -> Any:
        raise ClientError({"Error": {"Code": self.code, "Message": "test"}}, operation)

    def batch_get_item(self, **kwargs: Any) -> Any:
        return self._fail("BatchGetItem")

    def batch_write_item(self, **kwargs: Any) -> Any:
        return self._fail("BatchWriteItem")


# --- get / set / clear -----------------------------------------------------------------------


def test_serves_what_was_set_and_nothing_else(make_cache: CacheFactory) -> None:
    # GIVEN a cache holding two entries, one of them LangGraph's writes shape (a deque)
    cache = make_cache()
    writes = deque([("answer", "sunny, 21 C"), ("sources", ["met-office"])])
    cache.set({(NS, "k1"): (writes, None), (NS, "k2"): ({"n": 2}, 60)})

    # WHEN both and a key never set are read
    got = cache.get([(NS, "k1"), (NS, "k2"), (NS, "missing")])

    # THEN exactly the set ones come back, decoded by the serde as LangGraph's own cache
    # decodes them (tuples in a deque come back as lists, which LangGraph applies the same)
    reference: InMemoryCache[Any] = InMemoryCache()
    reference.set({(NS, "k1"): (writes, None)})
    assert got == {(NS, "k1"): reference.get([(NS, "k1")])[(NS, "k1")], (NS, "k2"): {"n": 2}}
    assert got[(NS, "k1")] == deque([["answer", "sunny, 21 C"], ["sources", ["met-office"]]])
    # AND reading nothing asks DynamoDB nothing
    assert cache.get([]) == {}


def test_set_replaces_an_entry(make_cache: CacheFactory) -> None:
    cache = make_cache()
    cache.set({(NS, "k"): ("old", None)})
    cache.set({(NS, "k"): ("new", None)})
    assert cache.get([(NS, "k")]) == {(NS, "k"): "new"}


def test_namespaces_are_separate_and_cleared_exactly(make_cache: CacheFactory) -> None:
    # GIVEN the same key in two namespaces, in a child namespace and in the empty one
    cache = make_cache()
    child = (*NS, "child")
    cache.set(
        {
            (NS, "k"): ("lookup", None),
            (OTHER, "k"): ("other", None),
            (child, "k"): ("child", None),
            ((), ""): ("root", None),
        }
    )
    everything = [(NS, "k"), (OTHER, "k"), (child, "k"), ((), "")]
    assert cache.get(everything) == {
        (NS, "k"): "lookup",
        (OTHER, "k"): "other",
        (child, "k"): "child",
        ((), ""): "root",
    }

    # WHEN one namespace is cleared
    cache.clear([NS])

    # THEN only its entries are gone (a child namespace is a namespace of its own)
    assert cache.get(everything) == {(OTHER, "k"): "other", (child, "k"): "child", ((), ""): "root"}

    # AND clearing everything leaves nothing
    cache.clear()
    assert cache.get(everything) == {}


def test_long_keys_and_namespaces_fit_dynamodb_keys(make_cache: CacheFactory) -> None:
    # GIVEN a key and a namespace longer than DynamoDB key attributes allow
    cache = make_cache()
    long_ns = ("n" * 3000,)
    long_key = "é" * 1000
    cache.set({(long_ns, long_key): ("v", None), (long_ns, "short"): ("w", None)})

    # THEN they are stored (hashed) and read back, and cleared by namespace
    assert cache.get([(long_ns, long_key), (long_ns, "short")]) == {
        (long_ns, long_key): "v",
        (long_ns, "short"): "w",
    }
    pk, sk = item_key(long_ns, long_key)
    assert pk.startswith("sha256:")
    assert sk.startswith("sha256:")
    cache.clear([long_ns])
    assert cache.get([(long_ns, long_key), (long_ns, "short")]) == {}


async def test_async_variants(make_cache: CacheFactory) -> None:
    cache = make_cache()
    await cache.aset({(NS, "k"): ([1, 2], None)})
    assert await cache.aget([(NS, "k")]) == {(NS, "k"): [1, 2]}
    await cache.aclear([NS])
    assert await cache.aget([(NS, "k")]) == {}


# --- TTL -------------------------------------------------------------------------------------


def test_an_entry_is_served_until_its_ttl_then_never(
    make_cache: CacheFactory, clock: FakeClock, dynamodb: Any
) -> None:
    # GIVEN entries with a 10 s TTL and without one, on a simulated clock
    cache = make_cache(clock=clock.now)
    cache.set({(NS, "short"): ("s", 10), (NS, "forever"): ("f", None)})

    # WHEN time passes
    clock.advance(9.5)
    before = cache.get([(NS, "short"), (NS, "forever")])
    clock.advance(0.5)
    after = cache.get([(NS, "short"), (NS, "forever")])
    clock.advance(10 * 365 * 86400)
    much_later = cache.get([(NS, "short"), (NS, "forever")])

    # THEN the TTL'd entry is served before its TTL, and not from then on, although
    # DynamoDB has not deleted the item (its TTL deletion is lazy)
    assert before == {(NS, "short"): "s", (NS, "forever"): "f"}
    assert after == {(NS, "forever"): "f"}
    assert much_later == {(NS, "forever"): "f"}
    pk, sk = item_key(NS, "short")
    item = dynamodb.get_item(TableName=cache.table_name, Key={"pk": {"S": pk}, "sk": {"S": sk}})
    # AND the item carries the table's TTL attribute, in whole epoch seconds
    assert item["Item"][EXPIRES_AT] == {"N": str(int(1_800_000_000.25) + 10)}
    pk, sk = item_key(NS, "forever")
    item = dynamodb.get_item(TableName=cache.table_name, Key={"pk": {"S": pk}, "sk": {"S": sk}})
    assert EXPIRES_AT not in item["Item"]


def test_ttl_follows_the_project_clock_by_default(
    make_cache: CacheFactory, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a cache with no clock of its own, and the run path's clock simulated
    monkeypatch.setattr(clock_module, "now", clock.now)
    cache = make_cache()
    cache.set({(NS, "k"): ("v", 60)})
    # WHEN the run path's clock passes the TTL THEN the entry is no longer served
    clock.advance(59)
    assert cache.get([(NS, "k")]) == {(NS, "k"): "v"}
    clock.advance(1)
    assert cache.get([(NS, "k")]) == {}


def test_setup_enables_dynamodb_ttl_on_expires_at(make_cache: CacheFactory, dynamodb: Any) -> None:
    cache = make_cache()
    cache.setup()  # idempotent
    ttl = dynamodb.describe_time_to_live(TableName=cache.table_name)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": EXPIRES_AT}


# --- batches and limits ----------------------------------------------------------------------


def test_many_keys_go_in_dynamodb_batch_sizes(make_cache: CacheFactory, dynamodb: Any) -> None:
    # GIVEN a cache whose client counts its requests
    client = Counting(dynamodb)
    cache = make_cache(client=client)
    pairs = {(NS, f"k{i}"): (i, None) for i in range(250)}

    # WHEN 250 entries are set, then read (with a duplicate and a missing key), then cleared
    cache.set(pairs)
    got = cache.get([*pairs, (NS, "k0"), (NS, "missing")])
    writes_after_set = client.calls["BatchWriteItem"]
    cache.clear([NS])

    # THEN every entry round-trips, in batches of 25 writes and 100 reads
    assert got == {key: value for key, (value, _) in pairs.items()}
    assert writes_after_set == 10
    assert client.calls["BatchGetItem"] == 3
    assert client.calls["BatchWriteItem"] == 20  # the deletes, 25 at a time too
    assert cache.get(list(pairs)) == {}


def test_unprocessed_keys_and_items_are_retried(make_cache: CacheFactory, dynamodb: Any) -> None:
    # GIVEN DynamoDB leaving half of each of the first batches unprocessed
    client = Unprocessing(dynamodb, times=3)
    cache = make_cache(client=client)
    pairs = {(NS, f"k{i}"): (f"v{i}", None) for i in range(120)}

    # WHEN entries are set and read back
    cache.set(pairs)
    got = cache.get(list(pairs))

    # THEN nothing is lost: what was unprocessed was sent again
    assert got == {key: value for key, (value, _) in pairs.items()}
    assert client.times == {"get": 0, "write": 0}


def test_a_value_over_the_item_limit_is_not_cached(
    make_cache: CacheFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN one value larger than a DynamoDB item and one that fits
    cache = make_cache()
    huge = "x" * MAX_ITEM_BYTES
    # (moto sizes a binary attribute by its base64 text, 4/3 of what DynamoDB counts, so what
    # fits here stays well below the limit)
    fits = "y" * (MAX_ITEM_BYTES // 2)

    # WHEN both are set in one call
    with caplog.at_level(logging.WARNING):
        cache.set({(NS, "huge"): (huge, None), (NS, "fits"): (fits, None)})

    # THEN the one that fits is cached, the other is skipped with a warning (the node just
    # runs again next time)
    assert cache.get([(NS, "huge"), (NS, "fits")]) == {(NS, "fits"): fits}
    assert "larger than a DynamoDB item" in caplog.text


# --- failures --------------------------------------------------------------------------------


def test_throttling_degrades_to_a_miss(
    make_cache: CacheFactory, dynamodb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN DynamoDB throttling every batch request, past botocore's retries
    cache = make_cache(client=Failing(dynamodb, "ProvisionedThroughputExceededException"))
    # WHEN the cache is used THEN it neither serves nor fails: the node would just run
    with caplog.at_level(logging.WARNING):
        cache.set({(NS, "k"): ("v", None)})
        assert cache.get([(NS, "k")]) == {}
    assert "carrying on without the cache" in caplog.text


def test_a_missing_table_says_what_to_do(make_cache: CacheFactory) -> None:
    cache = make_cache(setup=False)
    with pytest.raises(CacheTableMissingError, match="LAMBDAGRAPH_CACHE_TABLE"):
        cache.get([(NS, "k")])
    with pytest.raises(CacheTableMissingError):
        cache.set({(NS, "k"): ("v", None)})


def test_a_denied_call_is_not_taken_for_a_miss(make_cache: CacheFactory, dynamodb: Any) -> None:
    cache = make_cache(client=Failing(dynamodb, "AccessDeniedException"))
    with pytest.raises(ClientError, match="AccessDeniedException"):
        cache.get([(NS, "k")])


# --- conformance with LangGraph's InMemoryCache ----------------------------------------------

NAMESPACES = [NS, OTHER, (*NS, "child"), ()]
KEYS = ["", "a", "b", "0" * 32, "ключ"]
namespaces = st.sampled_from(NAMESPACES)
keys = st.sampled_from(KEYS)
values = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=20),
    st.lists(st.tuples(st.sampled_from(["answer", "notes"]), st.text(max_size=10)), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(0, 1000), max_size=3),
)
# None: forever; 0 and negative: expired at once (InMemoryCache serves neither); 3600: alive
# for the whole example (InMemoryCache reads the wall clock).
ttls = st.sampled_from([None, 0, -5, 3600])
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("set"),
            st.dictionaries(st.tuples(namespaces, keys), st.tuples(values, ttls), max_size=6),
        ),
        st.tuples(st.just("get"), st.lists(st.tuples(namespaces, keys), max_size=8)),
        st.tuples(st.just("clear"), st.none() | st.lists(namespaces, max_size=3)),
    ),
    max_size=12,
)


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=operations)
def test_same_answers_as_langgraphs_in_memory_cache(
    make_cache: CacheFactory, ops: list[tuple[str, Any]]
) -> None:
    # GIVEN LangGraph's InMemoryCache and a DynamoDBCache, both empty
    reference: InMemoryCache[Any] = InMemoryCache()
    cache = make_cache()
    # WHEN the same operations run on both THEN every read answers the same
    for op, arg in ops:
        if op == "set":
            reference.set(arg)
            cache.set(arg)
        elif op == "get":
            assert cache.get(arg) == reference.get(arg)
        else:
            reference.clear(arg)
            cache.clear(arg)
    # AND so do they at the end, on every key
    every_key = [(ns, key) for ns in NAMESPACES for key in KEYS]
    assert cache.get(every_key) == reference.get(every_key)


# --- through a graph -------------------------------------------------------------------------


def test_a_graph_served_from_the_cache_and_cleared_per_node(make_cache: CacheFactory) -> None:
    class State(TypedDict, total=False):
        query: str
        answer: str
        echo: str

    calls: list[str] = []

    def search(state: State) -> dict[str, Any]:
        calls.append("search")
        return {"answer": state["query"].upper()}

    def echo(state: State) -> dict[str, Any]:
        calls.append("echo")
        return {"echo": state["query"]}

    # GIVEN a graph (as docs/models.md shows) with two cached nodes, compiled with the cache
    builder = StateGraph(State)
    policy: CachePolicy[Any] = CachePolicy(key_func=lambda s: s["query"], ttl=3600)
    builder.add_node("search", search, cache_policy=policy)
    builder.add_node("echo", echo, cache_policy=policy)
    builder.add_edge(START, "search")
    builder.add_edge(START, "echo")
    graph = builder.compile(cache=make_cache())

    # WHEN it runs twice THEN the second run is served from the cache
    first = graph.invoke({"query": "q"})
    assert graph.invoke({"query": "q"}) == first
    assert sorted(calls) == ["echo", "search"]

    # WHEN one node's entries are cleared THEN only that node runs again
    graph.clear_cache(["search"])
    assert graph.invoke({"query": "q"}) == first
    assert sorted(calls) == ["echo", "search", "search"]


def test_no_client_is_made_until_the_cache_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from functions import aws

    # GIVEN a cache made without a client (as the platform makes it for every graph)
    made: list[str] = []
    monkeypatch.setattr(aws, "dynamodb_client", lambda: made.append("client") or object())
    cache: DynamoDBCache[Any] = DynamoDBCache("unused")
    # THEN no boto3 client is made until a call needs one
    assert made == []
    assert cache.get([]) == {}
    assert made == []
    assert cache.client is not None
    assert made == ["client"]
