"""Node state kept by the Primary Host: acknowledgement frontier and seq tracking."""

from __future__ import annotations

import pytest

from ingest.nodes import AckFrontier, NodeState


def test_frontier_is_cumulative_and_waits_for_gaps() -> None:
    f = AckFrontier()
    assert f.commit([1, 2]) and f.value == 2
    assert not f.commit([4, 5]) and f.value == 2 and f.waiting == 2
    assert f.commit([3]) and f.value == 5 and f.waiting == 0
    assert not f.commit([5, 1])  # repeats change nothing


def test_frontier_advances_past_batches_the_node_no_longer_holds() -> None:
    f = AckFrontier(3)
    f.commit([7, 8])
    assert f.advance_to(6) and f.value == 8  # 4–6 were evicted by the node
    assert not f.advance_to(5)


@pytest.mark.tck("tck-id-operational-behavior-host-reordering-start")
def test_seq_gap_opens_and_closes_when_the_message_arrives_late() -> None:
    n = NodeState("s001", "s001-a001")
    n.on_nbirth(0, 0, {})
    assert n.check_seq(1, 0)
    assert not n.check_seq(3, 10)  # 2 is missing
    assert n.missing == {2: 10}
    assert n.check_seq(2, 20)  # arrived late: reordered, not lost
    assert not n.missing and not n.gap_expired(10_000, 2000)


@pytest.mark.tck("tck-id-operational-behavior-host-reordering-rebirth")
def test_seq_gap_expires_after_the_reorder_timeout() -> None:
    n = NodeState("s001", "s001-a001")
    n.on_nbirth(0, 0, {})
    n.check_seq(1, 0)
    n.check_seq(5, 100)
    assert not n.gap_expired(1000, 2000)
    assert n.gap_expired(2100, 2000)


def test_seq_wraps_after_255() -> None:
    n = NodeState("s001", "s001-a001")
    n.on_nbirth(0, 254, {})
    assert n.check_seq(255, 0) and n.check_seq(0, 0) and n.check_seq(1, 0)


def test_a_reinstalled_node_numbering_from_1_again_is_acknowledged() -> None:
    n = NodeState("s001", "s001-a001")
    n.adopt_acknowledged(100, 101, queue_id=7)
    old = n.generation
    assert n.commit(old, [101, 102, 103]) and n.frontier.value == 103
    n.adopt_acknowledged(103, 104, queue_id=7)  # a rebirth: same queue, nothing restarts
    assert n.generation == old and n.frontier.value == 103
    # the appliance is reinstalled: a new queue, batches from 1 again
    n.adopt_acknowledged(0, 0, queue_id=99)
    assert (n.frontier.value, n.acked_sent) == (0, 0) and n.generation == old + 1
    assert not n.commit(old, [104, 1]), "a late commit of the old numbering counted"
    assert n.frontier.value == 0
    assert n.commit(n.generation, [1, 2]) and n.frontier.value == 2


def test_a_lost_acknowledgement_is_covered_by_the_next_one() -> None:
    n = NodeState("s001", "s001-a001")
    n.adopt_acknowledged(3, 4, queue_id=7)
    n.commit(n.generation, [4, 5, 6, 7, 8])
    n.acked_sent = 8  # sent, but the NCMD was lost: the node still says 5
    n.adopt_acknowledged(5, 6, queue_id=7)
    # the frontier stays (the node may yet receive the ack in flight and forget 6-8); the
    # next batch committed moves it past what was sent, and that ack covers 6-8
    assert (n.frontier.value, n.acked_sent) == (8, 8)
    assert n.commit(n.generation, [9]) and n.frontier.value == 9 > n.acked_sent


def test_nodes_without_a_queue_id_keep_the_frontier_moving_up_only() -> None:
    n = NodeState("s001", "s001-a001")
    n.commit(n.generation, [1, 2])
    generation = n.generation
    n.adopt_acknowledged(10, 15)
    assert n.frontier.value == 14 and n.acked_sent == 10 and n.generation == generation
    n.adopt_acknowledged(0, 0)
    assert n.frontier.value == 14 and n.generation == generation
