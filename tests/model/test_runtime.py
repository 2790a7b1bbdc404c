"""flush_denormals: denormal floats become zero on the thread that asks and on the threads it starts."""

import threading

import torch

from mmsa.model import flush_denormals

TINY = 1e-39  # a float32 denormal (the smallest normal float32 is about 1.18e-38)


def _in_thread(fn):
    """Run fn on a fresh thread (so the test never changes the main thread's setting)."""
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("v", fn()))
    t.start()
    t.join()
    return out["v"]


def _product() -> float:
    return float(torch.tensor([TINY], dtype=torch.float32) * 1.0)


def _plain_product() -> float:
    torch.set_flush_denormal(False)  # whatever this thread inherited (other tests build scorers)
    return _product()


def test_denormals_survive_without_the_flag():
    assert _in_thread(_plain_product) > 0.0


def test_flush_denormals_zeroes_them_on_this_thread_and_its_children():
    def body():
        torch.set_flush_denormal(False)
        if not flush_denormals():
            return None  # a CPU without flush-to-zero (not x86 with SSE3): nothing to check
        return _product(), _in_thread(_product)

    got = _in_thread(body)
    if got is not None:
        assert got == (0.0, 0.0)
