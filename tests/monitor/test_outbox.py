from mmsa.monitor.outbox import Outbox


def test_fifo_survives_reopening(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    for i in range(5):
        box.append("t/score", f"{i}".encode())
    first = box.peek(2)
    assert [m.payload for m in first] == [b"0", b"1"] and all(m.qos == 1 for m in first)
    box.remove(first[0].id)
    box.close()
    again = Outbox(tmp_path / "o.sqlite")
    assert len(again) == 4
    assert [m.payload for m in again.peek(10)] == [b"1", b"2", b"3", b"4"]


def test_bounded_drops_oldest_and_counts(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", max_items=3)
    for i in range(7):
        box.append("t", bytes([i]))
    assert len(box) == 3 and box.dropped == 4
    assert [m.payload for m in box.peek()] == [bytes([4]), bytes([5]), bytes([6])]
