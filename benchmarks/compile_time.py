"""numba compile time: the first seed-cnn training step, then every other NumPy kernel.

Run it twice: `NUMBA_CACHE_DIR=$(mktemp -d) python3 benchmarks/compile_time.py` (a fresh machine),
then again with the same NUMBA_CACHE_DIR (the on-disk cache).
"""
import time

import numpy as np

import portaconv, portaconv.functional as F
from portaconv.app import models
from portaconv import nn, optim
net=models.build("seed-cnn"); rng=np.random.default_rng(0)
x=rng.standard_normal((64,1,28,28)).astype(np.float32); y=rng.integers(0,10,64)
opt, crit = optim.Adam(net.parameters()), nn.NLLLoss()
def step():
    loss = crit(net(x), y); opt.zero_grad(); loss.backward(); opt.step()
t=time.perf_counter(); step(); first=time.perf_counter()-t
t=time.perf_counter(); step(); second=time.perf_counter()-t
# every kernel of every primitive, both dtypes, both builds: the parity of a full op set
t=time.perf_counter()
for dt in (np.float32, np.float64):
    for n in (1, 64):
        a=rng.standard_normal((n,8,30,30)).astype(dt); w=rng.standard_normal((8,8,3,3)).astype(dt)
        g=np.ones(F.conv2d(a,w,padding=1).shape,dt); F.conv2d_backward(g,a,w,padding=1)
        F.conv2d_backward(np.ones(F.conv2d(a,w,stride=2).shape,dt),a,w,stride=2)
        F.conv_transpose2d(a,np.ones((8,4,3,3),dt),stride=2)
        with portaconv.options(grad_input="stride0"): F.conv2d_backward(np.ones(F.conv2d(a,w,stride=2).shape,dt),a,w,stride=2)
        with portaconv.options(algorithm="winograd"): F.conv2d_backward(g,a,w,padding=1); F.conv2d(a,w,padding=1)
        for p in (dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1)):
            o,i=F.max_pool2d(a,return_indices=True,**p); F.max_pool2d_backward(np.ones(o.shape,dt),a,**p); F.max_pool2d_backward(np.ones(o.shape,dt),a,indices=i,**p)
            o=F.avg_pool2d(a,**p); F.avg_pool2d_backward(np.ones(o.shape,dt),a,**p)
rest=time.perf_counter()-t
print(f"first training step {first:.1f} s; second {second*1e3:.1f} ms; every other kernel, both dtypes and builds {rest:.1f} s")
