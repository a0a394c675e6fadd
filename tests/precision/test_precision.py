"""Compute-precision policy (issue 25): bf16 products with f32 accumulation, everything else f32."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.bench_precision import dot_signatures
from jaxebm.models import TransformerConfig, TransformerEnergy
from jaxebm.models.precision import bf16_dot_general, bf16_einsum
from jaxebm.train.cd import CDConfig, make_cd_step, make_noise_fn
from jaxebm.train.state import create_train_state

N = 6
SMALL = TransformerConfig(num_layers=2, d_model=32, num_heads=4, ff_dim=64, projector_sizes=(32, 32), dropout_rate=0.0)


def policy(dtype, config=SMALL):
    return TransformerEnergy(TransformerConfig(**{**config.__dict__, "compute_dtype": dtype}))


def jets(seed, batch=8):
    x = jnp.array([2.0, 0.0, 0.0]) + jnp.array([1.0, 0.1, 0.2]) * jax.random.normal(jax.random.key(seed), (batch, N, 3))
    return x, jnp.arange(N)[None, :] < (jnp.arange(batch) % N + 1)[:, None]


@pytest.fixture(scope="module")
def setup():
    x, mask = jets(0)
    params = jax.jit(policy("float32").init)(jax.random.key(1), x, mask)
    return params, x, mask


def energy_and_input_grad(model, params, x, mask):
    return jax.jit(jax.value_and_grad(lambda x: model.apply(params, x, mask).sum(), has_aux=False))


def test_unknown_policy_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"compute_dtype must be one of \('float32', 'bfloat16'\), got 'float16'"):
        TransformerConfig(compute_dtype="float16")


def test_bf16_energies_and_input_gradients_match_f32_to_bf16_accuracy(setup):
    params, x, mask = setup
    energy = {d: jax.jit(policy(d).apply)(params, x, mask) for d in ("float32", "bfloat16")}
    grad = {d: jax.jit(jax.grad(lambda y, d=d: policy(d).apply(params, y, mask).sum()))(x)
            for d in ("float32", "bfloat16")}
    assert not np.array_equal(energy["float32"], energy["bfloat16"])  # the policy is in effect
    scale = np.abs(np.asarray(energy["float32"])).max()
    np.testing.assert_allclose(energy["bfloat16"], energy["float32"], atol=2e-2 * scale)
    error = np.linalg.norm(grad["bfloat16"] - grad["float32"]) / np.linalg.norm(grad["float32"])
    assert 1e-5 < error < 3e-2


def test_bf16_policy_keeps_parameters_outputs_and_all_gradients_float32(setup):
    _, x, mask = setup
    model = policy("bfloat16")
    params = jax.jit(model.init)(jax.random.key(1), x, mask)
    energy, input_grad = jax.jit(jax.value_and_grad(lambda y: model.apply(params, y, mask).sum()))(x)
    param_grads = jax.jit(jax.grad(lambda p: model.apply(p, x, mask).sum()))(params)
    leaves = jax.tree.leaves(params) + jax.tree.leaves(param_grads) + [energy, input_grad]
    assert {str(leaf.dtype) for leaf in leaves} == {"float32"}
    assert all(np.isfinite(leaf).all() for leaf in leaves)


@pytest.mark.parametrize("dtype, expected", [("bfloat16", "bf16,bf16->f32"), ("float32", "f32,f32->f32")])
def test_every_product_of_energy_and_input_gradient_has_the_policys_dtypes(setup, dtype, expected):
    params, x, mask = setup
    model = policy(dtype)
    hlo = jax.jit(jax.value_and_grad(lambda y: model.apply(params, y, mask).sum())).lower(x).as_text()
    dots = dot_signatures(hlo)
    # Dense: embed, 4 per block x 2 blocks, 3 projector layers, forward and backward. Attention (scores,
    # weighted sum; float32 in both policies): 2 per block forward, 4 backward.
    num_dense_forward, num_attention = 1 + 4 * 2 + 3, 6 * 2
    assert set(dots) == {expected, "f32,f32->f32"} and dots[expected] >= 2 * num_dense_forward
    assert dots["f32,f32->f32"] == (num_attention if dtype == "bfloat16" else dots[expected])


@pytest.mark.parametrize("dims, shapes", [
    ((((1,), (0,)), ((), ())), ((5, 7), (7, 3))),                  # Dense
    ((((2,), (1,)), ((0,), (0,))), ((2, 5, 7), (2, 7, 3))),         # batched
    ((((0, 2), (2, 0)), ((), ())), ((4, 5, 3), (3, 6, 4))),         # two contracted dims, swapped order
])
def test_bf16_dot_general_and_its_gradients_match_lax_dot_general(dims, shapes):
    a, b = (jax.random.normal(jax.random.key(i), s) for i, s in enumerate(shapes))
    product = jax.lax.dot_general(a, b, dims, precision="highest")
    np.testing.assert_allclose(bf16_dot_general(a, b, dims), product, atol=2e-2 * np.abs(product).max())
    exact = lambda a, b: jnp.sum(jnp.sin(jax.lax.dot_general(a, b, dims, precision="highest")))  # noqa: E731
    fast = lambda a, b: jnp.sum(jnp.sin(bf16_dot_general(a, b, dims)))  # noqa: E731
    for g_fast, g_exact in zip(jax.grad(fast, (0, 1))(a, b), jax.grad(exact, (0, 1))(a, b)):
        assert g_fast.dtype == jnp.float32 and g_fast.shape == g_exact.shape
        assert np.linalg.norm(g_fast - g_exact) / np.linalg.norm(g_exact) < 2e-2


def test_bf16_einsum_refuses_a_spec_that_is_not_a_product():
    with pytest.raises(ValueError, match="product spec"):
        jax.grad(lambda a: bf16_einsum("ij,jk->i", a, a).sum())(jnp.ones((3, 3)))


def cd_run(dtype, iterations=12):
    """A short CD run on a toy problem: data at one point, chains starting from the paper's noise."""
    config = TransformerConfig(num_layers=1, d_model=16, num_heads=2, ff_dim=32, projector_sizes=(16,),
                               dropout_rate=0.0, compute_dtype=dtype)
    model = TransformerEnergy(config)
    cd = CDConfig(batch_size=16, buffer_size=64, num_langevin_steps=4, lr=3e-3, adam_b1=0.9, grad_clip_norm=1.0)
    noise_fn = make_noise_fn((2.0, 0.0, 0.0), (1.0, 0.1, 0.2), N)
    x = jnp.array([4.0, 0.3, -0.3]) + 0.05 * jax.random.normal(jax.random.key(5), (cd.batch_size, N, 3))
    mask = jnp.ones(x.shape[:2], bool)
    state = create_train_state(jax.random.key(0), model, cd, x, mask, noise_fn)
    step = make_cd_step(model, cd, noise_fn)
    gaps = []
    for _ in range(iterations):
        state, metrics = step(state, x, mask)
        gaps.append(float(metrics["gap"]))
    return state, np.array(gaps)


def test_short_bf16_cd_run_keeps_the_state_float32_and_learns_like_f32():
    (state32, gaps32), (state16, gaps16) = cd_run("float32"), cd_run("bfloat16")
    floats = [leaf for leaf in jax.tree.leaves((state16.params, state16.opt_state, state16.ema_params, state16.buffer))
              if jnp.issubdtype(leaf.dtype, jnp.floating)]
    assert {str(leaf.dtype) for leaf in floats} == {"float32"}
    assert not np.array_equal(gaps16, gaps32)  # the policy is in effect
    assert gaps32[-1] > gaps32[0] + 0.5 and gaps16[-1] > gaps16[0] + 0.5  # E(x-) - E(x+) opens up in both
    np.testing.assert_allclose(gaps16, gaps32, rtol=0.2, atol=0.1)
