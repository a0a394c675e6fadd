"""The compute-precision policy of the conv autoencoder (NAE), the ConVAE and the RealNVP (issue 25, item 1):
bf16 operands with f32 accumulation and result in their Dense / MLP products, convolutions and everything
else float32; the float32 default is the code path of the models before the option."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.bench_precision import dot_signatures
from jaxebm.models.nae_autoencoder import ConvAE, ConvAEConfig
from jaxebm.models.jet_convae import ConVAE, ConVAEConfig
from jaxebm.models.flows import RealNVP, RealNVPConfig

CONFIGS = {
    "conv_ae": (ConvAEConfig, dict(image_size=8, latent_dim=3, channels=4, hidden_dim=16)),
    "convae": (ConVAEConfig, dict(num_particles=6, latent_dim=4, num_filters=4, kernel_size=2, num_linear=16,
                                  num_conv_layers=2)),
    "flow": (RealNVPConfig, dict(num_features=6, num_couplings=3, hidden_sizes=(16, 16))),
}


def _model(name: str, dtype: str):
    config_class, fields = CONFIGS[name]
    config = config_class(**fields, compute_dtype=dtype)
    return {"conv_ae": ConvAE, "convae": ConVAE, "flow": RealNVP}[name](config)


def _inputs(name: str) -> tuple:
    key = jax.random.key(0)
    if name == "conv_ae":
        return (jax.random.uniform(key, (5, 8, 8)) * 0.1,)
    if name == "convae":
        return jax.random.uniform(key, (5, 3, 6)), jax.random.key(1)
    return (jax.random.normal(key, (5, 6)),)


def _output_fn(name: str, model):
    """``(params, *inputs) -> scalar``: a loss-like sum of the network's float outputs."""
    if name == "flow":
        return lambda p, x: model.apply(p, x, method="log_prob").sum()
    if name == "convae":
        return lambda p, x, key: sum(jnp.sum(a) for a in model.apply(p, x, key))
    return lambda p, x: jnp.sum(model.apply(p, x))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bf16_policy_changes_only_the_products_and_keeps_everything_float32(name):
    inputs = _inputs(name)
    models = {d: _model(name, d) for d in ("float32", "bfloat16")}
    params = models["float32"].init(jax.random.key(2), *inputs)
    if name == "flow":  # its last layers start at zero (an identity flow): move them so the products count
        params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(3), p.shape), params)
    values, grads, signatures = {}, {}, {}
    for dtype, model in models.items():
        fn = jax.jit(jax.value_and_grad(_output_fn(name, model)))
        values[dtype], grads[dtype] = fn(params, *inputs)
        signatures[dtype] = dot_signatures(fn.lower(params, *inputs).as_text())
    assert set(signatures["float32"]) == {"f32,f32->f32"}
    assert signatures["bfloat16"].get("bf16,bf16->f32", 0) > 0 and "bf16,bf16->bf16" not in signatures["bfloat16"]
    assert not np.array_equal(values["float32"], values["bfloat16"])  # the policy is in effect
    np.testing.assert_allclose(values["bfloat16"], values["float32"], rtol=3e-2, atol=1e-3)
    leaves = jax.tree.leaves(grads["bfloat16"]) + jax.tree.leaves(params) + [values["bfloat16"]]
    assert {leaf.dtype for leaf in leaves if jnp.issubdtype(leaf.dtype, jnp.floating)} == {jnp.dtype("float32")}
    g32, g16 = (np.concatenate([np.ravel(a) for a in jax.tree.leaves(g)]) for g in (grads["float32"],
                                                                                   grads["bfloat16"]))
    assert np.linalg.norm(g16 - g32) < 5e-2 * np.linalg.norm(g32)


def test_convolutions_stay_float32_under_the_bf16_policy():
    for name in ("conv_ae", "convae"):
        model = _model(name, "bfloat16")
        inputs = _inputs(name)
        params = model.init(jax.random.key(2), *inputs)
        text = jax.jit(_output_fn(name, model)).lower(params, *inputs).as_text()
        convolutions = [line for line in text.splitlines() if "stablehlo.convolution" in line]
        assert convolutions and not any("bf16" in line for line in convolutions)


@pytest.mark.parametrize("config_class, fields", CONFIGS.values(), ids=sorted(CONFIGS))
def test_unknown_policy_is_refused_and_float32_is_the_default(config_class, fields):
    assert config_class(**fields).compute_dtype == "float32"
    with pytest.raises(ValueError, match="compute_dtype must be one of"):
        config_class(**fields, compute_dtype="float16")

