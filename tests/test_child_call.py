"""call_in_child: a GIL-holding call in a forked child while the caller polls its Cancel check."""
from __future__ import annotations

import multiprocessing
import time

import numpy as np
import pytest

from trellis_impl.child_call import call_in_child

pytestmark = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")


class Stop(Exception):
    pass


def _fail(message):
    raise ValueError(message)


def test_the_result_comes_back_and_errors_are_reraised():
    polls = []
    a = np.arange(12.0).reshape(3, 4)
    assert np.array_equal(call_in_child(np.cumsum, (a,), {"axis": 1}, poll=lambda: polls.append(1)),
                          np.cumsum(a, axis=1))
    with pytest.raises(ValueError, match="bad input"):
        call_in_child(_fail, ("bad input",), poll=lambda: None)
    assert call_in_child(sum, ([1, 2, 3],)) == 6  # no poll: inline
    assert multiprocessing.active_children() == []


def test_a_raising_poll_stops_the_call_and_kills_the_child():
    calls = []

    def poll():
        calls.append(1)
        if len(calls) == 2:
            raise Stop

    # a call that would block for 10 minutes: only the poll can end this test
    with pytest.raises(Stop):
        call_in_child(time.sleep, (600,), poll=poll, interval=0.01)
    assert len(calls) == 2 and multiprocessing.active_children() == []


class _BlockingDecimation:
    """Stands in for fast_simplification: a decimation that would take 10 minutes."""

    @staticmethod
    def simplify(*args, **kwargs):
        time.sleep(600)


def test_cancel_during_the_glb_decimation(monkeypatch):
    """prepare_glb polls its progress callback while the quadric decimation runs (the phase that
    holds the GIL for seconds on big meshes), so a raising callback ends the export there."""
    import trimesh

    from trellis_impl.export import mesh_cleanup
    from trellis_impl.export.glb_export import prepare_glb
    monkeypatch.setattr(mesh_cleanup, "_fast_simplification", _BlockingDecimation)
    sphere = trimesh.creation.icosphere(subdivisions=3)
    seen = []

    def progress(phase, done, total):
        seen.append((phase, done))
        if len(seen) == 2:  # the first poll after the phase began
            raise Stop

    with pytest.raises(Stop):
        prepare_glb((np.asarray(sphere.vertices), np.asarray(sphere.faces)), bake="none", progress=progress)
    assert seen == [("cleanup", 0), ("cleanup", 0)] and multiprocessing.active_children() == []


def test_decimation_in_the_child_equals_the_inline_one():
    pytest.importorskip("fast_simplification")
    import trimesh

    from trellis_impl.export.mesh_cleanup import cleanup_mesh
    sphere = trimesh.creation.icosphere(subdivisions=4)
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    colours = (v * 0.5 + 0.5).astype(np.float32)
    inline = cleanup_mesh(v, f, colours, simplify_ratio=0.9)
    child = cleanup_mesh(v, f, colours, simplify_ratio=0.9, poll=lambda: None)
    assert inline[3]["method"] == child[3]["method"] == "fast_simplification"
    for a, b in zip(inline[:3], child[:3]):
        assert np.array_equal(a, b)
