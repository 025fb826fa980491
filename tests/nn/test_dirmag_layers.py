import math

import pyro
import pyro.distributions as dist
import pytest
import scipy.stats
import torch
from pyro import poutine
from pyro.nn import PyroModule

from pyro_dirmag.infer import DirMagGuide
from pyro_dirmag.nn import DirMagConv2d, DirMagLinear, direction_noise
from pyro_dirmag.nn._direction import gamma_marsaglia_tsang, tangent_projection, tangent_uniform
from pyro_dirmag.nn.weight_norm import unit_directions


class _Wrap(PyroModule):
    """A model calling one layer inside a data plate of full size ``num_data``."""

    def __init__(self, layer, num_data):
        super().__init__()
        self.layer = layer
        self.num_data = num_data

    def forward(self, x, y=None):
        with pyro.plate("data", self.num_data, subsample_size=x.shape[0]):
            out = self.layer(x)
            pyro.sample("y", dist.Normal(out.flatten(1), 1.0).to_event(1), obs=y)
        return out


def _sampled(trace, name):
    return name in trace.nodes and trace.nodes[name]["type"] == "sample"


def _run(model, x):
    """Output of ``model(x)`` with the latents drawn from a fresh DirMagGuide."""
    guide = DirMagGuide(model)
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    return model_trace.nodes["_RETURN"]["value"], model_trace, guide


NOISE = [(True, True), (True, False), (False, True), (False, False)]


@pytest.mark.parametrize("magnitude_noise,direction_noise_on", NOISE, ids=str)
@pytest.mark.parametrize("phi", ["per_example", "shared", "mean"])
def test_linear_shapes(magnitude_noise, direction_noise_on, phi):
    layer = DirMagLinear(
        7, 5, magnitude_noise=magnitude_noise, direction_noise=direction_noise_on, phi=phi
    )
    out, trace, _ = _run(_Wrap(layer, 100), torch.randn(11, 7))
    assert out.shape == (11, 5)
    assert torch.isfinite(out).all()
    assert _sampled(trace, "layer.magnitude") == magnitude_noise
    assert _sampled(trace, "layer.angle") == direction_noise_on
    for name in ("layer.magnitude", "layer.angle"):
        if _sampled(trace, name):
            site = trace.nodes[name]
            assert site["value"].shape == (11, 5)
            assert site["fn"].batch_shape == (11,) and site["fn"].event_shape == (5,)


@pytest.mark.parametrize("magnitude_noise,direction_noise_on", NOISE, ids=str)
@pytest.mark.parametrize("phi", ["per_example", "shared", "mean"])
def test_conv_shapes(magnitude_noise, direction_noise_on, phi):
    layer = DirMagConv2d(
        3,
        4,
        3,
        stride=2,
        padding=1,
        magnitude_noise=magnitude_noise,
        direction_noise=direction_noise_on,
        phi=phi,
    )
    out, trace, _ = _run(_Wrap(layer, 50), torch.randn(6, 3, 9, 9))
    assert out.shape == (6, 4, 5, 5)
    assert torch.isfinite(out).all()
    assert _sampled(trace, "layer.magnitude") == magnitude_noise


def test_reverse_shapes():
    layer = DirMagLinear(7, 5, reverse=True)
    out, trace, _ = _run(_Wrap(layer, 100), torch.randn(11, 7))
    assert out.shape == (11, 5)
    assert trace.nodes["layer.magnitude"]["value"].shape == (11, 7)  # one per input feature
    assert layer.directions().norm(dim=0).sub(1).abs().max() < 1e-6


def test_outside_plate_one_draw_per_unit():
    layer = DirMagLinear(4, 3)
    with poutine.trace() as tr:
        out = layer(torch.randn(8, 4))
    assert out.shape == (8, 3)
    assert tr.trace.nodes["magnitude"]["value"].shape == (3,)
    assert tr.trace.nodes["magnitude"]["scale"] == 1.0


def test_noise_off_is_weight_norm():
    layer = DirMagLinear(6, 4, magnitude_noise=False, direction_noise=False)
    x = torch.randn(5, 6)
    v = layer.v.detach()
    expected = x @ (layer.magnitude[:, None] * v / v.norm(dim=1, keepdim=True)).T + layer.bias
    assert torch.allclose(layer(x), expected, atol=1e-6)


def test_bad_inputs():
    lin = DirMagLinear(4, 3)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 4\)"):
        lin(torch.randn(2, 5))
    with pytest.raises(TypeError, match="floating point"):
        lin(torch.ones(2, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="does not match"):
        lin(torch.randn(2, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        lin([[1.0, 2.0, 3.0, 4.0]])
    conv = DirMagConv2d(2, 3, 3)
    with pytest.raises(ValueError, match="batch, 2, H, W"):
        conv(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="batch, 2, H, W"):
        conv(torch.randn(2, 8, 8))
    # a batch that does not match the enclosing plate
    with pytest.raises((ValueError, RuntimeError)):
        with pyro.plate("data", 10, subsample_size=3):
            lin(torch.randn(4, 4))


def test_bad_arguments():
    with pytest.raises(ValueError, match="phi must be one of"):
        DirMagLinear(4, 3, phi="flipout")
    with pytest.raises(ValueError, match="reverse=True"):
        DirMagLinear(4, 3, reverse=True, phi="per_example")
    with pytest.raises(ValueError, match="in_features"):
        DirMagLinear(0, 3)
    with pytest.raises(ValueError, match="kernel_size"):
        DirMagConv2d(1, 3, (3, 0))
    with pytest.raises(ValueError, match="scalar distribution"):
        DirMagLinear(4, 3, magnitude_prior=dist.Normal(torch.zeros(3), 1.0))
    with pytest.raises(ValueError, match="phi must be one of"):
        with direction_noise(DirMagLinear(4, 3), "nope"):
            pass


def test_scale_counts_one_kl_per_step():
    # Each per-example copy weighs N/M (plate) * 1/N (layer) = 1/M.
    model = _Wrap(DirMagLinear(4, 3), 1000)
    _, trace, _ = _run(model, torch.randn(8, 4))
    assert trace.nodes["layer.magnitude"]["scale"] == pytest.approx(1 / 8)
    assert trace.nodes["y"]["scale"] == pytest.approx(1000 / 8)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(magnitude_noise=True, direction_noise=False),
        dict(magnitude_noise=False, direction_noise=True),
        dict(magnitude_noise=True, direction_noise=True),
    ],
    ids=["magnitude", "direction", "both"],
)
def test_per_example_noise_independent_linear(kwargs):
    layer = DirMagLinear(10, 3, **kwargs)
    x = torch.randn(1, 10).expand(4000, 10).contiguous()
    with torch.no_grad():
        out = _rows_noise_with_scale(layer, x, 0.3)
    a, b = out[0::2, 0].numpy(), out[1::2, 0].numpy()
    assert out[:, 0].std() > 1e-3  # there is noise
    r, p = scipy.stats.pearsonr(a, b)
    assert abs(r) < 0.1, r
    assert p > 1e-3


def _rows_noise_with_scale(layer, x, angle_scale):
    model = _Wrap(layer, 10**6)
    guide = DirMagGuide(model, init_log_alpha=-2.0, init_angle_scale=angle_scale)
    guide_trace = poutine.trace(guide).get_trace(x)
    tr = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    return tr.nodes["_RETURN"]["value"]


def test_shared_phi_is_shared_across_examples():
    # The thesis's form: with angle and magnitude fixed across rows, identical rows
    # give identical outputs (one phi per batch) -- the contrast to the test above.
    layer = DirMagLinear(10, 3, magnitude_noise=False, phi="shared")
    model = _Wrap(layer, 10**6)
    x = torch.randn(1, 10).expand(6, 10).contiguous()
    guide = DirMagGuide(model, init_angle_scale=0.5)
    guide(x)
    values = {"layer.angle": torch.full((3,), 0.7)}
    out = poutine.condition(model, values)(x)
    assert torch.allclose(out, out[:1].expand_as(out))
    layer.phi = "per_example"
    out = poutine.condition(model, values)(x)
    assert not torch.allclose(out, out[:1].expand_as(out))


def test_per_example_noise_independent_conv():
    layer = DirMagConv2d(2, 3, 3, magnitude_noise=False)
    x = torch.randn(1, 2, 5, 5).expand(2000, 2, 5, 5).contiguous()
    with torch.no_grad():
        out = _rows_noise_with_scale(layer, x, 0.5)
    a, b = out[0::2, 0, 1, 1].numpy(), out[1::2, 0, 1, 1].numpy()
    r, _ = scipy.stats.pearsonr(a, b)
    assert abs(r) < 0.1, r
    # within one example, one phi serves every position: outputs at two positions of
    # one example are correlated (same kernel), which a per-position draw would break
    c, _ = scipy.stats.pearsonr(out[:, 0, 1, 1].numpy(), out[:, 0, 1, 2].numpy())
    assert abs(c) > 0.1


@pytest.mark.parametrize("a", [0.3, 1.5, 24.0, 391.0])
def test_gamma_sampler(a):
    torch.manual_seed(0)
    x = gamma_marsaglia_tsang(a, (20000,), dtype=torch.float64)
    assert scipy.stats.kstest(x.numpy(), scipy.stats.gamma(a).cdf).pvalue > 1e-3
    with pytest.raises(ValueError, match="positive"):
        gamma_marsaglia_tsang(0.0, (3,))


@pytest.mark.parametrize("n", [2, 3, 5, 6, 7, 50, 784])
def test_tangent_projection_law(n):
    # t = phi . e for phi uniform on the tangent sphere; reference: explicit phi.
    torch.manual_seed(0)
    t = tangent_projection(n, (20000,), dtype=torch.float64)
    if n == 2:  # the tangent "sphere" is two points: t = +-1 with equal odds
        assert set(t.unique().tolist()) == {-1.0, 1.0}
        assert scipy.stats.binomtest(int((t > 0).sum()), t.numel()).pvalue > 1e-3
        return
    u = torch.zeros(n, dtype=torch.float64)
    u[0] = 1.0
    phi = tangent_uniform(u, (20000,))
    ref = phi[:, 1]  # e = second basis vector, orthogonal to u
    assert scipy.stats.ks_2samp(t.numpy(), ref.numpy()).pvalue > 1e-3
    if n > 2:  # exact law: (t + 1) / 2 ~ Beta((n-2)/2, (n-2)/2)
        beta = scipy.stats.beta(0.5 * (n - 2), 0.5 * (n - 2))
        assert scipy.stats.kstest(((t + 1) / 2).numpy(), beta.cdf).pvalue > 1e-3


def test_tangent_uniform_is_tangent_and_unit():
    u = torch.nn.functional.normalize(torch.randn(5, 9, dtype=torch.float64), dim=-1)
    phi = tangent_uniform(u, (7,))
    assert phi.shape == (7, 5, 9)
    assert (phi * u).sum(-1).abs().max() < 1e-12
    assert (phi.norm(dim=-1) - 1).abs().max() < 1e-12


@pytest.mark.parametrize("n", [3, 20, 50])
def test_linear_direction_term_law(n):
    # The one-matmul identity (per-example phi) against explicit per-example phi.
    torch.manual_seed(1)
    layer = DirMagLinear(n, 1, magnitude_noise=False).double()
    x = torch.randn(1, n, dtype=torch.float64)
    with torch.no_grad():
        u = layer.directions()
        s = x @ u.T
        xs = x.expand(20000, n)
        # g = 1, eps = pi/2: the output is phi . x
        ones = torch.ones(20000, 1, dtype=torch.float64)
        fast = layer._per_example_output(xs, u, s.expand(20000, 1), ones, ones * math.pi / 2, None)
        fast = fast[:, 0]
        phi = tangent_uniform(u[0], (20000,))
        slow = phi @ x[0]
    assert scipy.stats.ks_2samp(fast.numpy(), slow.numpy()).pvalue > 1e-3


def test_conv_direction_term_matches_dense_law():
    # A conv whose kernel covers the whole image is a dense layer: its per-example
    # (grouped-convolution) direction term has the dense layer's law.
    torch.manual_seed(2)
    conv = DirMagConv2d(2, 1, 3, magnitude_noise=False).double()
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    with torch.no_grad():
        u = conv.directions()
        xs = x.expand(5000, 2, 3, 3).contiguous()
        s = conv._linear(xs, u)
        r = conv._per_example_term(xs, u, s)[:, 0, 0, 0]
        phi = tangent_uniform(u.reshape(1, -1)[0], (5000,))
        ref = phi @ x.reshape(-1)
    assert scipy.stats.ks_2samp(r.numpy(), ref.numpy()).pvalue > 1e-3


def test_weight_from_matches_forward():
    layer = DirMagLinear(6, 4).double()
    x = torch.randn(3, 6, dtype=torch.float64)
    g = torch.rand(4, dtype=torch.float64) + 0.5
    eps = torch.rand(4, dtype=torch.float64)
    with direction_noise(layer, "mean"):
        out = poutine.condition(layer, {"magnitude": g, "angle": eps})(x)
    w = layer.weight_from(g, eps)
    assert torch.allclose(out, x @ w.T + layer.bias)
    assert math.isclose(layer.phi == "per_example", True)  # restored


@pytest.mark.parametrize("dims", [(1,), (0,), (1, 2, 3)])
def test_unit_directions_gradient(dims):
    v = torch.randn(4, 3, 2, 2, dtype=torch.float64) if len(dims) == 3 else None
    v = v if v is not None else torch.randn(5, 3, dtype=torch.float64)
    v.requires_grad_()
    u = unit_directions(v, dims)
    torch.testing.assert_close(u, v / torch.linalg.vector_norm(v, dim=dims, keepdim=True))
    assert torch.autograd.gradcheck(lambda t: unit_directions(t, dims), (v,))


# ----- the angle prior ----------------------------------------------------------------
@pytest.mark.parametrize(
    "make, dim",
    [
        (lambda: DirMagLinear(6, 3, angle_prior="hemisphere"), 6),
        (lambda: DirMagLinear(6, 3, angle_prior="hemisphere", reverse=True), 3),
        (lambda: DirMagConv2d(2, 4, 3, angle_prior="hemisphere"), 18),
    ],
    ids=["linear", "reverse", "conv"],
)
def test_hemisphere_angle_prior_scores_the_direction_dimension(make, dim):
    from pyro_dirmag.distributions import HemisphereAngle

    layer = make()
    x = torch.randn(5, 2, 6, 6) if isinstance(layer, DirMagConv2d) else torch.randn(5, 6)
    with poutine.trace() as tr:
        layer(x)
    site = tr.trace.nodes["angle"]
    eps = site["value"]
    expected = HemisphereAngle(dim, dtype=eps.dtype).expand(eps.shape).log_prob(eps)
    torch.testing.assert_close(site["fn"].log_prob(eps), expected.sum(-1))


def test_default_angle_prior_is_the_thesis_uniform():
    layer = DirMagLinear(6, 3)
    assert layer.angle_prior == "uniform"
    with poutine.trace() as tr:
        layer(torch.randn(5, 6))
    eps = tr.trace.nodes["angle"]["value"]
    lp = tr.trace.nodes["angle"]["fn"].log_prob(eps)
    torch.testing.assert_close(lp, torch.full_like(lp, -3 * math.log(math.pi / 2)))


def test_hemisphere_prior_elbo_is_trace_mean_field_elbo():
    """Both estimators take the analytic KL(TruncatedNormal || HemisphereAngle) at the
    angle sites and agree on the same draw; the KL part does not depend on the draw."""
    from pyro.infer import TraceMeanField_ELBO

    from pyro_dirmag.infer import DirMagELBO

    model = _Wrap(DirMagLinear(6, 3, angle_prior="hemisphere"), 100)
    guide = DirMagGuide(model)
    x, y = torch.randn(8, 6), torch.randn(8, 3)
    guide(x, y)
    losses = []
    for elbo in (DirMagELBO(), TraceMeanField_ELBO()):
        pyro.set_rng_seed(7)
        losses.append(float(elbo.differentiable_loss(model, guide, x, y).detach()))
    assert math.isfinite(losses[0])
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    # with a zero input the likelihood does not see the draws (the output is the
    # bias): the loss is the same for two draws, which a Monte Carlo KL term is not
    zero_x = torch.zeros(8, 6)
    again = []
    for seed in (1, 2):
        pyro.set_rng_seed(seed)
        again.append(float(DirMagELBO().differentiable_loss(model, guide, zero_x, y).detach()))
    assert again[0] == pytest.approx(again[1], rel=1e-6)


def test_hemisphere_prior_elbo_is_finite_at_a_zero_angle(monkeypatch):
    """The analytic KL does not evaluate log sin at the drawn angle: draws of exactly 0
    (where the Monte Carlo term is -inf, as it was in full-MNIST runs) give a finite
    loss and finite gradients."""
    from pyro_dirmag.distributions import TruncatedNormal
    from pyro_dirmag.infer import DirMagELBO

    model = _Wrap(DirMagLinear(6, 3, angle_prior="hemisphere"), 100)
    guide = DirMagGuide(model)
    x, y = torch.randn(8, 6), torch.randn(8, 3)
    guide(x, y)
    draw = TruncatedNormal.rsample
    monkeypatch.setattr(TruncatedNormal, "rsample", lambda self, shape=(): 0 * draw(self, shape))
    loss = DirMagELBO().differentiable_loss(model, guide, x, y)
    assert torch.isfinite(loss)
    grads = torch.autograd.grad(loss, list(guide.parameters()), allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in grads)


def test_bad_angle_prior_is_named():
    with pytest.raises(ValueError, match="angle_prior"):
        DirMagLinear(6, 3, angle_prior="sphere")
