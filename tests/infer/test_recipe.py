import math
import pickle

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.nn import PyroModule

from pyro_dirmag.infer import (
    DirMagELBO,
    FlatThenLinear,
    LinearWarmup,
    NonFiniteLossError,
    Recipe,
    choose_thresholds,
    fit,
    kl_weight,
    param_groups,
    predict,
    prune,
)
from pyro_dirmag.infer.recipe import noise_parameter_names
from pyro_dirmag.models import dirmag_model
from pyro_dirmag.nn import DirMagLinear

# ----- KL weight --------------------------------------------------------------------


def _gaussian_model(y):
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(z, 1.0), obs=y)


def _gaussian_guide(y):
    pyro.sample("z", dist.Normal(0.7, 0.3))


@pytest.mark.parametrize("weight", [0.0, 0.25, 1.0, 2.5])
def test_kl_weight_scales_the_analytic_kl_only(weight):
    y = torch.tensor([0.5, 1.5, -0.2])
    elbo = TraceMeanField_ELBO()
    kl = float(torch.distributions.kl_divergence(dist.Normal(0.7, 0.3), dist.Normal(0.0, 1.0)))
    pyro.set_rng_seed(3)
    plain = float(elbo.differentiable_loss(_gaussian_model, _gaussian_guide, y))
    pyro.set_rng_seed(3)
    with kl_weight(weight=weight):
        weighted = float(elbo.differentiable_loss(_gaussian_model, _gaussian_guide, y))
    # Same draw of z: only the KL term differs, by (weight - 1) KL.
    assert weighted == pytest.approx(plain + (weight - 1.0) * kl, rel=1e-6, abs=1e-6)


def test_kl_weight_scales_the_monte_carlo_kl_of_trace_elbo():
    y = torch.tensor([0.5, 1.5, -0.2])
    pyro.set_rng_seed(4)
    tr = pyro.poutine.trace(_gaussian_guide).get_trace(y)
    z = tr.nodes["z"]["value"]
    log_ratio = float(dist.Normal(0.7, 0.3).log_prob(z) - dist.Normal(0.0, 1.0).log_prob(z))
    nll = float(-dist.Normal(z, 1.0).log_prob(y).sum())
    pyro.set_rng_seed(4)
    with kl_weight(weight=0.5):
        loss = float(Trace_ELBO().differentiable_loss(_gaussian_model, _gaussian_guide, y))
    assert loss == pytest.approx(nll + 0.5 * log_ratio, rel=1e-6)


def test_kl_weight_zero_masks_infinite_terms():
    # q puts mass where p has none: the KL is infinite, and 0 * inf would be NaN.
    def model():
        pyro.sample("z", dist.Uniform(0.0, 1.0, validate_args=False))
        pyro.sample("y", dist.Normal(0.0, 1.0), obs=torch.tensor(0.3))

    def guide():
        pyro.sample("z", dist.Delta(torch.tensor(2.0)))

    with kl_weight(weight=0.0):
        loss = Trace_ELBO().differentiable_loss(model, guide)
    assert float(loss) == pytest.approx(float(-dist.Normal(0.0, 1.0).log_prob(torch.tensor(0.3))))


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf])
def test_kl_weight_rejects_bad_weights(bad):
    with pytest.raises(ValueError, match="weight"):
        kl_weight(weight=bad)


# ----- schedules ----------------------------------------------------------------------


def test_flat_then_linear_values():
    s = FlatThenLinear(100, flat_fraction=0.5)
    assert [s(t) for t in (0, 25, 50)] == [1.0, 1.0, 1.0]
    assert s(75) == pytest.approx(0.5)
    assert s(100) == 0.0
    assert FlatThenLinear(10, 0.0, final_factor=0.1)(10) == pytest.approx(0.1)
    assert FlatThenLinear(10, 1.0)(10) == 1.0
    pickle.loads(pickle.dumps(s))  # LambdaLR state survives checkpoints


def test_linear_warmup_values():
    w = LinearWarmup(0.1, 0.3)
    assert [w(0.0), w(0.1), w(0.2), w(0.3), w(0.9)] == [0.0, 0.0, pytest.approx(0.5), 1.0, 1.0]
    assert LinearWarmup(0.0, 0.0)(0.0) == 1.0


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: FlatThenLinear(0), "total_steps"),
        (lambda: FlatThenLinear(10, 1.5), "flat_fraction"),
        (lambda: FlatThenLinear(10, 0.5, -1.0), "final_factor"),
        (lambda: LinearWarmup(0.5, 0.2), "start"),
        (lambda: Recipe(lr=0.0), "lr"),
        (lambda: Recipe(noise_lr=math.nan), "noise_lr"),
        (lambda: Recipe(kl_warmup_start=0.9, kl_warmup_end=0.1), "start"),
    ],
)
def test_schedule_and_recipe_validation(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ----- optimizer ----------------------------------------------------------------------


def test_param_groups_cover_every_parameter_once():
    model = dirmag_model("lenet300", 1000)
    guide = Recipe().guide(model)
    x = torch.randn(4, 784)
    guide(x)
    groups = param_groups(model, guide, lr=1e-3, noise_lr=1e-2)
    by_id = [id(p) for g in groups for p in g["params"]]
    everything = {id(p) for p in list(model.parameters()) + list(guide.parameters())}
    assert len(by_id) == len(set(by_id)) == len(everything)
    assert set(by_id) == everything
    noise = {id(p) for p in groups[1]["params"]}
    names = dict(guide.named_parameters())
    assert noise == {id(names[n]) for n in noise_parameter_names(guide)}
    # 3 layers x (log lambda, mu, sigma)
    assert len(noise) == 9 and groups[1]["lr"] == 1e-2 and groups[0]["lr"] == 1e-3
    assert all(n.split(".")[0] != "magnitude_loc" for n in noise_parameter_names(guide))


def test_param_groups_need_a_run_guide():
    model = dirmag_model("lenet300", 1000)
    with pytest.raises(RuntimeError, match="has not been run"):
        param_groups(model, Recipe().guide(model), 1e-3, 1e-2)


# ----- training loop ------------------------------------------------------------------


def _tiny_problem(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long()
    model = dirmag_model_tiny(n)
    return model, x, y


def dirmag_model_tiny(num_data):
    class Net(PyroModule):
        def __init__(self):
            super().__init__()
            self.fc1 = DirMagLinear(6, 8)
            self.fc2 = DirMagLinear(8, 2)

        def forward(self, x, y=None):
            with pyro.plate("data", num_data, subsample_size=x.shape[0]):
                logits = self.fc2(torch.relu(self.fc1(x)))
                pyro.sample("y", dist.Categorical(logits=logits), obs=y)
            return logits

    return Net()


def test_fit_follows_the_schedules_and_learns():
    model, x, y = _tiny_problem()
    recipe = Recipe(lr=0.05, noise_lr=0.05, kl_warmup_start=0.1, kl_warmup_end=0.5)
    guide = recipe.guide(model)
    records = []
    history = fit(
        model,
        guide,
        x,
        y,
        epochs=8,
        batch_size=16,
        recipe=recipe,
        callback=lambda e, r: records.append((e, r)),
    )
    assert [e for e, _ in records] == list(range(1, 9))
    assert history[-1]["lr"] == 0.0 and history[-1]["kl_weight"] == 1.0
    # 4 steps an epoch, 32 in all: after epoch 1 the progress is 1/8.
    assert history[0]["kl_weight"] == pytest.approx((1 / 8 - 0.1) / 0.4)
    assert history[3]["lr"] == 0.05 and history[5]["lr"] == pytest.approx(0.05 * 0.5)
    # The loss rises with the KL weight; the fit itself shows in the predictions.
    probs = predict(model, guide, x, mode="mean")
    assert float((probs.argmax(-1) == y).float().mean()) >= 0.9


def test_fit_refuses_a_non_finite_step_without_updating():
    model, x, y = _tiny_problem()
    guide = Recipe().guide(model)
    guide(x[:4], y[:4])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = x.clone()
    x[:] = math.nan
    with pytest.raises(NonFiniteLossError, match="no parameter was updated"):
        fit(model, guide, x, y, epochs=1, batch_size=16)
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n]), n


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"batch_size": 0}])
def test_fit_rejects_bad_sizes(bad):
    model, x, y = _tiny_problem()
    kwargs = dict(epochs=1, batch_size=8) | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        fit(model, Recipe().guide(model), x, y, **kwargs)


def test_fit_uses_the_given_elbo():
    model, x, y = _tiny_problem()
    guide = Recipe().guide(model)
    history = fit(model, guide, x, y, epochs=1, batch_size=32, elbo=DirMagELBO())
    assert math.isfinite(history[0]["loss"])


# ----- thresholds ---------------------------------------------------------------------


def _set_log_alpha(guide, site, values):
    module_loc, module_scale = guide.magnitude_loc, guide.magnitude_log_scale
    *path, leaf = site.split(".")
    for p in path:
        module_loc, module_scale = getattr(module_loc, p), getattr(module_scale, p)
    m = getattr(module_loc, leaf).detach()
    setattr(module_scale, leaf, m.abs().log() + 0.5 * values)


def _noise_free_classifier():
    """A lenet300 whose hidden units 50.. of the first layer carry log alpha 2.5 and
    those of the second layer log alpha -0.5 (everything else -9)."""
    model = dirmag_model("lenet300", 1000)
    guide = Recipe().guide(model)
    x = torch.randn(200, 784)
    guide(x[:4])
    la = guide.log_alpha()
    first, second, last = list(la)
    v1 = torch.full((300,), -9.0)
    v1[50:] = 2.5
    v2 = torch.full((100,), -9.0)
    v2[10:] = -0.5
    _set_log_alpha(guide, first, v1)
    _set_log_alpha(guide, second, v2)
    _set_log_alpha(guide, last, torch.full((10,), -9.0))
    # labels = the unpruned mean network's own predictions
    y = predict(model, guide, x, mode="mean").argmax(-1)
    return model, guide, x, y


def test_choose_thresholds_prunes_what_does_not_change_accuracy():
    model, guide, x, y = _noise_free_classifier()
    # An infinite tolerance takes the smallest candidate for every layer.
    chosen, _ = choose_thresholds(model, guide, x, y, candidates=(-1.0, 3.0), tolerance=1.0)
    assert set(chosen.values()) == {-1.0}
    # A zero tolerance keeps what the labels need: here each choice is checked against
    # the accuracy computed independently with prune().
    chosen, val = choose_thresholds(model, guide, x, y, candidates=(-1.0, 0.0, 3.0), tolerance=0.0)
    pruned, report = prune(model, guide, threshold=chosen)
    with torch.no_grad():
        acc = float((pruned(x).argmax(-1) == y).float().mean())
    assert val["pruned"] == pytest.approx(acc)
    assert val["reference"] == pytest.approx(1.0)
    assert acc >= val["reference"]


def test_prune_accepts_per_layer_thresholds():
    model, guide, x, _ = _noise_free_classifier()
    names = [r for r in ("1", "3", "5")]
    _, report = prune(model, guide, threshold={"1": 3.0, "3": -1.0, "5": 3.0})
    kept = {r["name"]: r["units_kept"] for r in report.layers}
    assert kept == {"1": 300, "3": 10, "5": 10}
    _, same = prune(model, guide, threshold=dict.fromkeys(names, 2.0))
    _, scalar = prune(model, guide, threshold=2.0)
    assert same.as_dict()["layers"] == scalar.as_dict()["layers"]
    assert "per-layer" in str(same)
    with pytest.raises(ValueError, match="missing"):
        prune(model, guide, threshold={"1": 3.0})
    with pytest.raises(ValueError, match="unknown"):
        prune(model, guide, threshold=dict.fromkeys(names + ["9"], 3.0))


def test_recipe_guide_uses_recipe_initial_noise():
    model = dirmag_model("lenet300", 1000)
    guide = Recipe(init_log_alpha=-3.0).guide(model)
    guide(torch.randn(2, 784))
    for la in guide.log_alpha().values():
        assert torch.allclose(la, torch.full_like(la, -3.0), atol=1e-5)


def test_recipe_is_the_readme_default():
    r = Recipe()
    assert (r.lr, r.noise_lr, r.init_log_alpha) == (3e-3, 1e-2, -2.0)


def test_warmup_final_weight_and_its_validation():
    w = LinearWarmup(0.0, 0.5, final=3.0)
    assert (w(0.25), w(0.5), w(1.0)) == (pytest.approx(1.5), 3.0, 3.0)
    with pytest.raises(ValueError, match="final"):
        LinearWarmup(0.0, 0.5, final=0.0)
    assert Recipe(kl_final_weight=2.0).kl_schedule()(1.0) == 2.0


def test_grad_clip_switches_to_clipped_adam():
    from pyro.optim.clipped_adam import ClippedAdam

    model, x, y = _tiny_problem()
    guide = Recipe().guide(model)
    guide(x[:4], y[:4])
    assert type(Recipe().optimizer(model, guide)) is torch.optim.Adam
    clipped = Recipe(grad_clip=10.0).optimizer(model, guide)
    assert isinstance(clipped, ClippedAdam)
    assert clipped.param_groups[0]["clip_norm"] == 10.0
    with pytest.raises(ValueError, match="grad_clip"):
        Recipe(grad_clip=0.0)


def test_agreement_criterion_bounds_the_changed_predictions():
    model, guide, x, y = _noise_free_classifier()
    # labels that disagree with the mean network on a quarter of the examples
    y = y.clone()
    y[::4] = (y[::4] + 1) % 10
    chosen, val = choose_thresholds(
        model, guide, x, y, candidates=(-1.0, 0.0, 3.0), tolerance=0.02, criterion="agreement"
    )
    pruned, _ = prune(model, guide, threshold=chosen)
    reference = predict(model, guide, x, mode="mean").argmax(-1)
    with torch.no_grad():
        changed = float((pruned(x).argmax(-1) != reference).float().mean())
    assert changed == pytest.approx(val["changed"]) and changed <= 0.02
    # zero tolerance: nothing that changes a prediction is pruned
    chosen0, val0 = choose_thresholds(
        model, guide, x, y, candidates=(-1.0, 0.0, 3.0), tolerance=0.0, criterion="agreement"
    )
    assert val0["changed"] == 0.0
    with pytest.raises(ValueError, match="criterion"):
        choose_thresholds(model, guide, x, y, criterion="loss")


def test_choose_thresholds_objective_macs_prefers_conv_filters():
    """Two moves, either allowed alone but not both: dropping 10 of LeNet5's 50 conv2
    filters (85,010 parameters, 400,000 multiply-accumulates) or 150 of its 500 dense
    units (121,650 parameters, 121,500 multiply-accumulates). The parameter objective
    takes the dense move, the compute objective the conv move."""
    torch.manual_seed(0)
    model = dirmag_model("lenet5", 1000)
    guide = Recipe().guide(model)
    x = torch.randn(1000, 784)
    guide(x[:4])
    for site, la in guide.log_alpha().items():
        values = torch.full_like(la, -9.0)
        if site == "net.4.magnitude":
            values[:10] = 2.0
        if site == "net.8.magnitude":
            values[:150] = 2.0
        _set_log_alpha(guide, site, values)
    keep = {"1": 3.0, "4": 3.0, "8": 3.0, "10": 3.0}
    conv_move, dense_move = dict(keep, **{"4": -1.0}), dict(keep, **{"8": -1.0})
    both = dict(conv_move, **{"8": -1.0})

    def predicted(threshold):
        pruned, report = prune(model, guide, threshold=threshold)
        with torch.no_grad():
            return pruned(x).argmax(-1), report

    ref, _ = predicted(keep)
    (conv, conv_report), (dense, dense_report) = predicted(conv_move), predicted(dense_move)
    both_pred, _ = predicted(both)
    saved = {
        k: (r.params_total - r.params_kept, r.macs_total - r.macs_kept)
        for k, r in (("conv", conv_report), ("dense", dense_report))
    }
    assert saved == {"conv": (85_010, 400_000), "dense": (121_650, 121_500)}
    # one example each move changes alone (and both together), and examples none changes
    only_conv = ((conv != ref) & (dense == ref) & (both_pred != ref)).nonzero().squeeze(-1)
    only_dense = ((dense != ref) & (conv == ref) & (both_pred != ref)).nonzero().squeeze(-1)
    same = ((conv == ref) & (dense == ref) & (both_pred == ref)).nonzero().squeeze(-1)
    assert len(only_conv) and len(only_dense) and len(same) >= 98
    x = torch.cat([x[only_conv[:1]], x[only_dense[:1]], x[same[:98]]])
    y = ref[torch.cat([only_conv[:1], only_dense[:1], same[:98]])]
    kwargs = dict(candidates=(-1.0,), tolerance=0.015, criterion="agreement")
    by_params, _ = choose_thresholds(model, guide, x, y, **kwargs)
    by_macs, _ = choose_thresholds(model, guide, x, y, objective="macs", **kwargs)
    assert (by_params["4"], by_params["8"]) == (math.inf, -1.0)
    assert (by_macs["4"], by_macs["8"]) == (-1.0, math.inf)
    with pytest.raises(ValueError, match="objective"):
        choose_thresholds(model, guide, x, y, objective="flops")
