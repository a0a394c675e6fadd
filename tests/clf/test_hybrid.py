"""Hybrid EBM-classifier: the model's energy, the CD step with a cross-entropy term (weight kappa), marginal and
class-conditional training chains, and a toy 3-class problem where one trained model classifies and detects out-of-distribution sets."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxebm.inference import anomaly_scores, model_outputs_fn
from jaxebm.metrics import auc
from jaxebm.models import TransformerConfig, TransformerEnergy
from jaxebm.models.common import class_energy_fn
from jaxebm.sampling import buffer
from jaxebm.train import CDConfig, create_train_state, make_cd_step, make_noise_fn
from jaxebm.train.cd import _cd_loss

NUM_SLOTS, NUM_CLASSES, BATCH = 3, 3, 48
TINY = dict(num_features=2, num_layers=1, d_model=8, num_heads=2, ff_dim=16, projector_sizes=(16,), dropout_rate=0.0)
CENTRES = np.array([[1.5, 0.0], [-0.75, 1.3], [-0.75, -1.3]], np.float32)  # class y: constituents near CENTRES[y]
NOISE_FN = make_noise_fn((0.0, 0.0), (1.5, 1.5), NUM_SLOTS)


def toy_jets(rng, labels, spread=0.15):
    """``(n, N, 2)`` constituents around their class centre and an all-True mask."""
    x = CENTRES[labels][:, None, :] + spread * rng.standard_normal((len(labels), NUM_SLOTS, 2))
    return x.astype(np.float32), np.ones((len(labels), NUM_SLOTS), bool)


def hybrid_model(**overrides):
    return TransformerEnergy(TransformerConfig(**(TINY | {"num_classes": NUM_CLASSES} | overrides)))


def test_energy_is_minus_logsumexp_of_the_logits_and_the_plain_model_is_unchanged():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, NUM_SLOTS, 2)).astype(np.float32)
    mask = np.array([[1, 1, 0]] * 5, bool)
    model = hybrid_model()
    params = model.init(jax.random.key(0), x, mask)
    logits = np.asarray(model.apply(params, x, mask, method="logits"), np.float64)
    assert logits.shape == (5, NUM_CLASSES) and np.ptp(logits) > 1e-3
    expected = -np.log(np.sum(np.exp(logits), axis=1))
    np.testing.assert_allclose(model.apply(params, x, mask), expected, rtol=1e-6, atol=1e-6)
    plain = TransformerEnergy(TransformerConfig(**TINY))
    plain_params = plain.init(jax.random.key(0), x, mask)
    assert "energy" in plain_params["params"] and plain.apply(plain_params, x, mask).shape == (5,)
    with pytest.raises(ValueError, match="hybrid model"):
        plain.apply(plain_params, x, mask, method="logits")
    with pytest.raises(ValueError, match="num_classes"):
        TransformerConfig(num_classes=1)


def test_bad_labels_and_configs_get_clear_errors():
    model = hybrid_model()
    config = CDConfig(batch_size=4, buffer_size=12, num_langevin_steps=1, classifier_weight=1.0)
    rng = np.random.default_rng(1)
    x, mask = toy_jets(rng, np.array([0, 1, 2, 0]))
    state = None  # the checks come before the state is touched
    step = make_cd_step(model, config, NOISE_FN)
    with pytest.raises(ValueError, match=r"lie in \[0, 3\)"):
        step(state, x, mask, np.array([0, 1, 3, 0]))
    with pytest.raises(ValueError, match=r"lie in \[0, 3\)"):
        step(state, x, mask, np.array([0, -1, 2, 0]))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        step(state, x, mask, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="integers"):
        step(state, x, mask, np.array([0.0, 1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="needs the labels"):
        step(state, x, mask)
    plain = CDConfig(batch_size=4, buffer_size=12, num_langevin_steps=1)
    with pytest.raises(ValueError, match="labels given to a plain"):
        make_cd_step(model, plain, NOISE_FN)(state, x, mask, np.array([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="needs a hybrid model"):
        make_cd_step(TransformerEnergy(TransformerConfig(**TINY)), config, NOISE_FN)
    with pytest.raises(ValueError, match="not both 0"):
        CDConfig(cd_weight=0.0, classifier_weight=0.0)
    with pytest.raises(ValueError, match="class_conditional"):
        CDConfig(cd_weight=0.0, classifier_weight=1.0, class_conditional=True)


def test_class_conditional_chains_run_on_their_class_energy_and_never_mix_classes():
    """Buffer partition y holds values near 10 y. One step with every label = 1 and no restarts may only
    change partition 1, and each changed slot must hold one gradient step of E(x, 1) = -g(x)_1 from its
    old value (a chain on E(x) or on another class would land elsewhere). More steps with mixed labels
    keep every partition near its own value."""
    model = hybrid_model()
    config = CDConfig(batch_size=6, buffer_size=30, num_langevin_steps=1, step_size=0.05, noise_scale=0.0,
                      restart_prob=0.0, data_noise=0.0, classifier_weight=1.0, class_conditional=True)
    rng = np.random.default_rng(2)
    labels = np.array([0, 1, 2, 0, 1, 2])
    x, mask = toy_jets(rng, labels)
    state = create_train_state(jax.random.key(0), model, config, x, mask, NOISE_FN)
    assert state.buffer.ptr.shape == (NUM_CLASSES,)
    tagged = (np.repeat(10.0 * np.arange(NUM_CLASSES), 10)[:, None, None]
              + 0.1 * rng.standard_normal((30, NUM_SLOTS, 2))).astype(np.float32)
    state = state.replace(buffer=buffer.BufferState(jnp.asarray(tagged), state.buffer.ptr))
    params = jax.tree.map(np.array, state.params)
    step = make_cd_step(model, config, NOISE_FN)
    state, _ = step(state, x, mask, np.ones(6, np.int32))
    new = np.asarray(state.buffer.samples)
    changed = np.flatnonzero(np.any(new != tagged, axis=(1, 2)))
    assert len(changed) > 0 and np.all(changed // 10 == 1)
    old = jnp.asarray(tagged[changed])
    all_real = jnp.ones(old.shape[:2], bool)
    class_grad = jax.grad(lambda z: jnp.sum(class_energy_fn(model, params, all_real, jnp.ones(len(z), jnp.int32))(z)))
    np.testing.assert_allclose(new[changed], old - 0.05 * class_grad(old), rtol=1e-5, atol=1e-6)
    marginal_grad = jax.grad(lambda z: jnp.sum(model.apply(params, z, all_real)))
    assert np.max(np.abs(new[changed] - (old - 0.05 * marginal_grad(old)))) > 1e-4

    for _ in range(6):
        state, _ = step(state, x, mask, rng.integers(0, NUM_CLASSES, 6))
    samples = np.asarray(state.buffer.samples)
    assert np.sum(np.any(samples != tagged, axis=(1, 2))) > len(changed)  # other partitions were used too
    for label in range(NUM_CLASSES):
        part = samples[10 * label:10 * (label + 1)]
        assert np.all(np.abs(part - 10.0 * label) < 2.0), f"partition {label} holds another class's chains"


@pytest.fixture(scope="module")
def toy_run():
    """A tiny hybrid (kappa = 1, chains on the marginal E(x)) and a CE-only baseline trained on the toy classes."""
    model = hybrid_model()
    rng = np.random.default_rng(3)
    runs = {}
    for name, weights in (("hybrid", dict(classifier_weight=1.0)),
                          ("baseline", dict(classifier_weight=1.0, cd_weight=0.0))):
        config = CDConfig(batch_size=BATCH, buffer_size=300, num_langevin_steps=5, step_size=0.05, noise_scale=0.05,
                          lr=3e-3, adam_b1=0.9, grad_clip_norm=1.0, steps_per_epoch=1000, ema_decay=0.9, **weights)
        labels = rng.integers(0, NUM_CLASSES, BATCH)
        x, mask = toy_jets(rng, labels)
        state = create_train_state(jax.random.key(1), model, config, x, mask, NOISE_FN)
        step = make_cd_step(model, config, NOISE_FN)
        buffer_before = np.asarray(state.buffer.samples)
        for _ in range(100):
            labels = rng.integers(0, NUM_CLASSES, BATCH)
            state, metrics = step(state, *toy_jets(rng, labels), labels)
        runs[name] = (state, metrics, buffer_before)
    return model, runs


def test_toy_hybrid_classifies_and_its_energy_flags_out_of_distribution_jets(toy_run):
    model, runs = toy_run
    state, metrics, _ = runs["hybrid"]
    rng = np.random.default_rng(4)
    labels = rng.integers(0, NUM_CLASSES, 600)
    x, mask = toy_jets(rng, labels)
    logits = np.asarray(model.apply(state.ema_params, x, mask, method="logits"))
    assert np.mean(np.argmax(logits, axis=1) == labels) > 0.95
    ood = (0.15 * rng.standard_normal((600, NUM_SLOTS, 2))).astype(np.float32)  # between the classes
    scores_in = anomaly_scores(model_outputs_fn(model), state.ema_params, x, mask)
    scores_ood = anomaly_scores(model_outputs_fn(model), state.ema_params, ood, mask)
    assert auc(np.r_[np.zeros(600), np.ones(600)], np.r_[scores_in["energy"], scores_ood["energy"]]) > 0.9
    assert metrics["e_neg"] > metrics["e_pos"] and metrics["accuracy"] > 0.9


def test_supervised_baseline_runs_no_chains_and_still_classifies(toy_run):
    model, runs = toy_run
    state, metrics, buffer_before = runs["baseline"]
    np.testing.assert_array_equal(np.asarray(state.buffer.samples), buffer_before)
    assert metrics["gap"] == 0.0 and metrics["cd"] == 0.0 and metrics["accuracy"] > 0.9


def test_marginal_chains_run_on_the_marginal_energy_from_the_whole_buffer():
    """The default hybrid (class_conditional off): one buffer without class partitions, and one step with no
    restarts moves each drawn slot by one gradient step of E(x) = -logsumexp g(x), whatever the labels (a chain
    on the labels' class energy E(x, y) would land elsewhere); slots are drawn from the whole buffer."""
    model = hybrid_model()
    config = CDConfig(batch_size=6, buffer_size=30, num_langevin_steps=1, step_size=0.05, noise_scale=0.0,
                      restart_prob=0.0, data_noise=0.0, classifier_weight=1.0)
    rng = np.random.default_rng(5)
    labels = np.ones(6, np.int32)
    x, mask = toy_jets(rng, labels)
    state = create_train_state(jax.random.key(0), model, config, x, mask, NOISE_FN)
    assert state.buffer.ptr.shape == (1,)  # one partition
    stored = (3.0 * rng.standard_normal((30, NUM_SLOTS, 2))).astype(np.float32)
    state = state.replace(buffer=buffer.BufferState(jnp.asarray(stored), state.buffer.ptr))
    params = jax.tree.map(np.array, state.params)
    step = make_cd_step(model, config, NOISE_FN)
    state, _ = step(state, x, mask, labels)
    new = np.asarray(state.buffer.samples)
    changed = np.flatnonzero(np.any(new != stored, axis=(1, 2)))
    assert len(changed) > 0
    old = jnp.asarray(stored[changed])
    all_real = jnp.ones(old.shape[:2], bool)
    marginal_grad = jax.grad(lambda z: jnp.sum(model.apply(params, z, all_real)))
    np.testing.assert_allclose(new[changed], old - 0.05 * marginal_grad(old), rtol=1e-5, atol=1e-6)
    class_grad = jax.grad(lambda z: jnp.sum(class_energy_fn(model, params, all_real, jnp.ones(len(z), jnp.int32))(z)))
    assert np.max(np.abs(new[changed] - (old - 0.05 * class_grad(old)))) > 1e-4
    for _ in range(8):
        state, _ = step(state, x, mask, labels)
    used = np.any(np.asarray(state.buffer.samples) != stored, axis=(1, 2))
    assert used[:10].any() and used[10:20].any() and used[20:].any()  # no partition for label 1 alone


def test_classifier_weight_scales_the_cross_entropy_gradient_in_proportion():
    """d loss / d params is linear in kappa with slope = the cross-entropy's gradient: g(2) - g(1) = g(1) - g(0)
    = grad CE (nonzero), with the CD term and its chain ends held fixed."""
    model = hybrid_model()
    rng = np.random.default_rng(6)
    labels = np.array([0, 1, 2, 0, 1, 2])
    x, mask = toy_jets(rng, labels)
    x_neg = (1.5 * rng.standard_normal(x.shape)).astype(np.float32)
    params = model.init(jax.random.key(2), x, mask)

    def grad_at(kappa):
        config = CDConfig(classifier_weight=kappa, cd_weight=1.0)
        return jax.grad(lambda p: _cd_loss(p, model, config, jax.random.key(0), x, mask, x_neg, mask, labels)[0])(
            params)

    def ce(p):
        logits = model.apply(p, x, mask, method="logits")
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

    flat = lambda tree: np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(tree)])
    g0, g1, g2 = (flat(grad_at(k)) for k in (1e-30, 1.0, 2.0))
    ce_grad = flat(jax.grad(ce)(params))
    assert np.linalg.norm(ce_grad) > 1e-3
    np.testing.assert_allclose(g1 - g0, ce_grad, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g2 - g1, ce_grad, rtol=1e-4, atol=1e-6)


def test_a_saved_hybrid_restores_its_ema_or_its_raw_parameters_at_a_chosen_step(toy_run, tmp_path):
    from jaxebm.experiments.ebm_clf import _restore_checkpoint, parameter_set
    from jaxebm.train.checkpoint import Checkpointer
    _, runs = toy_run
    state = runs["hybrid"][0]
    later = state.replace(step=state.step + 1, params=jax.tree.map(lambda a: a + 1.0, state.params))
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        ckpt.save(state)
        ckpt.save(later)
    template = jax.eval_shape(lambda: state)
    restored, step = _restore_checkpoint(tmp_path, template, int(state.step))
    assert step == int(state.step)
    for name, expected in (("ema", state.ema_params), ("raw", state.params)):
        jax.tree.map(np.testing.assert_array_equal, parameter_set(restored, name), expected)
    newest, step = _restore_checkpoint(tmp_path, template)
    assert step == int(later.step)
    jax.tree.map(np.testing.assert_array_equal, parameter_set(newest, "raw"), later.params)
    difference = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), state.ema_params, state.params)
    assert max(jax.tree.leaves(difference)) > 1e-4  # the two sets differ, so the check can tell them apart
    with pytest.raises(ValueError, match="'ema' or 'raw'"):
        parameter_set(restored, "average")
