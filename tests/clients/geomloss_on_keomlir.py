"""GeomLoss's SamplesLoss through keomlir.install_as_pykeops(), unmodified: the KeOps
backends ("online": LazyTensor and generic_logsumexp; "multiscale": block-sparse
ranges from pykeops.torch.cluster) against dense float64 references, values and
gradients.  Prints one JSON object: relative errors by case, and what keomlir ran."""

import json

import torch

import keomlir

keomlir.install_as_pykeops()  # before GeomLoss looks pykeops up

import geomloss._legacy.sinkhorn_samples as sinkhorn_samples  # noqa: E402
from geomloss import SamplesLoss  # noqa: E402

from keomlir.backends import cpu  # noqa: E402

BLUR = 0.1


def safe_norm(d2):
    """|x - y| with KeOps's convention for its derivative at 0 (0, not NaN)."""
    positive = d2 > 0
    return torch.where(positive, d2, torch.ones_like(d2)).sqrt() * positive


def dense_kernel_loss(name, a, x, b, y):
    """0.5 <a, K_xx a> + 0.5 <b, K_yy b> - <a, K_xy b>, the kernel norm GeomLoss computes."""
    def k(u, v):
        d2 = ((u[..., :, None, :] - v[..., None, :, :]) ** 2).sum(-1)
        if name == "energy":
            return -safe_norm(d2)
        if name == "gaussian":
            return torch.exp(-d2 / (2 * BLUR ** 2))
        return torch.exp(-safe_norm(d2) / BLUR)  # laplacian

    def quad(u, K, v):
        return (u[..., :, None] * K * v[..., None, :]).sum((-1, -2))

    return 0.5 * quad(a, k(x, x), a) + 0.5 * quad(b, k(y, y), b) - quad(a, k(x, y), b)


def value_and_grads(fn, a, x, b, y):
    x, y = x.clone().requires_grad_(), y.clone().requires_grad_()
    value = fn(a, x, b, y)
    return (value.detach(), *torch.autograd.grad(value.sum(), [x, y]))


def rel(got, want):
    return max(float((g - w).abs().max() / w.abs().max()) for g, w in zip(got, want))


def main():
    torch.manual_seed(0)
    results = {"pykeops is keomlir": __import__("pykeops") is keomlir,
               "geomloss sees keops": bool(sinkhorn_samples.keops_available)}
    for batched in (False, True):
        lead = (2,) if batched else ()
        x = torch.rand(*lead, 120, 3, dtype=torch.float64)
        y = torch.rand(*lead, 150, 3, dtype=torch.float64) + 0.2
        a, b = torch.rand(*lead, 120, dtype=torch.float64), torch.rand(*lead, 150, dtype=torch.float64)
        a, b = a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True)
        for loss in ("sinkhorn", "energy", "gaussian", "laplacian"):
            for backend in ("online", "multiscale"):
                if batched and backend == "multiscale":  # GeomLoss's multiscale takes no batch
                    continue
                # truncate=50 keeps every cluster pair, so the block-sparse result is exact
                options = dict(p=2, blur=BLUR, scaling=0.7, truncate=50, cluster_scale=0.05)
                ours = value_and_grads(SamplesLoss(loss, backend=backend, **options), a, x, b, y)
                if loss == "sinkhorn":
                    want = value_and_grads(SamplesLoss(loss, backend="tensorized", **options), a, x, b, y)
                else:
                    want = value_and_grads(lambda *t: dense_kernel_loss(loss, *t), a, x, b, y)
                results[f"{loss} {backend}{' batched' if batched else ''}"] = rel(ours, want)
    results["kernels compiled"] = len(cpu._kernels)
    results["block-sparse kernels"] = sum(1 for kernel in cpu._kernels.values() if hasattr(kernel, "blocks"))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
