"""GPyTorch's exact GP regression with its KeOps kernels (gpytorch.kernels.keops.RBFKernel,
MaternKernel) through keomlir.install_as_pykeops(), unmodified, against the same model
with GPyTorch's plain kernels: the marginal log likelihood, its gradients in every
hyperparameter, predictive means and variances.  max_cholesky_size(0) makes GPyTorch
use KeOps; both the exact path (dense solves: K @ I through keomlir) and the fast
path (CG and Lanczos with the same seeded probe vectors) are compared.  Prints one
JSON object: absolute errors by case, and what keomlir ran."""

import json

import torch

import keomlir

keomlir.install_as_pykeops()  # before GPyTorch looks pykeops up

import gpytorch  # noqa: E402

from keomlir.backends import cpu  # noqa: E402


class ExactGP(gpytorch.models.ExactGP):
    def __init__(self, x, y, kernel):
        likelihood = gpytorch.likelihoods.GaussianLikelihood()
        super().__init__(x, y, likelihood)
        self.mean = gpytorch.means.ConstantMean()
        self.covariance = gpytorch.kernels.ScaleKernel(kernel)

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean(x), self.covariance(x))


def fit_once(kernel, x, y, x_test, fast):
    torch.manual_seed(1)  # the same probe vectors for both models
    model = ExactGP(x, y, kernel).double()
    model.covariance.base_kernel.lengthscale = 0.3
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    flags = dict(log_prob=fast, covar_root_decomposition=fast, solves=fast)
    with gpytorch.settings.max_cholesky_size(0), gpytorch.settings.fast_computations(**flags):
        model.train()
        loss = -mll(model(x), y)
        grads = torch.autograd.grad(loss, list(model.parameters()))
        model.eval()
        with torch.no_grad():
            prediction = model.likelihood(model(x_test))
    return [loss.detach(), *grads, prediction.mean, prediction.variance]


def main():
    torch.manual_seed(0)
    x = torch.rand(60, 2, dtype=torch.float64)
    y = torch.sin(6 * x[:, 0]) + x[:, 1] ** 2 + 0.05 * torch.randn(60, dtype=torch.float64)
    x_test = torch.rand(15, 2, dtype=torch.float64)
    results = {"pykeops is keomlir": __import__("pykeops") is keomlir}
    kernels = {"rbf": (gpytorch.kernels.keops.RBFKernel, gpytorch.kernels.RBFKernel, {}),
               "matern": (gpytorch.kernels.keops.MaternKernel, gpytorch.kernels.MaternKernel, {"nu": 2.5})}
    for fast in (False, True):
        for name, (keops_kernel, plain_kernel, kw) in kernels.items():
            before = len(cpu._kernels)
            ours = fit_once(keops_kernel(**kw), x, y, x_test, fast)
            ran = len(cpu._kernels) - before
            want = fit_once(plain_kernel(**kw), x, y, x_test, fast)
            key = f"{name} {'fast' if fast else 'exact'}"
            results[key] = max(float((a - b).abs().max()) for a, b in zip(ours, want))
            results[key + " scale"] = max(float(b.abs().max()) for b in want)
            results[key + " kernels compiled"] = ran
    print(json.dumps(results))


if __name__ == "__main__":
    main()
