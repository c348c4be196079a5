"""ZCA whitening, regularised, fit on the training set (REFERENCE section 2 "KIP and LS").

``W = U diag(1 / sqrt(lambda + eps)) U^T`` from the eigendecomposition ``M = U diag(lambda) U^T`` of the
(D, D) second-moment matrix of the flattened normalised training images, with the regulariser
``eps = strength * tr(M) / D`` (strength 0.1 in KIP's code). The transform is ``x -> x @ W.T`` (flattened).

By default the second moment is not centred (``center=False``), so the transform is one matrix and
needs nothing else at test time; this is the contract of ``distillset.evaluate.Evaluator``, which
applies ``synthetic.extra["zca"]`` to the normalised test images. With ``center=True`` the covariance
is used and the transform is ``(x - mean) @ W.T``; the set then also carries ``extra["zca_mean"]``.

A method whitens its real data once, stores ``W`` (and the mean) in the synthetic set, and works in the
whitened space; the images of the saved set are whitened.
"""
from __future__ import annotations

import torch

from .errors import InvalidParameterError, NumericalError


def apply_zca(images: torch.Tensor, matrix: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
    """Whiten images (N, ...) with a fitted transform: ``(x - mean) @ W.T`` on the flattened images.

    The one application of ZCA: :meth:`ZCA.transform`, the evaluator (``synthetic.extra["zca"]`` and
    ``["zca_mean"]`` on the test images) and the kernel benchmarks all call it.

    Examples
    --------
    >>> apply_zca(torch.ones(2, 1, 2, 2), 2 * torch.eye(4)).flatten(1)
    tensor([[2., 2., 2., 2.],
            [2., 2., 2., 2.]])
    """
    flat = images.reshape(images.shape[0], -1)
    if mean is not None:
        flat = flat - mean.to(flat).flatten()
    return (flat @ matrix.to(flat).T).view_as(images)


class ZCA:
    """Regularised ZCA whitening of image tensors.

    Parameters
    ----------
    strength : float, default=0.1
        Regulariser as a fraction of the mean eigenvalue (``eps = strength * tr(M) / D``); 0 = exact whitening.
    center : bool, default=False
        Subtract the training mean first (then ``mean_`` must be applied at test time too).

    Attributes
    ----------
    matrix_ : Tensor (D, D)     the whitening matrix W (float32, symmetric)
    inverse_ : Tensor (D, D)    W^-1
    mean_ : Tensor (D,) or None
    eigenvalues_ : Tensor (D,)  of the (centred) second moment, float64

    Examples
    --------
    >>> x = torch.randn(200, 1, 4, 4)
    >>> z = ZCA(strength=0.0).fit(x)
    >>> torch.allclose(z.inverse_transform(z.transform(x)), x, atol=1e-4)
    True
    """

    def __init__(self, strength: float = 0.1, *, center: bool = False):
        self.strength = strength
        self.center = center

    def fit(self, images: torch.Tensor, chunk: int = 4096) -> "ZCA":
        if not (isinstance(self.strength, (int, float)) and self.strength >= 0):
            raise InvalidParameterError(f"The 'strength' parameter of ZCA must be a float >= 0. Got {self.strength!r} instead.")
        flat = images.reshape(images.shape[0], -1)
        n, d = flat.shape
        mean = flat.double().mean(0) if self.center else None
        m = torch.zeros(d, d, dtype=torch.float64, device=flat.device)
        for i in range(0, n, chunk):  # (D, D) second moment without a float64 copy of the whole set
            b = flat[i:i + chunk].double()
            if mean is not None:
                b = b - mean
            m += b.T @ b
        m /= n
        try:
            evals, evecs = torch.linalg.eigh(m)
        except torch.linalg.LinAlgError as e:  # non-finite pixels, or an ill-conditioned moment
            raise NumericalError(f"ZCA's eigendecomposition failed ({e}); check the images are finite, or turn "
                                 "ZCA off.") from None
        evals = evals.clamp_min(0)
        eps = self.strength * evals.sum() / d
        if float(eps) == 0.0 and float(evals.min()) <= 0.0:
            raise InvalidParameterError("ZCA with strength=0 needs a full-rank second moment; use strength > 0.")
        self.eigenvalues_ = evals
        self.matrix_ = ((evecs / torch.sqrt(evals + eps)) @ evecs.T).float()
        self.inverse_ = ((evecs * torch.sqrt(evals + eps)) @ evecs.T).float()
        self.mean_ = None if mean is None else mean.float()
        return self

    def _check_fitted(self):
        if not hasattr(self, "matrix_"):
            raise InvalidParameterError("This ZCA instance is not fitted yet. Call 'fit' first.")

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        """Whiten: ``(x - mean) @ W.T``, same shape as ``images``."""
        self._check_fitted()
        return apply_zca(images, self.matrix_, self.mean_)

    def inverse_transform(self, images: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`transform` (for display of whitened sets)."""
        self._check_fitted()
        flat = images.reshape(images.shape[0], -1) @ self.inverse_.to(images).T
        if self.mean_ is not None:
            flat = flat + self.mean_.to(flat)
        return flat.view_as(images)

    def extra(self) -> dict[str, torch.Tensor]:
        """What a synthetic set stores so evaluation can repeat the transform: ``zca`` (and ``zca_mean``)."""
        self._check_fitted()
        out = {"zca": self.matrix_}
        if self.mean_ is not None:
            out["zca_mean"] = self.mean_
        return out
