"""Optimizers and gradient clipping against torch.optim / torch.nn.utils on the same gradients."""

import math

import numpy as np
import pytest

from portaconv import optim, to_numpy
from portaconv._backend import backend_name
from portaconv.nn.utils import clip_grad_norm_, clip_grad_value_
from portaconv.testing import to_backend

torch = pytest.importorskip("torch")


class P:
    """A stand-in parameter: ``data``, ``grad``, ``requires_grad``."""

    requires_grad = True

    def __init__(self, data, grad=None):
        self.data, self.grad = data, grad


CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.5, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1)),
    ("Adam", dict(lr=0.02, betas=(0.3, 0.95), amsgrad=True, maximize=True)),  # beta1 < 0.5: lerp's other branch
    ("AdamW", dict()),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=0.01, betas=(0.5, 0.99), maximize=True)),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'defaults'}".replace(" ", "") for name, kw in CONFIGS]
SHAPES = [(3, 4), (4,), (2, 2, 3)]
TOL = {"float64": dict(rtol=1e-12, atol=1e-12), "float32": dict(rtol=2e-5, atol=2e-6)}


def _groups(params, name, kw):
    """Two groups: the second with its own lr (and momentum for SGD)."""
    extra = {"lr": kw.get("lr", 1e-3) * 0.3}
    if name == "SGD" and kw.get("momentum"):
        extra["momentum"] = 0.6
    return [{"params": params[:2]}, {"params": params[2:], **extra}]


def _grads(rng, step):
    # A varying scale exercises AMSGrad's maximum; parameter 1 has no gradient at step 2.
    scale = 1.0 + 3.0 * (step % 3 == 1)
    return [None if (step == 2 and i == 1) else scale * rng.standard_normal(s) for i, s in enumerate(SHAPES)]


def _run_pair(backend, dtype, name, kw, steps=7, seed=0):
    rng = np.random.default_rng(seed)
    starts = [rng.standard_normal(s) for s in SHAPES]
    tdtype = getattr(torch, dtype)
    ours = [P(to_backend(s, backend, dtype)) for s in starts]
    theirs = [torch.nn.Parameter(torch.tensor(s, dtype=tdtype)) for s in starts]
    ours_opt = getattr(optim, name)(_groups(ours, name, kw), **kw)
    theirs_opt = getattr(torch.optim, name)(_groups(theirs, name, kw), **kw)
    for step in range(steps):
        for o, t, g in zip(ours, theirs, _grads(rng, step)):
            o.grad = None if g is None else to_backend(g, backend, dtype)
            t.grad = None if g is None else torch.tensor(g, dtype=tdtype)
        ours_opt.step()
        theirs_opt.step()
    return ours, theirs, ours_opt, theirs_opt


@pytest.mark.parametrize("name, kw", CONFIGS, ids=IDS)
def test_steps_match_torch(backend, dtype, name, kw):
    ours, theirs, _, _ = _run_pair(backend, dtype, name, kw)
    for o, t in zip(ours, theirs):
        assert backend_name(o.data) == backend_name(o.grad)  # still the backend's array
        assert o.data.dtype == getattr(backend.xp, dtype)  # never upcast
        np.testing.assert_allclose(to_numpy(o.data), t.detach().numpy(), **TOL[dtype])


def _numpy_tree(value):
    """A state dict as it would be saved: every array to NumPy."""
    if isinstance(value, dict):
        return {k: _numpy_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numpy_tree(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.detach().numpy().copy()
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return to_numpy(value).copy()
    return value


@pytest.mark.parametrize("name, kw", CONFIGS, ids=IDS)
def test_state_dict_layout_matches_torch(name, kw):
    from portaconv.testing import available_backends

    numpy = available_backends("numpy")[0]
    _, _, ours_opt, theirs_opt = _run_pair(numpy, "float64", name, kw, steps=3)
    ours_sd, theirs_sd = ours_opt.state_dict(), theirs_opt.state_dict()
    assert {k: set(v) for k, v in ours_sd["state"].items()} == {k: set(v) for k, v in theirs_sd["state"].items()}
    for ours_group, theirs_group in zip(ours_sd["param_groups"], theirs_sd["param_groups"]):
        assert set(ours_group) <= set(theirs_group)
        assert {k: ours_group[k] for k in ours_group} == {k: theirs_group[k] for k in ours_group}
    for index, values in ours_sd["state"].items():
        for key, value in values.items():
            np.testing.assert_allclose(np.asarray(to_numpy(value)), theirs_sd["state"][index][key].numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name, kw", CONFIGS, ids=IDS)
def test_state_dict_round_trip(backend, name, kw):
    rng = np.random.default_rng(1)
    starts = [rng.standard_normal(s) for s in SHAPES]
    grads = [_grads(rng, step) for step in range(8)]

    def feed(params, step):
        for p, g in zip(params, grads[step]):
            p.grad = None if g is None else to_backend(g, backend, "float64")

    straight = [P(to_backend(s, backend, "float64")) for s in starts]
    opt = getattr(optim, name)(_groups(straight, name, kw), **kw)
    for step in range(8):
        feed(straight, step)
        opt.step()

    first = [P(to_backend(s, backend, "float64")) for s in starts]
    opt = getattr(optim, name)(_groups(first, name, kw), **kw)
    for step in range(3):
        feed(first, step)
        opt.step()
    saved = _numpy_tree(opt.state_dict())
    resumed = [P(to_backend(to_numpy(p.data), backend, "float64")) for p in first]
    opt = getattr(optim, name)(_groups(resumed, name, kw), **kw)
    opt.load_state_dict(saved)
    for values in opt.state.values():
        for key, value in values.items():
            if key != "step":
                assert backend_name(value) == backend_name(resumed[0].data) and value.dtype == resumed[0].data.dtype
    for step in range(3, 8):
        feed(resumed, step)
        opt.step()
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(to_numpy(a.data), to_numpy(b.data))


@pytest.mark.parametrize("name, kw", CONFIGS, ids=IDS)
def test_load_torch_state_dict(backend, name, kw):
    rng = np.random.default_rng(2)
    starts = [rng.standard_normal(s) for s in SHAPES]
    theirs = [torch.nn.Parameter(torch.tensor(s)) for s in starts]
    theirs_opt = getattr(torch.optim, name)(_groups(theirs, name, kw), **kw)
    for step in range(3):
        for t, g in zip(theirs, _grads(rng, step)):
            t.grad = None if g is None else torch.tensor(g)
        theirs_opt.step()
    ours = [P(to_backend(t.detach().numpy(), backend, "float64")) for t in theirs]
    ours_opt = getattr(optim, name)(_groups(ours, name, kw), **kw)
    ours_opt.load_state_dict(_numpy_tree(theirs_opt.state_dict()))
    for step in range(3, 7):
        for o, t, g in zip(ours, theirs, _grads(rng, step)):
            o.grad = None if g is None else to_backend(g, backend, "float64")
            t.grad = None if g is None else torch.tensor(g)
        ours_opt.step()
        theirs_opt.step()
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(to_numpy(o.data), t.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_load_torch_state_dict_as_tensors():
    # Torch tensors (not converted) load into NumPy parameters too; "step" becomes a float.
    t = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    theirs = torch.optim.Adam([t], lr=0.1)
    t.grad = torch.full((3,), 0.5, dtype=torch.float64)
    theirs.step()
    p = P(t.detach().numpy().copy())
    ours = optim.Adam([p], lr=0.1)
    ours.load_state_dict(theirs.state_dict())
    assert ours.state[p]["step"] == 1.0 and isinstance(ours.state[p]["step"], float)
    assert type(ours.state[p]["exp_avg"]) is np.ndarray


# -- behaviour -------------------------------------------------------------------------------------


def test_param_groups_filled_and_lr_read_every_step():
    a, b = P(np.ones(2)), P(np.ones(3))
    opt = optim.SGD([{"params": [a]}, {"params": b, "lr": 0.5}], lr=0.1, momentum=0.9)
    assert opt.param_groups[1] == {"params": [b], "lr": 0.5, "momentum": 0.9, "dampening": 0.0, "weight_decay": 0.0,
                                   "nesterov": False, "maximize": False}
    assert opt.param_groups[0]["params"] == [a] and opt.param_groups[0]["lr"] == 0.1
    opt.param_groups[0]["lr"] = 0.0  # what a scheduler does
    a.grad, b.grad = np.ones(2), np.ones(3)
    opt.step()
    np.testing.assert_array_equal(a.data, np.ones(2))
    np.testing.assert_array_equal(b.data, np.full(3, 0.5))
    assert optim.AdamW([P(np.ones(1))]).defaults == dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                                                         amsgrad=False, maximize=False, decoupled_weight_decay=True)
    assert optim.SGD([P(np.ones(1))], lr=0).param_groups[0]["lr"] == 0  # lr = 0 is valid, as in torch


def test_add_param_group_and_named_params():
    a, b = P(np.ones(2)), P(np.ones(2))
    opt = optim.Adam([("a", a)], lr=0.1)
    assert opt.param_groups[0]["param_names"] == ["a"]
    opt.add_param_group({"params": [b], "betas": (0.5, 0.9)})
    assert opt.param_groups[1]["lr"] == 0.1 and opt.param_groups[1]["betas"] == (0.5, 0.9)
    assert opt.state_dict()["param_groups"][1]["params"] == [1]


def test_zero_grad_and_closure():
    grad = np.ones(2, dtype=np.float32)
    p = P(np.zeros(2, dtype=np.float32), grad)
    opt = optim.SGD([p], lr=0.1)
    opt.zero_grad(set_to_none=False)
    assert p.grad is not grad and p.grad.dtype == np.float32
    np.testing.assert_array_equal(p.grad, [0, 0])
    np.testing.assert_array_equal(grad, [1, 1])  # not written in place
    opt.zero_grad()
    assert p.grad is None
    assert opt.step(lambda: 3.5) == 3.5
    np.testing.assert_array_equal(p.data, [0, 0])  # no gradient: untouched


def test_momentum_buffer_does_not_alias_the_gradient():
    # A training loop may accumulate into p.grad in place; torch's buffer is a copy.
    p, t = P(np.zeros(3)), torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    ours, theirs = optim.SGD([p], lr=0.1, momentum=0.9), torch.optim.SGD([t], lr=0.1, momentum=0.9)
    p.grad, t.grad = np.ones(3), torch.ones(3, dtype=torch.float64)
    ours.step(), theirs.step()
    p.grad += 1.0
    t.grad += 1.0
    ours.step(), theirs.step()
    np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-15)


def test_step_reads_no_values():
    # Meta tensors have no values: any host read (bool, item, float) raises.
    params = [P(torch.empty(3, 4, device="meta"), torch.empty(3, 4, device="meta")) for _ in range(2)]
    for opt in (optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
                optim.Adam(params, amsgrad=True, weight_decay=0.1), optim.AdamW(params, maximize=True)):
        opt.step()
        opt.step()
    total = clip_grad_norm_(params, 1.0)
    assert total.device.type == "meta" and params[0].data.device.type == "meta"
    clip_grad_value_(params, 0.1)


# -- errors ----------------------------------------------------------------------------------------


class _Module:
    def parameters(self):
        return [P(np.ones(1))]


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda p: optim.SGD([]), ValueError, r"^SGD: got an empty parameter list$"),
        (lambda p: optim.Adam(_Module()), TypeError, r"Adam: got a _Module \(a module\); pass model\.parameters\(\)"),
        (lambda p: optim.SGD([{"params": _Module()}]), TypeError, r"SGD: param group 0 'params' is a _Module \(a module\); pass model\.parameters\(\)"),
        (lambda p: optim.SGD(p[0]), TypeError, r"SGD: params must be an iterable of parameters or of dicts, got a single P; pass \[p\]"),
        (lambda p: optim.SGD(np.ones(2)), TypeError, r"SGD: params must be an iterable .* got a single ndarray"),
        (lambda p: optim.SGD(set(p)), TypeError, r"SGD: params must be an ordered collection \(a list\), not a set"),
        (lambda p: optim.SGD(5), TypeError, r"SGD: params must be an iterable of parameters or of dicts, got int"),
        (lambda p: optim.SGD([np.ones(2)]), TypeError, r"SGD: can only optimize parameters \(objects with \.data and \.grad\), but entry 0 of param group 0 is a ndarray"),
        (lambda p: optim.SGD([p[0], p[1], p[0]]), ValueError, r"SGD: param group 0 lists a parameter twice \(entry 2\)"),
        (lambda p: optim.Adam([{"params": [p[0]]}, {"params": [p[1], p[0]]}]), ValueError, r"Adam: some parameters of param group 1 are already in param group 0"),
        (lambda p: optim.SGD([{"params": []}]), ValueError, r"SGD: param group 0 has an empty parameter list"),
        (lambda p: optim.SGD([{"lr": 0.1}]), ValueError, r"SGD: param group 0 has no 'params' entry"),
        (lambda p: optim.SGD(p, lr=-0.1), ValueError, r"^SGD: invalid lr=-0\.1 \(must be >= 0\)$"),
        (lambda p: optim.SGD(p, lr=float("nan")), ValueError, r"^SGD: invalid lr=nan \(must be >= 0\)$"),
        (lambda p: optim.SGD([{"params": p[:1]}, {"params": p[1:], "lr": -1.0}]), ValueError, r"^SGD: invalid lr=-1\.0 in param group 1 \(must be >= 0\)$"),
        (lambda p: optim.SGD(p, momentum=-0.5), ValueError, r"^SGD: invalid momentum=-0\.5 \(must be >= 0\)$"),
        (lambda p: optim.SGD(p, weight_decay=-1e-4), ValueError, r"^SGD: invalid weight_decay=-0\.0001 \(must be >= 0\)$"),
        (lambda p: optim.SGD(p, nesterov=True), ValueError, r"^SGD: nesterov=True requires momentum > 0 and dampening = 0, got momentum=0\.0, dampening=0\.0$"),
        (lambda p: optim.SGD(p, momentum=0.9, dampening=0.1, nesterov=True), ValueError, r"got momentum=0\.9, dampening=0\.1$"),
        (lambda p: optim.Adam(p, lr=-1e-3), ValueError, r"^Adam: invalid lr=-0\.001 \(must be >= 0\)$"),
        (lambda p: optim.Adam(p, betas=(1.0, 0.9)), ValueError, r"^Adam: invalid betas\[0\]=1\.0 \(must be in \[0, 1\)\)$"),
        (lambda p: optim.Adam(p, betas=(0.9, -0.1)), ValueError, r"^Adam: invalid betas\[1\]=-0\.1 \(must be in \[0, 1\)\)$"),
        (lambda p: optim.AdamW(p, betas=(0.9,)), ValueError, r"^AdamW: invalid betas=\(0\.9,\) \(must be a pair \(beta1, beta2\)\)$"),
        (lambda p: optim.Adam(p, eps=-1e-8), ValueError, r"^Adam: invalid eps=-1e-08 \(must be >= 0\)$"),
        (lambda p: optim.Adam(p, weight_decay=-0.1), ValueError, r"^Adam: invalid weight_decay=-0\.1 \(must be >= 0\)$"),
        (lambda p: optim.AdamW(p, weight_decay=-0.1), ValueError, r"^AdamW: invalid weight_decay=-0\.1 \(must be >= 0\)$"),
        (lambda p: optim.AdamW([{"params": p, "betas": (0.9, 1.0)}]), ValueError, r"^AdamW: invalid betas\[1\]=1\.0 in param group 0 \(must be in \[0, 1\)\)$"),
        (lambda p: optim.SGD(p).add_param_group([P(np.ones(1))]), TypeError, r"SGD: a parameter group must be a dict, got list"),
    ],
)
def test_construction_errors(make, error, message):
    with pytest.raises(error, match=message):
        make([P(np.ones(2)), P(np.ones(3))])


def _strict():
    return pytest.importorskip("array_api_strict")


@pytest.mark.parametrize(
    "make_grad, error, message",
    [
        (lambda data: np.ones((2, 3), dtype=np.float64), TypeError,
         r"^SGD: the gradient of parameter 2 \(param group 1\) has dtype float64 but the parameter has float32; cast the gradient"),
        (lambda data: np.ones((3, 2), dtype=np.float32), ValueError,
         r"^SGD: the gradient of parameter 2 \(param group 1\) has shape \(3, 2\) but the parameter has \(2, 3\)$"),
        (lambda data: torch.ones((2, 3)), TypeError,
         r"^SGD: the gradient of parameter 2 \(param group 1\) is a torch array but the parameter is a numpy array$"),
        (lambda data: [[1.0] * 3] * 2, TypeError, r"^SGD: the gradient of parameter 2 \(param group 1\) is a list, not an array$"),
    ],
    ids=["dtype", "shape", "library", "not-an-array"],
)
def test_gradient_mismatch_errors(make_grad, error, message):
    params = [P(np.ones(2, dtype=np.float32)) for _ in range(2)] + [P(np.ones((2, 3), dtype=np.float32))]
    opt = optim.SGD([{"params": params[:2]}, {"params": params[2:]}], lr=0.1)
    params[2].grad = make_grad(params[2].data)
    with pytest.raises(error, match=message):
        opt.step()


def test_gradient_device_mismatch():
    xp = _strict()
    p = P(xp.ones(3, dtype=xp.float32))
    p.grad = xp.ones(3, dtype=xp.float32, device=xp.Device("device1"))
    with pytest.raises(ValueError, match=r"^Adam: the gradient of parameter 0 \(param group 0\) is on device .*device1.* but the parameter is on .*CPU_DEVICE"):
        optim.Adam([p]).step()


def test_gradient_dtype_mismatch_on_backends(backend):
    p = P(to_backend(np.ones(3), backend, "float32"), to_backend(np.ones(3), backend, "float64"))
    with pytest.raises(TypeError, match=r"AdamW: the gradient of parameter 0 \(param group 0\) has dtype .*float64 but the parameter has .*float32"):
        optim.AdamW([p]).step()


def test_load_state_dict_errors():
    a, b = P(np.ones(2)), P(np.ones(3))
    opt = optim.Adam([a, b])
    with pytest.raises(ValueError, match=r"^Adam: the loaded state dict has 2 parameter groups, this optimizer has 1$"):
        opt.load_state_dict({"state": {}, "param_groups": [{"params": [0]}, {"params": [1]}]})
    with pytest.raises(ValueError, match=r"^Adam: param group 0 of the loaded state dict has 1 parameters, this optimizer's has 2$"):
        opt.load_state_dict({"state": {}, "param_groups": [{"params": [0]}]})
    bad = {"state": {1: {"step": 1.0, "exp_avg": np.zeros(2), "exp_avg_sq": np.zeros(3)}},
           "param_groups": [{"params": [0, 1], **opt.defaults}]}
    with pytest.raises(ValueError, match=r"^Adam: state 'exp_avg' of parameter 1 has shape \(2,\) but the parameter has \(3,\)$"):
        opt.load_state_dict(bad)


# -- gradient clipping -----------------------------------------------------------------------------


def _clip_pair(backend, dtype, grads):
    tdtype = getattr(torch, dtype)
    ours = [P(to_backend(np.zeros(g.shape if g is not None else (2,)), backend, dtype),
              None if g is None else to_backend(g, backend, dtype)) for g in grads]
    theirs = []
    for g in grads:
        t = torch.nn.Parameter(torch.zeros(g.shape if g is not None else (2,), dtype=tdtype))
        t.grad = None if g is None else torch.tensor(g, dtype=tdtype)
        theirs.append(t)
    return ours, theirs


def _assert_grads(ours, theirs, dtype):
    for o, t in zip(ours, theirs):
        if t.grad is None:
            assert o.grad is None
        else:
            np.testing.assert_allclose(to_numpy(o.grad), t.grad.numpy(), **TOL[dtype])


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0, "inf"])
@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    from portaconv.testing import available_backends

    rng = np.random.default_rng(3)
    grads = [rng.standard_normal((3, 4)), None, rng.standard_normal(5)]
    ours, theirs = _clip_pair(available_backends("numpy")[0], "float64", grads)
    original = ours[0].grad
    total = clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    assert isinstance(total, np.ndarray) and total.shape == ()
    np.testing.assert_allclose(total, expected.numpy(), rtol=1e-12)
    _assert_grads(ours, theirs, "float64")
    if max_norm < 1:
        assert ours[0].grad is not original and not np.array_equal(original, ours[0].grad)  # reassigned, not in place


@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_clip_grad_norm_backends(backend, dtype, norm_type):
    rng = np.random.default_rng(4)
    grads = [rng.standard_normal((2, 3)), rng.standard_normal(4), None]
    ours, theirs = _clip_pair(backend, dtype, grads)
    total = clip_grad_norm_(ours, 0.7, norm_type=norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 0.7, norm_type=norm_type)
    assert backend_name(total) == backend_name(ours[0].data) and tuple(total.shape) == ()
    assert total.dtype == ours[0].data.dtype and ours[0].grad.dtype == ours[0].data.dtype
    np.testing.assert_allclose(to_numpy(total), expected.numpy(), **TOL[dtype])
    _assert_grads(ours, theirs, dtype)


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # inf * 0, as torch
def test_clip_grad_norm_single_parameter_empty_and_nonfinite():
    p = P(np.zeros(2), np.array([3.0, 4.0]))
    np.testing.assert_allclose(clip_grad_norm_(p, 1.0), 5.0)
    np.testing.assert_allclose(p.grad, np.array([3.0, 4.0]) / (5.0 + 1e-6))
    assert clip_grad_norm_([P(np.zeros(2))], 1.0) == 0.0
    assert clip_grad_norm_([], 1.0).shape == ()
    ours, theirs = _clip_pair(_numpy_backend(), "float64", [np.array([1.0, np.inf])])
    with pytest.raises(RuntimeError, match=r"^clip_grad_norm_: the total norm of order 2\.0 of the gradients is non-finite \(inf\)"):
        clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
    total = clip_grad_norm_(ours, 1.0)  # scales by the non-finite norm, as torch
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert total == expected.item() == np.inf
    np.testing.assert_array_equal(ours[0].grad, theirs[0].grad.numpy())
    with pytest.raises(TypeError, match=r"got a _Module \(a module\); pass model\.parameters\(\)"):
        clip_grad_norm_(_Module(), 1.0)


def _numpy_backend():
    from portaconv.testing import available_backends

    return available_backends("numpy")[0]


def test_clip_grad_value_matches_torch(backend, dtype):
    grads = [np.array([[-2.0, 0.05, 3.0], [np.nan, -0.1, 0.2]]), None, np.array([0.5, -0.5])]
    ours, theirs = _clip_pair(backend, dtype, grads)
    original = ours[0].grad
    clip_grad_value_(ours, 0.1)
    torch.nn.utils.clip_grad_value_(theirs, 0.1)
    _assert_grads(ours, theirs, dtype)
    assert ours[0].grad is not original and ours[0].grad.dtype == original.dtype
    single = P(to_backend(np.zeros(2), backend, dtype), to_backend(np.array([5.0, -5.0]), backend, dtype))
    clip_grad_value_(single, 1)
    np.testing.assert_array_equal(to_numpy(single.grad), [1.0, -1.0])
