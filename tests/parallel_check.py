"""Sharded against single-device runs on forced host devices; run by tests/test_parallel.py.

    python tests/parallel_check.py                        # one process, 4 devices
    python tests/parallel_check.py PROCESS_ID PORT        # one of 2 processes x 2 devices (localhost)

Must start in a fresh interpreter with ``JAX_PLATFORMS=cpu`` and
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (one process) or ``=2`` (two processes):
the device count is fixed when JAX starts. Exits non-zero on the first failed check; prints one
``ok ...`` line per passed check.

Tolerance: rtol 1e-5, atol 1e-6. Sharding splits the sums over the batch (gradients, loss, moments)
into per-device partial sums, so float32 results may differ in the last bits; everything else
(random numbers, per-chain arithmetic) is identical.
"""
import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from jaxebm import parallel
from jaxebm.inference import GenerationConfig, _generate_batch, anomaly_scores, generate, model_outputs_fn
from jaxebm.models import MLPConfig, MLPEnergy
from jaxebm.train import CDConfig, create_train_state, make_cd_step, make_noise_fn

NUM_DEVICES, NUM_CONSTITUENTS, BATCH = 4, 6, 16
RTOL, ATOL = 1e-5, 1e-6
MODEL = MLPEnergy(MLPConfig(hidden_sizes=(16,)))
BASE_CONFIG = CDConfig(batch_size=BATCH, buffer_size=32, num_langevin_steps=3, restart_prob=0.2, steps_per_epoch=2,
                       lr=1e-3, ema_decay=0.9)
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
compile_events = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, seconds, **_: compile_events.append(event) if event == COMPILE_EVENT else None)


def data_batch(index: int, leading: tuple[int, ...] = ()):
    """Toy jets ``leading + (B, N, 3)`` and masks with 3..N real constituents (numpy)."""
    rng = np.random.default_rng(index)
    x = rng.normal([1.0, 0.5, -0.5], 0.2, leading + (BATCH, NUM_CONSTITUENTS, 3)).astype(np.float32)
    multiplicity = rng.integers(3, NUM_CONSTITUENTS + 1, leading + (BATCH, 1))
    return x, np.arange(NUM_CONSTITUENTS) < multiplicity


def assert_trees_close(actual, expected, what: str) -> None:
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected), strict=True):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_allclose(parallel.to_host(jnp.asarray(a)), np.asarray(b), rtol=RTOL, atol=ATOL,
                                   err_msg=f"{what}{jax.tree_util.keystr(path)}")


def run_training(config: CDConfig, noise_fn, mesh, num_calls: int, batch_fn=data_batch):
    """State after ``num_calls`` step calls from seed 0, the metrics of each call, and the number of
    XLA compilations during the calls after the first. ``batch_fn(index, leading)`` gives the batches."""
    leading = (config.iterations_per_call,) if config.iterations_per_call > 1 else ()
    x0, mask0 = data_batch(0)
    state = create_train_state(jax.random.key(0), MODEL, config, x0, mask0, noise_fn)
    step = make_cd_step(MODEL, config, noise_fn, mesh=mesh)
    history, compiles_after_first = [], 0
    for index in range(num_calls):
        compiles_before = len(compile_events)
        state, metrics = step(state, *batch_fn(index + 1, leading))
        history.append(metrics)
        compiles_after_first += (len(compile_events) - compiles_before) * (index > 0)
    return state, history, compiles_after_first


def check_cd_step(mesh, config: CDConfig, noise_fn, num_calls: int, name: str, batch_fn=data_batch) -> None:
    state_single, metrics_single, _ = run_training(config, noise_fn, None, num_calls)
    state_sharded, metrics_sharded, num_recompiles = run_training(config, noise_fn, mesh, num_calls, batch_fn)
    assert compile_events and num_recompiles == 0, f"compile events {compile_events}, {num_recompiles} after call 1"
    assert_trees_close(state_sharded, state_single, f"{name}: state")
    assert_trees_close(metrics_sharded, metrics_single, f"{name}: metrics")
    assert int(state_sharded.step) == config.iterations_per_call * num_calls
    for leaf in jax.tree.leaves(state_sharded.buffer.samples):
        assert leaf.sharding.spec == PartitionSpec(parallel.DATA_AXIS), leaf.sharding
        assert {shard.data.shape[0] for shard in leaf.addressable_shards} == {config.buffer_size // NUM_DEVICES}
    replicated = (state_sharded.params, state_sharded.opt_state, state_sharded.ema_params, state_sharded.key,
                  state_sharded.step, metrics_sharded)
    for leaf in jax.tree.leaves(replicated):
        assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == NUM_DEVICES, leaf.sharding
    print(f"ok cd step {name}: {num_calls} calls match one device, compile once, buffer split, rest replicated")


def check_generation(mesh, noise_fn, with_scores: bool = True) -> None:
    x0, mask0 = data_batch(0)
    params = MODEL.init(jax.random.key(1), x0, mask0)
    gen_config = GenerationConfig(num_steps=6, decay_every=3, batch_size=BATCH)
    single = generate(jax.random.key(2), MODEL, params, noise_fn, gen_config, 24, progress=False)
    sharded = generate(jax.random.key(2), MODEL, params, noise_fn, gen_config, 24, progress=False, mesh=mesh)
    assert_trees_close(sharded, single, "generate")
    if with_scores:
        scores_single = anomaly_scores(model_outputs_fn(MODEL), params, *single, batch_size=BATCH)
        scores_sharded = anomaly_scores(model_outputs_fn(MODEL), params, *single, batch_size=BATCH, mesh=mesh)
        assert_trees_close(scores_sharded, scores_single, "anomaly_scores")
    print(f"ok generate{' and anomaly_scores' * with_scores}: {NUM_DEVICES} devices give the results of 1")


def flops(lowered) -> float:
    """Floating-point operations per device of a lowered program (XLA's cost analysis)."""
    cost = lowered.compile().cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost)["flops"]


def check_work_is_split(mesh, config: CDConfig, noise_fn) -> None:
    """Each device does about a quarter of the chain work (not a replicated copy of all of it)."""
    x, mask = data_batch(0)
    state = create_train_state(jax.random.key(0), MODEL, config, x, mask, noise_fn)
    cd_ratio = (flops(make_cd_step(MODEL, config, noise_fn, mesh=mesh).lower(state, x, mask))
                / flops(make_cd_step(MODEL, config, noise_fn).lower(state, x, mask)))
    gen_config = GenerationConfig(num_steps=6, batch_size=BATCH)
    key, params = jax.device_put((jax.random.key(0), state.params), parallel.replicated(mesh))
    gen_ratio = (flops(_generate_batch.lower(key, params, model=MODEL, noise_fn=noise_fn, config=gen_config, mesh=mesh))
                 / flops(_generate_batch.lower(jax.random.key(0), state.params, model=MODEL, noise_fn=noise_fn,
                                               config=gen_config, mesh=None)))
    assert cd_ratio < 0.4 and gen_ratio < 0.3, (cd_ratio, gen_ratio)
    print(f"ok per-device flops / one-device flops: cd step {cd_ratio:.2f}, generation {gen_ratio:.2f}")


def check_errors(mesh, noise_fn) -> None:
    for bad_config in (CDConfig(batch_size=18, buffer_size=64), CDConfig(batch_size=16, buffer_size=66)):
        try:
            make_cd_step(MODEL, bad_config, noise_fn, mesh=mesh)
        except ValueError as error:
            assert "multiple of the number of devices (4)" in str(error), error
        else:
            raise AssertionError(f"no ValueError for {bad_config.batch_size=}, {bad_config.buffer_size=}")
    try:
        parallel.make_mesh(NUM_DEVICES + 1)
    except ValueError:
        pass
    else:
        raise AssertionError("make_mesh accepted more devices than exist")
    print("ok sizes that do not divide the device count raise ValueError")


def one_process() -> None:
    """4 devices in this process: CD step (both padding modes, scan), generation, scores, work, errors."""
    assert jax.device_count() == NUM_DEVICES, f"need {NUM_DEVICES} devices, got {jax.devices()}"
    mesh = parallel.make_mesh()
    zeros_noise = make_noise_fn((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), NUM_CONSTITUENTS)
    check_cd_step(mesh, BASE_CONFIG, zeros_noise, num_calls=3, name="zeros padding")
    probs = np.full(NUM_CONSTITUENTS + 1, 1.0 / (NUM_CONSTITUENTS + 1))
    mask_noise = make_noise_fn((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), NUM_CONSTITUENTS, multiplicity_probs=probs)
    mask_config = dataclasses.replace(BASE_CONFIG, padding_mode="mask", iterations_per_call=2)
    check_cd_step(mesh, mask_config, mask_noise, num_calls=2, name="mask padding, 2 scanned iterations")
    check_generation(mesh, zeros_noise)
    check_work_is_split(mesh, BASE_CONFIG, zeros_noise)
    check_errors(mesh, zeros_noise)


def two_processes(process_id: int, port: int) -> None:
    """This process's half of a 2 x 2-device run: each feeds its rows, results match one device."""
    parallel.initialize_distributed(f"localhost:{port}", 2, process_id)  # before any other JAX call
    assert (jax.process_count(), jax.local_device_count()) == (2, 2)
    mesh = parallel.make_mesh()
    zeros_noise = make_noise_fn((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), NUM_CONSTITUENTS)

    def local_rows(index, leading):
        rows = parallel.process_rows(BATCH)
        return parallel.global_batch(tuple(a[rows] for a in data_batch(index, leading)), mesh)

    check_cd_step(mesh, BASE_CONFIG, zeros_noise, num_calls=2, name=f"process {process_id}", batch_fn=local_rows)
    check_generation(mesh, zeros_noise, with_scores=False)


def main(argv: list[str]) -> None:
    assert jax.config.jax_threefry_partitionable, "expected JAX's default partitionable threefry"
    if argv:
        two_processes(int(argv[0]), int(argv[1]))
    else:
        one_process()


if __name__ == "__main__":
    main(sys.argv[1:])
