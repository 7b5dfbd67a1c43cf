"""One contract for every backend of gateway.state: the in-process and
SQLite defaults and the Redis ones (gateway/state_redis.py) against a
real redis-server on loopback (tests/redis_fixture.py) pass the same
tests.  Then what only a shared backend does: two instances (two links,
as two processes have) see each other's state, one claim or refresh lock
at a time; and what happens when Redis goes away and comes back."""

import datetime
import json
import logging
import threading
import time

import pytest

from gateway.model import Period
from gateway.state import (MemoryAnswerCache, MemoryPushedStore,
                           MemoryThrottleMemory, MemoryTokenStore,
                           SqlitePushQueue)
from gateway.state_redis import (ChangeSignal, RedisAnswerCache, RedisLink,
                                 RedisPushedStore, RedisPushQueue,
                                 RedisThrottleMemory, RedisTokenStore,
                                 decode, encode)
from redis_fixture import (redis_factory_fixture,  # noqa: F401
                           redis_server_fixture)

UTC = datetime.timezone.utc
DAY = datetime.datetime(2026, 12, 7, tzinfo=UTC)


def hours(n: float) -> datetime.timedelta:
    return datetime.timedelta(hours=n)


def answer(*spans):
    """A cached answer as the fan-out stores it: (periods, no-data)."""
    return (tuple(Period(DAY + hours(a), DAY + hours(b), "BUSY")
                  for a, b in spans), ((DAY + hours(20), DAY + hours(21)),))


@pytest.fixture(params=["memory", "redis"])
def kind(request):
    return request.param


@pytest.fixture
def link(request, kind):
    """A Redis link (None for the in-process kind)."""
    if kind == "memory":
        return None
    server = request.getfixturevalue("redis_server")
    return RedisLink(server.url, "test:")


def other_instance(link):
    """What a second gateway process has: its own link and name."""
    return RedisLink(link.url, link.prefix, owner="other-instance")


# -- tokens -------------------------------------------------------------------


@pytest.fixture
def tokens(link):
    return MemoryTokenStore() if link is None else RedisTokenStore(link)


def test_tokens_are_kept_until_they_expire_and_dropped(tokens):
    assert tokens.get("graph|t1") is None
    tokens.put("graph|t1", "secret-1", time.time() + 60)
    token, expires = tokens.get("graph|t1")
    assert token == "secret-1" and expires > time.time() + 50
    tokens.put("graph|t2", "secret-2", time.time() + 0.3)
    time.sleep(0.4)
    assert tokens.get("graph|t2") is None
    tokens.drop("graph|t1")
    assert tokens.get("graph|t1") is None


def test_one_thread_at_a_time_refreshes(tokens):
    first = tokens.refresh_lock("k")
    assert first.acquire(timeout=1)
    second = tokens.refresh_lock("k")
    started = time.monotonic()
    assert second.acquire(timeout=0.3) is False
    assert time.monotonic() - started >= 0.25
    got = []
    waiter = threading.Thread(target=lambda: got.append(
        tokens.refresh_lock("k").acquire(timeout=5)))
    waiter.start()
    time.sleep(0.1)
    assert got == []
    first.release()
    waiter.join(5)
    assert got == [True]


def test_tokens_and_refresh_locks_are_shared_by_instances(redis_server):
    mine = RedisTokenStore(RedisLink(redis_server.url, "test:"))
    theirs = RedisTokenStore(other_instance(mine.link))
    mine.put("graph|t", "shared-token", time.time() + 60)
    assert theirs.get("graph|t")[0] == "shared-token"
    theirs.drop("graph|t")
    assert mine.get("graph|t") is None
    held = mine.refresh_lock("graph|t")
    assert held.acquire(timeout=0.5)
    assert theirs.refresh_lock("graph|t").acquire(timeout=0.3) is False
    held.release()
    assert theirs.refresh_lock("graph|t").acquire(timeout=0.3)


def test_a_dead_holders_refresh_lock_frees_after_its_time(redis_server):
    mine = RedisTokenStore(RedisLink(redis_server.url, "test:"))
    theirs = RedisTokenStore(other_instance(mine.link))
    # Taken for one second and never released (its process died).
    assert mine.refresh_lock("k").acquire(timeout=1.0)
    started = time.monotonic()
    assert theirs.refresh_lock("k").acquire(timeout=5)
    assert 0.5 < time.monotonic() - started < 3


# -- answers ------------------------------------------------------------------


@pytest.fixture
def answers(link):
    return MemoryAnswerCache() if link is None else RedisAnswerCache(link)


def test_an_answer_serves_its_window_and_narrower_ones(answers):
    value = answer((9, 10), (13, 14.5))
    answers.put("corp\x1f\x1fa@corp.example", DAY, DAY + hours(24), value,
                60, cost=3)
    got = answers.get("corp\x1f\x1fa@corp.example", DAY, DAY + hours(24))
    assert got == value
    assert all(type(p) is Period for p in got[0])
    assert got[0][0].start.utcoffset() == datetime.timedelta(0)
    assert answers.get("corp\x1f\x1fa@corp.example", DAY + hours(8),
                       DAY + hours(12)) == value
    assert answers.get("corp\x1f\x1fa@corp.example", DAY - hours(1),
                       DAY + hours(12)) is None
    assert answers.get("corp\x1f\x1fb@corp.example", DAY,
                       DAY + hours(24)) is None


def test_answers_expire_and_a_zero_ttl_keeps_nothing(answers):
    answers.put("k", DAY, DAY + hours(1), answer((0, 1)), 0.3)
    answers.put("zero", DAY, DAY + hours(1), answer((0, 1)), 0)
    assert answers.get("k", DAY, DAY + hours(1)) is not None
    assert answers.get("zero", DAY, DAY + hours(1)) is None
    time.sleep(0.4)
    assert answers.get("k", DAY, DAY + hours(1)) is None


def test_the_newest_covering_window_answers_and_old_windows_go(answers):
    wide, newer = answer((1, 2)), answer((3, 4))
    answers.put("k", DAY, DAY + hours(24), wide, 60)
    answers.put("k", DAY + hours(2), DAY + hours(6), newer, 60)
    assert answers.get("k", DAY + hours(3), DAY + hours(5)) == newer
    assert answers.get("k", DAY + hours(1), DAY + hours(5)) == wide
    for n in range(10):     # eight windows per key are kept, newest
        answers.put("k", DAY + hours(30 + n), DAY + hours(31 + n),
                    answer((30 + n, 31 + n)), 60)
    assert answers.get("k", DAY, DAY + hours(24)) is None
    assert answers.get("k", DAY + hours(39), DAY + hours(40)) == answer(
        (39, 40))


def test_a_claim_is_always_granted_where_nothing_is_shared():
    cache = MemoryAnswerCache()
    assert cache.claim("k", DAY, DAY + hours(1), 5)
    assert cache.claim("k", DAY, DAY + hours(1), 5)
    cache.unclaim("k", DAY, DAY + hours(1))


def test_one_instance_at_a_time_claims_an_answer(redis_server):
    mine = RedisAnswerCache(RedisLink(redis_server.url, "test:"))
    theirs = RedisAnswerCache(other_instance(mine.link))
    window = (DAY, DAY + hours(8))
    assert mine.claim("k", *window, 5)
    assert mine.claim("k", *window, 5)          # the same instance again
    assert not theirs.claim("k", *window, 5)
    assert theirs.claim("k", DAY, DAY + hours(9), 5)   # another window
    theirs.unclaim("k", *window)                # not theirs to release
    assert not theirs.claim("k", *window, 5)
    mine.put("k", *window, answer((1, 2)), 60)
    assert theirs.get("k", *window) == answer((1, 2))
    mine.unclaim("k", *window)
    assert theirs.claim("k", *window, 0.3)
    time.sleep(0.4)                             # a claim expires
    assert mine.claim("k", *window, 1.0)
    for _ in range(3):                          # ... unless renewed
        time.sleep(0.6)
        assert mine.claim("k", *window, 1.0)
        assert not theirs.claim("k", *window, 5)


def test_shared_answers_are_bounded_and_checked(redis_server):
    link = RedisLink(redis_server.url, "test:")
    cache = RedisAnswerCache(link, max_bytes=2000)
    many = tuple(Period(DAY + datetime.timedelta(minutes=2 * i),
                        DAY + datetime.timedelta(minutes=2 * i + 1), "BUSY")
                 for i in range(200))
    cache.put("big", DAY, DAY + hours(24), (many, ()), 60)
    assert cache.get("big", DAY, DAY + hours(24)) is None
    cache.put("k", DAY, DAY + hours(24), answer((1, 2)), 60)
    client = redis_server.client()
    keys = [k.decode() for k in client.keys("*")]
    assert keys and all(k.startswith("test:answer:") for k in keys)
    assert all(0 < client.pttl(k) <= 60000 for k in keys)
    for key in keys:                            # someone wrote garbage
        if client.type(key) == b"string":
            client.set(key, b'{"d": "not a date"}', px=60000)
    assert cache.get("k", DAY, DAY + hours(24)) is None


def test_values_round_trip_and_nothing_else_is_read():
    value = (answer((1, 2))[0], ((DAY, DAY + hours(1)),), b"\x00x", None,
             1.5, "text")
    assert decode(encode(value)) == value
    with pytest.raises(TypeError):
        encode((datetime.datetime(2026, 1, 1),))     # naive
    with pytest.raises(TypeError):
        encode({"a": 1})
    for bad in (b"not json", b'{"x": 1}', b'{"p": [1, 2, "BUSY"]}',
                b'{"d": "2026-01-01T00:00:00"}', b'{"b": "***"}'):
        with pytest.raises(ValueError):
            decode(bad)


# -- pauses -------------------------------------------------------------------


@pytest.fixture
def pauses(link):
    return MemoryThrottleMemory() if link is None else \
        RedisThrottleMemory(link, "corp")


def test_a_pause_holds_until_its_end_and_never_shortens(pauses):
    assert pauses.paused_until("https://graph:443") == 0
    end = time.time() + 30
    pauses.pause("https://graph:443", end)
    pauses.pause("https://graph:443", end - 20)
    assert abs(pauses.paused_until("https://graph:443") - end) < 0.01
    assert pauses.paused_until("https://other:443") == 0
    pauses.pause("https://short:443", time.time() + 0.3)
    time.sleep(0.4)
    assert pauses.paused_until("https://short:443") == 0


def test_pauses_are_shared_per_provider(redis_server):
    link = RedisLink(redis_server.url, "test:")
    mine = RedisThrottleMemory(link, "tenant-a")
    theirs = RedisThrottleMemory(other_instance(link), "tenant-a")
    neighbour = RedisThrottleMemory(link, "tenant-b")
    end = time.time() + 30
    mine.pause("https://graph:443", end)
    assert abs(theirs.paused_until("https://graph:443") - end) < 0.01
    assert neighbour.paused_until("https://graph:443") == 0


# -- peers' pushes ------------------------------------------------------------


@pytest.fixture
def pushed(link):
    return MemoryPushedStore() if link is None else RedisPushedStore(link)


def test_a_push_answers_inside_its_window_until_it_expires(pushed):
    periods = answer((9, 10))[0]
    assert pushed.put("a\nx@peer", DAY, DAY + hours(48), periods, 100.0,
                      time.time() + 0.5)
    assert pushed.get("a\nx@peer", DAY + hours(1), DAY + hours(5)) == periods
    assert pushed.get("a\nx@peer", DAY, DAY + hours(49)) is None
    assert pushed.get("a\ny@peer", DAY, DAY + hours(1)) is None
    time.sleep(0.6)
    assert pushed.get("a\nx@peer", DAY, DAY + hours(1)) is None


def test_an_older_push_never_replaces_a_newer_one(pushed):
    newer, older = answer((9, 10))[0], answer((1, 5))[0]
    assert pushed.put("k", DAY, DAY + hours(24), newer, 200.0,
                      time.time() + 60)
    assert pushed.put("k", DAY, DAY + hours(24), older, 100.0,
                      time.time() + 60) is False
    assert pushed.get("k", DAY, DAY + hours(24)) == newer
    assert pushed.put("k", DAY, DAY + hours(24), older, 300.0,
                      time.time() + 60)
    assert pushed.get("k", DAY, DAY + hours(24)) == older


# -- the push queue -----------------------------------------------------------


@pytest.fixture
def queue(link, tmp_path):
    if link is None:
        made = SqlitePushQueue(str(tmp_path / "queue.sqlite"))
    else:
        made = RedisPushQueue(link, str(tmp_path / "spool.sqlite"))
    yield made
    made.close()


def test_the_queue_leases_acks_and_coalesces(queue):
    first = queue.enqueue(b"alice-1", key="dav/alice")
    assert queue.enqueue(b"alice-2", key="dav/alice") == first
    queue.enqueue(b"bob", key="dav/bob")
    queue.enqueue(b"no key")
    assert [(i.key, i.payload, i.attempts) for i in queue.items()] == [
        ("dav/alice", b"alice-2", 0), ("dav/bob", b"bob", 0),
        (None, b"no key", 0)]
    (lease, payload), = queue.lease(30)
    assert payload == b"alice-2"
    # Held by a worker: a new change becomes a new item.
    assert queue.enqueue(b"alice-3", key="dav/alice") != first
    assert [p for _, p in queue.lease(30, limit=5)] == [b"bob", b"no key",
                                                         b"alice-3"]
    assert queue.lease(30) == []
    assert queue.ack(lease) is True
    assert queue.ack(lease) is False
    assert [i.payload for i in queue.items()] == [b"bob", b"no key",
                                                  b"alice-3"]


def test_an_expired_lease_goes_to_the_next_worker(queue):
    queue.enqueue(b"x", key="k")
    (dead, _), = queue.lease(0.3)       # this worker is killed
    assert queue.lease(30) == []
    time.sleep(0.4)
    (alive, payload), = queue.lease(30)
    assert payload == b"x" and alive != dead
    assert queue.ack(dead) is False     # too late: no second removal
    assert queue.release(dead, 0, "late") is False
    assert queue.items()[0].attempts == 2
    assert queue.ack(alive) is True
    assert queue.items() == []


def test_a_failed_push_waits_and_admins_retry_or_purge(queue):
    queue.enqueue(b"a1", key="p/alice")
    (lease, _), = queue.lease(30)
    assert queue.release(lease, 100, "HTTP 500") is True
    assert queue.lease(30) == []
    queue.enqueue(b"a2", key="p/alice")      # replaces, keeps the wait
    item, = queue.items()
    assert (item.payload, item.attempts, item.last_error) == (
        b"a2", 1, "HTTP 500")
    assert item.not_before > time.time() + 50 and item.leased_until == 0
    assert queue.retry(item.id) == 1
    (lease, payload), = queue.lease(30)
    assert payload == b"a2"
    queue.enqueue(b"b1", key="p/bob")
    assert queue.retry() == 2
    assert queue.purge() == 2
    assert queue.items() == []
    assert queue.ack(lease) is False
    queue.set_meta("last_republish", "12.5")
    assert queue.get_meta("last_republish") == "12.5"
    assert queue.get_meta("other") is None


def test_queue_keys_expire_but_not_before_the_queue_is_idle(redis_server,
                                                            tmp_path):
    queue = RedisPushQueue(RedisLink(redis_server.url, "test:"),
                           str(tmp_path / "spool.sqlite"))
    queue.enqueue(b"x", key="k")
    queue.set_meta("m", "1")
    client = redis_server.client()
    keys = client.keys("*")
    assert len(keys) == 5
    assert all(13 * 86400 < client.ttl(k) <= 14 * 86400 for k in keys)


# -- Redis down, and back ---------------------------------------------------


def test_redis_down_costs_no_answer_no_push_and_one_log_line(
        redis_factory, tmp_path, caplog):
    server = redis_factory(durable=True)
    link = RedisLink(server.url, "test:")
    answers, pauses = RedisAnswerCache(link), RedisThrottleMemory(link, "p")
    tokens, queue = RedisTokenStore(link), RedisPushQueue(
        link, str(tmp_path / "spool.sqlite"))
    answers.put("k", DAY, DAY + hours(1), answer((0, 1)), 60)
    pauses.pause("o", time.time() + 60)
    tokens.put("t", "token", time.time() + 60)
    queue.enqueue(b"before", key="p/alice")
    (held, _), = queue.lease(30)
    server.stop()
    caplog.set_level(logging.WARNING, logger="gateway.state_redis")
    started = time.monotonic()
    for _ in range(50):
        # This process still has what it saw; other keys are misses.
        assert answers.get("k", DAY, DAY + hours(1)) == answer((0, 1))
        assert answers.get("new", DAY, DAY + hours(1)) is None
        assert answers.claim("new", DAY, DAY + hours(1), 5)
        assert pauses.paused_until("o") > time.time() + 50
        assert tokens.get("t")[0] == "token"
    assert time.monotonic() - started < 3
    lock = tokens.refresh_lock("t")
    assert lock.acquire(timeout=1)
    lock.release()
    # Pushes wait in the spool; nothing is leased meanwhile.
    spooled = queue.enqueue(b"during", key="p/bob")
    assert spooled.startswith("spool-")
    assert queue.lease(30) == []
    assert queue.ack(held) is True      # kept until Redis is back
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in caplog.records]
    assert server.password == "" and "Connection" in failures[0].getMessage()
    server.start()
    time.sleep(1.1)                      # RETRY_SECONDS
    leased = queue.lease(30, limit=5)
    assert [p for _, p in leased] == [b"during"]
    assert [i.payload for i in queue.items()] == [b"during"]
    assert any("is back" in r.getMessage() for r in caplog.records)
    assert any("moved to Redis" in r.getMessage() for r in caplog.records)
    queue.close()


def test_a_restarted_queue_process_moves_the_spool_it_left(redis_server,
                                                           tmp_path):
    spool = str(tmp_path / "spool.sqlite")
    # The process that spooled it was killed; another of the same host
    # still has the file open.
    other = SqlitePushQueue(spool)
    other.enqueue(b"left behind", key="p/carol")
    queue = RedisPushQueue(RedisLink(redis_server.url, "test:"), spool)
    (lease, payload), = queue.lease(30)
    assert payload == b"left behind"
    assert queue.ack(lease)
    assert queue.items() == [] and other.items() == []
    queue.close()
    other.close()


def test_a_password_and_tls_protect_the_shared_tokens(redis_factory, pki):
    server = redis_factory(password="s3cret pass", tls=pki)
    tokens = RedisTokenStore(RedisLink(server.url, "test:"))
    tokens.put("k", "token", time.time() + 60)
    assert tokens.get("k")[0] == "token"
    assert tokens.link.down_since is None
    wrong = RedisTokenStore(RedisLink(server.url.replace("s3cret", "wrong"),
                                      "test:"))
    assert wrong.get("k") is None and wrong.link.down_since is not None
    assert "s3cret" not in wrong.link.where


# -- change signals -----------------------------------------------------------


def test_changes_reach_the_other_instances_not_the_writer(redis_factory):
    server = redis_factory()
    link = RedisLink(server.url, "test:")
    heard_here, heard_there = [], []
    here = ChangeSignal(link, heard_here.append).start()
    there = ChangeSignal(other_instance(link), heard_there.append).start()
    try:
        assert here.listening.wait(5) and there.listening.wait(5)
        here.publish("/alice/cal/")
        server.client().publish("test:changes", b"garbage")
        deadline = time.monotonic() + 5
        while not heard_there and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
        assert heard_there == ["/alice/cal/"] and heard_here == []
        # Lost while Redis was away: "" = anything may have changed.
        server.stop()
        deadline = time.monotonic() + 5
        while there.listening.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        here.publish("alice/cal")           # nobody hears it, no error
        server.start()
        assert there.listening.wait(10)
        deadline = time.monotonic() + 5
        while "" not in heard_there and time.monotonic() < deadline:
            time.sleep(0.02)
        assert heard_there[-1] == ""
        server.client().publish("test:changes", json.dumps(
            {"origin": "someone", "path": "bob/cal"}))
        deadline = time.monotonic() + 5
        while heard_there[-1] != "bob/cal" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert heard_there[-1] == "bob/cal"
    finally:
        here.stop()
        there.stop()
