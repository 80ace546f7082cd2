"""The optimizer base class: parameter groups, per-parameter state, state dicts (torch.optim's layout).

Parameters are objects with ``.data`` (an array of any supported namespace) and ``.grad`` (``None`` or
an array). An update reassigns ``p.data`` (never writes in place), so immutable arrays (JAX) work.
"""

from __future__ import annotations

import copy
from collections.abc import MutableMapping

import array_api_compat

from .._backend import backend_name, namespace_of, to_numpy

__all__ = ["Optimizer"]


class _State(MutableMapping):
    """Per-parameter state keyed by parameter identity; like torch's ``defaultdict(dict)``
    (``state[p]`` creates an empty dict), without requiring parameters to be hashable."""

    def __init__(self):
        self._items = {}  # id(param) -> (param, dict)

    def __getitem__(self, param):
        entry = self._items.get(id(param))
        if entry is None:
            entry = self._items[id(param)] = (param, {})
        return entry[1]

    def get(self, param, default=None):
        entry = self._items.get(id(param))
        return default if entry is None else entry[1]

    def __setitem__(self, param, value):
        self._items[id(param)] = (param, value)

    def __delitem__(self, param):
        del self._items[id(param)]

    def __contains__(self, param):
        return id(param) in self._items

    def __iter__(self):
        return (param for param, _ in list(self._items.values()))

    def __len__(self):
        return len(self._items)

    def __repr__(self):
        return f"_State({len(self)} parameters)"


def _is_array(x):
    return array_api_compat.is_array_api_obj(x) and not isinstance(x, (int, float, bool, complex))


def _device(x):
    try:
        return array_api_compat.device(x)
    except Exception:  # a tracer or a library without devices: nothing to compare
        return None


def _convert(value, like):
    """``value`` (an array of any library) as an array of ``like``'s namespace, dtype and device."""
    if backend_name(value) != backend_name(like):
        value = to_numpy(value)
    xp = namespace_of(like)
    device = _device(like)
    if device is None:
        return xp.asarray(value, dtype=like.dtype)
    return xp.asarray(value, dtype=like.dtype, device=device)


class Optimizer:
    """Base class of the optimizers (``torch.optim.Optimizer``'s interface).

    Parameters
    ----------
    params : iterable
        Parameters (objects with ``.data`` and ``.grad``), ``(name, parameter)`` pairs, or dicts
        ``{"params": [...], "lr": ..., ...}`` (parameter groups; missing options come from
        ``defaults``).
    defaults : dict
        The default hyperparameters of every group.

    Attributes
    ----------
    param_groups : list of dict
        One dict per group: ``"params"`` and every hyperparameter. ``group["lr"]`` is read at every
        step, so learning-rate schedulers work by writing it.
    state : mapping
        ``state[p]``: the per-parameter state dict (``"momentum_buffer"``, ``"step"``,
        ``"exp_avg"``, ... as torch names them).

    Notes
    -----
    Subclasses implement ``_update(group, param, grad, state) -> new data`` and may override
    ``_validate(options, where)``. :meth:`step` never reads array values (no host sync).
    """

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self._validate(self.defaults, "")
        self.state = _State()
        self.param_groups = []
        if hasattr(params, "parameters"):
            raise TypeError(
                f"{self._name}: got a {type(params).__name__} (a module); pass model.parameters(), not the model itself"
            )
        if _is_array(params) or (hasattr(params, "data") and hasattr(params, "grad")):
            raise TypeError(
                f"{self._name}: params must be an iterable of parameters or of dicts, got a single "
                f"{type(params).__name__}; pass [p]"
            )
        if isinstance(params, (set, frozenset)):
            raise TypeError(f"{self._name}: params must be an ordered collection (a list), not a set")
        try:
            groups = list(params)
        except TypeError:
            raise TypeError(
                f"{self._name}: params must be an iterable of parameters or of dicts, got {type(params).__name__}"
            ) from None
        if not groups:
            raise ValueError(f"{self._name}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    @property
    def _name(self):
        return type(self).__name__

    def __repr__(self):
        lines = [f"{self._name} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {key}: {group[key]}" for key in sorted(group) if key != "params")
        return "\n".join(lines) + "\n)"

    # -- groups -----------------------------------------------------------------------------------

    def _validate(self, options, where):
        """Raise ``ValueError`` for invalid hyperparameters (``where``: " in param group i" or "")."""
        lr = options.get("lr")
        if lr is not None and not lr >= 0.0:
            raise ValueError(f"{self._name}: invalid lr={lr!r}{where} (must be >= 0)")
        weight_decay = options.get("weight_decay")
        if weight_decay is not None and not weight_decay >= 0.0:
            raise ValueError(f"{self._name}: invalid weight_decay={weight_decay!r}{where} (must be >= 0)")

    def add_param_group(self, param_group):
        """Add a group ``{"params": [...], option: value, ...}``; missing options come from
        ``defaults``.

        Raises
        ------
        TypeError
            For a non-dict, a set, a module, or an entry that is not a parameter.
        ValueError
            For an empty group, a parameter listed twice, or one already in another group, or an
            invalid hyperparameter.
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"{self._name}: a parameter group must be a dict, got {type(param_group).__name__}")
        index = len(self.param_groups)
        where = f" in param group {index}"
        if "params" not in param_group:
            raise ValueError(f"{self._name}: param group {index} has no 'params' entry")
        params = param_group["params"]
        if hasattr(params, "parameters"):
            raise TypeError(
                f"{self._name}: param group {index} 'params' is a {type(params).__name__} (a module); "
                "pass model.parameters(), not the model itself"
            )
        if isinstance(params, (set, frozenset)):
            raise TypeError(f"{self._name}: param group {index} 'params' must be an ordered collection (a list), not a set")
        if hasattr(params, "data") and hasattr(params, "grad") and not _is_array(params):
            params = [params]
        params = list(params)
        names = [entry[0] for entry in params if isinstance(entry, tuple)]
        if names:
            if len(names) != len(params):
                raise ValueError(f"{self._name}: param group {index} mixes named (name, parameter) pairs and bare parameters")
            params = [entry[1] for entry in params]
        if not params:
            raise ValueError(f"{self._name}: param group {index} has an empty parameter list")
        for i, p in enumerate(params):
            if _is_array(p) or not (hasattr(p, "data") and hasattr(p, "grad")):
                raise TypeError(
                    f"{self._name}: can only optimize parameters (objects with .data and .grad), but entry {i} "
                    f"of param group {index} is a {type(p).__name__}; wrap arrays in portaconv.nn.Parameter"
                )
        seen = set()
        for i, p in enumerate(params):
            if id(p) in seen:
                raise ValueError(f"{self._name}: param group {index} lists a parameter twice (entry {i})")
            seen.add(id(p))
        for g, group in enumerate(self.param_groups):
            if any(id(p) in seen for p in group["params"]):
                raise ValueError(f"{self._name}: some parameters of param group {index} are already in param group {g}")
        group = {key: value for key, value in param_group.items() if key != "params"}
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self._validate(group, where)
        group = {"params": params, **group}
        if names:
            group["param_names"] = names
        self.param_groups.append(group)

    # -- steps ------------------------------------------------------------------------------------

    def zero_grad(self, set_to_none=True):
        """Reset the gradients: ``p.grad = None`` or, with ``set_to_none=False``, a new zero array."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad = namespace_of(p.grad).zeros_like(p.grad)

    def _check_grad(self, p, grad, index, group_index):
        """Cheap metadata checks (no value reads): library, dtype, shape and device."""
        data = p.data
        what = f"{self._name}: the gradient of parameter {index} (param group {group_index})"
        if not _is_array(grad):
            raise TypeError(f"{what} is a {type(grad).__name__}, not an array")
        grad_library, data_library = backend_name(grad), backend_name(data)
        if grad_library != data_library:
            raise TypeError(f"{what} is a {grad_library} array but the parameter is a {data_library} array")
        if grad.dtype != data.dtype:
            raise TypeError(
                f"{what} has dtype {grad.dtype} but the parameter has {data.dtype}; cast the gradient "
                "(optimizers never upcast silently)"
            )
        if tuple(grad.shape) != tuple(data.shape):
            raise ValueError(f"{what} has shape {tuple(grad.shape)} but the parameter has {tuple(data.shape)}")
        grad_device, data_device = _device(grad), _device(data)
        if grad_device is not None and data_device is not None and grad_device != data_device:
            raise ValueError(f"{what} is on device {grad_device} but the parameter is on {data_device}")

    def step(self, closure=None):
        """Update every parameter that has a gradient (``p.data`` is reassigned).

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss; called first, its result is returned.

        Raises
        ------
        TypeError, ValueError
            When a gradient's library, dtype, shape or device differs from its parameter's.
        """
        loss = None if closure is None else closure()
        index = 0
        for group_index, group in enumerate(self.param_groups):
            for p in group["params"]:
                grad = p.grad
                if grad is not None:
                    self._check_grad(p, grad, index, group_index)
                    p.data = self._update(group, p, grad)
                index += 1
        return loss

    def _update(self, group, p, grad):
        raise NotImplementedError

    # -- state dicts ------------------------------------------------------------------------------

    def state_dict(self):
        """The optimizer's state in torch's layout.

        Returns
        -------
        dict
            ``{"state": {index: {key: value}}, "param_groups": [{option: value, "params": [indices]}]}``;
            indices number the parameters through the groups in order. State arrays are the
            backend arrays themselves (not copies; the optimizer never writes them in place).
        """
        indices, groups, index = {}, [], 0
        for group in self.param_groups:
            packed = {key: value for key, value in group.items() if key != "params"}
            packed["params"] = list(range(index, index + len(group["params"])))
            for p in group["params"]:
                indices[id(p)] = index
                index += 1
            groups.append(packed)
        state = {indices[id(p)]: dict(values) for p, values in self.state.items() if values and id(p) in indices}
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load a state dict of :meth:`state_dict`'s layout, ours or torch's (converted to NumPy or not).

        Arrays may belong to any library: each is converted to its parameter's namespace, dtype and
        device; ``"step"`` becomes a Python float. The saved hyperparameters replace the groups'
        (options the saved groups lack keep their defaults).

        Raises
        ------
        ValueError
            When the number of groups, a group's size, or a state array's shape differs.
        """
        saved_groups = copy.deepcopy(list(state_dict["param_groups"]))
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{self._name}: the loaded state dict has {len(saved_groups)} parameter groups, "
                f"this optimizer has {len(self.param_groups)}"
            )
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(group["params"]) != len(saved["params"]):
                raise ValueError(
                    f"{self._name}: param group {i} of the loaded state dict has {len(saved['params'])} "
                    f"parameters, this optimizer's has {len(group['params'])}"
                )
        id_map = {}
        for group, saved in zip(self.param_groups, saved_groups):
            id_map.update(zip(saved["params"], group["params"]))
        state = _State()
        for key, values in state_dict["state"].items():
            if key not in id_map:
                continue
            p = id_map[key]
            state[p] = {name: self._load_value(p, name, value, key) for name, value in values.items()}
        new_groups = []
        for group, saved in zip(self.param_groups, saved_groups):
            saved["params"] = group["params"]
            if "param_names" in group and "param_names" not in saved:
                saved["param_names"] = group["param_names"]
            for key, value in self.defaults.items():
                saved.setdefault(key, value)
            if isinstance(saved.get("betas"), list):
                saved["betas"] = tuple(saved["betas"])
            new_groups.append(saved)
        self.param_groups = new_groups
        self.state = state

    def _load_value(self, p, name, value, key):
        if name == "step":
            return float(to_numpy(value)) if _is_array(value) else float(value)
        if not _is_array(value):
            return copy.deepcopy(value)
        if tuple(value.shape) != tuple(p.data.shape):
            raise ValueError(
                f"{self._name}: state {name!r} of parameter {key} has shape {tuple(value.shape)} but the "
                f"parameter has {tuple(p.data.shape)}"
            )
        return _convert(value, p.data)
