"""GIVEN a DynamoDBStore on moto WHEN LangGraph's store operations run on it THEN it answers
as LangGraph's own InMemoryStore does on any sequence of operations (in namespace-then-key
order), keeps created_at across updates, pages past DynamoDB's limits, honours TTLs, and
refuses what DynamoDB cannot hold with an error that says so."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, TypedDict

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from langgraph.graph import START, StateGraph
from langgraph.store.base import (
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    SearchOp,
)
from langgraph.store.memory import InMemoryStore

from functions.memory import (
    DynamoDBStore,
    MemoryItemTooLargeError,
    MemoryKeyTooLongError,
    MemoryLabelError,
    MemoryTableMissingError,
    VectorSearchUnsupportedError,
    attach_memory,
)
from functions.memory.dynamodb import MAX_ITEM_BYTES, item_key, split_key
from functions.settings import Settings
from tests.clocks import FakeClock
from tests.memory.conftest import StoreFactory

pytestmark = pytest.mark.integration


class Counting:
    """A boto3 client that counts the requests it makes, by operation."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute) or name.startswith("get_"):
            return attribute

        def counted(**kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return attribute(**kwargs)

        return counted


# --- basics --------------------------------------------------------------------------------


def test_put_get_delete(make_store: StoreFactory) -> None:
    # GIVEN a store with one memory
    store = make_store()
    store.put(("users", "u1"), "prefs", {"theme": "dark", "tags": ["a", 1, 2.5, None, True]})
    # WHEN it is read THEN it is the value put, with its namespace and key
    item = store.get(("users", "u1"), "prefs")
    assert item is not None
    assert (item.namespace, item.key) == (("users", "u1"), "prefs")
    assert item.value == {"theme": "dark", "tags": ["a", 1, 2.5, None, True]}
    assert isinstance(item.created_at, datetime)
    assert item.created_at.tzinfo is not None
    # AND another namespace or key holds nothing
    assert store.get(("users", "u2"), "prefs") is None
    assert store.get(("users",), "prefs") is None
    assert store.get(("users", "u1", "prefs"), "prefs") is None
    # WHEN it is deleted THEN it is gone, and deleting again is fine
    store.delete(("users", "u1"), "prefs")
    assert store.get(("users", "u1"), "prefs") is None
    store.delete(("users", "u1"), "prefs")


def test_an_update_keeps_created_at_and_moves_updated_at(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    # GIVEN a memory put at t0
    store = make_store(clock=clock.now)
    store.put(("users", "u1"), "prefs", {"theme": "dark"})
    first = store.get(("users", "u1"), "prefs")
    assert first is not None
    assert first.created_at == first.updated_at
    # WHEN it is put again a minute later
    clock.advance(60)
    store.put(("users", "u1"), "prefs", {"theme": "light"})
    # THEN it has the new value, the same created_at and an updated_at a minute later
    second = store.get(("users", "u1"), "prefs")
    assert second is not None
    assert second.value == {"theme": "light"}
    assert second.created_at == first.created_at
    assert (second.updated_at - first.updated_at).total_seconds() == 60
    # AND once deleted, putting it again makes a new memory
    store.delete(("users", "u1"), "prefs")
    clock.advance(60)
    store.put(("users", "u1"), "prefs", {"theme": "dark"})
    third = store.get(("users", "u1"), "prefs")
    assert third is not None
    assert third.created_at == third.updated_at > second.updated_at


def test_search_under_a_prefix_matches_whole_labels(make_store: StoreFactory) -> None:
    # GIVEN memories in neighbouring namespaces
    store = make_store()
    for namespace in [("u",), ("u", "a"), ("u", "a", "x"), ("u", "ab"), ("v", "a"), ("ua",)]:
        store.put(namespace, "k", {"ns": list(namespace)})
    # WHEN searched under prefixes THEN each finds its namespace and those below it, only
    found = {
        prefix: [item.namespace for item in store.search(prefix, limit=100)]
        for prefix in [(), ("u",), ("u", "a"), ("u", "a", "x"), ("u", "b"), ("w",)]
    }
    assert found == {
        (): [("u",), ("u", "a"), ("u", "a", "x"), ("u", "ab"), ("ua",), ("v", "a")],
        ("u",): [("u",), ("u", "a"), ("u", "a", "x"), ("u", "ab")],
        ("u", "a"): [("u", "a"), ("u", "a", "x")],
        ("u", "a", "x"): [("u", "a", "x")],
        ("u", "b"): [],
        ("w",): [],
    }


def test_filters_as_in_memory_store(make_store: StoreFactory) -> None:
    # GIVEN the same memories in both stores
    store, reference = make_store(), InMemoryStore()
    values = [
        {"kind": "fact", "n": 1, "meta": {"lang": "en", "src": "chat"}, "tags": ["a", "b"]},
        {"kind": "fact", "n": 5, "meta": {"lang": "pt"}, "tags": ["a"]},
        {"kind": "pref", "n": 10, "meta": {"lang": "en"}},
        {"kind": "pref", "n": 2.5},
        {"kind": None, "n": -3},
    ]
    for i, value in enumerate(values):
        for target in (store, reference):
            target.put(("users", "u1"), f"m{i}", value)
    filters: list[dict[str, Any]] = [
        {"kind": "fact"},
        {"kind": "fact", "n": 5},
        {"kind": None},
        {"meta": {"lang": "en"}},
        {"tags": ["a", "b"]},
        {"tags": ["a"]},
        {"n": {"$gt": 2}},
        {"n": {"$gte": 2.5, "$lt": 10}},
        {"n": {"$lte": 1}},
        {"kind": {"$ne": "fact"}},
        {"kind": {"$eq": "pref"}, "n": {"$gt": 3}},
        {"missing": "x"},
    ]
    # WHEN each filter is searched THEN both stores find the same memories
    for filter in filters:
        ours = [item.key for item in store.search(("users",), filter=filter)]
        theirs = sorted(item.key for item in reference.search(("users",), filter=filter))
        assert ours == theirs, filter
    # AND a comparison on a field some memories lack skips them (InMemoryStore raises)
    assert [i.key for i in store.search(("users",), filter={"meta": {"$gt": 1}})] == []
    store.put(("users", "u1"), "x", {"kind": "fact"})
    assert [i.key for i in store.search(("users",), filter={"n": {"$gt": 4}})] == ["m1", "m2"]


def test_query_is_ignored_and_an_index_is_refused(make_store: StoreFactory) -> None:
    # GIVEN a store without an index (there is no vector search)
    store = make_store()
    store.put(("docs",), "d1", {"text": "Python tutorial"})
    # WHEN searched with a query THEN the query is ignored, as InMemoryStore without an index
    found = store.search(("docs",), query="typescript")
    assert [item.key for item in found] == ["d1"]
    assert found[0].score is None
    # AND asking for an index says vector search is not supported
    with pytest.raises(VectorSearchUnsupportedError, match="no vector"):
        DynamoDBStore("memory", index={"dims": 3, "embed": lambda texts: [[0.0] * 3]})


def test_more_results_than_a_page_and_offsets(make_store: StoreFactory, dynamodb: Any) -> None:
    # GIVEN 150 memories of 4 KB each (a 1 MB Query page holds fewer than the 150)
    store = make_store()
    padding = "x" * 4000
    for i in range(150):
        store.put(("users", "u1", "notes"), f"n{i:03}", {"i": i, "pad": padding})
    store.put(("users", "u2"), "other", {"i": -1})
    # WHEN searched past the first page, with offsets THEN every memory comes once, in order
    everything = store.search(("users", "u1"), limit=1000)
    assert [item.value["i"] for item in everything] == list(range(150))
    page = store.search(("users", "u1"), limit=30, offset=110)
    assert [item.value["i"] for item in page] == list(range(110, 140))
    assert [item.value["i"] for item in store.search((), limit=200, offset=149)] == [149, -1]
    # AND a filter selecting from every page finds all it matches
    odd = store.search(("users",), filter={"i": {"$gt": 100}}, limit=100)
    assert [item.value["i"] for item in odd] == list(range(101, 150))
    # AND without a filter a search reads no more than it returns
    counting = Counting(dynamodb)
    small = DynamoDBStore(store.table_name, client=counting)
    assert len(small.search(("users", "u1"), limit=5)) == 5
    assert counting.calls == {"query": 1}
    # AND the namespaces are listed once each however many memories they hold
    assert store.list_namespaces() == [("users", "u1", "notes"), ("users", "u2")]


def test_many_gets_in_one_batch(make_store: StoreFactory, dynamodb: Any) -> None:
    # GIVEN 120 memories
    store = make_store()
    store.batch([PutOp(("users", "u1"), f"k{i}", {"i": i}) for i in range(120)])
    # WHEN 130 gets (some missing, one asked twice) run in one batch
    counting = Counting(dynamodb)
    reader = DynamoDBStore(store.table_name, client=counting)
    ops: list[Op] = [GetOp(("users", "u1"), f"k{i}") for i in range(125)]
    ops += [GetOp(("users", "u1"), "k0"), GetOp((), "k0")]
    results = reader.batch(ops)
    # THEN each answers in its place, in BatchGetItem's batches of 100
    assert [r.value["i"] if isinstance(r, Item) else None for r in results] == [
        *range(120),
        *([None] * 5),
        0,
        None,
    ]
    assert counting.calls == {"batch_get_item": 2}


def test_reads_in_a_batch_see_the_store_before_its_writes(make_store: StoreFactory) -> None:
    store = make_store()
    store.put(("a",), "k", {"v": 1})
    # WHEN one batch reads, writes twice and reads again
    results = store.batch(
        [
            GetOp(("a",), "k"),
            PutOp(("a",), "k", {"v": 2}),
            PutOp(("a",), "k", {"v": 3}),
            SearchOp(("a",)),
        ]
    )
    # THEN both reads saw the value before the batch, and the last write won
    first, _, _, found = results
    assert isinstance(first, Item)
    assert first.value == {"v": 1}
    assert isinstance(found, list)
    assert [item.value for item in found] == [{"v": 1}]
    item = store.get(("a",), "k")
    assert item is not None
    assert item.value == {"v": 3}


# --- list_namespaces ------------------------------------------------------------------------


def test_list_namespaces_conditions_depth_and_paging(make_store: StoreFactory) -> None:
    # GIVEN the same namespaces in both stores
    store, reference = make_store(), InMemoryStore()
    namespaces = [
        ("users", "u1", "prefs"),
        ("users", "u1", "facts"),
        ("users", "u2", "prefs"),
        ("users", "u2"),
        ("teams", "t1", "prefs"),
        ("teams",),
        ("docs", "v1", "drafts", "x"),
    ]
    for namespace in namespaces:
        for target in (store, reference):
            target.put(namespace, "k", {"v": 1})
    cases: list[dict[str, Any]] = [
        {},
        {"prefix": ("users",)},
        {"prefix": ("users", "u1")},
        {"prefix": ("users", "*", "prefs")},
        {"prefix": ("*", "u2")},
        {"suffix": ("prefs",)},
        {"suffix": ("*", "prefs")},
        {"prefix": ("users",), "suffix": ("prefs",)},
        {"max_depth": 1},
        {"max_depth": 2},
        {"prefix": ("users",), "max_depth": 2},
        {"limit": 2},
        {"limit": 3, "offset": 2},
        {"prefix": ("nobody",)},
        {"prefix": ("users", "u1", "prefs", "deeper")},
    ]
    # WHEN listed with each set of conditions THEN both stores list the same
    for case in cases:
        assert store.list_namespaces(**case) == reference.list_namespaces(**case), case
    # AND a deleted memory's namespace is no longer listed
    store.delete(("teams",), "k")
    assert ("teams",) not in store.list_namespaces()


# --- limits and errors ----------------------------------------------------------------------


def test_a_value_too_large_for_an_item_is_refused_and_nothing_in_its_batch_is_written(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    # WHEN a batch puts a small value and one over DynamoDB's item limit
    with pytest.raises(MemoryItemTooLargeError, match="400") as raised:
        store.batch(
            [
                PutOp(("users", "u1"), "small", {"v": 1}),
                PutOp(("users", "u1"), "big", {"text": "x" * MAX_ITEM_BYTES}),
            ]
        )
    # THEN the error names the memory and says what to do, and neither was written
    assert raised.value.key == "big"
    assert "reference" in str(raised.value)
    assert store.search(("users",)) == []
    # AND a value just under the limit is stored
    store.put(("users", "u1"), "big", {"text": "x" * (MAX_ITEM_BYTES - 1000)})
    item = store.get(("users", "u1"), "big")
    assert item is not None
    assert len(item.value["text"]) == MAX_ITEM_BYTES - 1000


def test_values_must_be_json(make_store: StoreFactory) -> None:
    store = make_store()
    with pytest.raises(TypeError, match="must be JSON"):
        store.put(("users",), "k", {"when": datetime.now()})


def test_keys_and_labels_dynamodb_cannot_hold_are_refused(make_store: StoreFactory) -> None:
    store = make_store()
    with pytest.raises(MemoryKeyTooLongError, match="further labels and the key take 1202"):
        store.put(("users", "u" * 600), "k" * 600, {"v": 1})
    with pytest.raises(MemoryKeyTooLongError, match="first label take 3003 bytes"):
        store.put(("u" * 3000,), "k", {"v": 1})
    with pytest.raises(MemoryLabelError):
        store.put(("users", "a\x1fb"), "k", {"v": 1})
    # LangGraph's own rules hold too
    with pytest.raises(InvalidNamespaceError):
        store.put(("users", "a.b"), "k", {"v": 1})
    with pytest.raises(InvalidNamespaceError):
        store.batch([PutOp((), "k", {"v": 1})])
    with pytest.raises(InvalidNamespaceError):
        store.batch([SearchOp(("a.b",))])


def test_keys_round_trip() -> None:
    for namespace, key in [(("a",), "k"), (("a", "b", "c"), ""), (("a",), "x\x1fy\x1ez")]:
        assert split_key(*item_key(namespace, key)) == (namespace, key)


def test_a_missing_table_says_what_to_do(make_store: StoreFactory) -> None:
    store = make_store(setup=False)
    with pytest.raises(MemoryTableMissingError, match="LAMBDAGRAPH_MEMORY_TABLE"):
        store.get(("users",), "k")
    with pytest.raises(MemoryTableMissingError):
        store.put(("users",), "k", {"v": 1})


def test_a_denied_call_raises(make_store: StoreFactory, dynamodb: Any) -> None:
    store = make_store()

    class Denying(Counting):
        def update_item(self, **kwargs: Any) -> Any:
            raise ClientError(
                {"Error": {"Code": "AccessDeniedException", "Message": "denied"}}, "UpdateItem"
            )

    denied = DynamoDBStore(store.table_name, client=Denying(dynamodb))
    with pytest.raises(ClientError, match="denied"):
        denied.put(("users",), "k", {"v": 1})


def test_setup_is_idempotent_and_enables_ttl(make_store: StoreFactory, dynamodb: Any) -> None:
    store = make_store()
    store.setup()
    ttl = dynamodb.describe_time_to_live(TableName=store.table_name)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}


def test_no_client_is_made_until_the_store_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from functions import aws

    def fail() -> Any:
        raise AssertionError("a client was made")

    monkeypatch.setattr(aws, "dynamodb_client", fail)
    DynamoDBStore("memory")


# --- TTL ------------------------------------------------------------------------------------


def test_a_memory_with_a_ttl_is_served_until_it_expires(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    # GIVEN a memory put with a 10-minute TTL, and one without
    store = make_store(clock=clock.now)
    store.put(("users", "u1"), "short", {"v": 1}, ttl=10)
    store.put(("users", "u1"), "long", {"v": 2})
    # WHEN 9 minutes pass THEN it is served
    clock.advance(9 * 60)
    assert store.get(("users", "u1"), "short", refresh_ttl=False) is not None
    # WHEN 10 minutes have passed THEN it is gone from gets, searches and listings
    clock.advance(60)
    assert store.get(("users", "u1"), "short") is None
    assert [item.key for item in store.search(("users",))] == ["long"]
    store.delete(("users", "u1"), "long")
    assert store.list_namespaces() == []
    # AND putting it again makes a new memory
    store.put(("users", "u1"), "short", {"v": 3})
    item = store.get(("users", "u1"), "short")
    assert item is not None
    assert item.created_at == item.updated_at


def test_a_ttl_must_be_a_positive_number_of_minutes(make_store: StoreFactory) -> None:
    store = make_store()
    for ttl in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive number of minutes"):
            store.put(("users",), "k", {"v": 1}, ttl=ttl)
    # AND a very long one is kept until the end of year 9999
    store.put(("users",), "k", {"v": 1}, ttl=1e300)
    assert store.get(("users",), "k") is not None


def test_reads_refresh_a_ttl(make_store: StoreFactory, clock: FakeClock) -> None:
    # GIVEN a store whose memories last 10 minutes unless read (TTLConfig)
    store = make_store(clock=clock.now, ttl={"default_ttl": 10, "refresh_on_read": True})
    store.put(("users", "u1"), "a", {"v": 1})
    store.put(("users", "u1"), "b", {"v": 2})
    # WHEN "a" is read every 8 minutes (by get, then by search) and "b" never
    clock.advance(8 * 60)
    assert store.get(("users", "u1"), "a") is not None
    clock.advance(8 * 60)
    found = store.search(("users",), filter={"v": 1})
    # THEN "a" is still there and "b" expired
    assert [item.key for item in found] == ["a"]
    clock.advance(8 * 60)
    assert store.get(("users", "u1"), "a", refresh_ttl=False) is not None
    assert store.get(("users", "u1"), "b") is None
    # AND a read that does not refresh leaves the expiry where it was
    clock.advance(3 * 60)
    assert store.get(("users", "u1"), "a") is None


async def test_async_variants(make_store: StoreFactory) -> None:
    store = make_store()
    await store.aput(("users", "u1"), "k", {"v": 1})
    item = await store.aget(("users", "u1"), "k")
    assert item is not None
    assert item.value == {"v": 1}
    assert [i.key for i in await store.asearch(("users",))] == ["k"]
    assert await store.alist_namespaces() == [("users", "u1")]
    await store.adelete(("users", "u1"), "k")
    assert await store.aget(("users", "u1"), "k") is None
    results = await asyncio.gather(*(store.aput(("n",), f"k{i}", {"i": i}) for i in range(5)))
    assert results == [None] * 5


# --- the same answers as InMemoryStore --------------------------------------------------------

# Labels and keys from a small alphabet, so random operations meet the same memories often.
LABELS = st.sampled_from(["a", "b", "ab", "u-1", "é"])
NAMESPACES = st.lists(LABELS, min_size=1, max_size=3).map(tuple)
KEYS = st.sampled_from(["k", "k2", "x y", "ü"])
VALUES = st.fixed_dictionaries(
    {"n": st.integers(-3, 3), "kind": st.sampled_from(["fact", "pref"])},
    optional={"tags": st.lists(st.sampled_from(["a", "b"]), max_size=2)},
)
FILTERS = st.one_of(
    st.none(),
    st.fixed_dictionaries({"kind": st.sampled_from(["fact", "pref"])}),
    st.fixed_dictionaries(
        {
            "n": st.sampled_from(["$gt", "$gte", "$lt", "$lte", "$eq", "$ne"]).flatmap(
                lambda op: st.integers(-3, 3).map(lambda v: {op: v})
            )
        }
    ),
)
PATHS = st.lists(st.one_of(LABELS, st.just("*")), min_size=1, max_size=3).map(tuple)
OPS = st.one_of(
    st.builds(lambda ns, k, v: PutOp(ns, k, v, index=None, ttl=None), NAMESPACES, KEYS, VALUES),
    st.builds(lambda ns, k: PutOp(ns, k, None, index=None, ttl=None), NAMESPACES, KEYS),
    st.builds(lambda ns, k: GetOp(ns, k), NAMESPACES, KEYS),
    st.builds(
        lambda prefix, filter, limit, offset: SearchOp(prefix, filter, limit, offset),
        st.lists(LABELS, max_size=2).map(tuple),
        FILTERS,
        st.integers(0, 6),
        st.integers(0, 3),
    ),
    st.builds(
        lambda conditions, depth, limit, offset: ListNamespacesOp(conditions, depth, limit, offset),
        st.lists(
            st.builds(MatchCondition, st.sampled_from(["prefix", "suffix"]), PATHS), max_size=2
        ).map(tuple),
        st.one_of(st.none(), st.integers(1, 3)),
        st.integers(0, 6),
        st.integers(0, 3),
    ),
)


def _expected(reference: InMemoryStore, op: Op) -> Any:
    """What InMemoryStore answers, in namespace-then-key order and without its quirks."""
    # InMemoryStore keeps a namespace once read or emptied; the store lists only those that
    # hold memories.
    for namespace in [ns for ns, items in reference._data.items() if not items]:
        del reference._data[namespace]
    if isinstance(op, SearchOp):
        everything = reference.batch([op._replace(limit=10_000, offset=0)])[0]
        assert isinstance(everything, list)
        ordered = sorted(everything, key=lambda item: (item.namespace, item.key))
        return [_shape(item) for item in ordered[op.offset : op.offset + op.limit]]
    result = reference.batch([op])[0]
    return _shape(result) if isinstance(result, Item) else result


def _shape(item: Item) -> tuple[Any, ...]:
    return (item.namespace, item.key, item.value)


# Each example makes a table on moto (about a second): no shrinking, the failing sequence is
# printed as generated.
@settings(
    max_examples=60,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(OPS, min_size=1, max_size=25))
def test_same_answers_as_langgraphs_in_memory_store(
    make_store: StoreFactory, clock: FakeClock, ops: list[Op]
) -> None:
    # GIVEN a fresh DynamoDBStore and InMemoryStore
    store, reference = make_store(clock=clock.now), InMemoryStore()
    created: dict[tuple[tuple[str, ...], str], datetime] = {}
    # WHEN the same random operations run on both, one at a time
    for op in ops:
        clock.advance(1)
        expected = _expected(reference, op)
        (got,) = store.batch([op])
        # THEN every answer is the same (timestamps aside)
        if isinstance(got, list) and got and isinstance(got[0], Item):
            assert [_shape(item) for item in got] == expected, op
        elif isinstance(got, Item):
            assert _shape(got) == expected, op
            # AND an item keeps the created_at of its first put; updated_at is the last put's
            assert got.created_at == created[(got.namespace, got.key)]
            assert got.updated_at >= got.created_at
        else:
            assert got == expected, op
        if isinstance(op, PutOp):
            full = (tuple(op.namespace), op.key)
            if op.value is None:
                created.pop(full, None)
            else:
                created.setdefault(full, datetime.fromtimestamp(clock.now()).astimezone())
                item = store.get(*full)
                assert item is not None
                assert item.updated_at.timestamp() == clock.now()
                assert item.created_at.timestamp() == created[full].timestamp()
                created[full] = item.created_at


# --- attaching ------------------------------------------------------------------------------


class State(TypedDict, total=False):
    x: int


def test_attach_memory_replaces_a_compiled_store_and_reaches_subgraphs() -> None:
    # GIVEN a graph compiled with its own InMemoryStore, holding a compiled subgraph
    sub = StateGraph(State)
    sub.add_node("inner", lambda state: {})
    sub.add_edge(START, "inner")
    builder = StateGraph(State)
    builder.add_node("sub", sub.compile())
    builder.add_edge(START, "sub")
    graph = builder.compile(store=InMemoryStore())
    # WHEN the platform attaches its store
    attached = attach_memory(graph, Settings(memory_table="lambdagraph-memory"))
    # THEN the graph and its subgraph have the DynamoDB store, one per process
    assert isinstance(attached.store, DynamoDBStore)
    assert attached.store.table_name == "lambdagraph-memory"
    assert [s.store for _, s in attached.get_subgraphs(recurse=True)] == [attached.store]
    assert attach_memory(builder.compile(), Settings(memory_table="lambdagraph-memory")).store is (
        attached.store
    )
    # AND without a table the graph keeps what it had
    plain = builder.compile(store=InMemoryStore())
    assert isinstance(attach_memory(plain, Settings(memory_table="")).store, InMemoryStore)
