r"""
Optional compiled kernels for the elementwise work of a per-example training step.

A DirMag training step with per-example noise spends much of its time in chains of
elementwise operations over ``(batch, units)`` values, each a pass over memory that
allocates its result. With compiled kernels on, the largest chain, the output of a
dense layer with its derivatives
(:func:`~pyro_dirmag.nn._rotated_output.rotated_output`), is compiled by
:func:`torch.compile` (TorchInductor) into a fused forward and backward (timings in the
README, from ``python benchmarks/bench_noise_kernels.py --compiled`` and ``python
benchmarks/bench_svi_step.py --compiled``). Values equal the eager ones up to rounding.

They are off by default, because compiling needs a C++ compiler (on GPUs, Triton: that
path is neither tested nor measured here, this project's machines have no GPU), and
each new input shape waits for it: the first compiled LeNet-300-100 step took 24-25 s
here (three layer shapes), 2.8-2.9 s in a later process that found Inductor's on-disk
cache (``python benchmarks/bench_svi_step.py --breakdown --compiled`` prints it). The
output kernel serves training steps only: calls whose angles carry no gradient
(prototype traces, predictions) stay eager. After :data:`MAX_SIGNATURES` different input
signatures a kernel compiles no more, and new ones run eagerly.
Turn them on for long trainings at a fixed batch size::

    from pyro_dirmag.kernels import use_compiled_kernels

    use_compiled_kernels(True)  # or: with compiled_kernels(): ...

If a kernel fails to compile, a ``RuntimeWarning`` names it and it runs eagerly from
then on. Second derivatives are not supported, compiled (AOTAutograd raises at the
second backward) or eager (the hand-written backward raises under ``create_graph``).

Not compiled, because Inductor is slower than eager PyTorch there on this project's
CPU (``python benchmarks/bench_noise_kernels.py --compiled``): the truncated normal's
quantiles, whose ``erfinv`` and ``erfc`` compile to code 36-38 and 5-6 times slower than
aten's; and kernels with a symbolic batch size (``dynamic=True``), which lose the output
kernel's gain (0.81x).
"""

import contextlib
import warnings

import torch

from ._upstream import compile_recompile_limit, keep_distribution_validation

__all__ = [
    "MAX_SIGNATURES",
    "CompiledKernel",
    "compiled_kernels",
    "compiled_kernels_enabled",
    "use_compiled_kernels",
]

# Input signatures (shapes, dtypes, autograd needs) compiled per kernel; further ones
# run the callers' eager code.
MAX_SIGNATURES = 16

_ENABLED = False


def use_compiled_kernels(enabled=True):
    """Turns the compiled kernels on or off for the whole process.

    :param bool enabled: the new setting.
    :returns: the previous setting.
    """
    global _ENABLED
    previous, _ENABLED = _ENABLED, bool(enabled)
    return previous


def compiled_kernels_enabled():
    """Whether the compiled kernels are on."""
    return _ENABLED


@contextlib.contextmanager
def compiled_kernels(enabled=True):
    """Context manager form of :func:`use_compiled_kernels` (restores the setting)."""
    previous = use_compiled_kernels(enabled)
    try:
        yield
    finally:
        use_compiled_kernels(previous)


def _signature(args):
    return (torch.is_grad_enabled(),) + tuple(
        (tuple(a.shape), a.dtype, a.device, a.requires_grad) if torch.is_tensor(a) else a
        for a in args
    )


class CompiledKernel:
    """
    A pure tensor function compiled on first use with static shapes
    (``torch.compile(fn, dynamic=False)``: one compilation per input signature).

    A caller runs ``out = kernel(*args)`` and falls back to its own eager code when
    ``out`` is ``None``: kernels off, tracing, too many signatures, or a failed
    compilation (then warned once, and never tried again). The eager code
    computes the same values and raises any genuine error about the inputs.

    :param callable fn: the function; positional arguments only.
    """

    def __init__(self, fn):
        self.fn = fn
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        self.failed = False
        self._compiled = None
        self._signatures = set()

    def __call__(self, *args):
        if not _ENABLED or self.failed:
            return None
        if torch.jit.is_tracing():
            return None
        key = _signature(args)
        new = key not in self._signatures
        if new and len(self._signatures) >= MAX_SIGNATURES:
            return None
        with keep_distribution_validation():
            return self._call(args, key, new)

    def _call(self, args, key, new):
        if self._compiled is None:
            self._compiled = torch.compile(self.fn, dynamic=False)
        try:
            if not new:
                return self._compiled(*args)
            # A new signature compiles. torch.compile's tracing warns about its own
            # internals (e.g. reading the .grad of non-leaf tensors), which an "error"
            # filter would turn into a failure; its recompile limit (8 by default) would
            # run the plain expression eagerly past that many signatures.
            limit = compile_recompile_limit(MAX_SIGNATURES + 1)
            with warnings.catch_warnings(), limit:
                warnings.simplefilter("ignore")
                out = self._compiled(*args)
            self._signatures.add(key)
            return out
        except Exception as error:  # no working compiler: eager from now on
            self.failed = True
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            warnings.warn(
                f"pyro_dirmag: compiled kernel {self.__name__} failed "
                f"({type(error).__name__}: {first_line}); running it eagerly from now on",
                RuntimeWarning,
                stacklevel=2,
            )
            return None
