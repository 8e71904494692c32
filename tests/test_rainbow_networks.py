"""NoisyLinear, the dueling and distributional heads, and the builder's defaults."""

import contextlib

import numpy as np
import pytest
import torch

from qzoo.errors import QzooError
from qzoo.networks import (
    MLP,
    MinAtarCNN,
    NatureCNN,
    NoisyLinear,
    QFunction,
    QNetwork,
    build_q_network,
    choose_network,
    weights_sha256,
)

VECTOR = ((4,), np.float32)
FRAMES = ((4, 84, 84), np.uint8)
GRID = ((4, 10, 10), np.uint8)


def test_defaults_build_todays_networks_bit_for_bit():
    # The Rainbow keywords at their defaults must not change a single weight of existing runs.
    for (shape, dtype), cls in [(VECTOR, MLP), (FRAMES, NatureCNN)]:
        torch.manual_seed(0)
        built = build_q_network(shape, dtype, 3)
        torch.manual_seed(0)
        direct = cls(4, 3)
        assert type(built) is cls
        assert weights_sha256(built) == weights_sha256(direct)


def test_minatar_grids_get_the_minatar_network():
    assert choose_network(*GRID) == "minatar"
    assert choose_network(*FRAMES) == "cnn"
    net = build_q_network(*GRID, n_actions=6)
    assert isinstance(net, MinAtarCNN)
    # Young & Tian 2019: conv 3x3x16 -> 16 * 8 * 8 = 1024 features -> 128 -> |A|.
    assert [tuple(p.shape) for p in net.parameters()] == [(16, 4, 3, 3), (16,), (128, 1024), (128,), (6, 128), (6,)]
    assert net(torch.zeros(2, 4, 10, 10, dtype=torch.uint8)).shape == (2, 6)


def test_noisy_linear_initialisation_follows_fortunato():
    layer = NoisyLinear(16, 3)
    # sigma = sigma0 / sqrt(p) = 0.5 / 4; mu within +-1/sqrt(p) = +-0.25.
    assert torch.all(layer.weight_sigma == 0.125) and torch.all(layer.bias_sigma == 0.125)
    assert layer.weight_mu.abs().max() <= 0.25 and layer.bias_mu.abs().max() <= 0.25


def test_noisy_linear_computes_the_factorised_noise_by_hand():
    layer = NoisyLinear(2, 1)
    with torch.no_grad():
        layer.weight_mu.copy_(torch.tensor([[1.0, 2.0]]))
        layer.bias_mu.fill_(0.5)
        layer.weight_sigma.fill_(0.1)
        layer.bias_sigma.fill_(0.2)
    torch.manual_seed(3)
    eps_in_raw, eps_out_raw = torch.randn(2), torch.randn(1)
    torch.manual_seed(3)
    layer.reset_noise()
    f = lambda x: x.sign() * x.abs().sqrt()  # noqa: E731
    assert torch.equal(layer.eps_in, f(eps_in_raw)) and torch.equal(layer.eps_out, f(eps_out_raw))
    x = torch.tensor([[1.0, -1.0]])
    # y = sum_i (mu_i + 0.1 f(out) f(in_i)) x_i + 0.5 + 0.2 f(out)
    expected = (1 + 0.1 * layer.eps_out[0] * layer.eps_in[0]) - (2 + 0.1 * layer.eps_out[0] * layer.eps_in[1])
    expected = expected + 0.5 + 0.2 * layer.eps_out[0]
    assert layer(x).item() == pytest.approx(expected.item(), rel=1e-6)
    layer.eval()  # evaluation: the mean network, 1 - 2 + 0.5
    assert layer(x).item() == pytest.approx(-0.5)


def test_reset_noise_changes_outputs_and_is_seeded():
    obs = torch.randn(5, 4)
    torch.manual_seed(0)
    net = build_q_network(*VECTOR, n_actions=3, noisy=True)
    first = net(obs)
    assert torch.equal(net(obs), first)  # the noise holds until it is reset
    net.reset_noise()
    assert not torch.allclose(net(obs), first)
    torch.manual_seed(0)
    again = build_q_network(*VECTOR, n_actions=3, noisy=True)
    assert torch.equal(again(obs), first)
    assert all(isinstance(m, NoisyLinear) for m in net.advantage if not isinstance(m, torch.nn.ReLU))


@pytest.mark.parametrize("rows", [1, NoisyLinear.FACTORISED_ROWS, NoisyLinear.FACTORISED_ROWS + 1])
def test_a_small_pass_without_gradients_computes_the_noisy_layer_factorised(rows):
    # Acting (one observation, no graph) never builds mu_w + sigma_w * eps_w: the same sum, to float rounding.
    torch.manual_seed(0)
    layer = NoisyLinear(64, 32)
    x = torch.randn(rows, 64)
    with torch.no_grad():
        built = torch.nn.functional.linear(x, *layer.noisy_weights())
        assert torch.allclose(layer(x), built, atol=1e-6)
    assert torch.equal(layer(x).detach(), built)  # with gradients on, the weights are built as before


def test_shared_noisy_weights_give_the_same_values_and_gradients():
    # One gradient step's passes (s' without a graph, then s) with the noisy weights built once, against each
    # pass building its own.
    obs, next_obs = torch.randn(16, 4), torch.randn(16, 4)

    def step(net, shared):
        with net.shared_noisy_weights() if shared else contextlib.nullcontext():
            with torch.no_grad():
                next_out = net.head_outputs(next_obs)
            out = net.head_outputs(obs)
        net.zero_grad()
        (out.square().sum() + (out * next_out).sum()).backward()
        return out.detach(), next_out, [p.grad.clone() for p in net.parameters()]

    torch.manual_seed(0)
    net = build_q_network(*VECTOR, n_actions=3, noisy=True, dueling=True, distribution="c51", n_atoms=5)
    plain, shared = step(net, False), step(net, True)
    assert torch.equal(plain[0], shared[0]) and torch.equal(plain[1], shared[1])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain[2], shared[2]))
    assert all(layer.shared is None for layer in net.modules() if isinstance(layer, NoisyLinear))


def test_mean_weights_switch_only_the_noisy_layers_and_restore_them():
    torch.manual_seed(0)
    net = build_q_network(*VECTOR, n_actions=3, noisy=True, dueling=True)
    obs = torch.randn(5, 4)
    with net.mean_weights():
        mean = net(obs)
        assert net.training  # the network itself stays in train(): only its noisy layers switch
    assert all(m.training for m in net.modules())
    net.eval()
    assert torch.equal(mean, net(obs))  # what eval() gives: mu only
    net.train()
    assert not torch.allclose(net(obs), mean)


def test_dueling_removes_the_mean_advantage():
    torch.manual_seed(0)
    net = build_q_network(*VECTOR, n_actions=3, dueling=True)
    obs = torch.randn(5, 4)
    q = net(obs)
    value = net.value(net.body(obs))  # (B, 1)
    advantage = net.advantage(net.body(obs))  # (B, A)
    # Wang et al. 2016, eq. 9: Q = V + A - mean A, so mean_a Q(s, a) = V(s) and Q - V has zero mean.
    assert q.shape == (5, 3)
    assert torch.allclose(q.mean(dim=1), value.squeeze(1), atol=1e-6)
    assert torch.allclose(q, value + advantage - advantage.mean(dim=1, keepdim=True))


def test_dueling_by_hand():
    net = QNetwork(torch.nn.Identity(), 1, 3, (), dueling=True)
    with torch.no_grad():
        net.value[0].weight.fill_(0.0)
        net.value[0].bias.fill_(10.0)  # V = 10
        net.advantage[0].weight.fill_(0.0)
        net.advantage[0].bias.copy_(torch.tensor([1.0, 2.0, 6.0]))  # A = 1 2 6, mean 3
    assert net(torch.zeros(1, 1)).tolist() == [[8.0, 9.0, 13.0]]


@pytest.mark.parametrize("shape, dtype", [VECTOR, FRAMES, GRID])
def test_c51_outputs_probabilities_and_expected_q(shape, dtype):
    torch.manual_seed(0)
    net = build_q_network(shape, dtype, 3, distribution="c51", n_atoms=51, v_min=-10, v_max=10, dueling=True)
    obs = torch.zeros(2, *shape, dtype=torch.uint8 if dtype == np.uint8 else torch.float32)
    probs = net(obs)
    assert probs.shape == (2, 3, 51)
    assert torch.all(probs >= 0) and torch.allclose(probs.sum(dim=2), torch.ones(2, 3))
    assert torch.allclose(torch.log_softmax(net.head_outputs(obs), dim=2).exp(), probs, atol=1e-6)  # logits
    assert net.support.tolist() == pytest.approx(np.linspace(-10, 10, 51).tolist(), abs=1e-6)
    assert torch.allclose(net.q_values(obs), (probs * net.support).sum(dim=2))


def test_qr_outputs_raw_quantiles_and_their_mean():
    torch.manual_seed(0)
    net = build_q_network(*VECTOR, n_actions=2, distribution="qr", n_atoms=200, noisy=True)
    quantiles = net(torch.randn(4, 4))
    assert quantiles.shape == (4, 2, 200)
    obs = torch.randn(4, 4)
    assert torch.allclose(net.q_values(obs), net(obs).mean(dim=2))


def test_builder_rejects_inconsistent_switches():
    with pytest.raises(QzooError):
        build_q_network(*VECTOR, n_actions=2, n_atoms=51)  # atoms without a distribution
    with pytest.raises(QzooError):
        build_q_network(*VECTOR, n_actions=2, distribution="iqn", n_atoms=8)
    with pytest.raises(QzooError):
        build_q_network(*VECTOR, n_actions=2, distribution="c51", n_atoms=1)


# ------------------------------------------------------------------ one interface for every Q-network

SEEDED_PLAIN_NETWORKS = [  # (network, its state_dict's names, sha256 of its state_dict after torch.manual_seed(0))
    (lambda: MLP(4, 2, (64, 64)), ["net.1.0.weight", "net.1.0.bias", "net.1.2.weight", "net.1.2.bias",
                                   "net.1.4.weight", "net.1.4.bias"], "d5fb5ec4463259c9"),
    (lambda: NatureCNN(4, 6, (512,), 84), ["features.0.weight", "features.0.bias", "features.2.weight",
                                           "features.2.bias", "features.4.weight", "features.4.bias",
                                           "head.0.weight", "head.0.bias", "head.2.weight", "head.2.bias"],
     "097eb2d8aa56cf11"),
    (lambda: MinAtarCNN(4, 6, (128,), 10), ["features.1.weight", "features.1.bias", "head.0.weight", "head.0.bias",
                                            "head.2.weight", "head.2.bias"], "801ebe4326ecbd0c"),
]


@pytest.mark.parametrize("make, names, sha", SEEDED_PLAIN_NETWORKS, ids=["mlp", "nature_cnn", "minatar_cnn"])
def test_the_plain_networks_keep_their_state_dict_names_and_seeded_weights(make, names, sha):
    """Model files and run fingerprints hash these names and weights: they must not change (issue 12)."""
    torch.manual_seed(0)
    net = make()
    assert list(net.state_dict()) == names
    assert weights_sha256(net)[:16] == sha


@pytest.mark.parametrize("shape, dtype", [VECTOR, FRAMES, GRID], ids=["vector", "frames", "grid"])
@pytest.mark.parametrize("switches, atoms", [({}, 1), ({"dueling": True}, 1), ({"noisy": True}, 1),
                                             ({"distribution": "c51", "n_atoms": 5}, 5),
                                             ({"distribution": "qr", "n_atoms": 4}, 4)])
def test_every_q_network_answers_the_same_questions(shape, dtype, switches, atoms):
    torch.manual_seed(0)
    net = build_q_network(shape, dtype, 3, **switches)
    assert isinstance(net, QFunction)
    obs = torch.randint(0, 2, (2, *shape), dtype=torch.uint8) if dtype == np.uint8 else torch.randn(2, *shape)
    q, head = net.q_values(obs), net.head_outputs(obs)
    assert q.shape == (2, 3) and head.shape == (2, 3, atoms)
    if not switches:  # plain: Q itself, and the head's outputs are Q with one atom
        assert torch.equal(q, net(obs)) and torch.equal(head.squeeze(2), q)
    before = {name: b.clone() for name, b in net.named_buffers()}
    net.reset_noise()  # new noise where there is noise; nothing otherwise
    noisy = any(not torch.equal(before[name], b) for name, b in net.named_buffers())
    assert noisy == bool(switches.get("noisy"))
    flat = net.plain_mlp_layers()  # what qzoo.mlp_step.FlatMLP steps: a plain MLP of Q values or QR quantiles
    if (switches and switches.get("distribution") != "qr") or shape != VECTOR[0]:
        assert flat is None
    else:
        assert [m.weight.shape for m in flat] == [(64, 4), (64, 64), (3 * atoms, 64)]
