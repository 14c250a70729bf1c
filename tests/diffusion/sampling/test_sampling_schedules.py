"""Noise schedule, sigma<->timestep and scheduler formulas against sampling.md §1-§3 reference values."""
import math

import pytest
import torch

from diffusion.sampling import schedules as S
from diffusion.sampling.parametrization import DiscreteSchedule

SCHED = DiscreteSchedule()

# sampling.md §2.1 (n = 10), rounded to 6 decimals
REFERENCE_10 = {
    "simple": [14.614641, 8.302803, 5.087763, 3.321083, 2.276463, 1.612886, 1.160578, 0.82986, 0.569285, 0.341674, 0],
    "sgm_uniform": [14.61464, 8.307171, 5.092408, 3.325069, 2.279731, 1.61558, 1.162865, 0.831884, 0.571189, 0.343705, 0],
    "karras": [14.614643, 9.102929, 5.478392, 3.168605, 1.749418, 0.914073, 0.446918, 0.201398, 0.08191, 0.029167, 0],
    "exponential": [14.61464, 7.324869, 3.67123, 1.840024, 0.922221, 0.462218, 0.231664, 0.11611, 0.058195, 0.029167, 0],
    "ddim_uniform": [8.390685, 5.134431, 3.347764, 2.292854, 1.623692, 1.168216, 0.835653, 0.57405, 0.346187, 0.041314, 0],
    "beta": [14.614641, 11.54277, 7.371844, 4.372802, 2.615236, 1.618279, 1.027329, 0.654885, 0.39551, 0.199059, 0],
    "normal": [14.61464, 7.839883, 4.609174, 2.918307, 1.950161, 1.344928, 0.932358, 0.624977, 0.368658, 0.029167, 0],
    "linear_quadratic": [14.614641, 14.541568, 14.468495, 14.395422, 14.322349, 14.249275, 13.620845, 11.881703, 9.031848, 5.07128, 0],
    "kl_optimal": [14.614633, 4.23235, 2.393719, 1.597066, 1.132997, 0.815244, 0.572914, 0.372484, 0.195288, 0.029167, 0],
}


def close(actual, expected, tol=1e-5):
    return torch.allclose(torch.as_tensor(actual, dtype=torch.float64),
                          torch.tensor(expected, dtype=torch.float64), atol=tol, rtol=0)


def test_discrete_schedule_matches_the_spec_table_bit_for_bit():
    s = SCHED.sigmas
    assert s.dtype == torch.float32 and s.shape == (1000,)
    assert float(s[0]) == 0.029167158529162407
    assert float(s[999]) == 14.614641189575195
    assert float(s[1]) == 0.04131441190838814
    assert float(s[2]) == 0.05068035423755646
    assert float(s[499]) == 1.6128861904144287
    assert (float(s[997]), float(s[998])) == (14.438569068908691, 14.526275634765625)
    assert float(SCHED.log_sigmas[0]) == -3.5347118377685547


def test_sigma_to_timestep_picks_the_nearest_table_entry_in_log_space():
    assert float(SCHED.timestep(torch.tensor(0.5))) == 169
    assert float(SCHED.timestep(torch.tensor(14.0))) == 992
    assert float(SCHED.timestep(SCHED.sigma_max)) == 999
    assert SCHED.timestep(torch.tensor([0.5, 14.0])).tolist() == [169.0, 992.0]


def test_timestep_to_sigma_interpolates_log_linearly():
    assert float(SCHED.sigma(250.5)) == pytest.approx(0.6970973014831543, abs=1e-7)
    assert float(SCHED.sigma(999)) == pytest.approx(float(SCHED.sigma_max), rel=1e-6)


def test_percent_to_sigma_matches_the_spec_examples():
    assert SCHED.percent_to_sigma(0.0) == 999999999.9
    assert SCHED.percent_to_sigma(1.0) == 0.0
    assert SCHED.percent_to_sigma(0.2) == pytest.approx(5.092408180236816, abs=1e-6)
    assert SCHED.percent_to_sigma(0.5) == pytest.approx(1.6155803203582764, abs=1e-6)
    assert SCHED.percent_to_sigma(0.8) == pytest.approx(0.5711888670921326, abs=1e-6)


@pytest.mark.parametrize("name", list(REFERENCE_10))
def test_every_scheduler_matches_its_ten_step_reference_values(name):
    sig = S.calculate_sigmas(SCHED, name, 10)
    assert sig.dtype == torch.float32
    assert close(sig, REFERENCE_10[name]), sig.tolist()


def test_scheduler_names_are_comfyuis_combo_order():
    assert S.SCHEDULER_NAMES == ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform",
                                 "beta", "normal", "linear_quadratic", "kl_optimal"]


def test_three_step_simple_and_ddim_uniform_match_the_spec():
    assert close(S.calculate_sigmas(SCHED, "simple", 3), [14.614641, 2.918307, 0.932358, 0])
    assert close(S.calculate_sigmas(SCHED, "ddim_uniform", 3), [2.929549, 0.935510, 0.041314, 0])


@pytest.mark.parametrize("n,steps", [(6, 7), (7, 8), (11, 12), (30, 31), (33, 34), (3, 3), (20, 20)])
def test_ddim_uniform_runs_more_steps_than_asked_for_some_counts(n, steps):
    assert len(S.calculate_sigmas(SCHED, "ddim_uniform", n)) == steps + 1


def test_beta_schedule_drops_duplicate_timesteps():
    assert len(S.calculate_sigmas(SCHED, "beta", 200)) == 200


def test_karras_follows_its_closed_form_for_any_step_count():
    n, rho = 7, 7.0
    lo, hi = float(SCHED.sigma_min), float(SCHED.sigma_max)
    expected = [(hi ** (1 / rho) + k / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
                for k in range(n)] + [0]
    assert close(S.calculate_sigmas(SCHED, "karras", n), expected, 1e-4)


def test_exponential_and_kl_optimal_follow_their_closed_forms():
    n = 5
    lo, hi = float(SCHED.sigma_min), float(SCHED.sigma_max)
    expo = [math.exp(math.log(hi) + k / (n - 1) * (math.log(lo) - math.log(hi))) for k in range(n)]
    assert close(S.calculate_sigmas(SCHED, "exponential", n), expo + [0], 1e-4)
    kl = [math.tan(k / (n - 1) * math.atan(lo) + (1 - k / (n - 1)) * math.atan(hi)) for k in range(n)]
    assert close(S.calculate_sigmas(SCHED, "kl_optimal", n), kl + [0], 1e-4)


def test_discard_penultimate_samplers_skip_the_tiny_last_sigma():
    sig = S.ksampler_sigmas(SCHED, "karras", 10, discard_penultimate=True)
    assert close(sig, [14.614643, 9.558263, 6.082151, 3.751254, 2.232154, 1.274101, 0.692571,
                       0.355183, 0.169757, 0.074363, 0])


def test_denoise_below_one_keeps_the_tail_of_a_longer_schedule():
    assert close(S.ksampler_sigmas(SCHED, "normal", 10, denoise=0.5),
                 [1.480581, 1.245813, 1.048142, 0.878428, 0.729719, 0.596434, 0.473585, 0.355545,
                  0.232164, 0.029167, 0])
    assert close(S.ksampler_sigmas(SCHED, "karras", 4, denoise=0.6),
                 [2.232154, 0.692571, 0.169757, 0.029167, 0])


def test_denoise_zero_gives_an_empty_schedule():
    assert len(S.ksampler_sigmas(SCHED, "normal", 10, denoise=0.0)) == 0


def test_advanced_start_and_end_steps_cut_the_schedule():
    full = S.calculate_sigmas(SCHED, "normal", 10)
    first = S.cut_sigmas(full, start_step=0, last_step=4, force_full_denoise=False)
    assert torch.equal(first, full[:5])
    forced = S.cut_sigmas(full, start_step=0, last_step=4, force_full_denoise=True)
    assert torch.equal(forced[:-1], full[:4]) and float(forced[-1]) == 0.0
    second = S.cut_sigmas(full, start_step=4, last_step=10000)
    assert torch.equal(second, full[4:])
    assert len(S.cut_sigmas(full, start_step=10)) == 0


def test_sd_turbo_scheduler_uses_timesteps_999_899_and_so_on():
    sig = S.sd_turbo_sigmas(SCHED, 2, 1.0)
    assert close(sig, [float(SCHED.sigmas[999]), float(SCHED.sigmas[899]), 0])
    half = S.sd_turbo_sigmas(SCHED, 1, 0.5)
    assert close(half, [float(SCHED.sigmas[499]), 0])


def test_zero_terminal_snr_schedule_ends_at_a_huge_sigma_and_keeps_the_first():
    z = DiscreteSchedule(zsnr=True)
    assert float(z.sigmas[-1]) > 4000
    assert float(z.sigmas[0]) == pytest.approx(float(SCHED.sigmas[0]), rel=1e-4)
