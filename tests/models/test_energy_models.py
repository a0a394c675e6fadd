"""Energy networks: permutation and padding invariance, the empty-jet guard, initialisers, dropout."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm.models import MLPConfig, MLPEnergy, TransformerConfig, TransformerEnergy, energy_fn

N, F = 6, 3
TINY = TransformerConfig(num_layers=2, d_model=16, num_heads=2, ff_dim=32, projector_sizes=(24, 24))


def jets(seed, batch=5):
    """Features (B, N, F) and masks with multiplicities 1..N, real slots first."""
    x = jax.random.normal(jax.random.key(seed), (batch, N, F))
    multiplicity = jnp.arange(batch) % N + 1
    return x, jnp.arange(N)[None, :] < multiplicity[:, None]


@pytest.fixture(scope="module")
def transformer():
    model = TransformerEnergy(TINY)
    x, mask = jets(0)
    params = jax.jit(model.init)(jax.random.key(1), x, mask)
    return model, params, jax.jit(lambda p, x, m: model.apply(p, x, m))


def test_permuting_constituents_with_their_mask_keeps_the_energy(transformer):
    _, params, apply = transformer
    x, mask = jets(2)
    perms = jax.vmap(lambda k: jax.random.permutation(k, N))(jax.random.split(jax.random.key(3), x.shape[0]))
    x_perm = jnp.take_along_axis(x, perms[:, :, None], axis=1)
    mask_perm = jnp.take_along_axis(mask, perms, axis=1)
    assert not np.array_equal(mask_perm, mask)  # real slots really moved
    np.testing.assert_allclose(apply(params, x_perm, mask_perm), apply(params, x, mask), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["transformer", "mlp"])
def test_values_in_padded_slots_do_not_change_energy_or_get_gradient(kind, transformer):
    if kind == "transformer":
        _, params, apply = transformer
    else:
        model = MLPEnergy(MLPConfig(hidden_sizes=(16,)))
        params = jax.jit(model.init)(jax.random.key(0), *jets(0))
        apply = jax.jit(lambda p, x, m: model.apply(p, x, m))
    x, mask = jets(4)
    garbage = jnp.where(mask[..., None], x, 1e3 * jax.random.normal(jax.random.key(5), x.shape))
    np.testing.assert_array_equal(apply(params, garbage, mask), apply(params, x, mask))
    grad = jax.jit(jax.grad(lambda y: apply(params, y, mask).sum()))(garbage)
    assert np.all(np.asarray(grad)[~np.asarray(mask)] == 0.0)
    assert np.any(np.asarray(grad)[np.asarray(mask)] != 0.0)


def test_jet_without_constituents_has_finite_energy_and_gradients(transformer):
    model, params, apply = transformer
    x, mask = jets(6)
    mask = mask.at[0].set(False)
    energy = apply(params, x, mask)
    assert np.all(np.isfinite(energy))
    param_grad, input_grad = jax.jit(jax.grad(lambda p, y: model.apply(p, y, mask).sum(), argnums=(0, 1)))(params, x)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(param_grad))
    assert np.all(np.isfinite(input_grad)) and np.all(np.asarray(input_grad[0]) == 0.0)
    # the empty jet's energy is the projector applied to a zero vector: independent of its features
    np.testing.assert_array_equal(apply(params, x.at[0].set(7.0), mask)[0], energy[0])


def dense_layers(params):
    """(path, kernel, bias) of every Dense layer."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    kernels = {tuple(p[:-1]): leaf for p, leaf in flat if p[-1].key == "kernel"}
    biases = {tuple(p[:-1]): leaf for p, leaf in flat if p[-1].key == "bias"}
    return [(jax.tree_util.keystr(path), kernels[path], biases[path]) for path in kernels]


def test_torch_init_is_uniform_within_inverse_sqrt_fan_in(transformer):
    _, params, _ = transformer
    layers = dense_layers(params)
    assert len(layers) == 1 + 2 * 4 + 3  # embed, 2 blocks x (qkv, out, ff_in, ff_out), projector, energy
    for name, kernel, bias in layers:
        bound = 1.0 / np.sqrt(kernel.shape[0])
        assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound, name
    _, projector, bias = next(layer for layer in layers if "projector_1" in layer[0])  # 24 x 24
    bound = 1.0 / np.sqrt(24)
    assert np.abs(projector).max() > 0.9 * bound
    np.testing.assert_allclose(np.std(projector), bound / np.sqrt(3.0), rtol=0.15)  # uniform, not normal
    assert np.abs(bias).max() > 0.5 * bound


def test_dropout_only_when_not_deterministic_and_energy_fn_is_deterministic(transformer):
    model, params, apply = transformer
    x, mask = jets(7)
    train_apply = jax.jit(lambda key: model.apply(params, x, mask, deterministic=False, rngs={"dropout": key}))
    train = [train_apply(jax.random.key(k)) for k in (0, 1)]
    assert not np.allclose(train[0], train[1])
    fn = energy_fn(model, params, mask)
    energies = jax.jit(fn)(x)
    assert energies.shape == (x.shape[0],)
    np.testing.assert_allclose(energies, apply(params, x, mask), rtol=1e-6)


def test_energy_fn_blocks_parameter_gradients(transformer):
    model, params, _ = transformer
    x, mask = jets(8)
    grads = jax.jit(jax.grad(lambda p: energy_fn(model, p, mask)(x).sum()))(params)
    assert all(np.all(leaf == 0.0) for leaf in jax.tree.leaves(grads))


def test_bad_configs_and_shapes_raise():
    with pytest.raises(ValueError, match="num_heads"):
        TransformerConfig(d_model=10, num_heads=3)
    with pytest.raises(ValueError, match="norm"):
        TransformerConfig(norm="batch")
    with pytest.raises(ValueError, match="init"):
        MLPConfig(init="xavier")
    model = TransformerEnergy(TINY)
    with pytest.raises(ValueError, match="mask"):
        model.init(jax.random.key(0), jnp.zeros((2, N, F)), jnp.ones((2, N + 1), bool))


def test_lecun_init_and_layer_norm_options():
    model = TransformerEnergy(TransformerConfig(num_layers=1, d_model=64, num_heads=4, ff_dim=64,
                                                projector_sizes=(256,), norm="layer", ff_activation="gelu",
                                                init="lecun"))
    x, mask = jets(9)
    params = jax.jit(model.init)(jax.random.key(0), x, mask)
    assert "norm_final" in params["params"]
    for name, _, bias in dense_layers(params):
        assert np.all(bias == 0.0), name
    kernel = params["params"]["projector_0"]["kernel"]  # (64, 256): lecun_normal, variance 1 / fan_in
    np.testing.assert_allclose(np.std(kernel), 1.0 / np.sqrt(64), rtol=0.1)
    apply = jax.jit(model.apply)
    garbage = jnp.where(mask[..., None], x, 50.0)
    np.testing.assert_allclose(apply(params, garbage, mask), apply(params, x, mask), rtol=1e-6)
