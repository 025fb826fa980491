"""The compiled-kernel switch: when a kernel runs, falls back, and fails over to eager.

The logic is tested with ``torch.compile`` replaced by a counting stand-in; the real
compilations (a C++ compiler needed) are in ``tests/nn/test_rotated_output.py``.
"""

import warnings

import pytest
import torch

from pyro_dirmag import kernels
from pyro_dirmag.kernels import CompiledKernel, compiled_kernels, use_compiled_kernels


class _FakeCompile:
    def __init__(self, fail=False):
        self.calls = []
        self.fail = fail

    def __call__(self, fn, dynamic=None):
        self.calls.append(dynamic)

        def compiled(*args):
            if self.fail:
                raise RuntimeError("no C++ compiler\nsecond line")
            return ("compiled", fn(*args))

        return compiled


@pytest.fixture
def fake_compile(monkeypatch):
    fake = _FakeCompile()
    monkeypatch.setattr(torch, "compile", fake)
    return fake


def _double(x):
    return 2 * x


def test_off_by_default_and_switch_restores():
    assert not kernels.compiled_kernels_enabled()
    kernel = CompiledKernel(_double)
    assert kernel(torch.ones(2)) is None
    with pytest.raises(KeyError), compiled_kernels():
        assert kernels.compiled_kernels_enabled()
        raise KeyError("restored even on errors")
    assert not kernels.compiled_kernels_enabled()
    assert use_compiled_kernels(True) is False
    assert use_compiled_kernels(False) is True


def test_compiles_once_with_static_shapes(fake_compile):
    kernel = CompiledKernel(_double)
    with compiled_kernels():
        tag, y = kernel(torch.ones(3))
        kernel(torch.ones(4))
    assert tag == "compiled"
    assert torch.equal(y, torch.full((3,), 2.0))
    assert fake_compile.calls == [False]


def test_tracing_stays_eager(fake_compile):
    kernel = CompiledKernel(_double)
    with compiled_kernels():

        def traced(x):
            out = kernel(x)
            return x + 1 if out is None else x - 1

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # jit.trace's deprecation warning
            jitted = torch.jit.trace(traced, (torch.ones(2),), check_trace=False)
    assert torch.equal(jitted(torch.zeros(2)), torch.ones(2))
    assert fake_compile.calls == []


def test_signature_cap(fake_compile):
    kernel = CompiledKernel(_double)
    with compiled_kernels():
        for n in range(kernels.MAX_SIGNATURES):
            assert kernel(torch.ones(n + 1)) is not None
        assert kernel(torch.ones(kernels.MAX_SIGNATURES + 1)) is None  # a new shape
        assert kernel(torch.ones(1)) is not None  # a known one
        assert kernel(torch.ones(1, dtype=torch.float64)) is None  # a new dtype
        assert kernel(torch.ones(1, requires_grad=True)) is None  # new autograd needs
        with torch.no_grad():
            assert kernel(torch.ones(1)) is None  # new grad mode


def test_failure_warns_once_and_falls_back(monkeypatch):
    fake = _FakeCompile(fail=True)
    monkeypatch.setattr(torch, "compile", fake)
    kernel = CompiledKernel(_double)
    with compiled_kernels():
        message = r"_double failed \(RuntimeError: no C\+\+ compiler\)"
        with pytest.warns(RuntimeWarning, match=message):
            assert kernel(torch.ones(2)) is None
        assert kernel.failed
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert kernel(torch.ones(2)) is None
    assert fake.calls == [False]
