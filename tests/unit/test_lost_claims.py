"""The lost claims a store keeps (store/give_backs.py): each until its lease has run out."""

from mailvia.store.give_backs import LostClaims

T0 = 1_700_000_000.0


def test_a_lost_claim_is_kept_until_its_lease_has_run_out() -> None:
    lost = LostClaims()
    lost.add("w1", 7, T0 + 30)
    lost.add("w2", 8, T0 + 60)
    taken = lost.take(T0 + 1)
    assert taken == {("w1", 7): T0 + 30, ("w2", 8): T0 + 60}
    assert not lost  # the caller's now
    lost.keep(taken)  # not seen committed: tried again
    assert lost.take(T0 + 30) == {("w2", 8): T0 + 60}  # w1's is claimable by anyone now
    assert not lost
