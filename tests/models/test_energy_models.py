"""Energy networks: an independent forward pass, padding-length, padded-value and permutation invariance,
the empty-jet guard, initialisers, dropout."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxebm.models import MLPConfig, MLPEnergy, TransformerConfig, TransformerEnergy, energy_fn
from jaxebm.models.transformer import MaskedSelfAttention

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


def energy_of_kind(kind: str, transformer):
    """``(params, apply)`` of the module fixture's transformer or of a small MLP energy."""
    if kind == "transformer":
        _, params, apply = transformer
        return params, apply
    model = MLPEnergy(MLPConfig(hidden_sizes=(16,)))
    return jax.jit(model.init)(jax.random.key(0), *jets(0)), jax.jit(lambda p, x, m: model.apply(p, x, m))


@pytest.mark.parametrize("kind", ["transformer", "mlp"])
def test_values_in_padded_slots_do_not_change_energy_or_get_gradient(kind, transformer):
    params, apply = energy_of_kind(kind, transformer)
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


# --- an independent numpy forward pass, and padding-length invariance --------------------------------

SMALL = TransformerConfig(num_layers=2, d_model=8, num_heads=2, ff_dim=16, projector_sizes=(8,))


def perturbed(params, seed, scale=0.3):
    """``params`` plus N(0, scale^2) on every leaf (LayerNorm scales and zero biases become generic)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: leaf + scale * rng.standard_normal(leaf.shape).astype(np.float32), params)


@pytest.fixture(scope="module", params=["none", "layer"])
def small_transformer(request):
    """A 2-block transformer (d_model 8) with generic parameters, and its jitted apply."""
    model = TransformerEnergy(TransformerConfig(**{**SMALL.__dict__, "norm": request.param}))
    params = perturbed(jax.jit(model.init)(jax.random.key(12), *jets(0)), seed=13)
    return model, params, jax.jit(model.apply)


def reference_transformer_energy(params, x, mask, config):
    """The module doc's network written out in float64 numpy, one jet at a time."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)["params"]
    heads, head_dim = config.num_heads, config.d_model // config.num_heads

    def dense(h, layer):
        return h @ layer["kernel"] + layer["bias"]

    def norm(h, layer):
        if config.norm == "none":
            return h
        centred = h - h.mean(-1, keepdims=True)
        return centred / np.sqrt(np.square(centred).mean(-1, keepdims=True) + 1e-6) * layer["scale"] + layer["bias"]

    energies = []
    for features, real in zip(np.asarray(x, np.float64), np.asarray(mask, bool)):
        h = dense(np.where(real[:, None], features, 0.0), p["embed"])  # (N, d_model)
        for layer in range(config.num_layers):
            block = p[f"block_{layer}"]
            qkv = dense(norm(h, block.get("norm_attention")), block["attention"]["qkv"])
            qkv = qkv.reshape(len(h), 3, heads, head_dim)
            attended = np.zeros((len(h), heads, head_dim))
            for head in range(heads):
                query, key, value = qkv[:, 0, head], qkv[:, 1, head], qkv[:, 2, head]
                if real.any():  # no real key: zero attention output
                    scores = query @ key[real].T / np.sqrt(head_dim)  # (N, real keys)
                    weights = np.exp(scores - scores.max(-1, keepdims=True))
                    attended[:, head] = (weights / weights.sum(-1, keepdims=True)) @ value[real]
            h = h + dense(attended.reshape(len(h), -1), block["attention"]["out"])
            hidden = np.maximum(dense(norm(h, block.get("norm_ff")), block["ff_in"]), 0.0)
            h = h + dense(hidden, block["ff_out"])
        pooled = norm(h, p.get("norm_final"))[real].sum(0)
        for index in range(len(config.projector_sizes)):
            pooled = dense(pooled, p[f"projector_{index}"])
            pooled = pooled / (1.0 + np.exp(-pooled))  # swish
        energies.append(dense(pooled, p["energy"])[0])
    return np.array(energies)


def test_transformer_matches_an_independent_numpy_forward_pass(small_transformer):
    model, params, apply = small_transformer
    x, mask = jets(10, batch=7)  # multiplicities 1..6 and 1
    mask = mask.at[6].set(False)  # and a jet without constituents
    x = jnp.where(mask[..., None], x, 30.0 * jax.random.normal(jax.random.key(11), x.shape))
    np.testing.assert_allclose(apply(params, x, mask), reference_transformer_energy(params, x, mask, model.config),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("num_real", [1, 4])
def test_transformer_energy_does_not_depend_on_the_padding_length(num_real, small_transformer):
    """E(x padded to N slots, garbage in the padding, with its mask) = E(x on its real slots, all True)."""
    _, params, apply = small_transformer
    x = jax.random.normal(jax.random.key(14), (3, num_real, F))
    garbage = 100.0 * jax.random.normal(jax.random.key(15), (3, N - num_real, F))
    mask = jnp.broadcast_to(jnp.arange(N) < num_real, (3, N))
    np.testing.assert_allclose(apply(params, jnp.concatenate([x, garbage], axis=1), mask),
                               apply(params, x, jnp.ones((3, num_real), bool)), rtol=1e-5, atol=1e-5)


def test_mlp_energy_of_padded_jets_equals_the_mlp_on_the_real_slots():
    """Mask mode MLP: padded slots enter as zeros, so with padding it is the MLP of the real slots
    whose first kernel keeps only the rows of those slots (the flattened layout is slot-major)."""
    num_real = 3
    model = MLPEnergy(MLPConfig(hidden_sizes=(8, 8)))
    x = jax.random.normal(jax.random.key(19), (4, num_real, F))
    garbage = 100.0 * jax.random.normal(jax.random.key(20), (4, N - num_real, F))
    mask = jnp.broadcast_to(jnp.arange(N) < num_real, (4, N))
    params = perturbed(jax.jit(model.init)(jax.random.key(21), *jets(0)), seed=22)
    short = jax.tree.map(lambda a: a, params)
    short["params"]["hidden_0"]["kernel"] = params["params"]["hidden_0"]["kernel"][: num_real * F]
    apply = jax.jit(model.apply)
    np.testing.assert_allclose(apply(params, jnp.concatenate([x, garbage], axis=1), mask),
                               apply(short, x, jnp.ones((4, num_real), bool)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["transformer", "mlp"])
def test_nan_in_padded_slots_leaves_energy_and_gradient_finite(kind, transformer):
    """Padded slots are zeroed at the input: NaN there (a NaN-padded array) must not reach E or grad_x E."""
    params, apply = energy_of_kind(kind, transformer)
    x, mask = jets(23)
    nan_padded = jnp.where(mask[..., None], x, jnp.nan)
    np.testing.assert_array_equal(apply(params, nan_padded, mask), apply(params, x, mask))
    grad = np.asarray(jax.jit(jax.grad(lambda y: apply(params, y, mask).sum()))(nan_padded))
    np.testing.assert_array_equal(grad[~np.asarray(mask)], 0.0)
    assert np.all(np.isfinite(grad))


def test_attention_without_real_keys_outputs_only_its_bias():
    """A jet with no real constituent: every query gets zero attention (output = the out layer's bias);
    the real queries of a jet with real keys do not depend on the values in its padded slots."""
    attention = MaskedSelfAttention(SMALL)
    h = jax.random.normal(jax.random.key(24), (2, N, SMALL.d_model))
    mask = jnp.array([[False] * N, [True, True] + [False] * (N - 2)])
    params = perturbed(jax.jit(attention.init, static_argnums=3)(jax.random.key(25), h, mask, True), seed=26)
    apply = jax.jit(attention.apply, static_argnums=3)
    out = apply(params, h, mask, True)
    np.testing.assert_allclose(out[0], np.broadcast_to(params["params"]["out"]["bias"], (N, SMALL.d_model)),
                               rtol=1e-6)
    assert np.abs(np.asarray(out[0])).max() > 0.1  # the bias is not zero: the test can tell
    garbage = h.at[1, 2:].set(50.0)
    np.testing.assert_allclose(apply(params, garbage, mask, True)[1, :2], out[1, :2], rtol=1e-5, atol=1e-6)
