"""Learning-rate schedulers against torch.optim.lr_scheduler, step for step."""

import copy

import numpy as np
import pytest

from portaconv import optim, to_numpy
from portaconv.optim import lr_scheduler

torch = pytest.importorskip("torch")

LRS = [0.1, 0.05, 0.3]
STEPS = 30


class P:
    """A stand-in parameter: ``data``, ``grad``, ``requires_grad``."""

    requires_grad = True

    def __init__(self, data, grad=None):
        self.data, self.grad = data, grad


def _optimizers(name, kw):
    ours = getattr(optim, name)([{"params": [P(np.zeros(2))], "lr": lr} for lr in LRS], **kw)
    theirs = getattr(torch.optim, name)(
        [{"params": [torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))], "lr": lr} for lr in LRS], **kw
    )
    return ours, theirs


# (id, optimizer, its options, scheduler factory given the scheduler module and the optimizer)
CASES = [
    ("step", "SGD", {}, lambda m, o: m.StepLR(o, step_size=4, gamma=0.5)),
    ("multistep", "SGD", {}, lambda m, o: m.MultiStepLR(o, milestones=[3, 7, 7, 15], gamma=0.3)),
    ("cosine", "SGD", {}, lambda m, o: m.CosineAnnealingLR(o, T_max=10)),
    ("cosine-periodic-eta", "Adam", {}, lambda m, o: m.CosineAnnealingLR(o, T_max=7, eta_min=0.01)),
    ("linear-default", "SGD", {}, lambda m, o: m.LinearLR(o)),
    ("linear", "Adam", {}, lambda m, o: m.LinearLR(o, start_factor=0.25, end_factor=0.5, total_iters=8)),
    ("onecycle-sgd", "SGD", {"momentum": 0.9}, lambda m, o: m.OneCycleLR(o, max_lr=[0.5, 0.2, 1.0], total_steps=STEPS)),
    ("onecycle-linear", "SGD", {"momentum": 0.9, "nesterov": True},
     lambda m, o: m.OneCycleLR(o, max_lr=0.4, total_steps=STEPS + 5, anneal_strategy="linear", base_momentum=0.8)),
    ("onecycle-three-phase-adam", "Adam", {},
     lambda m, o: m.OneCycleLR(o, max_lr=[0.5, 0.2, 1.0], epochs=3, steps_per_epoch=10, pct_start=0.25, three_phase=True,
                               div_factor=10.0, final_div_factor=100.0)),
    ("onecycle-adamw-no-momentum", "AdamW", {},
     lambda m, o: m.OneCycleLR(o, max_lr=0.01, total_steps=STEPS, cycle_momentum=False)),
    ("sequential", "SGD", {},
     lambda m, o: m.SequentialLR(o, [m.LinearLR(o, start_factor=0.1, total_iters=5), m.CosineAnnealingLR(o, T_max=20)], milestones=[5])),
    ("sequential-three", "Adam", {},
     lambda m, o: m.SequentialLR(o, [m.LinearLR(o, start_factor=0.5, total_iters=4), m.StepLR(o, step_size=3, gamma=0.7),
                                     m.CosineAnnealingLR(o, T_max=6, eta_min=0.001)], milestones=[4, 12])),
]
IDS = [case[0] for case in CASES]


def _snapshot(opt, scheduler):
    groups = [(g["lr"], g.get("momentum"), tuple(g["betas"]) if "betas" in g else None) for g in opt.param_groups]
    return list(scheduler.get_last_lr()), groups


def _run(opt, scheduler, steps):
    out = [_snapshot(opt, scheduler)]
    for _ in range(steps):
        opt.step()  # no gradients: only marks the step (torch warns otherwise)
        scheduler.step()
        out.append(_snapshot(opt, scheduler))
    return out


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_torch(case):
    _, name, kw, make = case
    ours, theirs = _optimizers(name, kw)
    ours_sched, theirs_sched = make(lr_scheduler, ours), make(torch.optim.lr_scheduler, theirs)
    assert getattr(ours_sched, "base_lrs", None) == getattr(theirs_sched, "base_lrs", None)  # SequentialLR has none
    assert [g["initial_lr"] for g in ours.param_groups] == [g["initial_lr"] for g in theirs.param_groups]
    got, expected = _run(ours, ours_sched, STEPS), _run(theirs, theirs_sched, STEPS)
    assert got == expected  # the same float operations: bitwise equal
    assert ours_sched.last_epoch == theirs_sched.last_epoch


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_dict_round_trip(case):
    _, name, kw, make = case
    ours, _ = _optimizers(name, kw)
    straight = _run(ours, make(lr_scheduler, ours), STEPS)

    first, _ = _optimizers(name, kw)
    scheduler = make(lr_scheduler, first)
    _run(first, scheduler, 11)
    saved_opt, saved_sched = copy.deepcopy(first.state_dict()), copy.deepcopy(scheduler.state_dict())
    assert "optimizer" not in saved_sched and saved_sched["last_epoch"] == 11

    resumed, _ = _optimizers(name, kw)
    scheduler = make(lr_scheduler, resumed)
    resumed.load_state_dict(saved_opt)
    scheduler.load_state_dict(saved_sched)
    assert _run(resumed, scheduler, STEPS - 11) == straight[11:]


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in ("step", "cosine-periodic-eta", "onecycle-three-phase-adam", "sequential")],
                         ids=["step", "cosine-periodic-eta", "onecycle-three-phase-adam", "sequential"])
def test_load_torch_scheduler_state(case):
    _, name, kw, make = case
    _, theirs = _optimizers(name, kw)
    theirs_sched = make(torch.optim.lr_scheduler, theirs)
    _run(theirs, theirs_sched, 9)
    ours, _ = _optimizers(name, kw)
    ours_sched = make(lr_scheduler, ours)
    ours.load_state_dict(theirs.state_dict())
    ours_sched.load_state_dict(copy.deepcopy(theirs_sched.state_dict()))
    assert _run(ours, ours_sched, STEPS - 9) == _run(theirs, theirs_sched, STEPS - 9)


def test_resume_with_last_epoch_matches_torch():
    ours, theirs = _optimizers("SGD", {})
    for opt in (ours, theirs):
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"] * 2
    ours_sched = lr_scheduler.CosineAnnealingLR(ours, T_max=10, last_epoch=5)
    theirs_sched = torch.optim.lr_scheduler.CosineAnnealingLR(theirs, T_max=10, last_epoch=5)
    assert _run(ours, ours_sched, 12) == _run(theirs, theirs_sched, 12)


def test_works_on_a_torch_optimizer():
    _, a = _optimizers("SGD", {})
    _, b = _optimizers("SGD", {})
    ours_sched = lr_scheduler.StepLR(a, step_size=3, gamma=0.5)
    theirs_sched = torch.optim.lr_scheduler.StepLR(b, step_size=3, gamma=0.5)
    assert _run(a, ours_sched, 10) == _run(b, theirs_sched, 10)


@pytest.mark.parametrize(
    "name, kw, make",
    [
        ("SGD", {"momentum": 0.9}, lambda m, o: m.OneCycleLR(o, max_lr=[0.5, 0.2, 1.0], total_steps=12)),
        ("Adam", {"amsgrad": True}, lambda m, o: m.OneCycleLR(o, max_lr=0.05, total_steps=12, three_phase=True)),
        ("AdamW", {}, lambda m, o: m.SequentialLR(o, [m.LinearLR(o, total_iters=3), m.MultiStepLR(o, [2, 5])], milestones=[3])),
    ],
    ids=["onecycle-sgd", "onecycle-adam-betas", "sequential-adamw"],
)
def test_scheduled_training_matches_torch(name, kw, make):
    # The optimizer reads group["lr"] (and the cycled momentum / beta1) at every step.
    rng = np.random.default_rng(0)
    start = rng.standard_normal((len(LRS), 3))
    ours = [P(start[i].copy()) for i in range(len(LRS))]
    theirs = [torch.nn.Parameter(torch.tensor(start[i])) for i in range(len(LRS))]
    ours_opt = getattr(optim, name)([{"params": [p], "lr": lr} for p, lr in zip(ours, LRS)], **kw)
    theirs_opt = getattr(torch.optim, name)([{"params": [p], "lr": lr} for p, lr in zip(theirs, LRS)], **kw)
    ours_sched, theirs_sched = make(lr_scheduler, ours_opt), make(torch.optim.lr_scheduler, theirs_opt)
    for _ in range(12):
        for o, t in zip(ours, theirs):
            g = rng.standard_normal(3)
            o.grad, t.grad = g, torch.tensor(g)
        ours_opt.step(), theirs_opt.step()
        ours_sched.step(), theirs_sched.step()
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(to_numpy(o.data), t.detach().numpy(), rtol=1e-12, atol=1e-12)


# -- errors ----------------------------------------------------------------------------------------


class _NoMomentum:
    def __init__(self):
        self.param_groups = [{"params": [], "lr": 0.1}]
        self.defaults = {"lr": 0.1}


def _sgd():
    return optim.SGD([P(np.zeros(1)), P(np.zeros(1))], lr=0.1)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda o: lr_scheduler.StepLR(object(), 3), TypeError, r"^StepLR: object is not an optimizer \(it has no param_groups\)$"),
        (lambda o: lr_scheduler.StepLR(o, 3, last_epoch=4), KeyError, r"StepLR: param_groups\[0\] has no 'initial_lr', needed to resume with last_epoch=4"),
        (lambda o: lr_scheduler.LinearLR(o, start_factor=0), ValueError, r"^LinearLR: invalid start_factor=0 \(must be in \(0, 1\]\)$"),
        (lambda o: lr_scheduler.LinearLR(o, start_factor=1.5), ValueError, r"^LinearLR: invalid start_factor=1\.5"),
        (lambda o: lr_scheduler.LinearLR(o, end_factor=-0.1), ValueError, r"^LinearLR: invalid end_factor=-0\.1 \(must be in \[0, 1\]\)$"),
        (lambda o: lr_scheduler.OneCycleLR(object(), 0.1, total_steps=5), TypeError, r"^OneCycleLR: object is not an optimizer"),
        (lambda o: lr_scheduler.OneCycleLR(o, 0.1, total_steps=0), ValueError, r"^OneCycleLR: invalid total_steps=0 \(must be a positive int\)$"),
        (lambda o: lr_scheduler.OneCycleLR(o, 0.1, total_steps=2.5), ValueError, r"^OneCycleLR: invalid total_steps=2\.5"),
        (lambda o: lr_scheduler.OneCycleLR(o, 0.1, epochs=3), ValueError, r"^OneCycleLR: give total_steps, or epochs and steps_per_epoch$"),
        (lambda o: lr_scheduler.OneCycleLR(o, 0.1, epochs=0, steps_per_epoch=3), ValueError, r"^OneCycleLR: invalid epochs=0 \(must be a positive int\)$"),
        (lambda o: lr_scheduler.OneCycleLR(o, 0.1, epochs=2, steps_per_epoch=-1), ValueError, r"^OneCycleLR: invalid steps_per_epoch=-1 \(must be a positive int\)$"),
        (lambda o: lr_scheduler.OneCycleLR(o, 0.1, total_steps=5, pct_start=1), ValueError, r"^OneCycleLR: invalid pct_start=1 \(must be a float in \[0, 1\]\)$"),
        (lambda o: lr_scheduler.OneCycleLR(o, 0.1, total_steps=5, pct_start=1.5), ValueError, r"^OneCycleLR: invalid pct_start=1\.5"),
        (lambda o: lr_scheduler.OneCycleLR(o, 0.1, total_steps=5, anneal_strategy="exp"), ValueError, r"^OneCycleLR: invalid anneal_strategy='exp' \(must be 'cos' or 'linear'\)$"),
        (lambda o: lr_scheduler.OneCycleLR(o, [0.1, 0.2, 0.3], total_steps=5), ValueError, r"^OneCycleLR: max_lr must have one value per param group: got 3 values for 1 param groups$"),
        (lambda o: lr_scheduler.OneCycleLR(_NoMomentum(), 0.1, total_steps=5), ValueError, r"^OneCycleLR: cycle_momentum=True needs an optimizer with 'momentum' or 'betas', not _NoMomentum; pass cycle_momentum=False$"),
        (lambda o: lr_scheduler.SequentialLR(o, [], milestones=[]), ValueError, r"^SequentialLR: expects at least one scheduler, got none$"),
        (lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.StepLR(o, 2), lr_scheduler.StepLR(o, 3)], milestones=[2, 4]), ValueError,
         r"^SequentialLR: needs one milestone fewer than schedulers, got 2 schedulers and milestones=\[2, 4\]$"),
        (lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.StepLR(_sgd(), 2)], milestones=[]), ValueError,
         r"^SequentialLR: schedulers\[0\] \(StepLR\) belongs to another optimizer than the one given"),
        (lambda o: lr_scheduler.SequentialLR(o, [object()], milestones=[]), TypeError, r"^SequentialLR: schedulers\[0\] \(object\) has no optimizer attribute$"),
    ],
)
def test_errors(make, error, message):
    with pytest.raises(error, match=message):
        make(optim.SGD([P(np.zeros(1))], lr=0.1, momentum=0.9))


def test_onecycle_past_total_steps():
    opt = optim.SGD([P(np.zeros(1))], lr=0.1, momentum=0.9)
    scheduler = lr_scheduler.OneCycleLR(opt, 0.1, total_steps=3)
    for _ in range(3):
        scheduler.step()
    with pytest.raises(ValueError, match=r"^OneCycleLR: tried to step 4 times; total_steps is 3$"):
        scheduler.step()
