"""JobWatchHub's WatchJobs subscriptions: bounded sets of changed job ids."""

from __future__ import annotations

from scheduler.watch import JobWatchHub


def test_notify_adds_the_id_to_every_subscription_once_and_wakes_it() -> None:
    hub = JobWatchHub()
    first, second = hub.subscribe_changes(), hub.subscribe_changes()
    hub.notify_many(["a", "b", "a"])
    for subscription in (first, second):
        assert subscription.wake.is_set()
        ids, dropped = subscription.take(10)
        assert sorted(ids) == ["a", "b"]
        assert not dropped
        assert not subscription.wake.is_set()


def test_take_hands_out_at_most_max_ids_and_stays_awake_while_some_remain() -> None:
    hub = JobWatchHub()
    subscription = hub.subscribe_changes()
    hub.notify_many(str(i) for i in range(5))
    first, _ = subscription.take(3)
    assert len(first) == 3
    assert subscription.wake.is_set()
    rest, _ = subscription.take(3)
    assert sorted(first + rest) == [str(i) for i in range(5)]
    assert not subscription.wake.is_set()


def test_past_its_bound_a_subscription_is_cleared_and_reports_the_drop_once() -> None:
    hub = JobWatchHub(change_limit=3)
    subscription = hub.subscribe_changes()
    hub.notify_many(["a", "b", "c", "a"])  # a repeat does not count
    assert len(subscription) == 3
    hub.notify_many(["d", "e"])
    assert len(subscription) == 0  # cleared, and changes are ignored until the next take
    assert subscription.take(10) == ([], True)
    hub.notify("f")
    assert subscription.take(10) == (["f"], False)


def test_an_unsubscribed_or_closed_hub_holds_nothing() -> None:
    hub = JobWatchHub()
    subscription = hub.subscribe_changes()
    hub.close()
    assert hub.closed
    assert subscription.wake.is_set()
    hub.unsubscribe_changes(subscription)
    hub.notify("a")
    assert hub.subscription_count() == 0
    assert len(subscription) == 0


def test_written_progress_wakes_no_job_watcher_but_tells_subscriptions_and_replicas() -> None:
    hub = JobWatchHub()
    forwarded: list[str] = []
    hub.forward = forwarded.append
    watch = hub.subscribe("job")
    subscription = hub.subscribe_changes()
    hub.progress_written("job")
    assert not watch.wake.is_set()  # it had the progress live: no read of the store
    assert subscription.take(10) == (["job"], False)
    assert forwarded == ["job"]
    hub.notify("job")  # any other change still wakes it, to read the store
    assert watch.wake.is_set()
    assert watch.take_changed()
