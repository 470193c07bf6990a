"""Explicit generators: the same numbers colbert-ai draws from the globals, and exact replay from a state."""

from __future__ import annotations

import json
import random

import numpy as np
import torch

from colbert_swap.core.rng import RngStream, seed_globals


def _global_draws():
    return random.sample(range(10_000), 200), torch.randperm(1000)


def _stream_draws(stream: RngStream):
    return stream.python.sample(range(10_000), 200), torch.randperm(1000, generator=stream.torch)


def test_from_globals_matches_seeded_globals():
    seed_globals(12345)
    stream = RngStream.from_globals()
    ours_py, ours_perm = _stream_draws(stream)

    seed_globals(12345)
    ref_py, ref_perm = _global_draws()

    assert ours_py == ref_py
    assert torch.equal(ours_perm, ref_perm)
    # a second round keeps matching: the whole stream is the same, not just its start
    ours2 = _stream_draws(stream)
    ref2 = _global_draws()
    assert ours2[0] == ref2[0] and torch.equal(ours2[1], ref2[1])


def test_from_globals_leaves_globals_untouched():
    seed_globals(12345)
    stream = RngStream.from_globals()
    _stream_draws(stream)  # drawing from the stream must not advance the globals
    after = _global_draws()
    seed_globals(12345)
    fresh = _global_draws()
    assert after[0] == fresh[0] and torch.equal(after[1], fresh[1])


def test_other_seed_gives_other_numbers():
    seed_globals(12345)
    a = _stream_draws(RngStream.from_globals())
    seed_globals(54321)
    b = _stream_draws(RngStream.from_globals())
    assert a[0] != b[0] and not torch.equal(a[1], b[1])


def test_seed_globals_seeds_numpy_too():
    seed_globals(12345)
    x = np.random.rand(5)
    np.random.seed(12345)
    assert np.array_equal(x, np.random.rand(5))


def test_from_state_reproduces_the_continuation():
    seed_globals(12345)
    stream = RngStream.from_globals()
    _stream_draws(stream)  # advance somewhere into the stream
    stream.python.gauss(0, 1)  # leaves a cached gaussian in python's state
    state = stream.state()

    expected_py = [stream.python.gauss(0, 1), stream.python.random()] + stream.python.sample(range(500), 20)
    expected_perm = torch.randperm(300, generator=stream.torch)
    expected_rand = torch.rand(7, generator=stream.torch)

    replay = RngStream.from_state(state)
    got_py = [replay.python.gauss(0, 1), replay.python.random()] + replay.python.sample(range(500), 20)
    assert got_py == expected_py
    assert torch.equal(torch.randperm(300, generator=replay.torch), expected_perm)
    assert torch.equal(torch.rand(7, generator=replay.torch), expected_rand)


def test_state_is_a_snapshot_not_a_view():
    seed_globals(12345)
    stream = RngStream.from_globals()
    state = stream.state()
    torch_state = state["torch"].clone()
    first = _stream_draws(RngStream.from_state(state))
    _stream_draws(stream)  # advancing the original does not change the recorded state
    assert torch.equal(state["torch"], torch_state)
    again = _stream_draws(RngStream.from_state(state))
    assert first[0] == again[0] and torch.equal(first[1], again[1])


def test_python_state_survives_json():
    seed_globals(12345)
    stream = RngStream.from_globals()
    stream.python.random()
    state = stream.state()
    restored = {"python": json.loads(json.dumps(state["python"])), "torch": state["torch"]}
    assert RngStream.from_state(restored).python.sample(range(100), 10) == stream.python.sample(range(100), 10)
