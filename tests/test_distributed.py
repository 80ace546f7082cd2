"""portaconv.distributed: the sampler, gradient averaging on every backend (a stand-in communicator),
equivalence, faults and mismatches under ``mpiexec -n 2`` (tests/distributed/*.py), and Dask
prediction and evaluation on a 2-worker LocalCluster."""

import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import portaconv
import portaconv.distributed as dist
from portaconv import optim
from portaconv._backend import backend_name
from portaconv.app import datasets, models

SCRIPTS = Path(__file__).parent / "distributed"
sys.path.insert(0, str(SCRIPTS))
from _common import forward_backward, synthetic  # noqa: E402

sys.path.remove(str(SCRIPTS))


# -- without MPI -----------------------------------------------------------------------------------
def test_import_loads_neither_mpi4py_nor_dask():
    code = "import sys, portaconv.distributed; print('mpi4py' in sys.modules, 'dask' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_init_without_mpi4py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", None)
    with pytest.raises(ImportError, match=r"pip install 'portaconv\[mpi\]'"):
        dist.init()
    assert not dist.is_initialized()


def test_rank_before_init_says_to_call_init():
    if dist.is_initialized():
        pytest.skip("MPI was initialized in this process")
    with pytest.raises(dist.DistributedError, match="init"):
        dist.rank()


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_sampler_shards_are_the_one_process_batches(world_size):
    data = synthetic(200)
    single = list(datasets.batches(data, 32, seed=5))
    shards = [list(dist.DistributedSampler(200, 32, seed=5, rank=r, world_size=world_size)) for r in range(world_size)]
    assert all(len(s) == len(single) == 7 for s in shards)
    for step, (x, _) in enumerate(single):
        index = np.concatenate([s[step] for s in shards])
        expected = next(datasets.batches(datasets.Dataset(data.images[index], data.labels[index], data.mean, data.std), len(index), shuffle=False))[0]
        np.testing.assert_array_equal(x, expected)
        if step < 6:  # full batches: equal contiguous shares
            assert {len(s[step]) for s in shards} == {32 // world_size}


def test_sampler_last_batch_and_drop_last():
    shares = [list(dist.DistributedSampler(70, 32, shuffle=False, rank=r, world_size=4)) for r in range(4)]
    assert [len(s[-1]) for s in shares] == [2, 2, 1, 1]
    assert len(dist.DistributedSampler(70, 32, rank=0, world_size=4, drop_last=True)) == 2


def test_sampler_rejects_a_batch_the_ranks_do_not_divide():
    with pytest.raises(ValueError, match="batch_size 65 is not a positive multiple of the 2 ranks"):
        dist.DistributedSampler(100, 65, rank=0, world_size=2)
    with pytest.raises(ValueError, match="rank 2 of world_size 2"):
        dist.DistributedSampler(100, 64, rank=2, world_size=2)


class _CopiesComm:
    """A stand-in communicator of ``size`` ranks that all hold this rank's values."""

    def __init__(self, size=2):
        self.size, self.calls = size, []

    def Get_rank(self):
        return 0

    def Get_size(self):
        return self.size

    def allgather(self, value):
        return [value] * self.size

    def Allreduce(self, sendbuf, recvbuf, op=None):
        self.calls.append(("Allreduce", recvbuf.dtype, recvbuf.size))
        recvbuf *= self.size

    def Bcast(self, buffer, root=0):
        self.calls.append(("Bcast", buffer.dtype, buffer.size))


@pytest.fixture
def mpi_constants():
    """mpi4py's constants without initializing MPI in the test process."""
    mpi4py = pytest.importorskip("mpi4py")
    if "mpi4py.MPI" not in sys.modules:
        mpi4py.rc.initialize = False
        mpi4py.rc.finalize = False
    from mpi4py import MPI

    return MPI


@pytest.mark.parametrize("name", ["numpy", "torch", "jax", "array_api_strict"])
def test_allreduce_gradients_one_collective_on_every_backend(name, mpi_constants):
    pytest.importorskip(name)
    net = models.build("seed-cnn", backend=name, dtype="float64")
    x, y = next(datasets.batches(synthetic(8), 8, backend=name, dtype="float64"))
    forward_backward(net, optim.SGD(net.parameters(), lr=0.1), x, y)
    before = [portaconv.to_numpy(p.grad) for p in net.parameters()]
    comm = _CopiesComm()
    nbytes = dist.allreduce_gradients(net, comm=comm)
    assert [c[0] for c in comm.calls] == ["Allreduce"] and comm.calls[0][1] == np.float64
    assert nbytes == dist.gradient_bytes(net) + 8 * (len(before) + 1)
    for p, expected in zip(net.parameters(), before):
        assert backend_name(p.grad) == backend_name(p.data)  # the gradient keeps its backend
        np.testing.assert_array_equal(portaconv.to_numpy(p.grad), expected)


def test_allreduce_gradients_weights_by_count_and_keeps_missing_grads(mpi_constants):
    net = models.build("seed-cnn", dtype="float32")
    params = net.parameters()
    params[0].grad = np.ones(params[0].shape, np.float32)
    dist.allreduce_gradients(net, count=3, comm=_CopiesComm(2))
    np.testing.assert_array_equal(params[0].grad, 1.0)
    assert params[0].grad.dtype == np.float32 and all(p.grad is None for p in params[1:])


def test_broadcast_parameters_is_one_bcast_of_all_state(mpi_constants):
    net = models.build("resnet", dtype="float32")
    state = {k: np.array(v) for k, v in net.state_dict().items()}
    comm = _CopiesComm()
    dist.broadcast_parameters(net, comm=comm)
    assert [c[0] for c in comm.calls] == ["Bcast"] and comm.calls[0][2] == sum(v.nbytes for v in state.values())


def test_gpu_path_choice(monkeypatch):
    """The CuPy allreduce's path: forced by PORTACONV_GPU_ALLREDUCE, else CUDA-aware MPI when
    declared, else NCCL when CuPy has it, else host staging (the GPU paths themselves need a GPU)."""
    from portaconv.distributed import _cupy

    monkeypatch.setenv("PORTACONV_GPU_ALLREDUCE", "nccl")
    assert _cupy.choose_path(comm=None) == "nccl"
    monkeypatch.setenv("PORTACONV_GPU_ALLREDUCE", "gloo")
    with pytest.raises(ValueError, match="cuda-aware-mpi"):
        _cupy.choose_path(comm=None)
    monkeypatch.delenv("PORTACONV_GPU_ALLREDUCE")
    monkeypatch.setenv("PORTACONV_MPI_CUDA_AWARE", "1")
    assert _cupy.choose_path(comm=None) == "cuda-aware-mpi"
    monkeypatch.setenv("PORTACONV_MPI_CUDA_AWARE", "0")
    monkeypatch.setattr(_cupy, "nccl_available", lambda comm: False)
    assert _cupy.choose_path(comm=None) == "host"


def test_gradient_bytes():
    assert dist.gradient_bytes(models.build("seed-cnn")) == 4 * 34826
    assert dist.gradient_bytes(models.build("resnet")) == 4 * 308074


# -- under mpiexec -n 2 ----------------------------------------------------------------------------
def _mpiexec():
    local = Path(sys.executable).with_name("mpiexec")
    return str(local) if local.exists() else shutil.which("mpiexec")


@pytest.fixture(scope="module")
def mpirun():
    """Run a script of tests/distributed/ on 2 ranks; skip when mpi4py or a working mpiexec is missing."""
    pytest.importorskip("mpi4py")
    mpiexec = _mpiexec()
    if mpiexec is None:
        pytest.skip("no mpiexec (pip install 'portaconv[mpi]')")
    version = subprocess.run([mpiexec, "--version"], capture_output=True, text=True).stdout
    extra = ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else []) if "Open MPI" in version else []
    # The scripts import the portaconv under test, installed or not.
    path = os.pathsep.join(filter(None, [str(SCRIPTS.parents[1]), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")

    def run(script, *args, n=2, timeout=180):
        command = [mpiexec, *extra, "-n", str(n), sys.executable, str(SCRIPTS / script), *map(str, args)]
        start = time.monotonic()
        done = subprocess.run(command, cwd=SCRIPTS, env=env, capture_output=True, text=True, timeout=timeout)
        return done, time.monotonic() - start

    probe, _ = run("mismatch.py", "none", timeout=60)
    if "Traceback" in probe.stderr:  # mpiexec ran Python and the script failed: a defect, not a missing tool
        pytest.fail(f"tests/distributed/mismatch.py failed under mpiexec -n 2: {probe.stderr[-1500:]}")
    if probe.returncode != 0:
        pytest.skip(f"mpiexec -n 2 does not run here: {probe.stdout[-500:]} {probe.stderr[-500:]}")
    return run


@pytest.mark.parametrize("dtype, rtol, atol", [("float64", 1e-12, 1e-12), ("float32", 1e-5, 1e-5)])
def test_two_ranks_train_as_one_process(mpirun, tmp_path, dtype, rtol, atol):
    """seed-cnn, global batch 64 (32 per rank), 8 Adam steps, augmentation off: the same loss per
    step and the same parameters as one process at batch 64; the two ranks' parameters equal."""
    done, _ = mpirun("equivalence.py", tmp_path / "run.npz", "--dtype", dtype, "--steps", 8, "--batch-size", 64)
    assert done.returncode == 0, done.stdout + done.stderr
    run = np.load(tmp_path / "run.npz")
    assert run["world_size"] == 2 and bool(run["same_on_all_ranks"])
    assert len(run["losses"]) == 8
    np.testing.assert_allclose(run["losses"], run["single_losses"], rtol=rtol)
    np.testing.assert_allclose(run["parameters"], run["single_parameters"], rtol=rtol, atol=atol)
    np.testing.assert_allclose(run["sharded_evaluation"], run["evaluation"], rtol=max(rtol, 1e-6))


def test_uneven_last_batch_weighted_by_count(mpirun, tmp_path):
    """515 samples at global batch 64: the last batch (3 samples) splits 2 + 1; weighting the
    gradients by the shard sizes (count=) keeps the run equal to one process."""
    done, _ = mpirun("equivalence.py", tmp_path / "run.npz", "--samples", 515, "--weighted", "--steps", 0)
    assert done.returncode == 0, done.stdout + done.stderr
    run = np.load(tmp_path / "run.npz")
    assert len(run["losses"]) == 9
    np.testing.assert_allclose(run["losses"], run["single_losses"], rtol=1e-12)
    np.testing.assert_allclose(run["parameters"], run["single_parameters"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode, expected", [
    ("raise", ["rank 1 of 2 failed", "RuntimeError: injected failure at step 3"]),
    ("hang", ["rank 1 of 2 failed", "timeout=5.0 s"]),
    ("exit", []),
])
def test_a_failing_rank_stops_the_job(mpirun, mode, expected):
    done, seconds = mpirun("fault.py", mode, "--timeout", 5 if mode == "hang" else 60, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode != 0 and seconds < 30, output
    assert "completed all steps" not in output
    for text in expected:
        assert text in output, output


@pytest.mark.parametrize("what, expected", [
    ("flags", "rank 1 flag 'lr' = 0.2, rank 0 has 0.1"),
    ("model", "rank 1 model: 0.weight is parameter (32, 1, 3, 3) float64, rank 0 has parameter (32, 1, 3, 3) float32"),
])
def test_init_names_the_rank_that_differs(mpirun, what, expected):
    done, _ = mpirun("mismatch.py", what, timeout=60)
    assert done.returncode != 0
    for me in (0, 1):
        assert f"rank {me} raised MismatchError" in done.stdout, done.stdout + done.stderr
    assert expected in done.stdout


@pytest.mark.parametrize("mode", ["auto", "none", "3"])
def test_ranks_sharing_a_node_share_its_cores(mpirun, mode):
    """init() gives each of the 2 ranks on this node half the usable cores (at least one), so their
    kernels and products do not fight; num_threads=None leaves the setting, an int sets it."""
    done, _ = mpirun("threads.py", mode, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    # mpiexec may join the two ranks' lines, so read the records, not the lines.
    seen = sorted(re.findall(r"rank (\d) local_rank (\d) ranks_on_node (\d+) cores (\d+) num_threads (None|\d+)", done.stdout))
    assert [rank for rank, *_ in seen] == ["0", "1"], done.stdout
    for rank, local_rank, ranks_on_node, cores, num_threads in seen:
        assert local_rank == rank and ranks_on_node == "2"
        expected = {"auto": str(max(1, int(cores) // 2)), "none": "None", "3": "3"}[mode]
        assert num_threads == expected, done.stdout


# -- Dask --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["seed-cnn", "resnet"])
def test_models_pickle(name):
    net = models.build(name, seed=1).eval()
    copy = pickle.loads(pickle.dumps(net))
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    with portaconv.no_grad():
        np.testing.assert_array_equal(portaconv.to_numpy(copy(x)), portaconv.to_numpy(net(x)))


def _inputs(n=300):
    data = synthetic(n, seed=7)
    x, y = next(datasets.batches(data, n, shuffle=False))
    return data, x, y


def _single(net, x):
    net.eval()
    with portaconv.no_grad():
        out = portaconv.to_numpy(net(x))
    net.train()
    return out


def test_dask_predict_on_the_local_scheduler():
    da = pytest.importorskip("dask.array")
    net = models.build("seed-cnn", seed=2)
    _, x, _ = _inputs()
    out = dist.predict(net, da.from_array(x, chunks=(77, 1, 28, 28)), batch_size=64)
    assert out.chunks == ((64, 64, 64, 64, 44), (10,))
    np.testing.assert_allclose(out.compute(), _single(net, x), rtol=1e-6, atol=1e-6)
    assert net.training  # the caller's model keeps its mode


@pytest.fixture(scope="module")
def client():
    pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as connected:
            yield connected


@pytest.mark.parametrize("factory", [None, "seed-cnn"])
def test_dask_predict_on_two_workers_equals_one_process(client, factory):
    import dask.array as da

    net = models.build("seed-cnn", seed=3)
    _, x, _ = _inputs()
    out = dist.predict(net, da.from_array(x, chunks=100), batch_size=64, factory=factory)
    result = out.compute()
    assert len(client.run(lambda: 1)) == 2  # both workers up
    np.testing.assert_allclose(result, _single(net, x), rtol=1e-6, atol=1e-6)


def test_dask_evaluate_on_two_workers_equals_one_process(client):
    import dask.array as da

    from portaconv.app.train import evaluate

    net = models.build("resnet", seed=4)
    data, x, y = _inputs()
    loss, accuracy = dist.evaluate(net, da.from_array(x, chunks=100), da.from_array(y, chunks=100), batch_size=50)
    expected_loss, expected_accuracy = evaluate(net, data, batch_size=50)
    assert accuracy == expected_accuracy
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)
