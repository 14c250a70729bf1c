"""Seeded noise reproduces ComfyUI's CPU recipe (sampling.md §4 test vectors)."""
import pytest
import torch

from diffusion.sampling.noise import MAX_SEED, BrownianTreeNoise, DefaultNoise, initial_noise


def test_initial_noise_is_one_randn_call_from_a_private_generator():
    noise = initial_noise(torch.zeros(2, 4, 8, 8), 42)
    assert noise[0, 0, 0, :4].tolist() == [1.9269152879714966, 1.4872840642929077,
                                           0.9007171988487244, -2.1055209636688232]
    assert noise[1, 0, 0, :4].tolist() == [-0.685481607913971, 0.5635589957237244,
                                           -1.507175087928772, -1.610666036605835]
    expected = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(42))
    assert torch.equal(noise, expected)


def test_batch_index_picks_the_draw_each_element_would_have_had_alone():
    noise = initial_noise(torch.zeros(2, 4, 8, 8), 42, batch_index=[1, 3])
    assert noise[0, 0, 0, :4].tolist() == [-0.685481607913971, 0.5635589957237244,
                                           -1.507175087928772, -1.610666036605835]
    g = torch.Generator().manual_seed(42)
    draws = [torch.randn(1, 4, 8, 8, generator=g) for _ in range(4)]
    assert torch.equal(noise[1:], draws[3])


def test_batch_index_uses_per_element_draws_even_when_sizes_are_not_multiples_of_16():
    latent = torch.zeros(2, 4, 3, 3)  # C·h·w = 36: one big draw differs from per-element draws
    g = torch.Generator().manual_seed(5)
    draws = [torch.randn(1, 4, 3, 3, generator=g) for _ in range(2)]
    assert torch.equal(initial_noise(latent, 5, batch_index=[0, 1]), torch.cat(draws))
    assert torch.equal(initial_noise(latent, 5, batch_index=[1, 1])[0], draws[1][0])


def test_initial_noise_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    initial_noise(torch.zeros(1, 4, 8, 8), 1234)
    assert torch.equal(state, torch.get_rng_state())


def test_ancestral_noise_is_seeded_with_seed_plus_one():
    draw = DefaultNoise(torch.zeros(1, 4, 8, 8), 42)(torch.tensor(1.0), torch.tensor(0.5))
    assert draw[0, 0, 0, :4].tolist() == [-0.016603613272309303, -0.4667949378490448,
                                          2.090897560119629, 0.6149028539657593]


def test_the_largest_seed_is_a_clear_error_for_ancestral_noise():
    initial_noise(torch.zeros(1, 4, 2, 2), MAX_SEED)  # fine for the initial noise
    with pytest.raises(ValueError, match="too large"):
        DefaultNoise(torch.zeros(1, 4, 2, 2), MAX_SEED)


def test_brownian_tree_noise_matches_the_torchsde_test_vector():
    sigmas = torch.tensor([14.614641, 9.102929, 0.0291671585, 0.0])
    tree = BrownianTreeNoise(torch.zeros(1, 4, 8, 8), sigmas, 42)
    draw = tree(torch.tensor(14.614641), torch.tensor(9.102929))
    assert draw[0, 0, 0, :4].tolist() == pytest.approx(
        [-1.319483995437622, 0.8688865303993225, 0.9060261249542236, 0.4309041500091553], abs=1e-6)


def test_brownian_increments_are_consistent_when_an_interval_is_split():
    sigmas = torch.tensor([10.0, 1.0, 0.1, 0.0])
    tree = BrownianTreeNoise(torch.zeros(1, 4, 8, 8), sigmas, 3)
    whole = tree(torch.tensor(10.0), torch.tensor(1.0)) * 9 ** 0.5
    parts = (tree(torch.tensor(10.0), torch.tensor(4.0)) * 6 ** 0.5
             + tree(torch.tensor(4.0), torch.tensor(1.0)) * 3 ** 0.5)
    assert torch.allclose(whole, parts, atol=1e-4)
