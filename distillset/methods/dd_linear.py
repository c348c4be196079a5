"""The linear case of Dataset Distillation (Wang et al. 2018, section 3.3): for least squares with D
features, one gradient step on M learned points reaches the optimum from every initialisation only if
M >= D.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> x = torch.randn(100, 3, generator=g, dtype=torch.float64)
>>> res = linear_distillation(x, x @ torch.ones(3, dtype=torch.float64), m=3, iters=2000)
>>> res["error"] < 1e-6, res["lower_bound"]
(True, 0.0)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..utils import make_generator


def linear_distillation(real_x: torch.Tensor, real_y: torch.Tensor, m: int, *, iters=3000, lr=0.05,
                        seed=0) -> dict:
    """The paper's linear case: learn M points and one step size so ONE GD step on them reaches the
    least-squares optimum theta* of (``real_x`` (N, D), ``real_y`` (N,)) from every theta_0.

    For l(theta) = ||X~ theta - y~||^2 / (2M) one step gives theta_1 = (I - A) theta_0 + b with
    A = (eta/M) X~^T X~, b = (eta/M) X~^T y~, so E_{theta_0 ~ N(0, I)} ||theta_1 - theta*||^2
    = ||I - A||_F^2 + ||b - theta*||^2, which we minimise exactly (float64, Adam). rank(A) <= M, so for
    M < D the error is at least D - M whatever is learned; for M = D it can reach 0.

    Returns dict(error=the expected squared error, lower_bound=max(D - M, 0), theta_star, x, y, eta).
    """
    x, y = real_x.double(), real_y.double()
    d = x.shape[1]
    theta_star = torch.linalg.lstsq(x, y[:, None]).solution[:, 0]  # (D,)
    g = make_generator(seed, "cpu")
    xs = torch.randn(m, d, generator=g, dtype=torch.float64).requires_grad_(True)  # (M, D)
    ys = torch.randn(m, generator=g, dtype=torch.float64).requires_grad_(True)  # (M,)
    rho = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([xs, ys, rho], lr=lr)
    eye = torch.eye(d, dtype=torch.float64)

    def error():
        eta = F.softplus(rho)
        a, b = eta / m * xs.T @ xs, eta / m * xs.T @ ys
        return ((eye - a) ** 2).sum() + ((b - theta_star) ** 2).sum()

    for i in range(iters):
        opt.zero_grad()
        e = error()
        e.backward()
        opt.step()
        if i == iters // 2:
            for group in opt.param_groups:
                group["lr"] = lr * 0.1
    with torch.no_grad():
        err = float(error())
    return {"error": err, "lower_bound": float(max(d - m, 0)), "theta_star": theta_star, "x": xs.detach(),
            "y": ys.detach(), "eta": float(F.softplus(rho.detach()))}
