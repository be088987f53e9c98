"""The README's test command, `pytest -n 2 --dist loadgroup`, keeps every Ray test on one xdist
worker (conftest.py marks them xdist_group "ray"): one local Ray cluster at a time, and no fault
injected beside another sweep. pytest 9.2 broke this silently (pytest-xdist#1386: xdist still
writes the group into `item._nodeid`, which pytest 9.2's node ids no longer read), and two Ray
clusters then trained side by side on the 2 CI cores. This test is what says so."""

import pytest


def test_every_ray_test_is_in_the_ray_group_under_loadgroup(request):
    if not getattr(request.config.option, "loadgroup", False):  # set on xdist workers only
        pytest.skip("groups exist only under `pytest -n N --dist loadgroup` (the README's command)")
    # the Ray tests and jobs/local-cluster.sh's (its stand-in binds Ray's ports)
    ray_items = [i for i in request.session.items if i.get_closest_marker("xdist_group")]
    if not ray_items:
        pytest.skip("no test of the Ray group selected in this run (-m, -k or paths)")
    ungrouped = [i.nodeid for i in ray_items if not i.nodeid.endswith("@ray")]
    assert not ungrouped, (f"{len(ungrouped)} of {len(ray_items)} Ray tests carry no xdist group: with this "
                           f"pytest / pytest-xdist pair they run on both workers at once: {ungrouped[:3]}")
