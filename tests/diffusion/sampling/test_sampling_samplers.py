"""Every sampler against exact denoisers with closed-form answers (a point mass, a Gaussian).

For data N(mu, s²) the optimal denoiser is D(x, σ) = mu + s²/(s²+σ²)·(x − mu) and the probability-flow
ODE has the exact solution x(σ) = mu + (x_T − mu)·√(s²+σ²)/√(s²+σ_T²); for a point mass x0 every
sampler must land on x0 (or on the ODE line when it stops at a non-zero sigma).
"""
import pytest
import torch

from diffusion.sampling import samplers as SM
from diffusion.sampling import schedules as S
from diffusion.sampling.noise import BrownianTreeNoise, DefaultNoise
from diffusion.sampling.parametrization import DiscreteSchedule, Prediction

SCHED = DiscreteSchedule()
MU, STD = 0.5, 0.3
DETERMINISTIC = [n for n, s in SM.SAMPLERS.items() if s.noise == "none"]
STOCHASTIC = [n for n, s in SM.SAMPLERS.items() if s.noise != "none"]

# Max abs error vs the exact ODE solution at 20 karras steps: first-order methods are looser.
ODE_TOLERANCE = {"euler": 0.15, "ddim": 0.15, "euler_cfg_pp": 0.15, "heunpp2": 0.15,
                 "gradient_estimation": 0.1, "gradient_estimation_cfg_pp": 0.1}
# |std - 0.3| at 30 karras steps; first-order ancestral methods lag behind.
STD_TOLERANCE = {"euler_ancestral": 0.05, "euler_ancestral_cfg_pp": 0.05, "ddpm": 0.05}


def gaussian_denoiser(x, sigma):
    return MU + STD ** 2 / (STD ** 2 + sigma ** 2) * (x - MU)


def make_noise(sampler, x, sigmas, seed=1):
    factories = {
        "default": lambda: DefaultNoise(x, seed),
        "brownian": lambda: BrownianTreeNoise(x, sigmas, seed),
        "brownian_device": lambda: BrownianTreeNoise(x, sigmas, seed, on_device=True),
    }
    return factories[sampler.noise]() if sampler.noise in factories else None


def end_sigma(name, sigmas):
    """Where a sampler stops: dpm_fast/dpm_adaptive at the last non-zero sigma, UniPC at 0.001."""
    if name in ("dpm_fast", "dpm_adaptive"):
        return sigmas[-2]
    return torch.tensor(1e-3 if name.startswith("uni_pc") else 0.0)


def run(name, denoiser, steps, seed=1, shape=(1, 4, 32, 32), scheduler="karras"):
    sampler = SM.SAMPLERS[name]
    sigmas = S.ksampler_sigmas(SCHED, scheduler, steps, discard_penultimate=sampler.discard_penultimate)
    start = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    x_t = start * (1 + sigmas[0] ** 2) ** 0.5
    return sampler.fn(denoiser, x_t, sigmas, noise=make_noise(sampler, x_t, sigmas, seed)), x_t, sigmas


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_samplers_follow_the_exact_ode_of_a_gaussian(name):
    out, x_t, sigmas = run(name, gaussian_denoiser, 20)
    end = end_sigma(name, sigmas)
    exact = MU + (x_t - MU) * (STD ** 2 + end ** 2) ** 0.5 / (STD ** 2 + sigmas[0] ** 2) ** 0.5
    assert float((out - exact).abs().max()) < ODE_TOLERANCE.get(name, 0.05)


@pytest.mark.parametrize("name", [n for n in DETERMINISTIC if n != "dpm_adaptive"])
def test_deterministic_samplers_get_closer_to_the_exact_ode_with_more_steps(name):
    # Stop at a non-zero sigma so every step is a regular solver step (no final jump to D).
    errors = []
    for steps in (12, 48):
        sigmas = S.calculate_sigmas(SCHED, "karras", steps)[:-1]
        x_t = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * sigmas[0]
        out = SM.SAMPLERS[name].fn(gaussian_denoiser, x_t, sigmas)
        end = sigmas[-1] * (1 + 1e-6) ** 0.5 if name.startswith("uni_pc") else sigmas[-1]
        exact = MU + (x_t - MU) * (STD ** 2 + end ** 2) ** 0.5 / (STD ** 2 + sigmas[0] ** 2) ** 0.5
        errors.append(float((out - exact).abs().max()))
    assert errors[1] < 0.6 * errors[0], errors  # at least first order: 4x steps, far less error


# LCM assumes a consistency model: with an exact Gaussian denoiser it shrinks the variance by
# design, so it is checked by the point-mass test only.
@pytest.mark.parametrize("name", [n for n in STOCHASTIC if n != "lcm"])
def test_stochastic_samplers_draw_from_the_right_gaussian(name):
    out, _, _ = run(name, gaussian_denoiser, 30)
    assert abs(float(out.mean()) - MU) < 0.02
    assert abs(float(out.std()) - STD) < STD_TOLERANCE.get(name, 0.02)


@pytest.mark.parametrize("name", list(SM.SAMPLERS))
def test_every_sampler_recovers_a_point_mass(name):
    target = torch.linspace(-1, 1, 4 * 8 * 8).reshape(1, 4, 8, 8)
    out, x_t, sigmas = run(name, lambda x, sigma: target, 8, shape=(1, 4, 8, 8))
    target = target + (x_t - target) * end_sigma(name, sigmas) / sigmas[0]  # on the ODE line
    assert torch.allclose(out, target, atol=2e-4), float((out - target).abs().max())


@pytest.mark.parametrize("name", STOCHASTIC)
def test_the_same_seed_gives_identical_results_and_another_seed_differs(name):
    a, _, _ = run(name, gaussian_denoiser, 4, seed=7, shape=(1, 4, 8, 8))
    b, _, _ = run(name, gaussian_denoiser, 4, seed=7, shape=(1, 4, 8, 8))
    c, _, _ = run(name, gaussian_denoiser, 4, seed=8, shape=(1, 4, 8, 8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_samplers_never_touch_the_global_rng():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    for name in STOCHASTIC:
        run(name, gaussian_denoiser, 3, shape=(1, 4, 8, 8))
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m", "uni_pc", "euler_ancestral"])
def test_on_step_is_called_once_per_step_with_the_denoised_estimate(name):
    calls = []
    sampler = SM.SAMPLERS[name]
    sigmas = S.calculate_sigmas(SCHED, "normal", 5)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 14
    sampler.fn(gaussian_denoiser, x, sigmas, noise=make_noise(sampler, x, sigmas),
               on_step=lambda i, x_i, d: calls.append((i, d.shape)))
    assert [i for i, _ in calls] == list(range(5))
    assert all(shape == x.shape for _, shape in calls)


def test_eps_and_v_parametrizations_agree_on_an_equivalent_model():
    def make_model(kind):
        def model(x, sigma):  # what a network of this prediction type outputs
            d = gaussian_denoiser(x, sigma)
            if kind == "eps":
                return (x - d) / sigma
            return (x / (sigma ** 2 + 1) - d) * (sigma ** 2 + 1) ** 0.5 / sigma
        pred = Prediction(kind)
        return lambda x, sigma: pred.calculate_denoised(sigma, model(x, sigma), x)

    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3)) * 5
    for sigma in (14.6, 1.0, 0.03):
        s = torch.tensor(sigma)
        assert torch.allclose(make_model("eps")(x, s), make_model("v")(x, s), atol=1e-5)
    sigmas = S.calculate_sigmas(SCHED, "karras", 6)
    a = SM.sample_dpmpp_2m(make_model("eps"), x, sigmas)
    b = SM.sample_dpmpp_2m(make_model("v"), x, sigmas)
    assert torch.allclose(a, b, atol=1e-4)


def test_input_scaling_and_noise_scaling_follow_the_spec():
    pred = Prediction("eps")
    x = torch.ones(1, 4, 2, 2)
    assert torch.allclose(pred.calculate_input(torch.tensor(3.0), x), x / 10 ** 0.5)
    n = torch.ones(1, 4, 2, 2)
    assert torch.allclose(pred.noise_scaling(torch.tensor(2.0), n, x, True), n * 5 ** 0.5 + x)
    assert torch.allclose(pred.noise_scaling(torch.tensor(2.0), n, x, False), n * 2 + x)


def test_every_comfyui_sampler_name_is_implemented_and_unknown_names_fail_by_name():
    assert len(SM.SAMPLER_NAMES) == 44 and len(set(SM.SAMPLER_NAMES)) == 44
    assert set(SM.SAMPLERS) == set(SM.SAMPLER_NAMES)
    with pytest.raises(SM.UnsupportedSampler, match="nonsense"):
        SM.get_sampler("nonsense")


def test_every_sampler_names_its_paper_in_a_one_line_docstring():
    for sampler in SM.SAMPLERS.values():
        doc = sampler.fn.__doc__
        assert doc and "\n" not in doc.strip()
        assert any(ch.isdigit() for ch in doc), doc  # a year or an arXiv id


class Guided:
    """A denoiser under CFG: `with_uncond` also returns the unconditional prediction, as CFGDenoiser does."""

    def __init__(self, guided, uncond):
        self.guided, self.uncond = guided, uncond

    def __call__(self, x, sigma):
        return self.guided(x, sigma)

    def with_uncond(self, x, sigma):
        return self.guided(x, sigma), self.uncond(x, sigma)


CFG_PP = [n for n in SM.SAMPLERS if n.endswith("_cfg_pp")]


def test_every_cfg_pp_sampler_asks_for_the_unconditional_prediction():
    assert len(CFG_PP) == 7 and all(SM.SAMPLERS[n].needs_uncond for n in CFG_PP)


@pytest.mark.parametrize("name", [n for n in CFG_PP if SM.SAMPLERS[n].noise == "none"])
def test_a_cfg_pp_step_renoises_along_the_unconditional_prediction(name):
    # CFG++ (Chung et al. 2024): from sigma 2 to 1, x <- D + 1 * (x - D_uncond) / 2, where plain CFG
    # samplers would use (x - D).
    d, u, x = torch.full((1, 4, 2, 2), 0.5), torch.full((1, 4, 2, 2), -1.0), torch.full((1, 4, 2, 2), 3.0)
    out = SM.SAMPLERS[name].fn(Guided(lambda *_: d, lambda *_: u), x, torch.tensor([2.0, 1.0]))
    assert torch.allclose(out, d + (x - u) / 2)


def test_gradient_estimation_cfg_pp_corrects_with_the_unconditional_direction():
    d, u, x0 = torch.tensor(0.5), torch.tensor(-1.0), torch.tensor(3.0)
    out = SM.sample_gradient_estimation_cfg_pp(Guided(lambda *_: d, lambda *_: u), x0, torch.tensor([2.0, 1.0, 0.5]))
    d0 = (x0 - u) / 2
    x1 = d + d0 * 1.0
    d1 = (x1 - u) / 1.0
    assert torch.allclose(out, d + d1 * 0.5 + (2.0 - 1) * (d1 - d0) * (0.5 - 1.0))


@pytest.mark.parametrize("name", CFG_PP)
def test_without_guidance_a_cfg_pp_sampler_is_its_plain_sampler(name):
    plain = name.removesuffix("_cfg_pp")
    out, _, _ = run(name, Guided(gaussian_denoiser, gaussian_denoiser), 10, shape=(1, 4, 8, 8))
    expected, _, _ = run(plain, gaussian_denoiser, 10, shape=(1, 4, 8, 8))
    assert torch.allclose(out, expected, atol=1e-5), float((out - expected).abs().max())
