import numpy as np

from steerheal.evals.stats import compare, log_mean_stat, paired_bootstrap


def test_bootstrap_ci_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    true_delta, hits, trials = 0.3, 0, 200
    for t in range(trials):
        a = rng.normal(0, 1, 60)
        b = a + true_delta + rng.normal(0, 0.5, 60)  # paired: b shares a's noise
        d = paired_bootstrap(a, b, n_resamples=1000, seed=t)
        hits += d.lo <= true_delta <= d.hi
    assert 0.88 <= hits / trials <= 0.99


def test_bootstrap_is_seeded_and_paired():
    a = np.linspace(0, 1, 30)
    d1 = paired_bootstrap(a, a + 0.1, seed=3)
    d2 = paired_bootstrap(a, a + 0.1, seed=3)
    assert d1 == d2
    assert abs(d1.delta - 0.1) < 1e-12 and d1.hi - d1.lo < 1e-9  # a constant shift has no spread
    assert log_mean_stat(np.array([[0.5, 0.5]]))[0] == np.log(0.5)


def fc_result(ps):
    rows = [{"id": str(i), "foundation": "Care", "pmass": 0.9, "p": p} for i, p in enumerate(ps)]
    return {"protocol": "forced-choice", "rows": rows}


def test_compare_reports_axis_and_largest_off_target_mover():
    from steerheal.evals.vignettes import FOUNDATIONS

    base = {f: 1 / 7 for f in FOUNDATIONS}
    moved = dict(base, Authority=base["Authority"] * 2, Care=base["Care"] / 2)
    res = compare(fc_result([base] * 20), fc_result([moved] * 20), axis="Authority", n_resamples=1000)
    assert abs(res["axis_delta"]["delta"] - np.log(2)) < 1e-9
    assert res["largest_off_target"]["name"] == "Care"
    assert abs(res["largest_off_target"]["delta"] + np.log(2)) < 1e-9
